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
// The merge is on the critical path of every decode step (selection -> merge -> attention) and runs once, on a
// handful of CTAs: latency is all that counts. clock64 per phase at 1 x 1M (132 splits, H100) showed ~10,000
// cycles after the wait, 4,300 of them in the count of step (1) (ptxas reused one register quad for the unrolled
// shared-memory loads, so each waited for the previous compares) and ~1,500 in the appends of step (2) (a
// warp-aggregation loop around each of 16 possible atomics). Hence the loads as 16-byte chunks, counts in batches
// of 8 loads, one shared atomic per warp, and an L2 prefetch of the row's lists while the selection still runs.
// Measured together (msa bench 1 x 1M end to end, alternating): 102.7-103.1 -> 101.5-101.6 us; the prefetch alone
// 100.9-101.4 -> 100.7-100.9 us. Not understood yet: clock64 afterwards still put step (1) at 3,000-6,000 cycles
// and step (2) at 1,600-2,200 (ptxas keeps 3-5 of a batch's loads in flight; 64-bit integer keys instead of the
// float-and-tie compare changed nothing).
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
constexpr int kChunksPerThread = kMaxSplits * kSlots / 4 / kMergeThreads;  // 16-byte chunks of a row's lists
constexpr int kBatch = 16;  // candidates per batch of a count: 8 shared-memory loads of 16 bytes
constexpr int kMaxKept = (kMaxList * kMaxList + kBatch - 1) / kBatch * kBatch;
static_assert(kMergeThreads >= kMaxSplits, "one thread per split head");
static_assert(kMergeThreads >= kMaxKept, "one thread per kept candidate");

// Better of two (score, id) candidates: higher score, then smaller id (the contract's tie rule).
__device__ __forceinline__ bool beats(float s, int id, float best_s, int best_id) {
  return s > best_s || (s == best_s && id < best_id);
}

// A candidate as one 8-byte shared-memory word: (score, id bits). Padding (-inf, INT_MAX) beats no finite one.
__device__ __forceinline__ float2 pack(float s, int id) { return make_float2(s, __int_as_float(id)); }
__device__ __forceinline__ float2 padding() { return pack(-INFINITY, INT_MAX); }

// How many of the candidates c[0 .. n) beat (s, id), s finite; n is a multiple of kBatch (padded). Each batch's 8
// loads are issued before its compares and four counters keep the adds independent: with a plain loop ptxas reused
// one register quad, so every load waited for the previous compares.
__device__ __forceinline__ int rank_among(const float2* c, int n, float s, int id) {
  const auto* c4 = reinterpret_cast<const float4*>(c);
  int r[4] = {0, 0, 0, 0};
  for (int q = 0; q < n / 2; q += kBatch / 2) {
    float4 b[kBatch / 2];
#pragma unroll
    for (int j = 0; j < kBatch / 2; ++j) b[j] = c4[q + j];
#pragma unroll
    for (int j = 0; j < kBatch / 2; ++j) {
      r[j % 2] += beats(b[j].x, __float_as_int(b[j].y), s, id) ? 1 : 0;
      r[2 + j % 2] += beats(b[j].z, __float_as_int(b[j].w), s, id) ? 1 : 0;
    }
  }
  return (r[0] + r[1]) + (r[2] + r[3]);
}

__device__ __forceinline__ int round_up_batch(int n) { return (n + kBatch - 1) / kBatch * kBatch; }

