// index_select.cu — sm90 index selection (prefill and decode): block-max scores on wgmma with the top-(k-1) kept
// on chip while the index-K blocks stream by through a TMA + mbarrier ring. Design note: docs/indexer.md.
//
// One CTA owns one tile of 64 x C index rows (C consumer warpgroups) = (64 C / H) consecutive query tokens of one
// request x H index heads, so each index-K page is loaded once for all heads. A producer warpgroup (one thread)
// loads the Q tile once and then the tile's history blocks 0 .. l_max - 1 (l_max = local block of its last token)
// into a ring of 32 KiB page buffers (TMA, 128-byte swizzle). Each consumer warpgroup multiplies its 64 rows by the
// page's 128 keys with 8 x wgmma m64n128k16 (bf16 in, fp32 accumulate) and reduces each row's maximum in registers
// (fmaxf ignores NaN, so a NaN score counts as -inf). A row's sorted top list lives in the registers of the quad
// that holds the row; a block enters it only when it beats the list's last entry. Blocks arrive in ascending id
// order and insertion needs a strictly greater score, so ties keep the smaller id. The local block is never
// scored; it is appended at the end. No score ever reaches device memory.
//
// Decode launches split each request's blocks over gridDim.y CTAs; each leaves a sorted partial list per row in
// the workspace and merge_splits_kernel picks the exact top-(k-1) of their union.
//
// Invariants: H divides 64; rows whose token lies past the request's queries are computed (on neighbouring or
// zero-filled queries) and never written; a row only considers blocks j < its own local block; every lane of a
// warp takes part in every shuffle and vote (rows masked by validity, never by branching around the collective).
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <string>

#include "api/device.h"
#include "kernels/sm90/common/sm90.cuh"
#include "kernels/sm90/common/tma.h"
#include "kernels/sm90/indexer/launch.h"

