// union_blocks.cu — query-outer "union of blocks" sparse prefill attention (G = 16).
//
// One CTA per (tile of 8 consecutive query tokens of one request, KV head g). The CTA reads the tile's 8 selection
// lists and builds their union U (ascending unique block ids) with, per block of U, a bit mask of the tokens that
// listed it. A producer warpgroup (one thread issues, its warp reads page ids) loads Q of the 8 tokens x 16 heads
// once and streams K and V of every block of U through a 3-stage ring (TMA, 128-byte swizzle). Consumer warpgroup w
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
// choice (PrefillSchedule::kAuto) is union_mask_kernel's, on the same grid: it writes the decision to tile_flags and
// takes the union tiles' rows out of the selection the KV-outer chain reads (kRowElsewhere).
//
// Invariants: G = 16, k <= 16; rows of tokens past the tile's count are computed on stale data and never written;
// V rows of keys >= L are zeroed in shared memory before P·V (the cache may hold NaN there); every consumer warp
// arrives on a stage's empty barrier once per block of U, whether or not its warpgroup computed on it.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <string>

#include "kernels/common/pdl.cuh"
#include "kernels/k2q/launch.h"
#include "kernels/sm90/attention/launch.h"
#include "kernels/sm90/attention/qkv_maps.h"
#include "kernels/sm90/common/sm90.cuh"

