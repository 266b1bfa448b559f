// kv_outer.cu — KV-outer sparse prefill attention (any G = Hq / Hkv in 1, 2, 4, 8, 16).
//
// Persistent: one CTA per SM walks the work items of the device k2q schedule (KV head g, block j of request b, a
// range of the queries that selected it) with a static stride (items are ordered head-major, largest first within a
// head: see "L2" below). A producer warp loads K and V of each item's block (lane 0: TMA, 2 x 32 KiB, 128-byte
// swizzle) into one of two K/V buffers, and the item's queries in tiles of 64 rows = 64 / G tokens x G heads (lane
// i % 32 loads token i: one TMA box of G heads x 64 dims per 64-dim half, at row G i of the tile) through a 4-stage
// ring that runs on across items, so the next item's metadata, K/V and first Q tiles load while the current item's
// last tiles compute. Two consumer warpgroups take alternate tiles:
// S = Q·Kᵀ (8 x wgmma m64n128k16, both K-major), a single-tile softmax (the block is the whole tile: keys past the
// request's length or after the query are -inf; row sums in fp32), P rounded to bf16 in registers, O = P·V
// (8 x wgmma with P from registers and V N-major), then O / rowsum (bf16) and the natural-log LSE go to the
// query's split slot. No atomics: every (token, head, slot) has exactly one writer.
//
// Why persistent: with one CTA per item, each item began with a chain of dependent loads (item, row pointer,
// handles, then the K/V and Q TMA) while its SM idled; with items of 32-128 queries (512K-1M tokens in 16K-64K
// chunks) the attention phase streamed its floor bytes at 2.3-2.4 TB/s against 2.9 at 128K (256-query items).
// Measured against that version in one call (H100, bench_prefill_attention, two runs each): attention phase at 1M
// 241-242 -> 224-227 ms (16K chunks) and 228-232 -> 224-229 ms (64K chunks), 512K 108-110 -> 105 ms (16K);
// k2q + attention + combine at 1M 342-344 -> 333 ms and 320-322 -> 315-317 ms; 512K and 128K unchanged (+-1 %).
//
// L2: a token's Q tile of head g is read once per block it selected (16 times), the K/V of an item and its partial
// rows once. The schedule runs the items of one KV head at a time, so the Q rows the SMs gather at once are one
// head's (4 KiB per token: 64 MiB for a 16K-token chunk) rather than all four heads', and the loads say which
// lines to keep: Q evict-last, K/V and the partial stores evict-first. Measured (H100, bench_prefill_attention,
// random, 16K chunks, alternating runs in one call against the largest-first order without hints): attention phase
// at 1M 221.1-221.4 -> 208.2 ms, 512K 104.0 -> 98.2-98.3 ms, k2q + attention + combine at 1M 322.2-322.4 ->
// 308.4-308.6 ms; the head-major order alone gave about half of it (1M attention 214.0-214.1), a Q policy that
// marks only half the lines evict-last the same as all of them. 8K chunks (32 MiB of one head's Q) lose more to
// K/V reloads than the hits gain (1M attention 221.6 ms).
//
// A consumer warp's 16 rows are one token's 16 heads (G = 16) or the G heads of 16 / G tokens (G <= 8): a thread's
// rows r0 and r0 + 8 then belong to different tokens, each with its own position mask, handle and LSE row, and
// lane i < 16 / G stores the warp's token i (two boxes of G rows). Boxes of G < 8 rows are placed at their row's
// offset inside a 1 KiB 128B-swizzle atom: the TMA swizzle follows the shared-memory address bits, as the wgmma
// descriptor's does, so they tile the atom exactly (SM90_Wgmma.SwizzledTmaBoxesOfFewRows checks loads and stores).
//
// Invariants: rows of tokens past the item's query count are computed on stale data and never written; cache rows
// of keys >= L are never read into O (V rows zeroed, scores masked); a K/V buffer is reloaded only after all 8
// consumer warps released it (kv_empty), a Q stage only after its warpgroup's S wgmma read it and its handles were
// read (q_empty).
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "api/device.h"
#include "kernels/common/fast_math.cuh"
#include "kernels/common/pdl.cuh"
#include "kernels/sm90/attention/launch.h"
#include "kernels/sm90/attention/qkv_maps.h"
#include "kernels/sm90/attention/tile_softmax.cuh"
#include "kernels/sm90/common/sm90.cuh"
#include "kernels/sm90/common/tma.h"

