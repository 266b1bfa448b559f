// union_blocks.cu — query-outer "union of blocks" sparse prefill attention (G = 16).
//
// Work item = (tile of 8 query slots of one request, KV head g: 8 consecutive queries, or the 8 that
// token_groups.cu put together, see union_tiles.cuh); one persistent CTA per SM takes them in order. The producer
// warpgroup reads the tile's 8 selection lists and builds their union U (ascending unique block ids) with, per
// block of U, a bit mask of the tokens that listed it, loads Q of the 8 tokens x 16 heads, and
// streams K and V of every block of U through a 3-stage ring (TMA, 128-byte swizzle; one thread issues, its warp
// reads page ids); it builds the next tile's union while the consumers compute. Consumer warpgroup w
// owns tokens 4w .. 4w + 3 (64 rows; each warp one token's 16 heads). For each block that one of its tokens listed
// it computes S = Q·Kᵀ (8 x wgmma m64n128k16); a warp whose token listed the block masks keys after the token's
// position (its own block only), updates the running max (raw scores) and sum (fp32, exponents in log2 units by
// one FFMA; O rescaled), and adds P·V (P as bf16 A fragments in registers); a warp whose token did not list it
// adds P = 0. At the end O / l (bf16) and the natural-log LSE go straight to the
// output: no k2q lists, no partials, no combine.
//
// Cost model: a warpgroup computes every block of its 4 tokens' union for all of its rows, so it does |U_w| block
// products where each token needs 16. With clustered selections (tokens of a query block drawing from one pool)
// |U_w| stays near the pool size; with random ones it approaches 4 x 15 + 1. KV-outer does no wasted products but
// writes and re-reads 16 partials per (token, head). The measured crossover is in docs/attention.md; the per-tile
// choice (PrefillSchedule::kAuto) is made with the token groups (token_groups.cu, launch_union_mask): it writes the
// decision to tile_flags and takes the union tiles' rows out of the selection the KV-outer chain reads
// (kRowElsewhere); union_list_kernel then turns the flags into the ordered list of the union items, so that the
// persistent kernel takes only those from its counter (on random selections almost none: walking and skipping all
// the items cost one counter and one flag round trip each, ~4,000 per CTA at 1M tokens).
//
// Invariants: G = 16, k <= 16; rows of tokens past the tile's count are computed on stale data and never written;
// producer and consumers see the same sequence of union tiles and count ring positions alike;
// V rows of keys >= L are zeroed in shared memory before P·V (the cache may hold NaN there); every consumer warp
// arrives on a stage's empty barrier once per block of U, whether or not its warpgroup computed on it.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include "api/device.h"
#include "kernels/common/fast_math.cuh"
#include "kernels/common/pdl.cuh"
#include "kernels/common/warp_scan.cuh"
#include "kernels/sm90/attention/launch.h"
#include "kernels/sm90/attention/nonfinite_rows.cuh"
#include "kernels/sm90/attention/qkv_maps.h"
#include "kernels/sm90/attention/tile_softmax.cuh"
#include "kernels/sm90/attention/union_tiles.cuh"
#include "kernels/sm90/common/sm90.cuh"