namespace msa {
namespace kernels {
namespace {

constexpr int kKeys = 128;
constexpr int kDim = 128;
constexpr int kMaxList = 15;
constexpr int kMaxSplits = 256;  // decode splits per request (at most one per SM); bounds the merge's shared memory
constexpr int kHalfRowBytes = 128;  // one 64-dim half of a bf16 row: the 128-byte swizzle span

// Shared-memory plan of a CTA with C consumer warpgroups and S page stages (offsets from a 1024-aligned base).
template <int C, int S>
struct Plan {
  static constexpr int kConsumers = C;
  static constexpr int kStages = S;
  static constexpr int kRows = 64 * C;
  static constexpr int kThreads = 128 * (C + 1);  // warpgroup 0 produces, warpgroups 1 .. C consume
  static constexpr int kQHalfBytes = kRows * kHalfRowBytes;
  static constexpr int kPageHalfBytes = kKeys * kHalfRowBytes;
  static constexpr int kPageBytes = 2 * kPageHalfBytes;
  static constexpr int kPagesOff = 2 * kQHalfBytes;
  static constexpr int kListOff = kPagesOff + S * kPageBytes;
  static constexpr int kBarOff = kListOff + kRows * kMaxList * 8;
  static constexpr int kSmemBytes = kBarOff + (2 * S + 1) * 8 + 1024;  // + slack to align the base
};
// Prefill: 2 consumers (32 tokens x 4 heads), 5 stages (208 KiB). Decode: one consumer covers 16 queries x 4
// heads; 6 stages keep 160+ KiB of index-K in flight per SM for the HBM stream.
using PrefillPlan = Plan<2, 5>;
using DecodePlan = Plan<1, 6>;

__device__ __forceinline__ int query_start(const IndexSelectLaunch& a, int b) {
  return a.cu_seqlens_q != nullptr ? a.cu_seqlens_q[b * a.cu_stride] : b * a.queries_per_request;
}

// A row's sorted (descending) top list, spread over the 4 lanes of the quad that holds the row: lane c keeps slots
// 4c .. 4c + 3, and a list of capacity `cap` occupies the last cap slots (entry e in slot 16 - cap + e), so its last
// entry, the threshold, is always slot 15: lane 3's sc[3]. Slots before the list hold (+inf, -1) sentinels that
// stay ahead of every insertion; unused list entries hold (-inf, -1).
struct QuadList {
  float sc[4];
  int id[4];
};

// Inserts (m, j) behind every entry >= m (older entries have smaller ids, so ties keep the smaller id) when `take`;
// every lane of every quad of the warp must call it (the shift reads the previous lane's last entry). Branch-free:
// one compare per slot, then each slot takes its own entry, its predecessor's or (m, j). A list holds at most
// kMaxList = 15 entries, so slot 0 (lane 0's first) is always a (+inf, -1) sentinel that no m passes: lane 0 never
// reads the value it shuffles in from "slot -1" (its own last entry). Measured on the H100 against the branchy form
// with two compares per slot (and a +inf fix-up for lane 0): see docs/indexer.md.
__device__ __forceinline__ void quad_insert(QuadList& l, float m, int j, bool take) {
  const float prev_sc = __shfl_up_sync(0xffffffffu, l.sc[3], 1, 4);
  const int prev_id = __shfl_up_sync(0xffffffffu, l.id[3], 1, 4);
  bool below[4];  // entry ranks below m: sorted descending, so false ... false true ... true
#pragma unroll
  for (int i = 0; i < 4; ++i) below[i] = take && l.sc[i] < m;
  const bool prev_below = take && prev_sc < m;
#pragma unroll
  for (int i = 3; i >= 0; --i) {  // descending: slot i - 1 still holds its old entry
    const bool shift = i == 0 ? prev_below : below[i - 1];
    const float ps = i == 0 ? prev_sc : l.sc[i - 1];
    const int pi = i == 0 ? prev_id : l.id[i - 1];
    l.sc[i] = below[i] ? (shift ? ps : m) : l.sc[i];
    l.id[i] = below[i] ? (shift ? pi : j) : l.id[i];
  }
}

// The list's last entry (slot 15), on every lane of the quad.
__device__ __forceinline__ float quad_last(const QuadList& l) { return __shfl_sync(0xffffffffu, l.sc[3], 3, 4); }

// Writes one topk row: every visible block when n_vis = local + 1 <= k, else the `count` ranked ids, the local
// block, then -1 padding.
__device__ __forceinline__ void write_selection(const IndexSelectLaunch& a, std::int64_t token, int head, int local,
                                                const int* ids, int count) {
  std::int32_t* out = a.topk + head * a.topk_stride_h + token * a.topk_stride_t;
  int s = 0;
  if (local + 1 <= a.k) {
    for (; s <= local; ++s) out[s * a.topk_stride_s] = s;
  } else {
    for (; s < count; ++s) out[s * a.topk_stride_s] = ids[s];
    out[s++ * a.topk_stride_s] = local;
  }
  for (; s < a.k; ++s) out[s * a.topk_stride_s] = -1;
}

// Workspace of a split launch: kMaxList scores, then kMaxList ids, for each (index row, split); index row =
// token * H + head. Unused entries hold (-inf, -1).
struct PartialList {
  float* sc;
  int* id;
};
__device__ __forceinline__ PartialList partial_list(const IndexSelectLaunch& a, std::int64_t row, int splits,
                                                    int split) {
  auto* scores = static_cast<float*>(a.workspace);
  auto* ids = reinterpret_cast<int*>(scores + a.total_q * a.num_heads * splits * kMaxList);
  const std::int64_t off = (row * splits + split) * kMaxList;
  return {scores + off, ids + off};
}

// This thread's maximum over its 32 columns of one of its two rows (First = 0: row g, 2: row g + 8).
template <int First>
__device__ __forceinline__ float lane_max(const float (&acc)[64]) {
  float m0 = -INFINITY, m1 = -INFINITY;
#pragma unroll
  for (int c = 0; c < 16; c += 2) {
    m0 = fmaxf(m0, fmaxf(acc[4 * c + First], acc[4 * c + First + 1]));
    m1 = fmaxf(m1, fmaxf(acc[4 * c + 4 + First], acc[4 * c + 5 + First]));
  }
  return fmaxf(m0, m1);
}

// The row's block maximum from its quad's 4 lane maxima (disjoint columns). Every lane must call it.
__device__ __forceinline__ float quad_max(float m) {
  m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
  return fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
}

// Registers: a consumer needs ~190 (two 64-float accumulator sets, two quad lists). A 384-thread CTA starts at 168
// per thread; the producer warpgroup gives most of its share back (setmaxnreg) so the consumers can grow to 232.
constexpr int kProducerRegs = 40;
constexpr int kConsumerRegs = 232;

template <class P>
__global__ void __launch_bounds__(P::kThreads, 1)
    index_select_kernel(const IndexSelectLaunch a, const __grid_constant__ CUtensorMap q_map,
                        const __grid_constant__ CUtensorMap k_map) {
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = reinterpret_cast<unsigned char*>((reinterpret_cast<std::uintptr_t>(smem_raw) + 1023) & ~std::uintptr_t{1023});
  unsigned char* q_tile = smem;
  unsigned char* pages = smem + P::kPagesOff;
  auto* list_sc = reinterpret_cast<float*>(smem + P::kListOff);
  auto* list_id = reinterpret_cast<int*>(list_sc + P::kRows * kMaxList);
  auto* full = reinterpret_cast<std::uint64_t*>(smem + P::kBarOff);  // page landed (TMA bytes)
  std::uint64_t* empty = full + P::kStages;                         // page consumed (one arrive per consumer warp)
  std::uint64_t* q_full = empty + P::kStages;

  asm volatile("griddepcontrol.wait;\n" ::: "memory");  // see launch(): the previous kernel's writes are visible
  // Tile -> (request, first query). Later tiles of a request see more blocks: launch them first.
  const int H = a.num_heads, tpt = P::kRows / H;
  int tile = static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x);
  int b = 0, i0 = -1;
  for (; b < a.num_requests; ++b) {
    const int tiles = (query_start(a, b + 1) - query_start(a, b) + tpt - 1) / tpt;
    if (tile < tiles) {
      i0 = tile * tpt;
      break;
    }
    tile -= tiles;
  }
  if (i0 < 0) return;
  const int q0 = query_start(a, b), nq = query_start(a, b + 1) - q0;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const std::int32_t* pt = a.page_table + static_cast<std::int64_t>(b) * a.pt_stride_b;
  const int L = a.seq_lens_k[b * a.seq_stride];
  // Split s of the gridDim.y splits streams blocks s, s + splits, s + 2 splits, ... below n_hist (ascending, so
  // ties still keep the smaller id) and leaves a partial list for the merge kernel. The interleave lets warp 0 read
  // its first 32 page ids (bounded by the table width) together with L instead of after it: one memory round trip
  // less before the first TMA, measured 1.5 us on the 1 x 1M decode (H100).
  const int splits = static_cast<int>(gridDim.y), j0 = static_cast<int>(blockIdx.y);
  int first_pages = 0;
  if (warp == 0) {
    const int j = j0 + lane * splits;
    first_pages = j < a.max_pages ? pt[j * a.pt_stride_j] : 0;
  }
  const int ntok = min(tpt, nq - i0);
  const int first_pos = L - nq + i0;
  const int n_hist = (first_pos + ntok - 1) / kKeys;  // history blocks of the tile's last token
  const int n = n_hist > j0 ? (n_hist - j0 + splits - 1) / splits : 0;  // this split's blocks

