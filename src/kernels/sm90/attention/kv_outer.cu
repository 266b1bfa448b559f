// kv_outer.cu — KV-outer sparse prefill attention (any G = Hq / Hkv in 1, 2, 4, 8, 16).
//
// Persistent: one CTA per SM walks the work items of the device k2q schedule (KV head g, block j of request b, a
// range of the queries that selected it) with a static stride (items are ordered head-major, largest first within a
// head: see "L2" below). The producer warpgroup loads K and V of each item's block (TMA, 2 x 32 KiB, 128-byte swizzle)
// into one of two K/V buffers, and the item's queries in tiles of 64 rows = 64 / G tokens x G heads through a
// 4-stage ring that runs on across items (see "Q loads" below), so the next item's metadata, K/V and first Q tiles
// load while the current item's last tiles compute. Two consumer warpgroups take alternate tiles:
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
// Q loads. G >= 8: producer warp 0, lane i % 32 loads token i as one TMA box of G heads x 64 dims per 64-dim half,
// at row G i of the tile. G <= 4: a tile is 32-128 boxes of 128-512 bytes, and the TMA boxes bound the kernel (its
// time tracked the boxes per tile), so the four producer warps gather the 64 rows with 16-byte cp.async instead
// (16 rows per warp, a half-warp per 256-byte row, stored at the rows' 128B-swizzle positions), completing on the
// stage's barrier (cp.async.mbarrier.arrive), and the consumers fence the generic-proxy writes before their wgmma
// reads them. That producer also runs one tile ahead on its loads: the next tile's handles (at an item's last tile
// the next item's row pointer, first token and page) are in flight while it waits for a stage and issues a tile.
// Measured (H200, bench_prefill_attention, 128K random, k2q + attention + combine, alternating runs in one call):
// TMA boxes -> gather by one warp -> by four warps -> + look-ahead: G = 4 42.5 -> 70 -> 39.2-39.4 -> 37.6 ms,
// G = 2 59.3 -> 68 -> 41.9 -> 41.0-41.2, G = 1 101 -> 80 -> 55.4 -> 51.6-51.8. The gather by four warps is slower
// for G = 8 (32.8 -> 35.8 ms) and G = 16 (31.7 -> 35.9): their boxes of 1-2 KiB keep TMA the faster load.
// The partial rows keep their TMA boxes at every G: 16-byte st.global from the staging buffer instead measured
// slower for G <= 4 as well (attention phase G = 4 26.4 -> 27.8-28.2 ms, G = 1 34.3 -> 35.0; H200).
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
#include "kernels/common/warp_mma.cuh"
#include "kernels/sm90/attention/launch.h"
#include "kernels/sm90/attention/nonfinite_rows.cuh"
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
enum Desc { kDescG, kDescJ, kDescCount, kDescQ0, kDescNq, kDescL, kDescPage, kDescWords = 8 };

// The tile shape of a group size G: a token's G heads are G consecutive rows, kTokens tokens per 64-row tile,
// kWarpTokens per consumer warp (a thread's row r0 + 8 h of the warp is head (r0 + 8 h) % G of its token
// (r0 + 8 h) / G), kLaneTokens per producer lane. A stage's handles are written by producer warp 0's first kWriters
// lanes (token i by lane i % 32) and read by lanes 0 .. kWarpTokens - 1 of each consumer warp (token i of the warp by
// lane i): each of those lanes arrives on the stage's barrier itself, so every handle store and load is ordered by
// the barrier in its own thread (racecheck does not follow the order through __syncwarp to another lane's arrive).
template <int G>
struct Tile {
  static_assert(G == 16 || G == 8 || G == 4 || G == 2 || G == 1, "G divides 16");
  static constexpr int kTokens = 64 / G, kWarpTokens = 16 / G, kLaneTokens = (kTokens + 31) / 32;
  static constexpr int kWriters = kTokens < 32 ? kTokens : 32;
  // Q by cp.async gather (see "Q loads"): the producer warpgroup's 4 warps, 16 rows of a tile each.
  static constexpr bool kGather = G <= 4;
  static constexpr int kGatherWarps = 4;
  // q_full's arrivals: the handle writers, plus with the gather one cp.async-completion arrive per producer lane.
  static constexpr int kQFullCount = kWriters + (kGather ? 32 * kGatherWarps : 0);
  // Registers a thread after setmaxnreg (168 at launch): the gather producer keeps 56 for its look-ahead state (with
  // 40 ptxas spills it), so its consumers keep 224.
  static constexpr int kProducerRegs = kGather ? 56 : 40, kConsumerRegs = kGather ? 224 : 232;
  static_assert(sm90::setmaxnreg_fits(kThreads, kThreads, kProducerRegs, kConsumerRegs), "setmaxnreg budgets");
  static constexpr int kBarOff = kHandleOff + kQStages * kTokens * 4;
  static constexpr int kSmemBytes = kBarOff + 12 * 8 + 1024;
  static_assert(kSmemBytes <= 227 * 1024, "one CTA per SM");
};

