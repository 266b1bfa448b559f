// launch.h — host-side entries of the sm90 prefill attention kernels, KV-outer and union of blocks (plain pointers,
// strides in elements). SparsePrefillAttention's CUDA path uses KV-outer for every Hq / Hkv, the union of blocks for
// 16 (api/attention_cuda.cpp).
#ifndef MSA_KERNELS_SM90_ATTENTION_LAUNCH_H_
#define MSA_KERNELS_SM90_ATTENTION_LAUNCH_H_

#include <cstdint>

#include "msa/status.h"

namespace msa {
namespace kernels {

// What both prefill kernels read: queries, the paged caches and the batch of a (chunk of a) varlen prefill.
struct PagedPrefillInputs {
  const void* q;  // [T, Hq, 128] bf16
  std::int64_t q_stride_t, q_stride_h;
  const void* k_cache;  // [pages, Hkv, 128, 128] bf16
  const void* v_cache;
  std::int64_t kv_stride_page, kv_stride_h, kv_stride_t;
  std::int64_t num_pages;
  const std::int32_t* page_table;  // [B, max_pages]
  std::int64_t pt_stride_b, pt_stride_j;
  const std::int32_t* cu_seqlens_q;  // [B + 1]
  std::int64_t cu_stride;
  const std::int32_t* seq_lens_k;  // [B]
  std::int64_t seq_stride;
};

struct KvOuterLaunch : PagedPrefillInputs {
  // The device k2q build (kernels/k2q/launch.h): row pointers [Hkv, R_cap + 1], handles [Hkv, T * k], items.
  const std::int32_t* row_ptr;
  const std::int32_t* qsplit_indices;
  const std::int32_t* items;  // [item_capacity, 6]
  const std::int32_t* num_items;
  std::int64_t row_capacity, item_capacity;
  std::int64_t total_q;
  int num_q_heads, num_kv_heads, k;
  float sm_scale;
  void* partial_out;   // [k, T, Hq, 128] bf16 (slot = the block's split slot)
  float* partial_lse;  // [k, T, Hq]
  int device;
  void* stream;
};

// G = Hq / Hkv in 1, 2, 4, 8, 16 (64-row tiles of 64 / G tokens x G heads); NotImplemented otherwise.
Status launch_kv_outer_attention(const KvOuterLaunch& args);

// Arguments of the query-outer "union of blocks" kernel (union_blocks.cu): the final output straight from the
// selection, no k2q, partials or combine.
struct UnionLaunch : PagedPrefillInputs {
  const std::int32_t* topk;  // [Hkv, T, k]: valid ids first, then -1
  std::int64_t topk_stride_h, topk_stride_t, topk_stride_s;
  std::int64_t total_q;
  int num_requests, num_q_heads, num_kv_heads, k;
  float sm_scale;
  void* out;  // [T, Hq, 128] bf16
  std::int64_t out_stride_t, out_stride_h;
  float* lse;  // [T, Hq] natural log, or nullptr
  std::int64_t lse_stride_t, lse_stride_h;
  // The rule that picks this schedule per (tile of 8 tokens, KV head): the tile's two warpgroups (4 tokens each)
  // together compute at most union_budget blocks per warpgroup with tokens. kUnionBudgetAuto is the measured
  // crossover; kUnionBudgetAll takes every tile.
  int union_budget;
  std::int32_t* masked_topk;  // launch_union_mask's output: [Hkv, T, k] contiguous
  // launch_union_mask's decisions, [Hkv, union_tiles()]; launch_union_list turns them in place into the list of
  // the union items (so they are written again by the mask launch before each union launch). nullptr: the kernel
  // decides each tile itself.
  std::int32_t* tile_flags;
  // launch_token_groups' output, [Hkv, union_tiles(), 8]: which query of its group of 128 sits in each slot of a
  // tile (union_tiles.cuh); nullptr: consecutive queries, no grouping.
  std::uint8_t* tile_slots;
  // Two ints of device memory. launch_union_list zeroes the first and, with tile_flags, writes the length of the
  // union items' list to the second; launch_union_kernel's CTAs take work items from the first, so the items run
  // in order, whatever each CTA's pace. nullptr (allowed only without tile_flags): each CTA takes every
  // gridDim-th item.
  int* work_counter;
  // launch_union_kernel: SMs the persistent kernel leaves free (0: one CTA per SM), for work on another stream
  // beside it (under kAuto the KV-outer chain over the tiles it does not take).
  int reserve_sms;
  // launch_union_kernel: at most this many CTAs (0: no cap). A second launch that shares work_counter with a
  // running one joins it on the SMs it finds free, taking the items still left (none: its CTAs exit at once).
  int max_ctas;
  int device;
  void* stream;
};

// Blocks per warpgroup (4 tokens x 16 heads) below which the union schedule is faster than KV-outer: on H100 the
// union kernel costs ~9 ns per (warpgroup, block) and KV-outer ~270-290 ns per 4 tokens and KV head (32K and 128K,
// bench_prefill_attention), a crossover near 30; 28 leaves a margin.
constexpr int kUnionBudgetAuto = 28;
constexpr int kUnionBudgetAll = 1 << 20;

// G = Hq / Hkv must be 16 and k <= 16 (a tile's 8 tokens list at most 128 blocks). launch_union_mask writes
// masked_topk: the selection with the rows of union tiles marked kRowElsewhere (kernels/k2q/launch.h), for the
// KV-outer chain (k2q, KV-outer, combine) that runs between the two launches and leaves those rows alone.
// launch_union_attention (persistent: one CTA per SM) then computes the union tiles and writes their out / LSE
// rows; it decides the tiles by the mask launch's tile_flags (or, without them, by the same rule).
// Tiles of a launch (without reading cu_seqlens_q: each request wastes less than one): T / 8 + B.
// launch_token_groups (token_groups.cu) fills tile_slots (when given) so that the queries sharing a warpgroup list
// similar blocks; it goes before the union launch, which reads tile_slots. launch_union_mask (token_groups.cu;
// needs tile_flags and masked_topk) forms the same groups (when tile_slots is given) and decides on their tiles
// in one launch, so it replaces launch_token_groups under kAuto.
std::int64_t union_tiles(const UnionLaunch& args);
Status launch_token_groups(const UnionLaunch& args);
Status launch_union_mask(const UnionLaunch& args);
Status launch_union_attention(const UnionLaunch& args);
// launch_union_attention in its two parts, for callers that put them on different streams: the union items' list
// (under kAuto, from tile_flags; it zeroes the work counter) and the persistent kernel, which reads the list.
Status launch_union_list(const UnionLaunch& args);
Status launch_union_kernel(const UnionLaunch& args);

}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_SM90_ATTENTION_LAUNCH_H_
