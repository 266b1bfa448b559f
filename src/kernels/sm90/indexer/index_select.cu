// index_select.cu — sm90 index selection (prefill and decode): block-max scores on wgmma with the top-(k-1) kept
// on chip while the index-K blocks stream by through a TMA + mbarrier ring. Design note: docs/indexer.md.
//
// One CTA owns one tile of 64 x C index rows (C consumer warpgroups) = (64 C / H) consecutive query tokens of one
// request x H index heads, so each index-K page is loaded once for all heads. A producer warpgroup (one thread)
// loads the Q tile once and then the tile's history blocks 0 .. l_max - 1 (l_max = local block of its last token)
// into a ring of page buffers (TMA, 128-byte swizzle; 32 KiB in bf16, 16 KiB in fp8). Each consumer warpgroup
// multiplies its 64 rows by the page's 128 keys with 8 x wgmma m64n128k16 (bf16 in) or 4 x m64n128k32 (fp8 e4m3
// in; a row of 128 dims is then one swizzle span), fp32 out, and reduces each row's maximum in registers
// (fmaxf ignores NaN, so a NaN score counts as -inf). A row's sorted top list lives in the registers of the quad
// that holds the row; a block enters it only when it beats the list's last entry. Blocks arrive in ascending id
// order and insertion needs a strictly greater score, so ties keep the smaller id. The local block is never
// scored; it is appended at the end. No score ever reaches device memory.
//
// Decode launches split each request's blocks over gridDim.y CTAs (the last quarter of them handed out at run time
// from a pool, see select_common.cuh); each leaves a sorted partial list per row in the workspace and
// merge_splits.cu picks the exact top-(k-1) of their union.
//
// Invariants: H divides 64; rows whose token lies past the request's queries are computed (on neighbouring or
// zero-filled queries) and never written; a row only considers blocks j < its own local block; every lane of a
// warp takes part in every shuffle and vote (rows masked by validity, never by branching around the collective).
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "api/device.h"
#include "kernels/common/handoff.cuh"
#include "kernels/common/pdl.cuh"
#include "kernels/sm90/common/sm90.cuh"
#include "kernels/sm90/common/tma.h"
#include "kernels/sm90/indexer/launch.h"
#include "kernels/sm90/indexer/select_common.cuh"