  if (threadIdx.x == 0) {
    for (int s = 0; s < P::kStages; ++s) {
      sm90::mbar_init(&full[s], 1);
      sm90::mbar_init(&empty[s], 4 * P::kConsumers);
    }
    sm90::mbar_init(q_full, 1);
    sm90::mbar_fence_init();
  }
  __syncthreads();
  // Let a dependent merge grid launch now; it waits for this grid's completion before reading anything.
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");

  if (warp < 4) {  // ---- producer warpgroup: one thread loads Q once, then the pages through the ring ----
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kProducerRegs));
    if (warp != 0) return;
    if (lane == 0) {
      sm90::tma_prefetch_map(&q_map);
      sm90::tma_prefetch_map(&k_map);
      sm90::mbar_arrive_expect_tx(q_full, 2 * P::kQHalfBytes);
      sm90::tma_load_3d(q_tile, &q_map, q_full, 0, 0, q0 + i0);
      sm90::tma_load_3d(q_tile + P::kQHalfBytes, &q_map, q_full, 64, 0, q0 + i0);
    }
    for (int base = 0; base < n; base += 32) {
      const int page_of_lane =  // 32 ids per read
          base == 0 ? first_pages : base + lane < n ? pt[(j0 + (base + lane) * splits) * a.pt_stride_j] : 0;
      const int cnt = min(32, n - base);
      for (int u = 0; u < cnt; ++u) {
        const int page = __shfl_sync(0xffffffffu, page_of_lane, u);
        const int it = base + u, s = it % P::kStages;
        if (lane == 0) {
          sm90::mbar_wait(&empty[s], ((it / P::kStages) & 1) ^ 1);
          unsigned char* dst = pages + s * P::kPageBytes;
          sm90::mbar_arrive_expect_tx(&full[s], P::kPageBytes);
          sm90::tma_load_3d(dst, &k_map, &full[s], 0, 0, page);
          sm90::tma_load_3d(dst + P::kPageHalfBytes, &k_map, &full[s], 64, 0, page);
        }
      }
    }
    return;
  }

