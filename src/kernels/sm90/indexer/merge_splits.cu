// merge_splits.cu — the exact top-(k-1) of a split decode selection. index_select.cu streams each request's blocks
// over many CTAs, each leaving a sorted partial list per index row; one CTA of this kernel per (token, index head)
// merges the row's lists and writes its topk row. CTA 0 also clears the pool counts for the next run.
//
// Candidates are ordered by (score desc, id asc), a total order (each block is in exactly one split's list, so ids
// are distinct). (1) tau = the (k-1)-th best split head (a list's first entry): the k-1 best heads are distinct
// candidates >= tau, so nothing below tau can be selected. (2) Keep the candidates >= tau: they come from the
// <= k-1 lists whose head is >= tau, so there are at most (k-1)^2 <= 225 of them. (3) The first k-1 kept ones in
// contract order are the answer. Step (3), and step (1) for at most 16 splits, rank each element by counting the
// elements that beat it, one thread per element over a shared-memory copy. Against a 256-wide bitonic sort of the
// heads (H100, bench_indexer, alternating runs in one call): 8 x 128K x 8 decode 101 -> 97 us together with the
// slot-for-slot partial lists, 1 x 1M within noise; a warp sort there measured 1 us slower. With more splits the
// count of step (1) took 2.4 us of the 1 x 1M merge (132 splits, globaltimer per phase: every one of its uniform
// shared-memory loads waited for the previous one's compares), so step (1) sorts the heads per warp instead
// (best_heads).
//
// The merge is on the critical path of every decode step (selection -> merge -> attention) and runs once, on a
// handful of CTAs: latency is all that counts. Hence the loads as 16-byte chunks, one shared atomic per warp for
// the appends of step (2), an L2 prefetch of the row's lists while the selection still runs (msa bench 1 x 1M end
// to end, alternating: 102.7-103.1 -> 101.5-101.6 us, the prefetch alone 100.9-101.4 -> 100.7-100.9 us), and a
// rehearsal of the whole merge before the wait (see the kernel). globaltimer per phase at 1 x 1M, H100, before the
// sorted heads: wait returns 0.4 us after the last list is written, loads 0.5 us, step (1) 2.4, step (2) 0.65,
// step (3) and the topk row 0.4.
//
// With a handoff (MsaDecode, fused attention behind it): every slot of the row also goes out as an (id, page)
// entry that the attention CTA of that slot polls (kernels/common/handoff.cuh); the pages of the kept candidates
// are read while their ranks are counted.
//
// Invariants: runs after the whole selection grid (griddepcontrol.wait); every entry it reads was written by that
// grid; lists are sorted, -inf entries are empty, sentinel slots (before a list's first entry) are skipped.
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "kernels/common/handoff.cuh"
#include "kernels/common/pdl.cuh"
#include "kernels/common/warp_scan.cuh"
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
// loads are written before its compares and four counters keep the adds independent: with a plain loop ptxas reused
// one register quad, so every load waited for the previous compares (in the two-pass kernel it still keeps only two
// of the eight in flight, see rank_warp_best).
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