namespace msa {
namespace kernels {
namespace {

constexpr int kG = 16, kTileTokens = 8, kMaxK = 16;
constexpr int kMaxIds = kTileTokens * kMaxK;  // 128 listed ids per tile at most
constexpr int kHalf = 128 * 128;              // bytes of a 64-dim half of a 128-key K or V block
constexpr int kQHalf = 64 * 128;              // bytes of a 64-dim half of a warpgroup's 64-row Q tile
constexpr int kStages = 3;  // K + V ring, 64 KiB per stage (H100, 128K: clustered 27.2-27.7 -> 26.9-27.1 ms over 2)
constexpr int kStageBytes = 4 * kHalf;
constexpr int kThreads = 384;  // warpgroup 0 produces, 1 and 2 consume
// Shared memory: a head at the (16-byte aligned) base with the union scratch (listed ids, union ids, token masks as
// ints, first-occurrence flags as bytes) and the barriers, then from the next 1024-byte boundary Q
// [warpgroup][half] and the K/V ring (K halves, then V halves). Three stages fit only so: 32 KiB of Q + 192 KiB of
// ring + the head + at most 1023 bytes of alignment slack is 232127 of the 232448 bytes a CTA may have.
constexpr int kBarOff = 3 * kMaxIds * 4 + kMaxIds;  // 8-byte aligned
constexpr int kHeadBytes = kBarOff + (2 * kStages + 2) * 8;
constexpr int kQOff = 0, kKvOff = 4 * kQHalf;
constexpr int kSmemBytes = kHeadBytes + 1023 + kKvOff + kStages * kStageBytes;
static_assert(kSmemBytes <= 232448, "union-of-blocks shared memory exceeds 227 KiB");

// The union scratch in shared memory.
struct UnionScratch {
  int* ids;              // [kMaxIds] listed ids (INT_MAX: none)
  int* uni;              // [|U|] ascending unique ids
  int* mask;             // [|U|] bit i: token i of the tile listed uni[u]
  unsigned char* first;  // [kMaxIds] 1 where an id is listed for the first time
};
__device__ __forceinline__ UnionScratch union_scratch(unsigned char* base) {
  int* w = reinterpret_cast<int*>(base);
  return UnionScratch{w, w + kMaxIds, w + 2 * kMaxIds, base + 3 * kMaxIds * 4};
}

// A tile: 8 consecutive query tokens [i0, i0 + ntok) of request b (tile index -> request by the cu_seqlens walk).
struct Tile {
  int b, i0, ntok, q0, nq;
};
__device__ __forceinline__ bool find_tile(const UnionLaunch& a, Tile* t) {
  int tile = static_cast<int>(blockIdx.x);
  for (int b = 0; b < a.num_requests; ++b) {
    const int q0 = a.cu_seqlens_q[b * a.cu_stride], nq = a.cu_seqlens_q[(b + 1) * a.cu_stride] - q0;
    const int tiles = (nq + kTileTokens - 1) / kTileTokens;
    if (tile < tiles) {
      *t = Tile{b, tile * kTileTokens, min(kTileTokens, nq - tile * kTileTokens), q0, nq};
      return true;
    }
    tile -= tiles;
  }
  return false;
}

// Builds the tile's union for KV head g with threads 0 .. 127 holding one (token, slot) entry each; every thread of
// the CTA must call it (it contains barriers). Returns |U| and, in u_wg, how many blocks of U each warpgroup's 4
// tokens listed. Whether the tile takes this schedule: the measured rule, sum of u_wg <= budget per warpgroup
// with tokens (the same inputs give the same answer in both kernels).
__device__ __forceinline__ int build_union(const UnionLaunch& a, const Tile& t, int g, const UnionScratch& x,
                                           int (&u_wg)[2]) {
  const int tid = threadIdx.x;
  int mine = INT_MAX;
  if (tid < kMaxIds) {
    const int i = tid / kMaxK, s = tid % kMaxK;
    if (i < t.ntok && s < a.k) {
      const int v = a.topk[g * a.topk_stride_h + static_cast<std::int64_t>(t.q0 + t.i0 + i) * a.topk_stride_t +
                           s * a.topk_stride_s];
      if (v >= 0) mine = v;
    }
    x.ids[tid] = mine;
    x.mask[tid] = 0;
  }
  __syncthreads();
  if (tid < kMaxIds) {
    int f = mine != INT_MAX;
    for (int j = 0; j < tid; ++j) f &= x.ids[j] != mine;  // same-address reads across the warp: broadcasts
    x.first[tid] = f;
  }
  __syncthreads();
  if (tid < kMaxIds && mine != INT_MAX) {
    int rank = 0;  // distinct ids below mine
    for (int j = 0; j < kMaxIds; ++j) rank += x.first[j] & (x.ids[j] < mine);
    if (x.first[tid]) x.uni[rank] = mine;
    atomicOr(&x.mask[rank], 1 << (tid / kMaxK));
  }
  const int nu = __syncthreads_count(tid < kMaxIds && x.first[tid]);  // also publishes uni and mask
  u_wg[0] = __syncthreads_count(tid < nu && (x.mask[tid] & 0x0F));
  u_wg[1] = __syncthreads_count(tid < nu && (x.mask[tid] & 0xF0));
  return nu;
}

__device__ __forceinline__ bool takes_union(const UnionLaunch& a, const Tile& t, const int (&u_wg)[2]) {
  return u_wg[0] + u_wg[1] <= a.union_budget * ((t.ntok + 3) / 4);
}

// Before the KV-outer chain: one 128-thread CTA per (tile, KV head) copies the tile's topk rows into
// masked_topk ([Hkv, T, k] contiguous); the rows of tiles that take the union schedule become (kRowElsewhere,
// -1, ...), so k2q lists nothing for them and gives them split count -1, which the combine leaves alone: their
// out / LSE rows belong to union_attention_kernel.
// It also writes the decision to tile_flags (one int per CTA of the shared grid) for union_attention_kernel.
__global__ void __launch_bounds__(kMaxIds) union_mask_kernel(const UnionLaunch a) {
  __shared__ __align__(16) unsigned char scratch[kBarOff];
  pdl_wait();
  int* flag = a.tile_flags + blockIdx.y * gridDim.x + blockIdx.x;
  Tile t;
  if (!find_tile(a, &t)) {
    if (threadIdx.x == 0) *flag = 0;
    return;
  }
  const int g = static_cast<int>(blockIdx.y);
  const UnionScratch x = union_scratch(scratch);
  int u_wg[2];
  build_union(a, t, g, x, u_wg);
  const bool drop = takes_union(a, t, u_wg);
  if (threadIdx.x == 0) *flag = drop;
  const int i = threadIdx.x / kMaxK, s = threadIdx.x % kMaxK;
  if (i < t.ntok && s < a.k) {
    const std::int64_t tok = t.q0 + t.i0 + i;
    a.masked_topk[(g * a.total_q + tok) * a.k + s] =
        drop ? (s == 0 ? kRowElsewhere : -1) : a.topk[g * a.topk_stride_h + tok * a.topk_stride_t + s * a.topk_stride_s];
  }
}

__global__ void __launch_bounds__(kThreads, 1)
    union_attention_kernel(const UnionLaunch a, const __grid_constant__ CUtensorMap q_map,
                           const __grid_constant__ CUtensorMap k_map, const __grid_constant__ CUtensorMap v_map) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* smem = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<std::uintptr_t>(smem_raw) + kHeadBytes + 1023) & ~std::uintptr_t{1023});
  const UnionScratch x = union_scratch(smem_raw);
  const int* uni = x.uni;
  const int* mask = x.mask;
  auto* full = reinterpret_cast<std::uint64_t*>(smem_raw + kBarOff);  // stage landed (TMA bytes)
  std::uint64_t* empty = full + kStages;                         // stage consumed (one arrive per consumer warp)
  std::uint64_t* q_full = empty + kStages;                       // [2] a warpgroup's Q landed

