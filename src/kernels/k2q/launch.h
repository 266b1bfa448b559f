// launch.h — host-side entry of the device k2q builder: inverts per-query block lists (topk) into per-(KV head,
// block) query lists, byte-identical to reference::build_k2q_csr (plain pointers, no CUDA types).
#ifndef MSA_KERNELS_K2Q_LAUNCH_H_
#define MSA_KERNELS_K2Q_LAUNCH_H_

#include <cstddef>
#include <cstdint>

#include "msa/status.h"

namespace msa {
namespace kernels {

// A topk row whose first id is kRowElsewhere is a row another kernel computes (the union-of-blocks schedule, see
// kernels/sm90/attention/launch.h): it lists nothing and its split count is -1, which the combine leaves alone.
constexpr std::int32_t kRowElsewhere = -2;

// Inputs (device pointers, strides in elements). Capacities are shapes, so the launch sequence and the workspace
// depend on them only and a captured graph stays valid while lengths change.
struct K2qBuildArgs {
  const std::int32_t* topk;  // [H, T, k], valid ids a prefix of each row (validated by the caller's contract)
  std::int64_t topk_stride_h, topk_stride_t, topk_stride_s;
  const std::int32_t* cu_seqlens_q;  // [B + 1]
  std::int64_t cu_stride;
  const std::int32_t* seq_lens_k;  // [B]
  std::int64_t seq_stride;
  int num_heads;        // H = Hkv
  int k;                // topk width
  int num_requests;     // B
  std::int64_t total_q;  // T
  int max_blocks;       // per-request block capacity (page-table width): rows capacity R_cap = B * max_blocks
  int max_q_per_item;   // work schedule: rows split into items of at most this many queries; 0 = no schedule
  int device;
  void* stream;  // cudaStream_t
};

// Outputs (device pointers). Rows are numbered level-major as in the reference; rows r >= R (the actual count) are
// empty: row_ptr = nnz, row_batch = row_block = -1.
struct K2qBuildOutputs {
  std::int32_t* row_ptr;         // [H, R_cap + 1]
  std::int32_t* row_batch;       // [R_cap]
  std::int32_t* row_block;       // [R_cap]
  std::int32_t* q_indices;       // [H, T * k]: request-local query index, ascending per row; -1 pad
  std::int32_t* qsplit_indices;  // [H, T * k]: q_local | (split_slot << 24); -1 pad
  std::int32_t* split_counts;    // [T, H]; -1 for kRowElsewhere rows
  std::int32_t* total_rows;      // [1]: R
  // Work schedule (when max_q_per_item > 0), as reference::build_k2q_schedule: items of 6 int32 (head_kv, row,
  // q_begin, q_count, batch, kv_block), head-major, largest q_count first within a head, ties in (row, q_begin)
  // order; entries past num_items are all -1.
  std::int32_t* items;      // [item capacity, 6]
  std::int32_t* num_items;  // [1]
};

std::int64_t k2q_row_capacity(const K2qBuildArgs& args);
// Items the schedule can hold: H * (R_cap + ceil(T * k / max_q_per_item)) bounds every row's ceil(count / max_q).
std::int64_t k2q_item_capacity(const K2qBuildArgs& args);
Status k2q_workspace_bytes(const K2qBuildArgs& args, std::size_t* bytes);
// Enqueues the build on args.stream; never synchronises or allocates. Needs k2q_workspace_bytes of workspace.
Status launch_k2q_build(const K2qBuildArgs& args, const K2qBuildOutputs& out, void* workspace, std::size_t bytes);

}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_K2Q_LAUNCH_H_