// Step (1) for many splits. Warp w sorts heads 32 w .. 32 w + 31 (padding past `splits`) best-first with a bitonic
// network over its lanes (15 compare-exchange steps, two shuffles each) and keeps its best kBest in best[w]: only
// the k - 1 <= 15 best heads of the whole row can matter. Counting each head's rank among all of them (one thread
// per head, a shared-memory load per 2 heads) took 2.4 us at 132 splits (globaltimer, H100, 1 x 1M decode).
constexpr int kMergeWarps = kMergeThreads / 32;
constexpr int kBest = 16;
__device__ __forceinline__ void best_heads(const float2* heads, int splits, float2 (*best)[kBest]) {
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  if (warp * 32 >= splits) return;  // uniform over the warp
  float2 h = warp * 32 + lane < splits ? heads[warp * 32 + lane] : padding();
#pragma unroll
  for (int k = 2; k <= 32; k *= 2)
#pragma unroll
    for (int j = k / 2; j > 0; j /= 2) {
      const float os = __shfl_xor_sync(0xffffffffu, h.x, j), oi = __shfl_xor_sync(0xffffffffu, h.y, j);
      // Blocks of k lanes alternate best-first / worst-first (the last, k = 32, is best-first); the pair's lower
      // lane takes the better one in a best-first block.
      const bool best_first = (lane & k) == 0, lower = (lane & j) == 0;
      if (beats(os, __float_as_int(oi), h.x, __float_as_int(h.y)) == (lower == best_first)) h = make_float2(os, oi);
    }
  if (lane < kBest) best[warp][lane] = h;
}
// tau from the warps' sorted lists: thread (w, i) takes list w's entry i < k - 1 and adds the entries of each other
// list that beat it (a prefix: binary search over kBest) to its own position i; the entry of rank k - 2 is tau.
// A count that reaches kBest - 1 in one list already puts the rank past k - 2, so the search needs no last probe.
__device__ __forceinline__ void rank_warp_best(const float2 (*best)[kBest], int lists, int cap, float* tau_sc,
                                               int* tau_id) {
  const int w = static_cast<int>(threadIdx.x) / kBest, i = static_cast<int>(threadIdx.x) % kBest;
  if (w >= lists || i >= cap) return;
  const float2 c = best[w][i];
  const int cid = __float_as_int(c.y);
  if (c.x == -INFINITY) return;
  // The searches over the other lists advance in lockstep, one probe of every list per step, so that their
  // shared-memory loads may overlap (a list past `lists` searches this thread's own list instead, and neither
  // counts). H200, msa bench 1 x 1M, alternating: 74.4-74.5 -> 74.3-74.4 us against one list after the other. Inside
  // the kernel's two-pass loop ptxas still gives every probe the same register pair (each load waits for the compare
  // before it); without the loop (no rehearsal) the loads overlap, and that build measured the same end to end
  // (docs/performance.md, "The merge's shared-memory loads").
  int n[kMergeWarps];
#pragma unroll
  for (int o = 0; o < kMergeWarps; ++o) n[o] = 0;
#pragma unroll
  for (int step = kBest / 2; step > 0; step /= 2)
#pragma unroll
    for (int o = 0; o < kMergeWarps; ++o) {
      const float2 e = best[o < lists ? o : w][n[o] + step - 1];
      n[o] += beats(e.x, __float_as_int(e.y), c.x, cid) ? step : 0;
    }
  int rank = i;
#pragma unroll
  for (int o = 0; o < kMergeWarps; ++o) rank += o < lists && o != w ? n[o] : 0;
  if (rank == cap - 1) {
    *tau_sc = c.x;
    *tau_id = cid;
  }
}

__device__ __forceinline__ int round_up_batch(int n) { return (n + kBatch - 1) / kBatch * kBatch; }

// Merge grids of at most this many rows rehearse, when each split streams at least kRehearsalPages pages (see the
// kernel and launch_merge_splits).
constexpr std::int64_t kRehearsalRows = 32;
constexpr int kRehearsalPages = 32;

// Chunk j of the rehearsal's synthetic lists (see the kernel): split j / 4's list holds distinct ids and descending
// scores, like a real one, so every step runs on it as it would on real lists (at most (k - 1)^2 kept); slot 0 of
// split 0, the local block, is far past k, so nothing takes the unranked path.
__device__ __forceinline__ void rehearsal_chunk(int j, int chunks, int list_off, float4* v, int4* w) {
  float sc[4];
  int id[4];
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const int split = j / 4, slot = 4 * (j % 4) + e;
    sc[e] = j >= chunks ? -INFINITY : slot < list_off ? INFINITY : static_cast<float>((split * 7919) % 1021 - 2 * slot);
    id[e] = j >= chunks ? -1 : slot == 0 ? (split == 0 ? 1 << 30 : -1) : split * kSlots + slot;
  }
  *v = make_float4(sc[0], sc[1], sc[2], sc[3]);
  *w = make_int4(id[0], id[1], id[2], id[3]);
}