  // ---- consumer warpgroups: rows 64 * wg + 16 * (warp % 4) + g and + 8 ----
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kConsumerRegs));
  const int wg = warp / 4 - 1, g = lane / 4, c = lane % 4;
  const int r0 = 64 * wg + 16 * (warp % 4) + g, r1 = r0 + 8;
  const bool valid0 = r0 / H < ntok, valid1 = r1 / H < ntok;
  const int local0 = (first_pos + r0 / H) / kKeys, local1 = (first_pos + r1 / H) / kKeys;
  const int cap = a.k - 1;
  const int list_off = kMaxList + 1 - cap;  // slot of entry 0
  QuadList list0, list1;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    list0.sc[i] = list1.sc[i] = 4 * c + i < list_off ? INFINITY : -INFINITY;
    list0.id[i] = list1.id[i] = -1;
  }
  // A block enters a row's list only when its max beats the threshold (the list's last entry once full). With
  // cap = 0, or in the scores-only benchmark mode, nothing ever does.
  const float thr_init = cap > 0 && !a.scores_only ? -INFINITY : INFINITY;
  float thr0 = thr_init, thr1 = thr_init;

  const std::uint64_t desc_q0 = sm90::wgmma_desc_sw128(q_tile + 64 * wg * kHalfRowBytes);
  const std::uint64_t desc_q1 = sm90::wgmma_desc_sw128(q_tile + P::kQHalfBytes + 64 * wg * kHalfRowBytes);
  sm90::mbar_wait(q_full, 0);

  // Issues the 8 wgmma of ring iteration `it` into acc (one commit group).
  auto issue = [&](float(&acc)[64], int it) {
    const int s = it % P::kStages;
    sm90::mbar_wait(&full[s], (it / P::kStages) & 1);
    const unsigned char* page = pages + s * P::kPageBytes;
    sm90::wgmma_m64n128_k128_bf16(acc, desc_q0, desc_q1, sm90::wgmma_desc_sw128(page),
                                  sm90::wgmma_desc_sw128(page + P::kPageHalfBytes));
  };
  // Epilogue of iteration `it`, in two parts. reduce: once its group has completed, free the stage and take the
  // row maxima (masked to the row's history) into (m0, m1, m_block), so the accumulators can be reused at once.
  // rank, one step later, behind the next group: the list insertion of the pending maxima (a no-op when nothing is
  // pending: -inf never beats a threshold). Measured on the H100: voting on the lane maxima first, to skip the quad
  // reductions when no row of the warp can insert, was slower overall (more branches on the frequent path).
  float m0 = -INFINITY, m1 = -INFINITY;
  int m_block = 0;
  auto reduce = [&](float(&acc)[64], int it) {
    sm90::wgmma_fence_regs(acc);
    __syncwarp();
    if (lane == 0) sm90::mbar_arrive(&empty[it % P::kStages]);  // this warp's reads of the page are done
    m_block = j0 + it * splits;
    const float x0 = quad_max(lane_max<0>(acc)), x1 = quad_max(lane_max<2>(acc));  // every lane shuffles
    m0 = valid0 && m_block < local0 ? x0 : -INFINITY;
    m1 = valid1 && m_block < local1 ? x1 : -INFINITY;
  };
  auto rank = [&]() {
    const bool take0 = m0 > thr0, take1 = m1 > thr1;  // uniform over each quad
    if (__any_sync(0xffffffffu, take0 || take1)) {
      quad_insert(list0, m0, m_block, take0);
      quad_insert(list1, m1, m_block, take1);
      thr0 = fmaxf(thr0, quad_last(list0));
      thr1 = fmaxf(thr1, quad_last(list1));
    }
  };

  // Two accumulator sets: block it is reduced as soon as its group completes, and ranked one step later, after
  // the next group is issued, so the insertion overlaps two groups on the tensor cores. The steady-state loop
  // issues unconditionally and the tail is peeled, so the compiler can see which group is in flight at every point
  // (otherwise it serialises every wgmma of the kernel).
  if (n > 0) {
    float acc0[64], acc1[64];
    issue(acc0, 0);
    int it = 0;
    for (; it + 2 < n; it += 2) {
      issue(acc1, it + 1);
      rank();
      sm90::wgmma_wait<1>();
      reduce(acc0, it);
      issue(acc0, it + 2);
      rank();
      sm90::wgmma_wait<1>();
      reduce(acc1, it + 1);
    }
    if (it + 1 < n) {
      issue(acc1, it + 1);
      rank();
      sm90::wgmma_wait<1>();
      reduce(acc0, it);
      rank();
      sm90::wgmma_wait<0>();
      reduce(acc1, it + 1);
    } else {
      rank();
      sm90::wgmma_wait<0>();
      reduce(acc0, it);
    }
    rank();
  }

  // Stage the lists in shared memory (entry e of a row sits in slot list_off + e); the row's c == 0 lane writes out.
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int e = 4 * c + i - list_off;
    if (e >= 0) {
      list_sc[r0 * kMaxList + e] = list0.sc[i];
      list_id[r0 * kMaxList + e] = list0.id[i];
      list_sc[r1 * kMaxList + e] = list1.sc[i];
      list_id[r1 * kMaxList + e] = list1.id[i];
    }
  }
  __syncwarp();
  if (c != 0) return;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = half ? r1 : r0;
    if (!(half ? valid1 : valid0)) continue;
    const float* sc = list_sc + r * kMaxList;
    const int* ids = list_id + r * kMaxList;
    int count = 0;
    while (count < cap && ids[count] >= 0) ++count;
    if (splits > 1) {  // partial list: (score, id) x (k - 1) per (row, split), unused entries (-inf, -1)
      const std::int64_t row = static_cast<std::int64_t>(q0 + i0 + r / H) * H + r % H;
      const PartialList part = partial_list(a, row, splits, static_cast<int>(blockIdx.y));
      for (int e = 0; e < cap; ++e) {
        part.sc[e] = e < count ? sc[e] : -INFINITY;
        part.id[e] = e < count ? ids[e] : -1;
      }
    } else {
      write_selection(a, q0 + i0 + r / H, r % H, half ? local1 : local0, ids, count);
    }
  }
}