// Row r's bf16 pair at columns 8 n + 2 c, + 1 of a warp's staging buffer (c: the thread's lane in its quad), laid
// out as the 128B-swizzled box of the output map: 64-dim half n / 8 (2048 bytes apart), 16-byte chunk n % 8 of the
// row's 128 bytes at chunk (n % 8) ^ (r % 8) (conflict-free for the accumulator fragment layout). RowEntries
// {obuf + 128 r, 2048, r % 8} names the same places (nonfinite_rows.cuh). Its terms stay in this order: with the
// row's base summed first, as RowEntries does, ptxas grew the G = 16 tile loop from 944 to 977 instructions
// (cuobjdump); in this order G = 16's loop is unchanged and G = 8's 979 -> 991, within the spread of an A/B.
__device__ __forceinline__ unsigned char* staged_pair(unsigned char* obuf, int r, int n, int c) {
  return obuf + (n / 8) * 2048 + r * 128 + (((n % 8) ^ (r % 8)) * 16) + 4 * c;
}

// The exact path for the rows of a tile that mask keys of its own block (bit h of `masked`: row r0 + 8 h of this
// thread; nonfinite_rows.cuh), after they are staged: a row whose staged entries hold a NaN or infinity has those
// entries recomputed. Out of line, test included, so that the tile loop holds only the call (own-block tiles only).
// A staged word is a bf16 pair: its exponent bits all set is a NaN or infinity, found by a carry into the sign bit.
template <int G>
__device__ __noinline__ void redo_masked_rows(const KvOuterLaunch* a, unsigned char* obuf, int g, int j, int page,
                                              int q0, int hrow0, int hrow1, int pos0, int pos1, int masked,
                                              float base0, float base1, float l0, float l1, float scale) {
  const int lane = threadIdx.x % 32, c = lane % 4;
#pragma unroll 1
  for (int half = 0; half < 2; ++half) {
    if (!((masked >> half) & 1)) continue;
    const int r = lane / 4 + 8 * half;
    std::uint32_t special = 0;
#pragma unroll
    for (int n = 0; n < 16; ++n) {
      const std::uint32_t w = *reinterpret_cast<const std::uint32_t*>(staged_pair(obuf, r, n, c));
      special |= ((w & 0x7F807F80u) + 0x00800080u) & 0x80008000u;
    }
    if (special == 0) continue;
    const HeadCache hc = head_cache(*a, g);
    const float l = half ? l1 : l0;
    const auto* q_row = static_cast<const __nv_bfloat16*>(a->q) +
                        static_cast<std::int64_t>(q0 + ((half ? hrow1 : hrow0) & 0xFFFFFF)) * a->q_stride_t +
                        static_cast<std::int64_t>(g * G + r % G) * a->q_stride_h;
    const RowBlocks blocks{nullptr, 0, 1, nullptr, 0, half ? pos1 : pos0, page, j};
    redo_nonfinite_row(RowEntries{obuf + r * 128, 2048, r % 8}, blocks, hc, q_row, scale, half ? base1 : base0,
                       l > 0.f ? 1.f / l : 0.f, c);
  }
}

