// select_common.cuh — what the sm90 index-selection kernel (index_select.cu) and the merge of its split decode
// launches (merge_splits.cu) share: geometry, the topk row writer, the workspace layout of a split launch (pool
// words and partial lists) and the pool protocol. Design note: docs/indexer.md.
#ifndef MSA_KERNELS_SM90_INDEXER_SELECT_COMMON_CUH_
#define MSA_KERNELS_SM90_INDEXER_SELECT_COMMON_CUH_

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/sm90/indexer/launch.h"

namespace msa {
namespace kernels {
namespace sel {

constexpr int kKeys = 128;
constexpr int kDim = 128;
constexpr int kMaxList = 15;
constexpr int kSlots = 16;  // a quad list's slots: 4 per lane (the list occupies the last k - 1)
constexpr int kMaxSplits = 256;  // decode splits per request (at most one per SM); bounds the merge's shared memory

__device__ __forceinline__ int query_start(const IndexSelectLaunch& a, int b) {
  return a.cu_seqlens_q != nullptr ? a.cu_seqlens_q[b * a.cu_stride] : b * a.queries_per_request;
}

// Slot s of a topk row: every visible block when n_vis = local + 1 <= k, else the `count` ranked ids, the local
// block, then -1 padding (ids is read only below count).
__device__ __forceinline__ int selection_slot(int k, int local, const int* ids, int count, int s) {
  if (local + 1 <= k) return s <= local ? s : -1;
  return s < count ? ids[s] : s == count ? local : -1;
}

// Writes one topk row (selection_slot).
__device__ __forceinline__ void write_selection(const IndexSelectLaunch& a, std::int64_t token, int head, int local,
                                                const int* ids, int count) {
  std::int32_t* out = a.topk + head * a.topk_stride_h + token * a.topk_stride_t;
  for (int s = 0; s < a.k; ++s) out[s * a.topk_stride_s] = selection_slot(a.k, local, ids, count, s);
}

// Workspace of a split launch: one pool word per tile (see below), padded to 256 bytes; then the kSlots scores and
// the kSlots ids of each (index row, split)'s quad list as it sits in the registers (slot 16 - (k - 1) + e holds
// entry e; earlier slots hold (+inf, -1) sentinels, unused entries (-inf, -1)); index row = token * H + head.
// Slot 0 is always a sentinel (a list holds at most 15 entries), so its id carries the row's local block to the
// merge instead: one dependent load of seq_lens_k less there. Slot for slot, each lane of the quad writes its 4
// slots with one 16-byte store per array: staging the lists in shared memory and writing them out from one lane
// measured 1.9 us from the end of the stream to the last store (H100, 1 x 1M), on the critical path of a decode.
__host__ __device__ constexpr std::int64_t pool_header_bytes(std::int64_t tiles) { return (tiles * 8 + 255) / 256 * 256; }
struct PartialList {
  float* sc;
  int* id;
};
__device__ __forceinline__ PartialList partial_list(const IndexSelectLaunch& a, std::int64_t tiles, std::int64_t row,
                                                    int splits, int split) {
  auto* scores = reinterpret_cast<float*>(static_cast<unsigned char*>(a.workspace) + pool_header_bytes(tiles));
  auto* ids = reinterpret_cast<int*>(scores + a.total_q * a.num_heads * splits * kSlots);
  const std::int64_t off = (row * splits + split) * kSlots;
  return {scores + off, ids + off};
}

// Split decode launches balance their stream at run time. The SMs do not stream at one rate: on an H100 the SMs of
// some GPCs read ~30 GB/s while the others read ~23.5 GB/s (globaltimer per CTA, 1 x 1M, two cards), so with a
// static split a fifth of the SMs idled through the last ~20 us. Split s streams a fixed three quarters of its
// rounds (blocks s, s + splits, ...) and then takes blocks of its tile's pool [rounds * splits, n_hist) one at a
// time from a counter, in ascending order (ties still keep the smaller id): faster SMs take more.
// The counter is the low kPoolCountBits of the tile's pool word in the workspace; the high bits hold a tag, so a
// launch never trusts a count that msa did not leave: a CTA that finds another tag installs (tag, 0) by
// compare-and-swap, whatever the workspace held before, and the merge kernel clears the count after every run.
// The tag's high half is a NaN pattern that no partial score (never NaN) or id (small) ever shows.
constexpr int kPoolCountBits = 24;
constexpr unsigned long long kPoolCountMask = (1ull << kPoolCountBits) - 1;
constexpr unsigned long long kPoolTag = 0x7ff1a5e15a000000ull;
__device__ __forceinline__ unsigned long long* pool_word(const IndexSelectLaunch& a, int tile) {
  return static_cast<unsigned long long*>(a.workspace) + tile;
}
__device__ __forceinline__ void claim_pool(unsigned long long* word) {
  unsigned long long cur = *reinterpret_cast<volatile unsigned long long*>(word);
  while ((cur & ~kPoolCountMask) != kPoolTag) {
    const unsigned long long prev = atomicCAS(word, cur, kPoolTag);
    if (prev == cur) break;
    cur = prev;
  }
}
// The next pool block (end once the pool is empty). A foreign tag cannot appear after claim_pool unless another
// launch runs on the same workspace at the same time, which the workspace contract forbids.
__device__ __forceinline__ int take_pool(unsigned long long* word, int begin, int end) {
  const unsigned long long old = atomicAdd(word, 1ull);
  return (old & ~kPoolCountMask) == kPoolTag ? min(end, begin + static_cast<int>(old & kPoolCountMask)) : end;
}

// Enqueues merge_splits_kernel (merge_splits.cu) for a split launch of `tiles` x `splits` CTAs, with programmatic
// dependent launch on `stream`.
cudaError_t launch_merge_splits(const IndexSelectLaunch& a, int splits, int tiles, cudaStream_t stream);

}  // namespace sel
}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_SM90_INDEXER_SELECT_COMMON_CUH_