// Better of two (score, id) candidates: higher score, then smaller id (the contract's tie rule).
__device__ __forceinline__ bool beats(float s, int id, float best_s, int best_id) {
  return s > best_s || (s == best_s && id < best_id);
}

// Sorts one (score, id) pair per thread of the first N threads into contract order (score desc, id asc: position
// 0 is the best) with a bitonic network: N = 256 (the whole CTA) takes 36 compare-exchange steps, the 30 with
// partner distance < 32 by warp shuffles, the 6 others through `xs` / `xi` (256 entries each); N = 32 is one warp
// and 15 shuffle steps. Equal pairs never swap, so padding may repeat.
constexpr int kMergeThreads = 256;
template <int N>
__device__ __forceinline__ void bitonic_sort(float* s, int* i, float* xs, int* xi) {
  static_assert(N == 32 || N == kMergeThreads, "one warp or the whole CTA");
  const int me = threadIdx.x;
#pragma unroll
  for (int k = 2; k <= N; k <<= 1) {
#pragma unroll
    for (int j = k >> 1; j > 0; j >>= 1) {
      float ps;
      int pi;
      if (j < 32) {
        ps = __shfl_xor_sync(0xffffffffu, *s, j);
        pi = __shfl_xor_sync(0xffffffffu, *i, j);
      } else {
        xs[me] = *s;
        xi[me] = *i;
        __syncthreads();
        ps = xs[me ^ j];
        pi = xi[me ^ j];
        __syncthreads();
      }
      // The lower index of a pair keeps the earlier element in ascending runs ((me & k) == 0), the later one in
      // descending runs; both sides of a pair agree, so the pair is exchanged iff the partner should move here.
      const bool keep_earlier = ((me & j) == 0) == ((me & k) == 0);
      if (keep_earlier ? beats(ps, pi, *s, *i) : beats(*s, *i, ps, pi)) {
        *s = ps;
        *i = pi;
      }
    }
  }
}