template <int G>
__global__ void __launch_bounds__(kThreads, 1)
    kv_outer_kernel(const __grid_constant__ KvOuterLaunch a, const __grid_constant__ CUtensorMap q_map,
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
  std::uint64_t* q_full = bars + 4;                  // [kQStages] kQFullCount arrives (+ TMA bytes for G >= 8)
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
      sm90::mbar_init(&q_full[s], Tile<G>::kQFullCount);
      sm90::mbar_init(&q_empty[s], 4 * kWarpTokens);
    }
    sm90::mbar_fence_init();
  }
  __syncthreads();

  // Item ord of this CTA is items[blockIdx.x + ord * gridDim.x], in K/V buffer ord % 2; Q tiles are numbered across the
  // CTA's items (gt), tile gt in stage gt % kQStages, consumed by warpgroup gt % 2.
  if (warp < 4) {  // ---- producer: warp 0 (TMA, G >= 8) or warps 0-3 (cp.async gather of Q, G <= 4) ----
    // L2 policies (see the file comment): K/V read once per item, Q rows read again by the head's other items.
    const std::uint64_t once = sm90::l2_evict_first_policy(), reused = sm90::l2_evict_last_policy();
    // What a tile needs of its item: head, query count, request, block, handles, first token, page.
    struct ItemRef {
      int g, q_count, b, j;
      const std::int32_t* hp;
      int q0, page;
    };
    // Item ord's descriptor and K/V (one thread): into buffer ord % 2 once its consumers released it.
    auto load_item = [&](int ord, const ItemRef& r) {
      const int buf = ord & 1;
      int* d = descs + buf * kDescWords;
      sm90::mbar_wait(&kv_empty[buf], ((ord >> 1) & 1) ^ 1);
      d[kDescG] = r.g;
      d[kDescJ] = r.j;
      d[kDescCount] = r.q_count;
      d[kDescQ0] = r.q0;
      d[kDescNq] = a.cu_seqlens_q[(r.b + 1) * a.cu_stride] - r.q0;
      d[kDescL] = a.seq_lens_k[r.b * a.seq_stride];
      d[kDescPage] = r.page;
      unsigned char* kv = smem + buf * kKvBytes;
      sm90::mbar_arrive_expect_tx(&kv_full[buf], kKvBytes);
      for (int h = 0; h < 2; ++h) {
        sm90::tma_load_4d_hint(kv + h * kHalf, &k_map, &kv_full[buf], 64 * h, 0, r.g, r.page, once);
        sm90::tma_load_4d_hint(kv + (2 + h) * kHalf, &v_map, &kv_full[buf], 64 * h, 0, r.g, r.page, once);
      }
    };
    // An item's six fields are requested one item ahead, so they are in registers when its turn comes.
    int next[6] = {0, 0, 0, 0, 0, 0};
    auto request = [&](int item) {
      if (item < num_items)
        for (int w = 0; w < 6; ++w) next[w] = a.items[static_cast<std::int64_t>(item) * 6 + w];
    };
    // The requested item's fields and what they point at (its handles from k2q row next[1], query next[2] on).
    auto derive = [&]() {
      ItemRef r;
      r.g = next[0];
      r.q_count = next[3];
      r.b = next[4];
      r.j = next[5];
      r.hp = a.qsplit_indices + static_cast<std::int64_t>(r.g) * a.total_q * a.k +
             a.row_ptr[static_cast<std::int64_t>(r.g) * (a.row_capacity + 1) + next[1]] + next[2];
      r.q0 = a.cu_seqlens_q[r.b * a.cu_stride];
      r.page = a.page_table[static_cast<std::int64_t>(r.b) * a.pt_stride_b + r.j * a.pt_stride_j];
      return r;
    };
    // The handles of tile `tile` of an item (hp_, n_ queries): lane's tokens lane + 32 u, 0 past the item's end.
    auto load_handles = [&](const std::int32_t* hp_, int n_, int tile, int (&h)[kLaneTokens]) {
      const int ntok = min(kTokens, n_ - tile * kTokens);
#pragma unroll
      for (int u = 0; u < kLaneTokens; ++u) {
        const int i = lane + 32 * u;
        h[u] = i < ntok ? hp_[tile * kTokens + i] : 0;
      }
    };
    // A tile's handles into stage s, for the consumers (producer warp 0: token i from lane i % 32).
    auto write_handles = [&](int s, const int (&h)[kLaneTokens]) {
#pragma unroll
      for (int u = 0; u < kLaneTokens; ++u) {
        const int i = lane + 32 * u;
        if (warp == 0 && i < kTokens) stage_handles[s * kTokens + i] = h[u];
      }
    };
    if constexpr (!Tile<G>::kGather) {
      asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(Tile<G>::kProducerRegs) : "memory");
      if (warp != 0) return;
      // All lanes walk the items (the same loads, broadcast); lane 0 alone writes the descriptors, arms the K/V
      // buffers and loads K and V; the Q boxes of a tile are spread over the lanes (token i by lane i % 32).
      int gt = 0;
      request(blockIdx.x);
      for (int ord = 0, item = blockIdx.x; item < num_items; ++ord, item += gridDim.x) {
        const ItemRef it = derive();
        request(item + gridDim.x);
        if (lane == 0) load_item(ord, it);
        const int n_tiles = (it.q_count + kTokens - 1) / kTokens;
        for (int tile = 0; tile < n_tiles; ++tile, ++gt) {
          const int s = gt % kQStages;
          sm90::mbar_wait(&q_empty[s], ((gt / kQStages) & 1) ^ 1);
          const int ntok = min(kTokens, it.q_count - tile * kTokens);
          int hs[kLaneTokens];  // lane's tokens lane + 32 u
          load_handles(it.hp, it.q_count, tile, hs);
          write_handles(s, hs);
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
            const int t = it.q0 + (hs[u] & 0xFFFFFF);
            for (int h = 0; h < 2; ++h)
              sm90::tma_load_3d_hint(stage + h * kQHalf + i * G * 128, &q_map, &q_full[s], 64 * h, it.g * G, t, reused);
          }
        }
      }
    } else {
      asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(Tile<G>::kProducerRegs) : "memory");
      // Warp 0, lane 0 writes the descriptors, arms the K/V buffers and loads K and V; warp 0 writes the stage
      // handles; the four warps gather 16 rows of each tile each.
      // One tile ahead on its loads: while it waits for tile t's stage and issues its Q, tile t + 1's handles (at
      // an item's last tile also the next item's row pointer, q0 and page) are on their way, so the chain item ->
      // row pointer -> handles -> Q addresses is not paid once per tile. An item's six fields are requested one
      // item ahead of that. Every item holds at least one query (k2q), so every item has a tile.
      int item = blockIdx.x;
      if (item >= num_items) return;
      request(item);
      ItemRef cur = derive();
      request(item + gridDim.x);
      int hs[kLaneTokens];  // the current tile's handles: lane's tokens lane + 32 u
      load_handles(cur.hp, cur.q_count, 0, hs);
      for (int ord = 0, tile = 0, gt = 0;; ++gt) {
        if (tile == 0 && warp == 0 && lane == 0) load_item(ord, cur);
        // Look ahead: the next tile of this item, or the first of the next item.
        const bool last = (tile + 1) * kTokens >= cur.q_count;
        const bool more = !last || item + static_cast<int>(gridDim.x) < num_items;
        ItemRef nxt = cur;
        int hs_next[kLaneTokens];
        if (!last) {
          load_handles(cur.hp, cur.q_count, tile + 1, hs_next);
        } else if (more) {
          nxt = derive();
          load_handles(nxt.hp, nxt.q_count, 0, hs_next);
        }

        const int s = gt % kQStages;
        sm90::mbar_wait(&q_empty[s], ((gt / kQStages) & 1) ^ 1);
        const int ntok = min(kTokens, cur.q_count - tile * kTokens);
        write_handles(s, hs);
        unsigned char* stage = smem + kQOff + s * 2 * kQHalf;
        // Chunk id = 32 v + lane of the warp's rows: row id / 16, dims 8 (id % 16) .. + 7, so a half-warp reads
        // one row's 256 contiguous bytes; stored at the row's 128B-swizzle position (chunk (id % 8) ^ (row % 8)
        // of its 64-dim half). Token row / G's handle comes from lane (row / G) % 32, from the same hs slot on
        // every lane of an iteration. Each lane's completion arrive follows its copies; the phase also waits for
        // the handle writers' arrives.
        if (warp == 0 && lane < kWriters) sm90::mbar_arrive(&q_full[s]);
        const auto* qg = static_cast<const __nv_bfloat16*>(a.q) + static_cast<std::int64_t>(cur.g) * G * a.q_stride_h;
        constexpr int kWarpRows = 64 / Tile<G>::kGatherWarps;  // the tile rows this warp gathers
#pragma unroll 1
        for (int v = 0; v < kWarpRows / 2; ++v) {  // two rows per iteration, a half-warp each
          const int row0 = kWarpRows * warp + 2 * v;
          const int row = row0 + lane / 16, i = row / G, ch = lane % 16;
          const int hv = (kLaneTokens == 2 && row0 / G >= 32) ? hs[kLaneTokens - 1] : hs[0];
          const int h = __shfl_sync(0xffffffffu, hv, i % 32);
          if (i < ntok)
            cp_async16_hint(stage + (ch / 8) * kQHalf + row * 128 + (((ch % 8) ^ (row % 8)) * 16),
                            qg + static_cast<std::int64_t>(cur.q0 + (h & 0xFFFFFF)) * a.q_stride_t +
                                static_cast<std::int64_t>(row % G) * a.q_stride_h + ch * 8,
                            reused);
        }
        sm90::mbar_arrive_cp_async(&q_full[s]);
        if (!more) break;
#pragma unroll
        for (int u = 0; u < kLaneTokens; ++u) hs[u] = hs_next[u];
        if (!last) {
          ++tile;
        } else {
          tile = 0;
          ++ord;
          item += gridDim.x;
          cur = nxt;
          request(item + gridDim.x);
        }
      }
    }
    return;
  }

  // ---- consumers: tile rows 16 (warp % 4) + lane / 4 (+ 8) = token (row / G) x head (row % G) ----
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(Tile<G>::kConsumerRegs) : "memory");
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
    int dg = 0, dj = 0, dcount = 0, dq0 = 0, dnq = 0, dL = 0, dpage = 0;
    if (lane == 0) {
      const int* d = descs + buf * kDescWords;
      dg = d[kDescG];
      dj = d[kDescJ];
      dcount = d[kDescCount];
      dq0 = d[kDescQ0];
      dnq = d[kDescNq];
      dL = d[kDescL];
      dpage = d[kDescPage];
    }
    const int g = __shfl_sync(0xffffffffu, dg, 0), j = __shfl_sync(0xffffffffu, dj, 0);
    const int q_count = __shfl_sync(0xffffffffu, dcount, 0), q0 = __shfl_sync(0xffffffffu, dq0, 0);
    const int nq = __shfl_sync(0xffffffffu, dnq, 0), L = __shfl_sync(0xffffffffu, dL, 0);
    const int page = __shfl_sync(0xffffffffu, dpage, 0);
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
      // Gathered rows were written through the generic proxy (cp.async); the S wgmma reads them through the async one.
      if constexpr (Tile<G>::kGather) sm90::fence_proxy_async_smem();
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
      const int pos1 = L - nq + (hrow1 & 0xFFFFFF);
      if constexpr (kWarpTokens == 1)
        mask_keys_after(acc, j * 128, c, pos0);
      else
        mask_keys_after_rows(acc, j * 128, c, pos0, pos1);
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
      sm90::wgmma_fence();
      sm90::wgmma_m64n128k16_bf16_rs_tb_first(o_acc, pa[0], sm90::wgmma_desc_sw128_nmajor(vbuf, kHalf));
#pragma unroll
      for (int kk = 1; kk < 8; ++kk)
        sm90::wgmma_m64n128k16_bf16_rs_tb(o_acc, pa[kk], sm90::wgmma_desc_sw128_nmajor(vbuf + kk * 2048, kHalf));
      sm90::wgmma_commit();
      sm90::wgmma_wait<0>();
      sm90::wgmma_fence_regs(o_acc);
      // Keys after a row's position went in with P = 0: a row that has such keys is tested once staged, and
      // recomputed over the keys it sees if it came out non-finite (redo_masked_rows). Rows of tokens past the
      // item's count (never written) count as seeing the whole block, so they are not tested.
      const auto masks = [&](int pos, int r) { return tok + r / G < q_count && pos < j * 128 + 127; };
      const int masked = (masks(pos0, r0) ? 1 : 0) | (masks(pos1, r0 + 8) ? 2 : 0);

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
          *reinterpret_cast<__nv_bfloat162*>(staged_pair(obuf, r, n, c)) = v;
        }
      }
      if (masked != 0)
        redo_masked_rows<G>(&a, obuf, g, j, page, q0, hrow0, hrow1, pos0, pos1, masked, base0, base1, l0, l1, scale);
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