namespace msa {
namespace kernels {
namespace {

constexpr int kG = kUnionGroup;
constexpr int kMaxIds = kTileTokens * kMaxK;  // 128 listed ids per tile at most
constexpr int kHalf = 128 * 128;              // bytes of a 64-dim half of a 128-key K or V block
constexpr int kQHalf = 64 * 128;              // bytes of a 64-dim half of a warpgroup's 64-row Q tile
constexpr int kStages = 3;  // K + V ring, 64 KiB per stage (H100, 128K: clustered 27.2-27.7 -> 26.9-27.1 ms over 2)
constexpr int kStageBytes = 4 * kHalf;
constexpr int kThreads = 384;  // warpgroup 0 produces, 1 and 2 consume
// Registers a thread after setmaxnreg (168 at launch); with 40 / 232 ptxas spilled 8 bytes in the producer's counter
// fetch.
constexpr int kProducerRegs = 48, kConsumerRegs = 224;
static_assert(sm90::setmaxnreg_fits(kThreads, kThreads, kProducerRegs, kConsumerRegs), "setmaxnreg budgets");
constexpr int kQOff = 0, kKvOff = 4 * kQHalf;

// One union tile as the producer warpgroup hands it to the consumers (two of these alternate).
struct TileBuf {
  int uni[kMaxIds];                 // [nu] ascending unique block ids
  unsigned mask4[kMaxIds / 4];      // byte u: bit i set when token i of the tile listed uni[u]
  int nu, b, i0, ntok, q0, nq, g;   // nu < 0: no more tiles for this CTA
  unsigned char query[kTileTokens];  // slot i's query, as an offset in the tile's group of 128 (slot_query)
};
__device__ __forceinline__ int tile_mask(const TileBuf& t, int u) { return (t.mask4[u >> 2] >> (8 * (u & 3))) & 0xFF; }

// The head of shared memory, at the (16-byte aligned) base; Q [warpgroup][half] and the K/V ring (K halves, then
// V halves) follow from the next 1024-byte boundary. Three stages fit only so: 32 KiB of Q + 192 KiB of ring +
// the head + at most 1023 bytes of alignment slack is 232351 of the 232448 bytes a CTA may have.
struct Head {
  std::uint64_t full[kStages];   // stage landed (TMA bytes)
  std::uint64_t empty[kStages];  // stage consumed (one arrive per consumer warp)
  std::uint64_t q_full[2];       // a warpgroup's Q landed
  std::uint64_t q_empty;         // the consumers are done with Q (one arrive per consumer warp)
  std::uint64_t u_full[2];       // buf[i] holds a tile (one arrive per producer thread)
  std::uint64_t u_empty[2];      // the consumers are done with buf[i] (one arrive per consumer warp)
  int ids[kMaxIds];              // union building scratch
  int next_item;                 // the producer's next work item, from UnionLaunch::work_counter
  int listed;                    // under kAuto: the length of union_list_kernel's list (work_counter[1])
  TileBuf buf[2];
};
constexpr int kSmemBytes = static_cast<int>(sizeof(Head)) + 1023 + kKvOff + kStages * kStageBytes;
static_assert(kSmemBytes <= 232448, "union-of-blocks shared memory exceeds 227 KiB");

// P·V of one part of a block: P of the column groups [N0, N1) (keys 8 N0 .. 8 N1 - 1; zero for a warp whose token
// did not list the block), then their key slices' wgmma issued and committed, not waited for. Slice kk = keys
// 16 kk .. 16 kk + 15 of V (N-major: 64-dim halves 16 KiB apart, 2 KiB per slice). The empty asm on the later column
// groups keeps the compiler from computing their exponents before this part's wgmma are issued: one warp's 64
// exponents and 32 bf16 packs per block take about as long as the warpgroup's S on the tensor pipe, so the parts
// overlap the two (H100, clustered 128K, union alone, two calls: one part 24.8 / 24.3 ms, two parts 24.0 / 24.1, four
// parts 24.3).
template <int N0, int N1>
__device__ __forceinline__ void pv_part(bool listed, float (&acc)[64], float scale, float base0, float base1,
                                        float& l0, float& l1, std::uint32_t (&pa)[8][4], float (&o)[64],
                                        unsigned char* st) {
  if (listed) {
    tile_exp_to_p_range<N0, N1>(acc, scale, base0, base1, l0, l1, pa);
  } else {
#pragma unroll
    for (int kk = N0 / 2; kk < N1 / 2; ++kk) pa[kk][0] = pa[kk][1] = pa[kk][2] = pa[kk][3] = 0u;
  }
  sm90::wgmma_fence();
#pragma unroll
  for (int kk = N0 / 2; kk < N1 / 2; ++kk)
    sm90::wgmma_m64n128k16_bf16_rs_tb(o, pa[kk], sm90::wgmma_desc_sw128_nmajor(st + 2 * kHalf + kk * 2048, kHalf));
  sm90::wgmma_commit();
#pragma unroll
  for (int i = 4 * N1; i < 64; ++i) asm volatile("" : "+f"(acc[i]));
}

// Builds the tile's union for KV head g into out.uni / out.mask4 with threads 0 .. 127 of the CTA holding one
// (token, slot) entry each, synchronised by barrier `bar` over those 128 threads (all of them must call it).
// First occurrences by a scan of the earlier entries, then ranks by counting the smaller first occurrences: no
// sort. Returns |U| and, in u_wg, how many blocks of U each warpgroup's 4 tokens listed (takes_union's inputs).
__device__ __forceinline__ int build_union(const UnionLaunch& a, const Tile& t, int g, int* ids, TileBuf& out,
                                           int bar, int (&u_wg)[2]) {
  const int tid = threadIdx.x, i = tid / kMaxK, s = tid % kMaxK;
  int mine = INT_MAX;
  if (i < t.ntok && s < a.k) {
    const int v = a.topk[g * a.topk_stride_h + static_cast<std::int64_t>(t.q0 + slot_query(a, t, g, i)) * a.topk_stride_t +
                         s * a.topk_stride_s];
    if (v >= 0) mine = v;
  }
  ids[tid] = mine;
  if (tid < kMaxIds / 4) out.mask4[tid] = 0u;
  sm90::named_barrier_sync(bar, kMaxIds);
  int f = mine != INT_MAX;
  for (int j = 0; j < tid; ++j) f &= ids[j] != mine;  // same-address reads across the warp: broadcasts
  sm90::named_barrier_sync(bar, kMaxIds);
  ids[tid] = f ? mine : INT_MAX;  // each listed id once
  sm90::named_barrier_sync(bar, kMaxIds);
  if (mine != INT_MAX) {
    int rank = 0;  // distinct ids below mine
    for (int j = 0; j < kMaxIds; ++j) rank += ids[j] < mine;
    if (f) out.uni[rank] = mine;
    atomicOr(&out.mask4[rank >> 2], 1u << (8 * (rank & 3) + i));
  }
  const int nu = sm90::named_barrier_count(bar, kMaxIds, f);  // also publishes uni and mask4
  u_wg[0] = sm90::named_barrier_count(bar, kMaxIds, tid < nu && (tile_mask(out, tid) & 0x0F));
  u_wg[1] = sm90::named_barrier_count(bar, kMaxIds, tid < nu && (tile_mask(out, tid) & 0xF0));
  return nu;
}

// Under kAuto, between the mask launch and the persistent kernel: one CTA turns tile_flags (0 / 1 per item, [Hkv]
// [tile], g-major) in place into the ascending list of the union items, chunk after chunk (a chunk's flags are all
// read, into registers, before the barrier after which any of its positions is written; positions written in a
// chunk lie below its end, and the next chunks read only above it), then writes the list's length to
// work_counter[1] and zeroes the counter work_counter[0]. Deterministic: the order is the items' own.
constexpr int kListThreads = 1024;
constexpr int kListPerThread = 16;  // flags per thread and chunk: 16K items per chunk, 32 chunks at 1M tokens

__global__ void __launch_bounds__(kListThreads) union_list_kernel(std::int32_t* flags, int items, int* counter) {
  __shared__ int warp_incl[kListThreads / 32];
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  pdl_wait();  // the mask launch's flags
  int base = 0;
  for (int c0 = 0; c0 < items; c0 += kListThreads * kListPerThread) {
    const int i0 = c0 + tid * kListPerThread;
    bool f[kListPerThread];
    int mine = 0;
#pragma unroll
    for (int j = 0; j < kListPerThread; ++j) {
      f[j] = i0 + j < items && flags[i0 + j] != 0;
      mine += f[j] ? 1 : 0;
    }
    const int incl = warp_inclusive_sum(mine);  // inclusive prefix over the warp, then over the warps
    if (lane == 31) warp_incl[warp] = incl;
    __syncthreads();  // every flag of the chunk is read (in f) before any position of it is written below
    if (warp == 0) warp_incl[lane] = warp_inclusive_sum(warp_incl[lane]);
    __syncthreads();
    int pos = base + (warp > 0 ? warp_incl[warp - 1] : 0) + incl - mine;
#pragma unroll
    for (int j = 0; j < kListPerThread; ++j)
      if (f[j]) flags[pos++] = i0 + j;
    base += warp_incl[kListThreads / 32 - 1];
    __syncthreads();  // warp_incl is rewritten by the next chunk
  }
  if (tid == 0) {
    counter[0] = 0;
    counter[1] = base;
  }
}

// Persistent: one CTA per SM walks the work items (KV head g, tile), g-major, so that the CTAs at work at one time
// share K/V pools in L2: in order from UnionLaunch::work_counter, or blockIdx.x, + gridDim.x, ... without one.
// The producer warpgroup finds the next union tile, builds its
// union into the free TileBuf (while the consumers still compute the previous tile), loads its Q once the
// consumers are done with the previous Q, and streams K and V of its blocks through the ring, whose position runs
// on across tiles. The consumers take tiles in the same order and write each tile's output while the producer
// loads the next; a CTA per tile would leave the union build, the launch and the output writes unhidden
// (measured on an H100 at 128K clustered: 3.1 of the 26.8 ms of the union kernel with nothing computed).
__global__ void __launch_bounds__(kThreads, 1)
    union_attention_kernel(const UnionLaunch a, const __grid_constant__ CUtensorMap q_map,
                           const __grid_constant__ CUtensorMap k_map, const __grid_constant__ CUtensorMap v_map) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Head& hd = *reinterpret_cast<Head*>(smem_raw);
  unsigned char* smem = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<std::uintptr_t>(smem_raw) + sizeof(Head) + 1023) & ~std::uintptr_t{1023});
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      sm90::mbar_init(&hd.full[s], 1);
      sm90::mbar_init(&hd.empty[s], 8);
    }
    sm90::mbar_init(&hd.q_full[0], 1);
    sm90::mbar_init(&hd.q_full[1], 1);
    sm90::mbar_init(&hd.q_empty, 8);
    for (int i = 0; i < 2; ++i) {
      sm90::mbar_init(&hd.u_full[i], kMaxIds);
      sm90::mbar_init(&hd.u_empty[i], 8);
    }
    sm90::mbar_fence_init();
  }
  __syncthreads();
  pdl_wait();  // the selection and the caches come from earlier kernels of the run
  const int tiles = static_cast<int>(tile_count(a)), items = tiles * a.num_kv_heads;

  if (warp < 4) {  // ---- producer warpgroup ----
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kProducerRegs) : "memory");
    if (tid == 0) {
      sm90::tma_prefetch_map(&q_map);
      sm90::tma_prefetch_map(&k_map);
      sm90::tma_prefetch_map(&v_map);
      if (a.tile_flags != nullptr) hd.listed = a.work_counter[1];  // read by thread 0 alone, below
    }
    int it = 0, k = 0;  // blocks issued (warp 0), tiles handed over
    for (int item = static_cast<int>(blockIdx.x);; item += static_cast<int>(gridDim.x)) {
      // Items in order from a shared counter: over a long launch the CTAs then stay on neighbouring tiles, whose
      // K / V pools they share in L2 (each CTA taking every gridDim-th item, the faster ones drift ahead: at 1M
      // tokens clustered one launch took 7 % longer than 64 launches of 16K tokens).
      if (a.work_counter != nullptr) {  // (the loop's own step is then overwritten)
        if (tid == 0) {
          // Under kAuto the counter runs over union_list_kernel's list of the union items only.
          const int n = atomicAdd(a.work_counter, 1);
          hd.next_item = a.tile_flags == nullptr ? n : n < hd.listed ? a.tile_flags[n] : items;
        }
        sm90::named_barrier_sync(2, kMaxIds);
        item = hd.next_item;
        sm90::named_barrier_sync(2, kMaxIds);  // read by all before thread 0 writes the next one
      }
      Tile tl{};
      const int g = item / tiles;
      if (item < items && !find_tile(a, item % tiles, &tl)) continue;
      TileBuf& tb = hd.buf[k & 1];
      sm90::mbar_wait(&hd.u_empty[k & 1], ((k >> 1) & 1) ^ 1);  // the consumers are done with tile k - 2
      if (item >= items) {
        if (tid == 0) tb.nu = -1;
        sm90::mbar_arrive(&hd.u_full[k & 1]);
        break;
      }
      int u_wg[2];
      const int nu = build_union(a, tl, g, hd.ids, tb, 2, u_wg);
      if (a.tile_flags == nullptr && !takes_union(a, tl.ntok, u_wg[0], u_wg[1])) continue;  // without a mask launch: the rule here
      if (tid == 0) {
        tb.nu = nu;
        tb.b = tl.b;
        tb.i0 = tl.i0;
        tb.ntok = tl.ntok;
        tb.q0 = tl.q0;
        tb.nq = tl.nq;
        tb.g = g;
      }
      if (tid < kTileTokens)
        tb.query[tid] = static_cast<unsigned char>(slot_query(a, tl, g, tid) - (tl.i0 & ~(kGroupTokens - 1)));
      sm90::mbar_arrive(&hd.u_full[k & 1]);
      if (warp == 0) {
        if (lane == 0) {
          sm90::mbar_wait(&hd.q_empty, (k & 1) ^ 1);  // the consumers are done with the previous tile's Q
          for (int w = 0; w < 2; ++w) {
            const int nt = max(0, min(4, tl.ntok - 4 * w));
            sm90::mbar_arrive_expect_tx(&hd.q_full[w], nt * 2 * kG * 128);
            for (int i = 0; i < nt; ++i)
              for (int h = 0; h < 2; ++h)
                sm90::tma_load_3d(smem + kQOff + (2 * w + h) * kQHalf + i * kG * 128, &q_map, &hd.q_full[w], 64 * h,
                                  g * kG, tl.q0 + slot_query(a, tl, g, 4 * w + i));
          }
        }
        const std::int32_t* pt = a.page_table + static_cast<std::int64_t>(tl.b) * a.pt_stride_b;
        for (int base = 0; base < nu; base += 32) {
          const int page_of_lane = base + lane < nu ? pt[tb.uni[base + lane] * a.pt_stride_j] : 0;  // 32 per read
          const int cnt = min(32, nu - base);
          for (int e = 0; e < cnt; ++e, ++it) {
            const int page = __shfl_sync(0xffffffffu, page_of_lane, e);
            const int s = it % kStages;
            if (lane == 0) {
              sm90::mbar_wait(&hd.empty[s], ((it / kStages) & 1) ^ 1);
              unsigned char* st = smem + kKvOff + s * kStageBytes;
              sm90::mbar_arrive_expect_tx(&hd.full[s], kStageBytes);
              for (int h = 0; h < 2; ++h) {
                sm90::tma_load_4d(st + h * kHalf, &k_map, &hd.full[s], 64 * h, 0, g, page);
                sm90::tma_load_4d(st + (2 + h) * kHalf, &v_map, &hd.full[s], 64 * h, 0, g, page);
              }
            }
          }
        }
      }
      ++k;
    }
    return;
  }

  // ---- consumers: warp wq of warpgroup wg holds token 4 wg + wq, rows = its 16 heads (lane / 4 and + 8) ----
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kConsumerRegs) : "memory");
  const int wg = warp / 4 - 1, c = lane % 4;
  const int tok = 4 * wg + warp % 4;
  const int wg_bits = 0xF << (4 * wg);
  const float scale = a.sm_scale * 1.4426950408889634f;  // log2 units
  const std::uint64_t dq0 = sm90::wgmma_desc_sw128(smem + kQOff + 2 * wg * kQHalf);
  const std::uint64_t dq1 = sm90::wgmma_desc_sw128(smem + kQOff + (2 * wg + 1) * kQHalf);
  int it = 0;  // ring position, as the producer counts it
  for (int k = 0;; ++k) {
    const TileBuf& tb = hd.buf[k & 1];
    sm90::mbar_wait(&hd.u_full[k & 1], (k >> 1) & 1);
    const int nu = tb.nu;
    if (nu < 0) break;
    const int g = tb.g, i0 = tb.i0, nq = tb.nq;
    const int query = (i0 & ~(kGroupTokens - 1)) + tb.query[tok];  // request-relative
    const std::int64_t t = tb.q0 + query;
    const int b = tb.b, L = a.seq_lens_k[b * a.seq_stride];
    const bool valid = tok < tb.ntok;
    const int pos = L - nq + query;
    sm90::mbar_wait(&hd.q_full[wg], k & 1);

    float o[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) o[i] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;  // m: raw scores; l: this thread's columns only
    for (int u = 0; u < nu; ++u, ++it) {
      const int s = it % kStages;
      unsigned char* st = smem + kKvOff + s * kStageBytes;
      sm90::mbar_wait(&hd.full[s], (it / kStages) & 1);
      const int j = tb.uni[u], bits = tile_mask(tb, u);
      if (j * 128 + 128 > L) {
        // The request's last page: V rows of keys >= L hold whatever the cache holds (possibly NaN), and P = 0 times
        // NaN would still poison O, so both consumer warpgroups zero them (whole 128-byte rows: the swizzle only
        // permutes 16-byte chunks within a row) and hand them to the async proxy before either one's P·V.
        auto* v16 = reinterpret_cast<uint4*>(st + 2 * kHalf);
        for (int i = max(L - j * 128, 0) * 8 + (tid - 128); i < 128 * 8; i += 256) {
          v16[i] = make_uint4(0, 0, 0, 0);
          v16[kHalf / 16 + i] = make_uint4(0, 0, 0, 0);
        }
        sm90::fence_proxy_async_smem();
        sm90::named_barrier_sync(1, 256);
      }
      if (bits & wg_bits) {  // uniform over the warpgroup
        float acc[64];
        sm90::wgmma_m64n128_k128_bf16(acc, dq0, dq1, sm90::wgmma_desc_sw128(st), sm90::wgmma_desc_sw128(st + kHalf));
        sm90::wgmma_wait<0>();
        sm90::wgmma_fence_regs(acc);

        // Both rows of a thread belong to this warp's token, so what the token may see is uniform over the warp:
        // a block its token did not list contributes nothing (P = 0, no softmax work; the warp still takes part in
        // the warpgroup's P·V), and only the token's own block is masked key by key (tile_softmax.cuh).
        std::uint32_t pa[8][4];  // P as bf16 A fragments of the 8 key slices
        const bool listed = valid && ((bits >> tok) & 1);
        float base0 = 0.f, base1 = 0.f;
        if (listed) {
          mask_keys_after(acc, j * 128, c, pos);
          float b0, b1;
          tile_row_max(acc, b0, b1);
          // New running max; a row that has seen nothing yet keeps -inf and a base of 0, so every exponent below is
          // -inf (2^-inf = 0) and never -inf - -inf. An unchanged max rescales by exactly 1, and a warp whose rows
          // all kept their max skips the rescale of O. The base is the exact running max, so a row's largest P is
          // exactly 1. A base allowed to lag the max by up to 2^8 (O rescaled rarely: 2 % faster at 128K
          // clustered) leaves the largest P inexact in bf16, and on peaked rows that broke design.md's error rule
          // in 1 of 40 runs of scripts/softmax_base_sim.cpp (0.0172 against 0.0166; the exact base: 0 of 40).
          const float n0 = fmaxf(m0, b0), n1 = fmaxf(m1, b1);
          base0 = n0 == -INFINITY ? 0.f : n0 * scale;
          base1 = n1 == -INFINITY ? 0.f : n1 * scale;
          const float al0 = n0 == m0 ? 1.f : fast_exp2(fmaf(m0, scale, -base0));
          const float al1 = n1 == m1 ? 1.f : fast_exp2(fmaf(m1, scale, -base1));
          m0 = n0;
          m1 = n1;
          if (__any_sync(0xffffffffu, al0 != 1.f || al1 != 1.f)) {
            l0 *= al0;
            l1 *= al1;
#pragma unroll
            for (int n = 0; n < 16; ++n) {
              o[4 * n] *= al0;
              o[4 * n + 1] *= al0;
              o[4 * n + 2] *= al1;
              o[4 * n + 3] *= al1;
            }
          }
        }
        // O += P V in two parts of 64 keys: the first part's products run on the tensor pipe while the warp
        // computes the second part's exponents.
        pv_part<0, 8>(listed, acc, scale, base0, base1, l0, l1, pa, o, st);
        pv_part<8, 16>(listed, acc, scale, base0, base1, l0, l1, pa, o, st);
        sm90::wgmma_wait<0>();
        sm90::wgmma_fence_regs(o);
      }
      __syncwarp();
      if (lane == 0) sm90::mbar_arrive(&hd.empty[s]);  // this warp is done with the stage's K and V
    }

    // Done with the tile's Q and union: the producer may load the next Q and build into this buffer.
    __syncwarp();
    if (lane == 0) {
      sm90::mbar_arrive(&hd.q_empty);
      sm90::mbar_arrive(&hd.u_empty[k & 1]);
    }
#pragma unroll
    for (int x = 1; x <= 2; x <<= 1) {
      l0 += __shfl_xor_sync(0xffffffffu, l0, x);
      l1 += __shfl_xor_sync(0xffffffffu, l1, x);
    }
    if (!valid) continue;
    // A block its token did not list, and keys after its position, went in with P = 0: a non-finite row is
    // recomputed over the blocks its token listed once it is written (nonfinite_rows.cuh).
    const bool redo0 = !row_finite<0>(o), redo1 = !row_finite<1>(o);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int h = g * kG + lane / 4 + 8 * half;
      const float l = half ? l1 : l0, m = half ? m1 : m0, inv = l > 0.f ? 1.f / l : 0.f;
      auto* row = static_cast<__nv_bfloat16*>(a.out) + t * a.out_stride_t + h * a.out_stride_h;
#pragma unroll
      for (int n = 0; n < 16; ++n)
        *reinterpret_cast<__nv_bfloat162*>(row + 8 * n + 2 * c) =
            __floats2bfloat162_rn(o[4 * n + 2 * half] * inv, o[4 * n + 2 * half + 1] * inv);
      if (a.lse != nullptr && c == 0)
        a.lse[t * a.lse_stride_t + h * a.lse_stride_h] =
            natural_lse(m * scale, l);
    }
    if (redo0 || redo1) {
      // The tile's union and masks were released above (u_empty): the token's list is read again from topk.
      const HeadCache hc = head_cache(a, g);
      const RowBlocks blocks{a.topk + g * a.topk_stride_h + t * a.topk_stride_t, a.topk_stride_s, a.k,
                             a.page_table + static_cast<std::int64_t>(b) * a.pt_stride_b, a.pt_stride_j, pos, 0, 0};
#pragma unroll 1
      for (int half = 0; half < 2; ++half) {
        if (!(half ? redo1 : redo0)) continue;
        const int h = g * kG + lane / 4 + 8 * half;
        const float l = half ? l1 : l0, m = half ? m1 : m0;
        auto* row = static_cast<__nv_bfloat16*>(a.out) + t * a.out_stride_t + h * a.out_stride_h;
        const auto* q_row = static_cast<const __nv_bfloat16*>(a.q) + t * a.q_stride_t + h * a.q_stride_h;
        redo_nonfinite_row(RowEntries{reinterpret_cast<unsigned char*>(row), 128, 0}, blocks, hc, q_row, scale,
                           m == -INFINITY ? 0.f : m * scale, l > 0.f ? 1.f / l : 0.f, c);
      }
    }
  }
}


}  // namespace

