// launch.h — host-side entry of the sm90 index-selection kernels (plain pointers and strides, no CUDA types).
#ifndef MSA_KERNELS_SM90_INDEXER_LAUNCH_H_
#define MSA_KERNELS_SM90_INDEXER_LAUNCH_H_

#include <cstddef>
#include <cstdint>

#include "msa/status.h"

namespace msa {
namespace kernels {

// Arguments of one index-selection launch; strides are in elements. Content was validated by the caller.
struct IndexSelectLaunch {
  const void* index_q;  // [T, H, 128] bf16, or fp8 e4m3 when fp8
  std::int64_t q_stride_t, q_stride_h;
  const void* index_k;  // [k_pages, 128, 128], the same dtype
  std::int64_t k_stride_page, k_stride_t;
  std::int64_t k_pages;
  const std::int32_t* page_table;  // [B, max_pages]
  std::int64_t pt_stride_b, pt_stride_j;
  const std::int32_t* cu_seqlens_q;  // [B + 1], or nullptr: request b owns queries [b * Q, (b + 1) * Q)
  std::int64_t cu_stride;
  int queries_per_request;           // Q when cu_seqlens_q == nullptr
  const std::int32_t* seq_lens_k;    // [B]
  std::int64_t seq_stride;
  std::int32_t* topk;  // [H, T, k]
  std::int64_t topk_stride_h, topk_stride_t, topk_stride_s;
  std::int64_t total_q;
  int num_requests;
  int num_heads;  // H_idx
  int k;
  int max_pages;  // page_table width: bounds every request's blocks (a shape, so the split count is graph-safe)
  int split_pages;  // decode only: split each request's blocks over CTAs (needs the workspace below)
  void* workspace;  // partial top-k lists when split: index_select_workspace_bytes() bytes
  // Decode launches that merge (index_select_decode_merges), Q queries per request: [T, H, k] entries of the
  // handoff to MsaDecode's fused attention (kernels/common/handoff.cuh), 8 bytes each; nullptr: none.
  unsigned long long* handoff;
  bool scores_only;  // benchmark hook: score every block but rank none (rows get only their local block)
  bool fp8;  // index_q and index_k hold e4m3 (scored on the fp8 tensor cores), else bf16
  int device;     // CUDA ordinal of every pointer
  void* stream;   // cudaStream_t
};

// Scratch bytes launch_index_select_sm90 needs for these arguments (0 unless split_pages).
Status index_select_workspace_bytes_sm90(const IndexSelectLaunch& args, std::size_t* bytes);

// Whether a decode launch (split_pages) with these shapes runs the merge kernel behind the selection (more than one
// split per request): only then can it fill a handoff. Shapes and the device only.
bool index_select_decode_merges(const IndexSelectLaunch& args);

// H_idx must divide 64 (1, 2, 4, ..., 64). Enqueues work on `stream`; never synchronises or allocates. Every
// stride must be a multiple of 16 bytes (TMA), which the API's validation guarantees.
Status launch_index_select_sm90(const IndexSelectLaunch& args);

}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_SM90_INDEXER_LAUNCH_H_