namespace msa {
namespace kernels {
namespace {

using namespace sel;  // NOLINT: the family's shared geometry, workspace layout and pool protocol

constexpr int kHalfRowBytes = 128;  // one 64-dim half of a bf16 row: the 128-byte swizzle span

// Shared-memory plan of a CTA with C consumer warpgroups and S page stages (offsets from a 1024-aligned base); Fp8:
// e4m3 index_q and index-K, whose 128-dim rows are one 128-byte swizzle span ("half") instead of two.
template <int C, int S, bool Pool, bool Fp8>
struct Plan {
  static constexpr bool kFp8 = Fp8;
  static constexpr int kHalves = Fp8 ? 1 : 2;  // 128-byte spans per 128-dim row
  static constexpr bool kPool = Pool;  // decode: stage words, and split launches take their last rounds from a pool
  static constexpr int kConsumers = C;
  static constexpr int kStages = S;
  static constexpr int kRows = 64 * C;
  static constexpr int kThreads = 128 * (C + 1);  // warpgroup 0 produces, warpgroups 1 .. C consume
  // Register budget at launch (__launch_bounds__(kBoundThreads)), which setmaxnreg then moves from the producer
  // warpgroup (40 each) to the consumers (kConsumerRegs). Prefill: 168 per thread at launch, consumers 232.
  // Decode: 128 at launch, consumers 216 (= 128 + 88), so a CTA holds 32,768 registers and leaves half the SM's
  // file to the split merge's CTAs, which can then sit beside it and rehearse while the stream runs
  // (merge_splits.cu).
  static constexpr int kBoundThreads = C == 1 ? 512 : kThreads;
  static constexpr int kConsumerRegs = C == 1 ? 216 : 232;
  static constexpr int kQHalfBytes = kRows * kHalfRowBytes;
  static constexpr int kPageHalfBytes = kKeys * kHalfRowBytes;
  static constexpr int kPageBytes = kHalves * kPageHalfBytes;
  static constexpr int kPagesOff = kHalves * kQHalfBytes;
  static constexpr int kListOff = kPagesOff + S * kPageBytes;
  static constexpr int kBarOff = kListOff + kRows * kMaxList * 4;  // the final lists' ids
  static constexpr int kWordOff = kBarOff + (2 * S + 1) * 8;  // the stage words (decode)
  static constexpr int kSmemBytes = kWordOff + (Pool ? S * 4 : 0) + 1024;  // + slack to align the base
};
// Prefill: 2 consumers (32 tokens x 4 heads), 5 stages (208 KiB). Decode: one consumer covers 16 queries x 4
// heads; 6 stages keep 160+ KiB of index-K in flight per SM for the HBM stream. fp8 pages are half the size: the
// same bytes in flight take twice the stages (decode 12, 200 KiB; prefill 8, 144 KiB).
template <bool Fp8>
using PrefillPlan = Plan<2, Fp8 ? 8 : 5, false, Fp8>;
template <bool Fp8>
using DecodePlan = Plan<1, Fp8 ? 12 : 6, true, Fp8>;

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

// Registers: a consumer needs ~190 (two 64-float accumulator sets, two quad lists). The producer warpgroup gives
// most of its launch share back (setmaxnreg) so the consumers can grow to the plan's kConsumerRegs.
constexpr int kProducerRegs = 40;

template <class P>
__global__ void __launch_bounds__(P::kBoundThreads, 1)
    index_select_kernel(const IndexSelectLaunch a, const __grid_constant__ CUtensorMap q_map,
                        const __grid_constant__ CUtensorMap k_map) {
  static_assert(sm90::setmaxnreg_fits(P::kThreads, P::kBoundThreads, kProducerRegs, P::kConsumerRegs),
                "setmaxnreg budgets");
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = reinterpret_cast<unsigned char*>((reinterpret_cast<std::uintptr_t>(smem_raw) + 1023) & ~std::uintptr_t{1023});
  unsigned char* q_tile = smem;
  unsigned char* pages = smem + P::kPagesOff;
  auto* list_id = reinterpret_cast<int*>(smem + P::kListOff);
  auto* full = reinterpret_cast<std::uint64_t*>(smem + P::kBarOff);  // page landed (TMA bytes)
  std::uint64_t* empty = full + P::kStages;                         // page consumed (one arrive per consumer warp)
  std::uint64_t* q_full = empty + P::kStages;
  // Decode: the block id of each stage's page, written by the producer before the page's barrier completes; -1
  // (a stage without a page) follows the split's last block.
  auto* stage_words = reinterpret_cast<volatile int*>(smem + P::kWordOff);

  // The tensor maps are kernel parameters, not written by earlier kernels: a decode grid fetches their descriptors
  // while it waits for its predecessor.
  if (P::kPool && threadIdx.x == 0) {
    sm90::tma_prefetch_map(&q_map);
    sm90::tma_prefetch_map(&k_map);
  }
  pdl_wait();  // see launch(): the previous kernel's writes are visible
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
  // Let a dependent merge grid launch now; it waits for this grid's completion before reading anything. Always
  // after this grid's own wait: a decode attention behind it reads its inputs before its wait (inputs_before_wait).
  pdl_launch_dependents();

  if (warp < 4) {  // ---- producer warpgroup: one thread loads Q once, then the pages through the ring ----
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kProducerRegs));
    if (warp != 0) {
      // A spare warp empties this run's handoff entries (see handoff.cuh): after this grid's wait, so the previous
      // run's attention is done with them; the merge behind this grid fills them.
      if (P::kPool && warp == 1 && a.handoff != nullptr && blockIdx.x == 0 && blockIdx.y == 0)
        for (std::int64_t e = lane; e < a.total_q * H * a.k; e += 32) a.handoff[e] = kHandoffEmpty;
      return;
    }
    if (lane == 0) {
      if (!P::kPool) {
        sm90::tma_prefetch_map(&q_map);
        sm90::tma_prefetch_map(&k_map);
      }
      sm90::mbar_arrive_expect_tx(q_full, P::kHalves * P::kQHalfBytes);
      sm90::tma_load_3d(q_tile, &q_map, q_full, 0, 0, q0 + i0);
      if constexpr (!P::kFp8) sm90::tma_load_3d(q_tile + P::kQHalfBytes, &q_map, q_full, 64, 0, q0 + i0);
    }
    // Static rounds: blocks j0 + u * splits for u < rounds, 32 page ids per read by the warp; lane 0 loads them.
    auto stream_rounds = [&](int rounds, auto&& load) {
      for (int base = 0; base < rounds; base += 32) {
        const int page_of_lane =  // 32 ids per read
            base == 0 ? first_pages : base + lane < rounds ? pt[(j0 + (base + lane) * splits) * a.pt_stride_j] : 0;
        const int cnt = min(32, rounds - base);
        for (int u = 0; u < cnt; ++u) {
          const int page = __shfl_sync(0xffffffffu, page_of_lane, u);
          if (lane == 0) load(base + u, page);
        }
      }
    };
    if constexpr (!P::kPool) {  // prefill: the tile's blocks 0 .. n - 1
      stream_rounds(n, [&](int it, int page) {
        const int s = it % P::kStages;
        sm90::mbar_wait(&empty[s], ((it / P::kStages) & 1) ^ 1);
        unsigned char* dst = pages + s * P::kPageBytes;
        sm90::mbar_arrive_expect_tx(&full[s], P::kPageBytes);
        sm90::tma_load_3d(dst, &k_map, &full[s], 0, 0, page);
        if constexpr (!P::kFp8) sm90::tma_load_3d(dst + P::kPageHalfBytes, &k_map, &full[s], 64, 0, page);
      });
      return;
    }
    int it = 0;  // ring iteration (lane 0)
    // The index-K pages are read once: they enter L2 marked evict-first, so that the stream does not push out what
    // the merge and the attention behind it need (their code, the lists, topk, the page table). H100, msa bench
    // 1 x 1M decode, three alternating runs: 103.7-104.1 -> 102.7-103.1 us end to end.
    const std::uint64_t stream_policy = sm90::l2_evict_first_policy();
    auto emit = [&](int j, int page) {  // block j's page into the next stage; j = -1: the end, no page
      const int s = it % P::kStages;
      sm90::mbar_wait(&empty[s], ((it++ / P::kStages) & 1) ^ 1);
      stage_words[s] = j;
      if (j < 0) {
        sm90::mbar_arrive(&full[s]);
        return;
      }
      unsigned char* dst = pages + s * P::kPageBytes;
      sm90::mbar_arrive_expect_tx(&full[s], P::kPageBytes);
      sm90::tma_load_3d_hint(dst, &k_map, &full[s], 0, 0, page, stream_policy);
      if constexpr (!P::kFp8)
        sm90::tma_load_3d_hint(dst + P::kPageHalfBytes, &k_map, &full[s], 64, 0, page, stream_policy);
    };
    // Decode: the static rounds, all of them or, in a split launch, three quarters of them; then the pool.
    const bool pooled = splits > 1;
    const int rounds = pooled ? min(n, n_hist / splits * 3 / 4) : n;
    stream_rounds(rounds, [&](int u, int page) { emit(j0 + u * splits, page); });
    if (lane != 0) return;
    if (pooled) {  // the pool: tickets and page ids are requested two blocks ahead of the stage they fill
      unsigned long long* word = pool_word(a, static_cast<int>(blockIdx.x));
      const int begin = rounds * splits;
      claim_pool(word);
      int ja = take_pool(word, begin, n_hist);
      int jb = ja < n_hist ? take_pool(word, begin, n_hist) : n_hist;
      int pa = ja < n_hist ? pt[ja * a.pt_stride_j] : 0;
      while (ja < n_hist) {
        const int pb = jb < n_hist ? pt[jb * a.pt_stride_j] : 0;
        const int jc = jb < n_hist ? take_pool(word, begin, n_hist) : n_hist;
        emit(ja, pa);
        ja = jb;
        pa = pb;
        jb = jc;
      }
    }
    emit(-1, 0);
    return;
  }