std::int64_t union_tiles(const UnionLaunch& a) { return tile_count(a); }

Status launch_union_list(const UnionLaunch& a) {
  MSA_RETURN_IF_ERROR(check_union_shapes(a, "union-of-blocks attention"));
  if (a.total_q == 0 || a.num_requests == 0) return Status::Ok();
  if (a.tile_flags != nullptr && a.work_counter == nullptr)
    return Status::InvalidArgument("union-of-blocks attention: tile_flags need a work_counter");
  cudaError_t e = cudaSuccess;
  if (a.tile_flags != nullptr) {  // the list of the union items; it also zeroes the counter
    const std::int64_t items = union_tiles(a) * a.num_kv_heads;
    e = launch_pdl(union_list_kernel, dim3(1), dim3(kListThreads), 0, static_cast<cudaStream_t>(a.stream),
                   a.tile_flags, static_cast<int>(items), a.work_counter);
  } else if (a.work_counter != nullptr) {
    e = cudaMemsetAsync(a.work_counter, 0, sizeof(int), static_cast<cudaStream_t>(a.stream));
  }
  if (e == cudaSuccess) e = cudaGetLastError();
  return e == cudaSuccess ? Status::Ok()
                          : Status::CudaError(std::string("union-of-blocks list: ") + cudaGetErrorString(e));
}