namespace msa {
namespace kernels {
namespace {

constexpr int kHalf = 128 * 128;  // bytes of a 64-dim half of the 128-key K or V block
constexpr int kQHalf = 64 * 128;  // bytes of a 64-dim half of a Q tile (64 rows, one consumer warpgroup's)
// Tiles alternate between the two consumer warpgroups (tile i -> warpgroup i % 2), each through its own two
// stages, so the warpgroups drift apart and one's softmax and stores overlap the other's wgmma.
constexpr int kQStages = 4;
constexpr int kThreads = 384;  // warpgroup 0 produces, 1 and 2 consume
constexpr int kOWarpBytes = 16 * 256;
// Shared memory (from a 1024-aligned base): two K/V buffers (K halves, then V halves), Q stages (2 halves each),
// O staging: one 4 KiB buffer per consumer warp (its 16 rows, two 128B-swizzled 64-dim halves), the item
// descriptors of the two K/V buffers and the handles of each Q stage (written by the producer before it arms the
// buffer's or stage's full barrier, whose completion publishes them), then the barriers. 225-226 KiB in all.
constexpr int kKvBytes = 4 * kHalf;
constexpr int kQOff = 2 * kKvBytes, kOOff = kQOff + kQStages * 2 * kQHalf, kDescOff = kOOff + 8 * kOWarpBytes,
              kHandleOff = kDescOff + 2 * 8 * 4;
enum Desc { kDescG, kDescJ, kDescCount, kDescQ0, kDescNq, kDescL, kDescWords = 8 };

// The tile shape of a group size G: a token's G heads are G consecutive rows, kTokens tokens per 64-row tile,
// kWarpTokens per consumer warp (a thread's row r0 + 8 h of the warp is head (r0 + 8 h) % G of its token
// (r0 + 8 h) / G), kLaneTokens per producer lane. A stage's handles are written by the producer's first kWriters
// lanes (token i by lane i % 32) and read by lanes 0 .. kWarpTokens - 1 of each consumer warp (token i of the warp by
// lane i): each of those lanes arrives on the stage's barrier itself, so every handle store and load is ordered by
// the barrier in its own thread (racecheck does not follow the order through __syncwarp to another lane's arrive).
template <int G>
struct Tile {
  static_assert(G == 16 || G == 8 || G == 4 || G == 2 || G == 1, "G divides 16");
  static constexpr int kTokens = 64 / G, kWarpTokens = 16 / G, kLaneTokens = (kTokens + 31) / 32;
  static constexpr int kWriters = kTokens < 32 ? kTokens : 32;
  static constexpr int kBarOff = kHandleOff + kQStages * kTokens * 4;
  static constexpr int kSmemBytes = kBarOff + 12 * 8 + 1024;
  static_assert(kSmemBytes <= 227 * 1024, "one CTA per SM");
};

template <int G>
__global__ void __launch_bounds__(kThreads, 1)
    kv_outer_kernel(const KvOuterLaunch a, const __grid_constant__ CUtensorMap q_map,
                    const __grid_constant__ CUtensorMap k_map, const __grid_constant__ CUtensorMap v_map,
                    const __grid_constant__ CUtensorMap o_map) {
  constexpr int kTokens = Tile<G>::kTokens, kWarpTokens = Tile<G>::kWarpTokens, kLaneTokens = Tile<G>::kLaneTokens,
                kWriters = Tile<G>::kWriters;
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem =
      reinterpret_cast<unsigned char*>((reinterpret_cast<std::uintptr_t>(smem_raw) + 1023) & ~std::uintptr_t{1023});
  auto* bars = reinterpret_cast<std::uint64_t*>(smem + Tile<G>::kBarOff);
  std::uint64_t* kv_full = bars;                     // [2] K/V landed (TMA bytes)
  std::uint64_t* kv_empty = bars + 2;                // [2] one arrive per consumer warp
  std::uint64_t* q_full = bars + 4;                  // [kQStages] one arrive per handle-writing producer lane
  std::uint64_t* q_empty = bars + 4 + kQStages;      // [kQStages] one per handle-reading lane of the consumers
  auto* descs = reinterpret_cast<int*>(smem + kDescOff);          // [2][kDescWords]
  auto* stage_handles = reinterpret_cast<int*>(smem + kHandleOff);  // [kQStages][kTokens]

  pdl_wait();  // the k2q lists and the caches come from earlier kernels of the run
  const int num_items = *a.num_items;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (threadIdx.x == 0) {
    for (int i = 0; i < 2; ++i) {
      sm90::mbar_init(&kv_full[i], 1);
      sm90::mbar_init(&kv_empty[i], 8);
    }
    for (int s = 0; s < kQStages; ++s) {
      sm90::mbar_init(&q_full[s], kWriters);
      sm90::mbar_init(&q_empty[s], 4 * kWarpTokens);
    }
    sm90::mbar_fence_init();
  }
  __syncthreads();

  // Item ord of this CTA is items[blockIdx.x + ord * gridDim.x], in K/V buffer ord % 2; Q tiles are numbered across the
  // CTA's items (gt), tile gt in stage gt % kQStages, consumed by warpgroup gt % 2.
  if (warp < 4) {  // ---- producer: warp 0 ----
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
    if (warp != 0) return;
    // All lanes walk the items (the same loads, broadcast); lane 0 alone writes the descriptors, arms the K/V
    // buffers and loads K and V; the Q boxes of a tile are spread over the lanes (with G = 1 a tile is 64 tokens,
    // 128 boxes of 128 bytes).
    int gt = 0;
    // L2 policies (see the file comment): K/V read once per item, Q rows read again by the head's other items.
    const std::uint64_t once = sm90::l2_evict_first_policy(), reused = sm90::l2_evict_last_policy();
    // An item's six fields are requested one item ahead, so they are in registers when its turn comes.
    int next[6] = {0, 0, 0, 0, 0, 0};
    auto request = [&](int item) {
      if (item < num_items)
        for (int w = 0; w < 6; ++w) next[w] = a.items[static_cast<std::int64_t>(item) * 6 + w];
    };
    request(blockIdx.x);
    for (int ord = 0, item = blockIdx.x; item < num_items; ++ord, item += gridDim.x) {
      const int g = next[0], row = next[1], q_begin = next[2], q_count = next[3], b = next[4], j = next[5];
      request(item + gridDim.x);
      const std::int32_t* handles = a.qsplit_indices + static_cast<std::int64_t>(g) * a.total_q * a.k +
                                    a.row_ptr[static_cast<std::int64_t>(g) * (a.row_capacity + 1) + row] + q_begin;
      const int q0 = a.cu_seqlens_q[b * a.cu_stride];
      const int page = a.page_table[static_cast<std::int64_t>(b) * a.pt_stride_b + j * a.pt_stride_j];
      const int buf = ord & 1;
      if (lane == 0) {
        int* d = descs + buf * kDescWords;
        sm90::mbar_wait(&kv_empty[buf], ((ord >> 1) & 1) ^ 1);
        d[kDescG] = g;
        d[kDescJ] = j;
        d[kDescCount] = q_count;
        d[kDescQ0] = q0;
        d[kDescNq] = a.cu_seqlens_q[(b + 1) * a.cu_stride] - q0;
        d[kDescL] = a.seq_lens_k[b * a.seq_stride];
        unsigned char* kv = smem + buf * kKvBytes;
        sm90::mbar_arrive_expect_tx(&kv_full[buf], kKvBytes);
        for (int h = 0; h < 2; ++h) {
          sm90::tma_load_4d_hint(kv + h * kHalf, &k_map, &kv_full[buf], 64 * h, 0, g, page, once);
          sm90::tma_load_4d_hint(kv + (2 + h) * kHalf, &v_map, &kv_full[buf], 64 * h, 0, g, page, once);
        }
      }
      const int n_tiles = (q_count + kTokens - 1) / kTokens;
      for (int tile = 0; tile < n_tiles; ++tile, ++gt) {
        const int s = gt % kQStages;
        sm90::mbar_wait(&q_empty[s], ((gt / kQStages) & 1) ^ 1);
        const int ntok = min(kTokens, q_count - tile * kTokens);
        int hs[kLaneTokens];  // lane's tokens lane + 32 u
#pragma unroll
        for (int u = 0; u < kLaneTokens; ++u) {
          const int i = lane + 32 * u;
          hs[u] = i < ntok ? handles[tile * kTokens + i] : 0;
          if (i < kTokens) stage_handles[s * kTokens + i] = hs[u];
        }
        // Each writer's arrive publishes its handles; all arrive before any box is issued (the bytes are expected
        // by lane 0's arrive, so the phase cannot complete early).
        if (lane == 0)
          sm90::mbar_arrive_expect_tx(&q_full[s], ntok * 2 * G * 128);
        else if (lane < kWriters)
          sm90::mbar_arrive(&q_full[s]);
        __syncwarp();
        unsigned char* stage = smem + kQOff + s * 2 * kQHalf;
#pragma unroll
        for (int u = 0; u < kLaneTokens; ++u) {
          const int i = lane + 32 * u;
          if (i >= ntok) continue;
          const int t = q0 + (hs[u] & 0xFFFFFF);
          for (int h = 0; h < 2; ++h)
            sm90::tma_load_3d_hint(stage + h * kQHalf + i * G * 128, &q_map, &q_full[s], 64 * h, g * G, t, reused);
        }
      }
    }
    return;
  }

  // ---- consumers: tile rows 16 (warp % 4) + lane / 4 (+ 8) = token (row / G) x head (row % G) ----
  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
  const int wg = warp / 4 - 1, c = lane % 4;
  // A thread's rows are r0 = lane / 4 and r0 + 8 of its warp's 16 (tile rows 16 (warp % 4) + r0, + 8), heads r0 % G
  // and (r0 + 8) % G of the warp's tokens r0 / G and (r0 + 8) / G.
  const float scale = a.sm_scale * 1.4426950408889634f;  // log2 units
  const std::uint64_t store_once = sm90::l2_evict_first_policy();  // partials: read once, by the combine
  int gt = 0;
  for (int ord = 0, item = blockIdx.x; item < num_items; ++ord, item += gridDim.x) {
    const int buf = ord & 1;
    sm90::mbar_wait(&kv_full[buf], (ord >> 1) & 1);
    // Lane 0 of each warp reads the descriptor and is also the lane that later releases the buffer, so the reads are
    // ordered before the release in its own thread (the stage handles below follow the same rule per lane).
    int dg = 0, dj = 0, dcount = 0, dq0 = 0, dnq = 0, dL = 0;
    if (lane == 0) {
      const int* d = descs + buf * kDescWords;
      dg = d[kDescG];
      dj = d[kDescJ];
      dcount = d[kDescCount];
      dq0 = d[kDescQ0];
      dnq = d[kDescNq];
      dL = d[kDescL];
    }
    const int g = __shfl_sync(0xffffffffu, dg, 0), j = __shfl_sync(0xffffffffu, dj, 0);
    const int q_count = __shfl_sync(0xffffffffu, dcount, 0), q0 = __shfl_sync(0xffffffffu, dq0, 0);
    const int nq = __shfl_sync(0xffffffffu, dnq, 0), L = __shfl_sync(0xffffffffu, dL, 0);
    unsigned char* kv = smem + buf * kKvBytes;
    unsigned char* vbuf = kv + 2 * kHalf;
    const std::uint64_t desc_k0 = sm90::wgmma_desc_sw128(kv), desc_k1 = sm90::wgmma_desc_sw128(kv + kHalf);
    if (j * 128 + 128 > L) {
      // Last page of the request: the rows of keys >= L hold whatever the cache holds there (possibly NaN), and
      // P = 0 times NaN would still poison O, so the consumers zero those V rows (whole 128-byte rows: the swizzle
      // only permutes 16-byte chunks within a row) and hand them to the async proxy before the first P V.
      const int first = max(L - j * 128, 0);
      auto* v16 = reinterpret_cast<uint4*>(vbuf);
      for (int i = first * 8 + (threadIdx.x - 128); i < 128 * 8; i += 256) {
        v16[i] = make_uint4(0, 0, 0, 0);               // half 0: row i / 8
        v16[kHalf / 16 + i] = make_uint4(0, 0, 0, 0);  // half 1
      }
      sm90::fence_proxy_async_smem();
      sm90::named_barrier_sync(1, 256);
    }

    const int n_tiles = (q_count + kTokens - 1) / kTokens;
    for (int tile = (gt + wg) % 2; tile < n_tiles; tile += 2) {  // tiles gt + tile with (gt + tile) % 2 == wg
      const int s = (gt + tile) % kQStages;
      const unsigned char* stage = smem + kQOff + s * 2 * kQHalf;
      sm90::mbar_wait(&q_full[s], ((gt + tile) / kQStages) & 1);
      // This warp's rows are the G heads of kWarpTokens tokens of the tile, from its token tok on (token i is valid
      // if tok + i < q_count). Lane i < kWarpTokens reads token i's handle (and stores that token below); a thread
      // takes its rows' handles from those lanes.
      const int tok = tile * kTokens + (warp % 4) * kWarpTokens;
      const int r0 = lane / 4;
      const int hstore = lane < kWarpTokens ? stage_handles[s * kTokens + (warp % 4) * kWarpTokens + lane] : 0;
      const int hrow0 = __shfl_sync(0xffffffffu, hstore, r0 / G);
      const int hrow1 = __shfl_sync(0xffffffffu, hstore, (r0 + 8) / G);
      float acc[64];
      sm90::wgmma_m64n128_k128_bf16(acc, sm90::wgmma_desc_sw128(stage), sm90::wgmma_desc_sw128(stage + kQHalf),
                                    desc_k0, desc_k1);
      sm90::wgmma_wait<0>();
      sm90::wgmma_fence_regs(acc);
      __syncwarp();
      if (lane < kWarpTokens) sm90::mbar_arrive(&q_empty[s]);  // Q and this lane's handle of the stage are read

      // Single-tile softmax over this thread's two rows (tile_softmax.cuh): the own block masked key by key, raw
      // max, exponents by one FFMA each.
      const int pos0 = L - nq + (hrow0 & 0xFFFFFF);  // the token of row r0 (and with G = 16 of r0 + 8)
      if constexpr (kWarpTokens == 1)
        mask_keys_after(acc, j * 128, c, pos0);
      else
        mask_keys_after_rows(acc, j * 128, c, pos0, L - nq + (hrow1 & 0xFFFFFF));
      float m0, m1;
      tile_row_max(acc, m0, m1);
      m0 *= scale;  // log2 units from here on
      m1 *= scale;
      const float base0 = m0 == -INFINITY ? 0.f : m0, base1 = m1 == -INFINITY ? 0.f : m1;
      float l0 = 0.f, l1 = 0.f;
      std::uint32_t pa[8][4];  // P as bf16 A fragments of the 8 key slices
      tile_exp_to_p(acc, scale, base0, base1, l0, l1, pa);
#pragma unroll
      for (int o = 1; o <= 2; o <<= 1) {
        l0 += __shfl_xor_sync(0xffffffffu, l0, o);
        l1 += __shfl_xor_sync(0xffffffffu, l1, o);
      }

      // O = P V: slice kk = keys 16 kk .. 16 kk + 15 of V (N-major: 64-dim halves 16 KiB apart, 2 KiB per slice).
      float o_acc[64];
#pragma unroll
      for (int i = 0; i < 64; ++i) o_acc[i] = 0.f;
      sm90::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < 8; ++kk)
        sm90::wgmma_m64n128k16_bf16_rs_tb(o_acc, pa[kk], sm90::wgmma_desc_sw128_nmajor(vbuf + kk * 2048, kHalf));
      sm90::wgmma_commit();
      sm90::wgmma_wait<0>();
      sm90::wgmma_fence_regs(o_acc);

      // O / l (bf16) of the token's 16 rows into the warp's staging buffer, laid out as the 128B-swizzled box of
      // the output map (row r's 16-byte chunk j at chunk j ^ (r % 8): conflict-free for this fragment layout), then
      // one TMA store per 64-dim half: 4 KiB of contiguous partial rows instead of 32 scattered 4-byte stores.
      unsigned char* obuf = smem + kOOff + (warp - 4) * kOWarpBytes;
      sm90::bulk_wait_read<0>();  // the previous tile's stores (each storing lane's own group) have read the buffer
      __syncwarp();
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int r = lane / 4 + 8 * half;
        const float l = half ? l1 : l0, inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
        for (int n = 0; n < 16; ++n) {
          const __nv_bfloat162 v = __floats2bfloat162_rn(o_acc[4 * n + 2 * half] * inv, o_acc[4 * n + 2 * half + 1] * inv);
          *reinterpret_cast<__nv_bfloat162*>(obuf + (n / 8) * 2048 + r * 128 + (((n % 8) ^ (r % 8)) * 16) + 4 * c) = v;
        }
      }
      sm90::fence_proxy_async_smem();
      __syncwarp();
      // A token's row z of the partials is slot * T + t; its G rows are rows G i .. G i + G - 1 of the staging
      // buffer (token i of the warp), one box per 64-dim half.
      auto partial_row = [&](int handle) {
        return static_cast<std::int64_t>(handle >> 24) * a.total_q + q0 + (handle & 0xFFFFFF);
      };
      if (c == 0) {  // row r0 + 8 h: head (r0 + 8 h) % G of token (r0 + 8 h) / G
#pragma unroll
        for (int h = 0; h < 2; ++h)
          if (tok + (r0 + 8 * h) / G < q_count)
            a.partial_lse[partial_row(h ? hrow1 : hrow0) * a.num_q_heads + g * G + (r0 + 8 * h) % G] =
                natural_lse(h ? m1 : m0, h ? l1 : l0);
      }
      if (lane < kWarpTokens && tok + lane < q_count) {
        const int z = static_cast<int>(partial_row(hstore));
        sm90::tma_store_3d_hint(&o_map, obuf + lane * G * 128, 0, g * G, z, store_once);
        sm90::tma_store_3d_hint(&o_map, obuf + 2048 + lane * G * 128, 64, g * G, z, store_once);
        sm90::bulk_commit();
      }
    }
    gt += n_tiles;
    // Every wgmma of this warp on the item's K/V buffer has been waited for: release the buffer to the producer.
    __syncwarp();
    if (lane == 0) sm90::mbar_arrive(&kv_empty[buf]);
  }
  sm90::bulk_wait<0>();  // every storing lane's stores complete before the CTA's shared memory goes away
}

template <int G>
Status launch_group(const KvOuterLaunch& a) {
  CUtensorMap q_map, k_map, v_map;
  MSA_RETURN_IF_ERROR(sm90::encode_qkv_maps(a, a.total_q, G, &q_map, &k_map, &v_map));
  // Partial outputs [k, T, Hq, 128] as rows of (slot, token) x Hq heads x 128 dims; a box is one token's G heads.
  CUtensorMap o_map;
  const sm90::TmaTensor3d o{a.partial_out,
                             {128, static_cast<std::uint64_t>(a.num_q_heads), static_cast<std::uint64_t>(a.k * a.total_q)},
                             {128, static_cast<std::int64_t>(a.num_q_heads) * 128},
                             {64, G, 1}};
  MSA_RETURN_IF_ERROR(sm90::encode_tma_sw128(o, "partial_out", &o_map));
  constexpr int smem = Tile<G>::kSmemBytes;
  cudaError_t e = cudaFuncSetAttribute(kv_outer_kernel<G>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (e == cudaSuccess) {
    // One CTA per SM (the kernel holds an SM's shared memory); never more CTAs than items can exist.
    const int sms = detail::cuda_sm_count(a.device);
    const std::int64_t grid = std::min<std::int64_t>(a.item_capacity, sms > 0 ? sms : 132);
    e = launch_pdl(kv_outer_kernel<G>, dim3(static_cast<unsigned>(grid)), dim3(kThreads), smem,
                   static_cast<cudaStream_t>(a.stream), a, q_map, k_map, v_map, o_map);
    if (e == cudaSuccess) e = cudaGetLastError();
  }
  return e == cudaSuccess ? Status::Ok() : Status::CudaError(std::string("KV-outer attention: ") + cudaGetErrorString(e));
}

}  // namespace

Status launch_kv_outer_attention(const KvOuterLaunch& a) {
  const int G = a.num_kv_heads >= 1 && a.num_q_heads % a.num_kv_heads == 0 ? a.num_q_heads / a.num_kv_heads : 0;
  if (G != 16 && G != 8 && G != 4 && G != 2 && G != 1)
    return Status::NotImplemented("KV-outer attention: Hq / Hkv must be 1, 2, 4, 8 or 16");
  if (a.item_capacity == 0 || a.total_q == 0) return Status::Ok();
  switch (G) {
    case 16: return launch_group<16>(a);
    case 8: return launch_group<8>(a);
    case 4: return launch_group<4>(a);
    case 2: return launch_group<2>(a);
    default: return launch_group<1>(a);
  }
}

}  // namespace kernels
}  // namespace msa