// One CTA per (token, head): the exact top-(k-1) of the union of the splits' sorted partial lists. Order candidates
// by (score desc, id asc), a total order. (1) tau = the (k-1)-th best of the split heads (each list's first entry):
// the k-1 best heads are distinct candidates >= tau, so nothing below tau can be selected. (2) Keep the candidates
// >= tau: they come from the <= k-1 lists whose head is >= tau, so at most (k-1)^2 <= 225 of them. (3) The first
// k-1 kept candidates in contract order are the answer. Steps (1) and (3) are bitonic sorts: ranking each
// head and each kept candidate by a serial count over all others measured 8 us for 132 splits (ncu, H100), most of
// the decode selection's time after its stream.
static_assert(kMergeThreads >= kMaxList * kMaxList, "one thread per kept candidate");
static_assert(kMergeThreads >= kMaxSplits, "one thread per split head");
__global__ void __launch_bounds__(kMergeThreads) merge_splits_kernel(const IndexSelectLaunch a, int splits) {
  __shared__ float sc[kMaxSplits * kMaxList];
  __shared__ int id[kMaxSplits * kMaxList];
  __shared__ float kept_sc[kMergeThreads];
  __shared__ int kept_id[kMergeThreads];
  __shared__ float sort_sc[kMergeThreads];
  __shared__ int sort_id[kMergeThreads];
  __shared__ int out_ids[kMaxList];
  __shared__ float tau_sc;
  __shared__ int tau_id, n_kept;
  asm volatile("griddepcontrol.wait;\n" ::: "memory");  // the selection grid's partial lists are complete
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");  // the next kernel may be scheduled now

  const std::int64_t row = blockIdx.x;
  const int H = a.num_heads;
  const std::int64_t t = row / H;
  const int head = static_cast<int>(row % H);
  int b = 0;
  while (b + 1 < a.num_requests && query_start(a, b + 1) <= t) ++b;
  const int q0 = query_start(a, b), nq = query_start(a, b + 1) - q0;
  const int cap = a.k - 1;
  // The row's lists are contiguous, split-major. They are loaded before the row's length is known (in bounds either
  // way) and all loads of a thread are issued before its first store, so the copy and the length cost one round trip.
  const PartialList part = partial_list(a, row, splits, 0);
  constexpr int kPerThread = kMaxSplits * kMaxList / kMergeThreads;
  float v[kPerThread];
  int w[kPerThread];
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int e = threadIdx.x + i * kMergeThreads;
    const bool used = e < splits * kMaxList && e % kMaxList < cap;  // entries past k - 1 are never written
    v[i] = used ? part.sc[e] : -INFINITY;
    w[i] = used ? part.id[e] : -1;
  }
  const int local = (a.seq_lens_k[b * a.seq_stride] - nq + static_cast<int>(t - q0)) / kKeys;
  if (local + 1 <= a.k || cap == 0) {  // nothing ranked: every visible block, or the local block alone
    if (threadIdx.x == 0) write_selection(a, t, head, local, nullptr, 0);
    return;
  }
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    sc[threadIdx.x + i * kMergeThreads] = v[i];
    id[threadIdx.x + i * kMergeThreads] = w[i];
  }
  if (threadIdx.x == 0) {
    tau_sc = -INFINITY;  // fewer than k - 1 finite heads: keep every finite candidate
    tau_id = INT_MAX;
    n_kept = 0;
  }
  __syncthreads();
  // (1) Sort the heads (thread p holds split p's); position k - 2 is tau when it is finite (-inf heads are empty
  // lists).
  float hs = threadIdx.x < splits ? sc[threadIdx.x * kMaxList] : -INFINITY;
  int hi = threadIdx.x < splits ? id[threadIdx.x * kMaxList] : INT_MAX;
  bitonic_sort<kMergeThreads>(&hs, &hi, sort_sc, sort_id);
  if (threadIdx.x == cap - 1 && hs != -INFINITY) {
    tau_sc = hs;
    tau_id = hi;
  }
  __syncthreads();
  // (2) Keep the finite candidates that tau does not beat.
  const float ts = tau_sc;
  const int ti = tau_id;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i)
    if (v[i] != -INFINITY && !beats(ts, ti, v[i], w[i])) {
      const int slot = atomicAdd(&n_kept, 1);
      kept_sc[slot] = v[i];
      kept_id[slot] = w[i];
    }
  __syncthreads();
  // (3) Sort the kept candidates (in whatever order they were kept); the first min(m, k - 1) are the answer. Usually
  // m is close to k - 1 (iid scores: about k - 1 + a few), so one warp sorts them when they fit.
  const int m = n_kept;
  float cs = threadIdx.x < m ? kept_sc[threadIdx.x] : -INFINITY;
  int ci = threadIdx.x < m ? kept_id[threadIdx.x] : INT_MAX;
  if (m <= 32) {
    if (threadIdx.x >= 32) return;
    bitonic_sort<32>(&cs, &ci, sort_sc, sort_id);
    if (threadIdx.x < min(m, cap)) out_ids[threadIdx.x] = ci;
    __syncwarp();
  } else {
    bitonic_sort<kMergeThreads>(&cs, &ci, sort_sc, sort_id);
    if (threadIdx.x < min(m, cap)) out_ids[threadIdx.x] = ci;
    __syncthreads();
  }
  if (threadIdx.x == 0) write_selection(a, t, head, local, out_ids, min(m, cap));
}