  pdl_wait();  // the selection and the caches come from earlier kernels of the run
  // A tile the mask launch gave to the KV-outer chain leaves at once (most of the grid, on random selections).
  if (a.tile_flags != nullptr && a.tile_flags[blockIdx.y * gridDim.x + blockIdx.x] == 0) return;
  Tile tl;
  if (!find_tile(a, &tl)) return;
  const int g = static_cast<int>(blockIdx.y);
  const int b = tl.b, i0 = tl.i0, ntok = tl.ntok, q0 = tl.q0, nq = tl.nq;
  const int L = a.seq_lens_k[b * a.seq_stride];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      sm90::mbar_init(&full[s], 1);
      sm90::mbar_init(&empty[s], 8);
    }
    sm90::mbar_init(&q_full[0], 1);
    sm90::mbar_init(&q_full[1], 1);
    sm90::mbar_fence_init();
  }
  int u_wg[2];
  const int nu = build_union(a, tl, g, x, u_wg);  // its barriers also publish the barrier inits
  if (a.tile_flags == nullptr && !takes_union(a, tl, u_wg)) return;  // without a mask launch: the rule here

  if (warp < 4) {  // ---- producer warpgroup: Q once, then K and V of each block of U ----
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
    if (warp != 0) return;
    if (lane == 0) {
      sm90::tma_prefetch_map(&q_map);
      sm90::tma_prefetch_map(&k_map);
      sm90::tma_prefetch_map(&v_map);
      for (int w = 0; w < 2; ++w) {
        const int nt = max(0, min(4, ntok - 4 * w));
        sm90::mbar_arrive_expect_tx(&q_full[w], nt * 2 * kG * 128);
        for (int i = 0; i < nt; ++i)
          for (int h = 0; h < 2; ++h)
            sm90::tma_load_3d(smem + kQOff + (2 * w + h) * kQHalf + i * kG * 128, &q_map, &q_full[w], 64 * h, g * kG,
                              q0 + i0 + 4 * w + i);
      }
    }
    const std::int32_t* pt = a.page_table + static_cast<std::int64_t>(b) * a.pt_stride_b;
    for (int base = 0; base < nu; base += 32) {
      const int page_of_lane = base + lane < nu ? pt[uni[base + lane] * a.pt_stride_j] : 0;  // 32 ids per read
      const int cnt = min(32, nu - base);
      for (int e = 0; e < cnt; ++e) {
        const int page = __shfl_sync(0xffffffffu, page_of_lane, e);
        const int u = base + e, s = u % kStages;
        if (lane == 0) {
          sm90::mbar_wait(&empty[s], ((u / kStages) & 1) ^ 1);
          unsigned char* st = smem + kKvOff + s * kStageBytes;
          sm90::mbar_arrive_expect_tx(&full[s], kStageBytes);
          for (int h = 0; h < 2; ++h) {
            sm90::tma_load_4d(st + h * kHalf, &k_map, &full[s], 64 * h, 0, g, page);
            sm90::tma_load_4d(st + (2 + h) * kHalf, &v_map, &full[s], 64 * h, 0, g, page);
          }
        }
      }
    }
    return;
  }

  // ---- consumers: warp wq of warpgroup wg holds token 4 wg + wq, rows = its 16 heads (lane / 4 and + 8) ----
  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
  const int wg = warp / 4 - 1, c = lane % 4;
  const int tok = 4 * wg + warp % 4;
  const bool valid = tok < ntok;
  const int pos = L - nq + i0 + tok;
  const int wg_bits = 0xF << (4 * wg);
  const float scale = a.sm_scale * 1.4426950408889634f;  // log2 units
  const std::uint64_t dq0 = sm90::wgmma_desc_sw128(smem + kQOff + 2 * wg * kQHalf);
  const std::uint64_t dq1 = sm90::wgmma_desc_sw128(smem + kQOff + (2 * wg + 1) * kQHalf);
  sm90::mbar_wait(&q_full[wg], 0);

  float o[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) o[i] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;  // m: raw scores; l: this thread's columns only
  for (int u = 0; u < nu; ++u) {
    const int s = u % kStages;
    unsigned char* st = smem + kKvOff + s * kStageBytes;
    sm90::mbar_wait(&full[s], (u / kStages) & 1);
    const int j = uni[u], bits = mask[u];
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

      // Both rows of a thread (acc[4n], acc[4n+1] of row r0; acc[4n+2], acc[4n+3] of r1) belong to this warp's
      // token, so what the token may see is uniform over the warp: a block its token did not list contributes
      // nothing (P = 0, no softmax work; the warp still takes part in the warpgroup's P·V), a block wholly at or
      // before its position needs no per-key test, and only the token's own block (keys after its position; keys
      // >= L lie after it too, as pos < L) is masked key by key. Scores stay raw (unscaled) and each exponent is
      // one FFMA, 2^(s·scale − m·scale): the scale is > 0 (validated), so the raw max is the scaled max.
      std::uint32_t pa[8][4];  // P as bf16 A fragments of the 8 key slices
      if (valid && ((bits >> tok) & 1)) {
        if (j * 128 + 127 > pos) {
#pragma unroll
          for (int n = 0; n < 16; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e)
              if (j * 128 + 8 * n + 2 * c + (e & 1) > pos) acc[4 * n + e] = -INFINITY;
        }
        float b0 = -INFINITY, b1 = -INFINITY;
#pragma unroll
        for (int n = 0; n < 16; ++n) {
          b0 = fmaxf(b0, fmaxf(acc[4 * n], acc[4 * n + 1]));
          b1 = fmaxf(b1, fmaxf(acc[4 * n + 2], acc[4 * n + 3]));
        }
#pragma unroll
        for (int x = 1; x <= 2; x <<= 1) {
          b0 = fmaxf(b0, __shfl_xor_sync(0xffffffffu, b0, x));
          b1 = fmaxf(b1, __shfl_xor_sync(0xffffffffu, b1, x));
        }
        // New running max; a row that has seen nothing yet keeps -inf and a base of 0, so every exponent below is
        // -inf (2^-inf = 0) and never -inf - -inf. An unchanged max rescales by exactly 1, and a warp whose rows
        // all kept their max skips the rescale of O.
        const float n0 = fmaxf(m0, b0), n1 = fmaxf(m1, b1);
        const float base0 = n0 == -INFINITY ? 0.f : n0 * scale, base1 = n1 == -INFINITY ? 0.f : n1 * scale;
        const float al0 = n0 == m0 ? 1.f : exp2f(fmaf(m0, scale, -base0));
        const float al1 = n1 == m1 ? 1.f : exp2f(fmaf(m1, scale, -base1));
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
#pragma unroll
        for (int n = 0; n < 16; ++n) {  // sums of the fp32 values (exact softmax mass), P·V on their bf16 rounding
          const float e0 = exp2f(fmaf(acc[4 * n], scale, -base0)), e1 = exp2f(fmaf(acc[4 * n + 1], scale, -base0));
          const float e2 = exp2f(fmaf(acc[4 * n + 2], scale, -base1)), e3 = exp2f(fmaf(acc[4 * n + 3], scale, -base1));
          l0 += e0 + e1;
          l1 += e2 + e3;
          const __nv_bfloat162 p0 = __floats2bfloat162_rn(e0, e1), p1 = __floats2bfloat162_rn(e2, e3);
          pa[n / 2][(n % 2) * 2 + 0] = *reinterpret_cast<const std::uint32_t*>(&p0);
          pa[n / 2][(n % 2) * 2 + 1] = *reinterpret_cast<const std::uint32_t*>(&p1);
        }
      } else {
#pragma unroll
        for (int kk = 0; kk < 8; ++kk) pa[kk][0] = pa[kk][1] = pa[kk][2] = pa[kk][3] = 0u;
      }
      // O += P V: slice kk = keys 16 kk .. 16 kk + 15 of V (N-major: 64-dim halves 16 KiB apart, 2 KiB per slice).
      sm90::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < 8; ++kk)
        sm90::wgmma_m64n128k16_bf16_rs_tb(o, pa[kk], sm90::wgmma_desc_sw128_nmajor(st + 2 * kHalf + kk * 2048, kHalf));
      sm90::wgmma_commit();
      sm90::wgmma_wait<0>();
      sm90::wgmma_fence_regs(o);
    }
    __syncwarp();
    if (lane == 0) sm90::mbar_arrive(&empty[s]);  // this warp is done with the stage's K and V
  }