__global__ void __launch_bounds__(kMergeThreads) merge_splits_kernel(const IndexSelectLaunch a, int splits, int tiles,
                                                                          bool rehearse) {
  __shared__ __align__(16) float2 heads[kMaxSplits];
  __shared__ float2 warp_best[kMergeWarps][kBest];
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
  // Two passes of one loop body: pass 0 rehearses the merge on synthetic lists before the wait, pass 1 merges the
  // real ones (#pragma unroll 1: one copy of the code for both). The merge runs once per decode step on SMs whose
  // instruction caches do not hold its code, and its CTAs sit beside the selection's from the start (index_select.cu
  // leaves them the registers), so the rehearsal runs while the stream does. H100, msa bench 1 x 1M decode, with the
  // sorted heads of step (1): 100.0-100.9 -> 98.2-98.3 us end to end; the rehearsal without the room beside the
  // selection ran after the stream instead, 99.5-100.6 -> 106.4-106.8 us. Only small merge grids rehearse: with
  // 256 rows (8 x 128K x 8) two merge CTAs per SM rehearsing beside the stream slowed bench_indexer 95 -> 99 us.
  // And only behind long streams (launch_merge_splits): at 1 x 1M the rehearsal ran from 2.5 to 12 us into the
  // step (globaltimer), longer than a 1 x 128K stream.
  const std::int64_t t = row / a.num_heads;
  const int head = static_cast<int>(row % a.num_heads);
  const int cap = a.k - 1;
  const int list_off = kSlots - cap;  // slot of a list's first entry
  std::int32_t* const out = a.topk + head * a.topk_stride_h + t * a.topk_stride_t;
  auto elem = [](const auto& q, int e) { return e == 0 ? q.x : e == 1 ? q.y : e == 2 ? q.z : q.w; };
  // Block j's page (decode: Q queries per request, see launch_index_select_sm90).
  const std::int32_t* const pt_row = a.page_table + (a.queries_per_request > 0 ? t / a.queries_per_request : 0) * a.pt_stride_b;
  auto page_of = [&](int j) { return pt_row[j * a.pt_stride_j]; };
#pragma unroll 1
  for (int pass = rehearse ? 0 : 1; pass < 2; ++pass) {
    const bool real = pass == 1;
    if (real) {
      __syncthreads();  // the rehearsal is done with the shared arrays
      pdl_wait();  // the selection grid's partial lists are complete
      // The next kernel may be scheduled now, and only now: MsaDecode's attention reads q and the lengths before
      // its own wait (DecodeAttentionLaunch::inputs_before_wait), which is safe because everything before the
      // selection has completed once this wait returns. (Letting it launch before the wait measured 4 us slower at
      // 1 x 1M decode.)
      pdl_launch_dependents();
      if (blockIdx.x == 0)  // every split CTA has finished (and claimed its pool): count 0 under the tag
        for (int i = threadIdx.x; i < tiles; i += kMergeThreads) *pool_word(a, i) = kPoolTag;
    }

    // The row's lists are contiguous, split-major: chunk j holds slots 4 (j % 4) .. + 3 of split j / 4. Every load
    // is issued before any is used: one round trip.
    float4 v[kChunksPerThread];
    int4 w[kChunksPerThread];
#pragma unroll
    for (int i = 0; i < kChunksPerThread; ++i) {
      const int j = tid + i * kMergeThreads;
      if (real) {
        v[i] = j < chunks ? reinterpret_cast<const float4*>(part.sc)[j] : make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
        w[i] = j < chunks ? reinterpret_cast<const int4*>(part.id)[j] : make_int4(-1, -1, -1, -1);
      } else {
        rehearsal_chunk(j, chunks, list_off, &v[i], &w[i]);
      }
    }
    if (tid >= splits && tid < kBatch) heads[tid] = padding();  // the count of step (1) reads one batch
    if (tid < kMaxKept) kept[tid] = padding();  // entries past the kept count stay padding
    if (tid == 0) {
      tau_sc = -INFINITY;  // fewer than k - 1 finite heads: keep every finite candidate
      tau_id = INT_MAX;
      n_kept = 0;
      local_sm = w[0].x;  // split 0's slot 0 (see partial_list)
    }
    // A split's head (its list's first entry), from the thread holding the chunk of slot list_off.
#pragma unroll
    for (int i = 0; i < kChunksPerThread; ++i) {
      const int j = tid + i * kMergeThreads;
      if (cap > 0 && j < chunks && j % 4 == list_off / 4) heads[j / 4] = pack(elem(v[i], list_off % 4), elem(w[i], list_off % 4));
    }
    __syncthreads();
    const int local = local_sm;
    // Handoff (MsaDecode's fused attention, handoff.cuh): each slot's entry carries its block's page. The local
    // block's page is read here, the ranked blocks' pages in step (3) before their ranks are counted.
    const bool handoff = real && a.handoff != nullptr;
    const int local_page = handoff ? page_of(local) : 0;
    if (local + 1 <= a.k || cap == 0) {  // nothing ranked: every visible block, or the local block alone
      if (!real) continue;  // uniform, like the whole branch: every thread read the same local
      if (tid == 0) write_selection(a, t, head, local, nullptr, 0);
      if (handoff && tid < a.k) {  // the same slots as write_selection's
        const int id = selection_slot(a.k, local, nullptr, 0, tid);
        handoff_store(a.handoff + row * a.k + tid, handoff_pack(id, id == local ? local_page : id >= 0 ? page_of(id) : 0));
      }
      return;
    }
    // (1) tau: the finite head that exactly k - 2 heads beat (-inf heads are empty lists).
    if (splits <= kBatch) {  // one batch of the count
      if (tid < splits) {
        const float2 h = heads[tid];
        if (h.x != -INFINITY && rank_among(heads, kBatch, h.x, __float_as_int(h.y)) == cap - 1) {
          tau_sc = h.x;
          tau_id = __float_as_int(h.y);
        }
      }
    } else {  // warp sorts, then each sorted head's rank across the warps' lists (see best_heads)
      best_heads(heads, splits, warp_best);
      __syncthreads();
      rank_warp_best(warp_best, (splits + 31) / 32, cap, &tau_sc, &tau_id);
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
    const int incl = warp_inclusive_sum(mine);
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
    if (tid < m) {
      const float2 me = kept[tid];
      const int id = __float_as_int(me.y);
      const int page = handoff ? page_of(id) : 0;  // in flight while the rank is counted
      const int r = rank_among(kept, round_up_batch(m), me.x, id);
      if (real && r < cap) {
        out[r * a.topk_stride_s] = id;
        if (handoff) handoff_store(a.handoff + row * a.k + r, handoff_pack(id, page));
      }
    }
    if (real && tid >= count && tid < a.k) {  // the local block, then -1 (selection_slot past count reads no id)
      const int id = selection_slot(a.k, local, nullptr, count, tid);
      out[tid * a.topk_stride_s] = id;
      if (handoff) handoff_store(a.handoff + row * a.k + tid, handoff_pack(id, id >= 0 ? local_page : 0));
    }
  }
}

}  // namespace

cudaError_t launch_merge_splits(const IndexSelectLaunch& a, int splits, int tiles, cudaStream_t stream) {
  // The selection's SMs are configured for their largest shared memory; the merge asks for the same, so that it
  // may share them.
  const cudaError_t e = cudaFuncSetAttribute(merge_splits_kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                             cudaSharedmemCarveoutMaxShared);
  if (e != cudaSuccess) return e;
  const std::int64_t rows = a.total_q * a.num_heads;
  const bool rehearse = rows <= kRehearsalRows && a.max_pages >= static_cast<std::int64_t>(kRehearsalPages) * splits;
  return launch_pdl(merge_splits_kernel, dim3(static_cast<unsigned>(rows)), dim3(kMergeThreads), 0, stream, a, splits,
                    tiles, rehearse);
}

}  // namespace sel
}  // namespace kernels
}  // namespace msa