int sm_count(int device) {
  const int sms = detail::cuda_sm_count(device);
  return sms > 0 ? sms : 132;  // the split count must not hinge on a failed query: assume an H100
}

// Tiles of a launch without reading device metadata: exact for decode (Q queries per request), else bounded by
// letting each request waste less than one tile.
std::int64_t tile_bound(const IndexSelectLaunch& a, int rows) {
  const int tpt = rows / a.num_heads;
  if (a.cu_seqlens_q == nullptr)
    return static_cast<std::int64_t>(a.num_requests) * ((a.queries_per_request + tpt - 1) / tpt);
  return (a.total_q + tpt - 1) / tpt + a.num_requests;
}

// Splits of a decode launch: one CTA per SM in all (a CTA holds an SM's shared memory), at least 16 blocks
// (512 KiB) per split. Depends only on shapes and the device, so a captured graph stays valid.
int decode_splits(const IndexSelectLaunch& a, int sms) {
  if (!a.split_pages) return 1;
  const std::int64_t tiles = tile_bound(a, DecodePlan::kRows);
  const int by_work = (a.max_pages + 15) / 16;
  const int by_gpu = static_cast<int>(max(std::int64_t{1}, sms / tiles));
  return max(1, min(kMaxSplits, min(by_work, by_gpu)));
}

Status cuda_error(cudaError_t e, const char* what) {
  return Status::CudaError(std::string("index selection: ") + what + ": " + cudaGetErrorString(e));
}