  // ---- consumer warpgroups: rows 64 * wg + 16 * (warp % 4) + g and + 8 ----
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(P::kConsumerRegs));
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
  const std::uint64_t desc_q1 =  // the second 64-dim half (bf16 only)
      sm90::wgmma_desc_sw128(q_tile + (P::kHalves - 1) * P::kQHalfBytes + 64 * wg * kHalfRowBytes);
  sm90::mbar_wait(q_full, 0);

  // Issues the wgmma of ring iteration `it` into acc (one commit group).
  auto issue = [&](float(&acc)[64], int it) {
    const int s = it % P::kStages;
    sm90::mbar_wait(&full[s], (it / P::kStages) & 1);
    const unsigned char* page = pages + s * P::kPageBytes;
    if constexpr (P::kFp8)
      sm90::wgmma_m64n128_k128_e4m3(acc, desc_q0, sm90::wgmma_desc_sw128(page));
    else
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
  auto reduce = [&](float(&acc)[64], int it, int block) {
    sm90::wgmma_fence_regs(acc);
    __syncwarp();
    if (lane == 0) sm90::mbar_arrive(&empty[it % P::kStages]);  // this warp's reads of the page are done
    m_block = block;
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
  if constexpr (P::kPool) {  // decode: the stage words name the blocks and end the split (each path drains)
    // Lane 0 reads the word and shuffles it: the lane that later frees the stage is the one that read it, so the
    // producer's next write of the word is ordered after every read (compute-sanitizer racecheck flags reads by the
    // other lanes, which only a __syncwarp orders before that lane's arrive).
    auto word = [&](int it) {
      sm90::mbar_wait(&full[it % P::kStages], (it / P::kStages) & 1);
      return __shfl_sync(0xffffffffu, lane == 0 ? stage_words[it % P::kStages] : 0, 0);
    };
    int wa = word(0);  // block of iteration it, in acc0
    if (wa >= 0) {
      float acc0[64], acc1[64];
      issue(acc0, 0);
      for (int it = 0;; it += 2) {
        const int wb = word(it + 1);
        if (wb < 0) {
          rank();
          sm90::wgmma_wait<0>();
          reduce(acc0, it, wa);
          break;
        }
        issue(acc1, it + 1);
        rank();
        sm90::wgmma_wait<1>();
        reduce(acc0, it, wa);
        wa = word(it + 2);
        if (wa < 0) {
          rank();
          sm90::wgmma_wait<0>();
          reduce(acc1, it + 1, wb);
          break;
        }
        issue(acc0, it + 2);
        rank();
        sm90::wgmma_wait<1>();
        reduce(acc1, it + 1, wb);
      }
      rank();
    }
  } else if (n > 0) {  // prefill: blocks 0 .. n - 1, a loop with a peeled tail
    float acc0[64], acc1[64];
    issue(acc0, 0);
    int it = 0;
    for (; it + 2 < n; it += 2) {
      issue(acc1, it + 1);
      rank();
      sm90::wgmma_wait<1>();
      reduce(acc0, it, j0 + it * splits);
      issue(acc0, it + 2);
      rank();
      sm90::wgmma_wait<1>();
      reduce(acc1, it + 1, j0 + (it + 1) * splits);
    }
    if (it + 1 < n) {
      issue(acc1, it + 1);
      rank();
      sm90::wgmma_wait<1>();
      reduce(acc0, it, j0 + it * splits);
      rank();
      sm90::wgmma_wait<0>();
      reduce(acc1, it + 1, j0 + (it + 1) * splits);
    } else {
      rank();
      sm90::wgmma_wait<0>();
      reduce(acc0, it, j0 + it * splits);
    }
    rank();
  }

  if (P::kPool && splits > 1) {  // partial lists, slot for slot (see partial_list)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      if (!(half ? valid1 : valid0)) continue;
      const int r = half ? r1 : r0;
      const QuadList& l = half ? list1 : list0;
      const int local = half ? local1 : local0;
      const std::int64_t row = static_cast<std::int64_t>(q0 + i0 + r / H) * H + r % H;
      const PartialList part = partial_list(a, gridDim.x, row, splits, static_cast<int>(blockIdx.y));
      *reinterpret_cast<float4*>(part.sc + 4 * c) = make_float4(l.sc[0], l.sc[1], l.sc[2], l.sc[3]);
      *reinterpret_cast<int4*>(part.id + 4 * c) = make_int4(c == 0 ? local : l.id[0], l.id[1], l.id[2], l.id[3]);
    }
    return;
  }
  // Stage the lists' ids in shared memory (entry e of a row sits in slot list_off + e); the row's c == 0 lane writes
  // the selection.
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int e = 4 * c + i - list_off;
    if (e >= 0) {
      list_id[r0 * kMaxList + e] = list0.id[i];
      list_id[r1 * kMaxList + e] = list1.id[i];
    }
  }
  __syncwarp();
  if (c != 0) return;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = half ? r1 : r0;
    if (!(half ? valid1 : valid0)) continue;
    const int* ids = list_id + r * kMaxList;
    int count = 0;
    while (count < cap && ids[count] >= 0) ++count;
    write_selection(a, q0 + i0 + r / H, r % H, half ? local1 : local0, ids, count);
  }
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
  const std::int64_t tiles = tile_bound(a, DecodePlan<false>::kRows);
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
  const std::uint32_t span = kHalfRowBytes / (P::kFp8 ? 1 : 2);  // elements per 128-byte swizzle span
  const sm90::TmaTensor3d q{a.index_q,
                            {static_cast<std::uint64_t>(kDim), static_cast<std::uint64_t>(H),
                             static_cast<std::uint64_t>(a.total_q)},
                            {a.q_stride_h, a.q_stride_t},
                            {span, static_cast<std::uint32_t>(H), static_cast<std::uint32_t>(P::kRows / H)},
                            P::kFp8};
  const sm90::TmaTensor3d k{a.index_k,
                            {static_cast<std::uint64_t>(kDim), static_cast<std::uint64_t>(kKeys),
                             static_cast<std::uint64_t>(a.k_pages)},
                            {a.k_stride_t, a.k_stride_page},
                            {span, static_cast<std::uint32_t>(kKeys), 1},
                            P::kFp8};
  MSA_RETURN_IF_ERROR(sm90::encode_tma_sw128(q, "index_q", &q_map));
  MSA_RETURN_IF_ERROR(sm90::encode_tma_sw128(k, "index_k_cache", &k_map));
  // Opt in to more than 48 KiB of dynamic shared memory (a per-device attribute; cheap to repeat).
  cudaError_t e = cudaFuncSetAttribute(index_select_kernel<P>, cudaFuncAttributeMaxDynamicSharedMemorySize, P::kSmemBytes);
  if (e != cudaSuccess) return cuda_error(e, "cudaFuncSetAttribute");
  const auto stream = static_cast<cudaStream_t>(a.stream);
  // Both kernels use programmatic dependent launch: each may be scheduled while the kernel before it on the stream
  // drains (its launch and prologue overlap that tail), and waits in griddepcontrol.wait, before its first access
  // to device memory, until that kernel has completed and its writes are visible.
  const int tiles = static_cast<int>(tile_bound(a, P::kRows));
  e = launch_pdl(index_select_kernel<P>, dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(splits)),
                 dim3(P::kThreads), P::kSmemBytes, stream, a, q_map, k_map);
  if (e != cudaSuccess) return cuda_error(e, "launch");
  if (splits > 1) {
    e = launch_merge_splits(a, splits, tiles, stream);
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
    *bytes = pool_header_bytes(tile_bound(a, DecodePlan<false>::kRows)) +
             static_cast<std::size_t>(a.total_q) * a.num_heads * splits * kSlots * (sizeof(float) + sizeof(int));
  return Status::Ok();
}