Status launch_union_kernel(const UnionLaunch& a) {
  MSA_RETURN_IF_ERROR(check_union_shapes(a, "union-of-blocks attention"));
  if (a.total_q == 0 || a.num_requests == 0) return Status::Ok();
  if (a.reserve_sms < 0) return Status::InvalidArgument("reserve_sms: must be >= 0, got " + std::to_string(a.reserve_sms));
  if (a.max_ctas < 0) return Status::InvalidArgument("max_ctas: must be >= 0, got " + std::to_string(a.max_ctas));
  CUtensorMap q_map, k_map, v_map;
  MSA_RETURN_IF_ERROR(sm90::encode_qkv_maps(a, a.total_q, kG, &q_map, &k_map, &v_map));
  // Persistent: one CTA per SM of the launch's device (kSmemBytes allows no more) but reserve_sms, at most
  // max_ctas, never more CTAs than work items.
  const int sms = detail::cuda_sm_count(a.device);
  int ctas = std::max((sms > 0 ? sms : 132) - a.reserve_sms, 1);
  if (a.max_ctas > 0) ctas = std::min(ctas, a.max_ctas);
  const dim3 grid(static_cast<unsigned>(std::min<std::int64_t>(union_tiles(a) * a.num_kv_heads, ctas)));
  cudaError_t e = cudaFuncSetAttribute(union_attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
  if (e == cudaSuccess) {
    e = launch_pdl(union_attention_kernel, grid, dim3(kThreads), kSmemBytes, static_cast<cudaStream_t>(a.stream), a,
                   q_map, k_map, v_map);
    if (e == cudaSuccess) e = cudaGetLastError();
  }
  return e == cudaSuccess ? Status::Ok()
                          : Status::CudaError(std::string("union-of-blocks attention: ") + cudaGetErrorString(e));
}

Status launch_union_attention(const UnionLaunch& a) {
  MSA_RETURN_IF_ERROR(launch_union_list(a));
  return launch_union_kernel(a);
}

}  // namespace kernels
}  // namespace msa