template <class P>
Status launch(const IndexSelectLaunch& a, int splits) {
  const int H = a.num_heads;
  CUtensorMap q_map, k_map;
  const sm90::Bf16Tensor3d q{a.index_q,
                             {static_cast<std::uint64_t>(kDim), static_cast<std::uint64_t>(H),
                              static_cast<std::uint64_t>(a.total_q)},
                             {a.q_stride_h, a.q_stride_t},
                             {64, static_cast<std::uint32_t>(H), static_cast<std::uint32_t>(P::kRows / H)}};
  const sm90::Bf16Tensor3d k{a.index_k,
                             {static_cast<std::uint64_t>(kDim), static_cast<std::uint64_t>(kKeys),
                              static_cast<std::uint64_t>(a.k_pages)},
                             {a.k_stride_t, a.k_stride_page},
                             {64, static_cast<std::uint32_t>(kKeys), 1}};
  MSA_RETURN_IF_ERROR(sm90::encode_tma_bf16_sw128(q, "index_q", &q_map));
  MSA_RETURN_IF_ERROR(sm90::encode_tma_bf16_sw128(k, "index_k_cache", &k_map));
  // Opt in to more than 48 KiB of dynamic shared memory (a per-device attribute; cheap to repeat).
  cudaError_t e = cudaFuncSetAttribute(index_select_kernel<P>, cudaFuncAttributeMaxDynamicSharedMemorySize, P::kSmemBytes);
  if (e != cudaSuccess) return cuda_error(e, "cudaFuncSetAttribute");
  const auto stream = static_cast<cudaStream_t>(a.stream);
  // Both kernels use programmatic dependent launch: each may be scheduled while the kernel before it on the stream
  // drains (its launch and prologue overlap that tail), and waits in griddepcontrol.wait, before its first access
  // to device memory, until that kernel has completed and its writes are visible.
  cudaLaunchAttribute pdl[1];
  pdl[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  pdl[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(tile_bound(a, P::kRows)), static_cast<unsigned>(splits));
  cfg.blockDim = dim3(P::kThreads);
  cfg.dynamicSmemBytes = P::kSmemBytes;
  cfg.stream = stream;
  cfg.attrs = pdl;
  cfg.numAttrs = 1;
  e = cudaLaunchKernelEx(&cfg, index_select_kernel<P>, a, q_map, k_map);
  if (e != cudaSuccess) return cuda_error(e, "launch");
  if (splits > 1) {
    cfg.gridDim = dim3(static_cast<unsigned>(a.total_q * H));
    cfg.blockDim = dim3(kMergeThreads);
    cfg.dynamicSmemBytes = 0;
    e = cudaLaunchKernelEx(&cfg, merge_splits_kernel, a, splits);
    if (e != cudaSuccess) return cuda_error(e, "merge launch");
  }
  e = cudaGetLastError();
  return e == cudaSuccess ? Status::Ok() : cuda_error(e, "launch");
}

}  // namespace

Status index_select_workspace_bytes_sm90(const IndexSelectLaunch& a, std::size_t* bytes) {
  *bytes = 0;
  if (a.num_heads < 1 || 64 % a.num_heads != 0 || a.total_q == 0) return Status::Ok();
  const int splits = decode_splits(a, sm_count(a.device));
  if (splits > 1)
    *bytes = static_cast<std::size_t>(a.total_q) * a.num_heads * splits * kMaxList * (sizeof(float) + sizeof(int));
  return Status::Ok();
}

Status launch_index_select_sm90(const IndexSelectLaunch& a) {
  if (a.num_heads < 1 || 64 % a.num_heads != 0)
    return Status::NotImplemented("index selection on CUDA: H_idx must divide 64, got " + std::to_string(a.num_heads));
  if (a.total_q == 0) return Status::Ok();
  const int splits = decode_splits(a, sm_count(a.device));
  if (splits > 1 && a.workspace == nullptr)
    return Status::InvalidArgument("workspace: the split decode selection needs the workspace of its size query");
  int current = 0;
  cudaError_t e = cudaGetDevice(&current);
  if (e != cudaSuccess) return cuda_error(e, "cudaGetDevice");
  if (current != a.device && (e = cudaSetDevice(a.device)) != cudaSuccess) return cuda_error(e, "cudaSetDevice");
  const Status st = a.split_pages ? launch<DecodePlan>(a, splits) : launch<PrefillPlan>(a, splits);
  if (current != a.device) cudaSetDevice(current);
  return st;
}

}  // namespace kernels
}  // namespace msa