#pragma unroll
  for (int x = 1; x <= 2; x <<= 1) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, x);
    l1 += __shfl_xor_sync(0xffffffffu, l1, x);
  }
  if (!valid) return;
  const std::int64_t t = q0 + i0 + tok;
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
      a.lse[t * a.lse_stride_t + h * a.lse_stride_h] = l > 0.f ? (m * scale + log2f(l)) * 0.6931471805599453f : -INFINITY;
  }
}


}  // namespace

std::int64_t union_tiles(const UnionLaunch& a) { return (a.total_q + kTileTokens - 1) / kTileTokens + a.num_requests; }

namespace {

Status check_union_launch(const UnionLaunch& a) {
  if (a.num_kv_heads < 1 || a.num_q_heads != kG * a.num_kv_heads)
    return Status::NotImplemented("union-of-blocks attention: Hq / Hkv must be 16 in this version");
  if (a.k < 1 || a.k > kMaxK)
    return Status::NotImplemented("union-of-blocks attention: k must be in [1, 16], got " + std::to_string(a.k));
  return Status::Ok();
}

}  // namespace

Status launch_union_mask(const UnionLaunch& a) {
  MSA_RETURN_IF_ERROR(check_union_launch(a));
  if (a.total_q == 0 || a.num_requests == 0) return Status::Ok();
  cudaError_t e = launch_pdl(union_mask_kernel, dim3(static_cast<unsigned>(union_tiles(a)), static_cast<unsigned>(a.num_kv_heads)),
                             dim3(kMaxIds), 0, static_cast<cudaStream_t>(a.stream), a);
  if (e == cudaSuccess) e = cudaGetLastError();
  return e == cudaSuccess ? Status::Ok() : Status::CudaError(std::string("union-of-blocks mask: ") + cudaGetErrorString(e));
}

Status launch_union_attention(const UnionLaunch& a) {
  MSA_RETURN_IF_ERROR(check_union_launch(a));
  if (a.total_q == 0 || a.num_requests == 0) return Status::Ok();
  CUtensorMap q_map, k_map, v_map;
  MSA_RETURN_IF_ERROR(sm90::encode_qkv_maps(a, a.total_q, kG, &q_map, &k_map, &v_map));
  const dim3 grid(static_cast<unsigned>(union_tiles(a)), static_cast<unsigned>(a.num_kv_heads));
  cudaError_t e = cudaFuncSetAttribute(union_attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
  if (e == cudaSuccess) {
    e = launch_pdl(union_attention_kernel, grid, dim3(kThreads), kSmemBytes, static_cast<cudaStream_t>(a.stream), a,
                   q_map, k_map, v_map);
    if (e == cudaSuccess) e = cudaGetLastError();
  }
  return e == cudaSuccess ? Status::Ok()
                          : Status::CudaError(std::string("union-of-blocks attention: ") + cudaGetErrorString(e));
}

}  // namespace kernels
}  // namespace msa