bool index_select_decode_merges(const IndexSelectLaunch& a) {
  return a.split_pages && a.total_q > 0 && decode_splits(a, sm_count(a.device)) > 1;
}

Status launch_index_select_sm90(const IndexSelectLaunch& a) {
  if (a.num_heads < 1 || 64 % a.num_heads != 0)
    return Status::NotImplemented("index selection on CUDA: H_idx must divide 64, got " + std::to_string(a.num_heads));
  if (a.total_q == 0) return Status::Ok();
  const int splits = decode_splits(a, sm_count(a.device));
  if (splits > 1 && a.workspace == nullptr)
    return Status::InvalidArgument("workspace: the split decode selection needs the workspace of its size query");
  if (a.handoff != nullptr && (splits <= 1 || !a.split_pages || a.cu_seqlens_q != nullptr))
    return Status::InvalidArgument("handoff: only a merging decode launch (Q queries per request) fills one");
  int current = 0;
  cudaError_t e = cudaGetDevice(&current);
  if (e != cudaSuccess) return cuda_error(e, "cudaGetDevice");
  if (current != a.device && (e = cudaSetDevice(a.device)) != cudaSuccess) return cuda_error(e, "cudaSetDevice");
  Status st;
  if (a.fp8)
    st = a.split_pages ? launch<DecodePlan<true>>(a, splits) : launch<PrefillPlan<true>>(a, splits);
  else
    st = a.split_pages ? launch<DecodePlan<false>>(a, splits) : launch<PrefillPlan<false>>(a, splits);
  if (current != a.device) cudaSetDevice(current);
  return st;
}

}  // namespace kernels
}  // namespace msa
