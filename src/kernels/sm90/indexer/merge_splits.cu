// merge_splits.cu — the exact top-(k-1) of a split decode selection. index_select.cu streams each request's blocks
// over many CTAs, each leaving a sorted partial list per index row; one CTA of this kernel per (token, index head)
// merges the row's lists and writes its topk row. CTA 0 also clears the pool counts for the next run.
//
// Candidates are ordered by (score desc, id asc), a total order (each block is in exactly one split's list, so ids
// are distinct). (1) tau = the (k-1)-th best split head (a list's first entry): the k-1 best heads are distinct
// candidates >= tau, so nothing below tau can be selected. (2) Keep the candidates >= tau: they come from the
// <= k-1 lists whose head is >= tau, so there are at most (k-1)^2 <= 225 of them. (3) The first k-1 kept ones in
// contract order are the answer. Steps (1) and (3) rank each element by counting the elements that beat it, one
// thread per element over a shared-memory copy: the whole merge is one load round trip, two counts and three
// barriers. Against a 256-wide bitonic sort of the heads (H100, bench_indexer, alternating runs in one call):
// 8 x 128K x 8 decode 101 -> 97 us together with the slot-for-slot partial lists, 1 x 1M within noise. A warp sort
// of the heads plus binary searches across the warps instead of the count measured 1 us slower at 8 x 128K x 8.
//
// Invariants: runs after the whole selection grid (griddepcontrol.wait); every entry it reads was written by that
// grid; lists are sorted, -inf entries are empty, sentinel slots (before a list's first entry) are skipped.
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "kernels/common/pdl.cuh"
#include "kernels/sm90/indexer/select_common.cuh"

namespace msa {
namespace kernels {
namespace sel {
namespace {

constexpr int kMergeThreads = 256;
static_assert(kMergeThreads >= kMaxSplits, "one thread per split head");
static_assert(kMergeThreads >= kMaxList * kMaxList, "one thread per kept candidate");

// Better of two (score, id) candidates: higher score, then smaller id (the contract's tie rule).
__device__ __forceinline__ bool beats(float s, int id, float best_s, int best_id) {
  return s > best_s || (s == best_s && id < best_id);
}

// A candidate as one 8-byte shared-memory word: (score, id bits).
__device__ __forceinline__ float2 pack(float s, int id) { return make_float2(s, __int_as_float(id)); }

// How many of the n candidates in c beat (s, id). The loads are independent, so the unrolled loop keeps several in
// flight instead of waiting out one shared-memory latency per candidate.
__device__ __forceinline__ int rank_among(const float2* c, int n, float s, int id) {
  int r = 0;
#pragma unroll 8
  for (int q = 0; q < n; ++q) {
    const float2 o = c[q];
    r += beats(o.x, __float_as_int(o.y), s, id) ? 1 : 0;
  }
  return r;
}

__global__ void __launch_bounds__(kMergeThreads) merge_splits_kernel(const IndexSelectLaunch a, int splits, int tiles) {
  __shared__ float2 heads[kMaxSplits];
  __shared__ float2 kept[kMergeThreads];
  __shared__ float tau_sc;
  __shared__ int tau_id, n_kept;
  asm volatile("griddepcontrol.wait;\n" ::: "memory");  // the selection grid's partial lists are complete
  // The next kernel may be scheduled now, and only now: MsaDecode's attention reads q and the lengths before its
  // own wait (DecodeAttentionLaunch::inputs_before_wait), which is safe because everything before the selection has
  // completed once this wait returns. (Letting it launch before the wait measured 4 us slower at 1 x 1M decode.)
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
  if (blockIdx.x == 0)  // every split CTA has finished (and claimed its pool): count 0 under the tag
    for (int i = threadIdx.x; i < tiles; i += kMergeThreads) *pool_word(a, i) = kPoolTag;

  const std::int64_t row = blockIdx.x;
  const std::int64_t t = row / a.num_heads;
  const int head = static_cast<int>(row % a.num_heads);
  const int cap = a.k - 1;
  const int list_off = kSlots - cap;  // slot of a list's first entry
  // The row's lists are contiguous, split-major. Every load below is issued before any is used: one round trip.
  const PartialList part = partial_list(a, tiles, row, splits, 0);
  constexpr int kPerThread = kMaxSplits * kSlots / kMergeThreads;
  float v[kPerThread];
  int w[kPerThread];
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int e = threadIdx.x + i * kMergeThreads;
    const bool used = e < splits * kSlots && e % kSlots >= list_off;  // not a sentinel slot
    v[i] = used ? part.sc[e] : -INFINITY;
    w[i] = used ? part.id[e] : -1;
  }
  const bool has_head = threadIdx.x < splits && cap > 0;  // split p's head, for thread p
  const float hs = has_head ? part.sc[threadIdx.x * kSlots + list_off] : -INFINITY;
  const int hi = has_head ? part.id[threadIdx.x * kSlots + list_off] : INT_MAX;
  const int local = part.id[0];  // split 0's slot 0 (see partial_list)
  if (local + 1 <= a.k || cap == 0) {  // nothing ranked: every visible block, or the local block alone
    if (threadIdx.x == 0) write_selection(a, t, head, local, nullptr, 0);
    return;
  }
  if (threadIdx.x < splits) heads[threadIdx.x] = pack(hs, hi);
  if (threadIdx.x == 0) {
    tau_sc = -INFINITY;  // fewer than k - 1 finite heads: keep every finite candidate
    tau_id = INT_MAX;
    n_kept = 0;
  }
  __syncthreads();
  // (1) tau: the finite head that exactly k - 2 heads beat (-inf heads are empty lists).
  if (hs != -INFINITY && rank_among(heads, splits, hs, hi) == cap - 1) {
    tau_sc = hs;
    tau_id = hi;
  }
  __syncthreads();
  // (2) Keep the finite candidates that tau does not beat.
  const float ts = tau_sc;
  const int ti = tau_id;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i)
    if (v[i] != -INFINITY && !beats(ts, ti, v[i], w[i])) kept[atomicAdd(&n_kept, 1)] = pack(v[i], w[i]);
  __syncthreads();
  // (3) Kept candidate i goes to position rank(i) when that is below k - 1; the local block follows the
  // count = min(m, k - 1) ranked ids, then -1 padding, each position written by its own thread.
  const int m = n_kept, count = min(m, cap);
  std::int32_t* out = a.topk + head * a.topk_stride_h + t * a.topk_stride_t;
  if (threadIdx.x < m) {
    const float2 me = kept[threadIdx.x];
    const int r = rank_among(kept, m, me.x, __float_as_int(me.y));
    if (r < cap) out[r * a.topk_stride_s] = __float_as_int(me.y);
  }
  if (threadIdx.x >= count && threadIdx.x < a.k) out[threadIdx.x * a.topk_stride_s] = threadIdx.x == count ? local : -1;
}

}  // namespace

cudaError_t launch_merge_splits(const IndexSelectLaunch& a, int splits, int tiles, cudaStream_t stream) {
  return launch_pdl(merge_splits_kernel, dim3(static_cast<unsigned>(a.total_q * a.num_heads)), dim3(kMergeThreads), 0,
                    stream, a, splits, tiles);
}

}  // namespace sel
}  // namespace kernels
}  // namespace msa