__global__ void __launch_bounds__(kMergeThreads) merge_splits_kernel(const IndexSelectLaunch a, int splits, int tiles) {
  __shared__ __align__(16) float2 heads[kMaxSplits];
  __shared__ __align__(16) float2 kept[kMaxKept];
  __shared__ float tau_sc;
  __shared__ int tau_id, n_kept, local_sm;
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32;
  const std::int64_t row = blockIdx.x;
  const PartialList part = partial_list(a, tiles, row, splits, 0);
  const int chunks = splits * kSlots / 4;
  // While the selection still runs: touch the row's lists (one L2 prefetch per 128-byte line, no value read), so
  // that the address translations are in place when the loads below go out.
  for (int j = tid * 8; j < chunks; j += kMergeThreads * 8) {
    asm volatile("prefetch.global.L2 [%0];\n" ::"l"(reinterpret_cast<const float4*>(part.sc) + j));
    asm volatile("prefetch.global.L2 [%0];\n" ::"l"(reinterpret_cast<const int4*>(part.id) + j));
  }
  pdl_wait();  // the selection grid's partial lists are complete
  // The next kernel may be scheduled now, and only now: MsaDecode's attention reads q and the lengths before its
  // own wait (DecodeAttentionLaunch::inputs_before_wait), which is safe because everything before the selection has
  // completed once this wait returns. (Letting it launch before the wait measured 4 us slower at 1 x 1M decode.)
  pdl_launch_dependents();
  if (blockIdx.x == 0)  // every split CTA has finished (and claimed its pool): count 0 under the tag
    for (int i = threadIdx.x; i < tiles; i += kMergeThreads) *pool_word(a, i) = kPoolTag;

  const std::int64_t t = row / a.num_heads;
  const int head = static_cast<int>(row % a.num_heads);
  const int cap = a.k - 1;
  const int list_off = kSlots - cap;  // slot of a list's first entry
  // The row's lists are contiguous, split-major: chunk j holds slots 4 (j % 4) .. + 3 of split j / 4. Every load is
  // issued before any is used: one round trip.
  float4 v[kChunksPerThread];
  int4 w[kChunksPerThread];
#pragma unroll
  for (int i = 0; i < kChunksPerThread; ++i) {
    const int j = tid + i * kMergeThreads;
    v[i] = j < chunks ? reinterpret_cast<const float4*>(part.sc)[j] : make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
    w[i] = j < chunks ? reinterpret_cast<const int4*>(part.id)[j] : make_int4(-1, -1, -1, -1);
  }
  if (tid >= splits && tid < round_up_batch(splits)) heads[tid] = padding();
  if (tid < kMaxKept) kept[tid] = padding();  // entries past the kept count stay padding
  if (tid == 0) {
    tau_sc = -INFINITY;  // fewer than k - 1 finite heads: keep every finite candidate
    tau_id = INT_MAX;
    n_kept = 0;
    local_sm = w[0].x;  // split 0's slot 0 (see partial_list)
  }
  // A split's head (its list's first entry), from the thread holding the chunk of slot list_off.
  auto elem = [](const auto& q, int e) { return e == 0 ? q.x : e == 1 ? q.y : e == 2 ? q.z : q.w; };
#pragma unroll
  for (int i = 0; i < kChunksPerThread; ++i) {
    const int j = tid + i * kMergeThreads;
    if (cap > 0 && j < chunks && j % 4 == list_off / 4) heads[j / 4] = pack(elem(v[i], list_off % 4), elem(w[i], list_off % 4));
  }
  __syncthreads();
  const int local = local_sm;
  if (local + 1 <= a.k || cap == 0) {  // nothing ranked: every visible block, or the local block alone
    if (tid == 0) write_selection(a, t, head, local, nullptr, 0);
    return;  // uniform: every thread read the same local
  }
  // (1) tau: the finite head that exactly k - 2 heads beat (-inf heads are empty lists).
  if (tid < splits) {
    const float2 h = heads[tid];
    if (h.x != -INFINITY && rank_among(heads, round_up_batch(splits), h.x, __float_as_int(h.y)) == cap - 1) {
      tau_sc = h.x;
      tau_id = __float_as_int(h.y);
    }
  }
  __syncthreads();
  // (2) Keep the finite candidates that tau does not beat (not sentinel slots), appended warp by warp: one shared
  // atomic per warp (per candidate, ptxas emitted a warp-aggregation loop around each of the 16 possible appends).
  const float ts = tau_sc;
  const int ti = tau_id;
  bool keep[kChunksPerThread][4];
  int mine = 0;
#pragma unroll
  for (int i = 0; i < kChunksPerThread; ++i) {
    const int j = tid + i * kMergeThreads;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float sc = elem(v[i], e);
      keep[i][e] = j < chunks && 4 * (j % 4) + e >= list_off && sc != -INFINITY && !beats(ts, ti, sc, elem(w[i], e));
      mine += keep[i][e] ? 1 : 0;
    }
  }
  int incl = mine;  // inclusive prefix sum over the warp
#pragma unroll
  for (int o = 1; o < 32; o *= 2) {
    const int y = __shfl_up_sync(0xffffffffu, incl, o);
    incl += lane >= o ? y : 0;
  }
  int pos = 0;
  if (lane == 31) pos = atomicAdd(&n_kept, incl);
  pos = __shfl_sync(0xffffffffu, pos, 31) + incl - mine;
#pragma unroll
  for (int i = 0; i < kChunksPerThread; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      if (keep[i][e]) kept[pos++] = pack(elem(v[i], e), elem(w[i], e));
  __syncthreads();
  // (3) Kept candidate i goes to position rank(i) when that is below k - 1; the local block follows the
  // count = min(m, k - 1) ranked ids, then -1 padding, each position written by its own thread.
  const int m = n_kept, count = min(m, cap);
  std::int32_t* out = a.topk + head * a.topk_stride_h + t * a.topk_stride_t;
  if (tid < m) {
    const float2 me = kept[tid];
    const int r = rank_among(kept, round_up_batch(m), me.x, __float_as_int(me.y));
    if (r < cap) out[r * a.topk_stride_s] = __float_as_int(me.y);
  }
  if (tid >= count && tid < a.k) out[tid * a.topk_stride_s] = tid == count ? local : -1;
}

}  // namespace

cudaError_t launch_merge_splits(const IndexSelectLaunch& a, int splits, int tiles, cudaStream_t stream) {
  return launch_pdl(merge_splits_kernel, dim3(static_cast<unsigned>(a.total_q * a.num_heads)), dim3(kMergeThreads), 0,
                    stream, a, splits, tiles);
}

}  // namespace sel
}  // namespace kernels
}  // namespace msa
