// decode_common.cuh — what the split (decode_attention.cu) and rows (decode_rows.cu) decode kernels share: the
// block geometry, where a packed query token sits (request, KV length, bottom-right position), and the load of one
// K or V block into padded shared memory.
#ifndef MSA_KERNELS_DECODE_DECODE_COMMON_CUH_
#define MSA_KERNELS_DECODE_DECODE_COMMON_CUH_

#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/common/fast_math.cuh"
#include "kernels/common/search.cuh"
#include "kernels/common/warp_mma.cuh"
#include "kernels/decode/launch.h"
#include "kernels/sm90/common/sm90.cuh"

namespace msa {
namespace kernels {

// A block is 128 keys x 128 dims; shared-memory rows are padded to 136 elements (272 B), which keeps the
// mma.sync fragment loads and ldmatrix conflict-free.
constexpr int kKeys = 128, kDim = 128, kPad = 136;

// Where a kernel that finishes its rows itself (no partials, no combine) writes them: out [T, Hq, 128] bf16 and,
// unless null, the natural-log LSE [T, Hq].
struct DecodeOut {
  void* out;
  std::int64_t out_stride_t, out_stride_h;
  float* lse;
  std::int64_t lse_stride_t, lse_stride_h;
};

struct QueryPlace {
  int request, kv_len, position;
};

// Token t: request b of Q queries each (cu_seqlens_q == nullptr) or of the varlen batch cu_seqlens_q.
__device__ __forceinline__ QueryPlace locate_query(const DecodeAttentionLaunch& a, std::int64_t t) {
  int b, i, nq;  // request, query index in it, its query count
  if (a.cu_seqlens_q == nullptr) {
    b = static_cast<int>(t / a.queries_per_request);
    i = static_cast<int>(t % a.queries_per_request);
    nq = a.queries_per_request;
  } else {
    b = last_at_most(a.cu_seqlens_q, a.cu_stride, a.num_requests, t);
    i = static_cast<int>(t - a.cu_seqlens_q[b * a.cu_stride]);
    nq = a.cu_seqlens_q[(b + 1) * a.cu_stride] - a.cu_seqlens_q[b * a.cu_stride];
  }
  const int L = a.seq_lens_k[b * a.seq_stride];
  return {b, L, L - nq + i};
}

// S tiles of mma.sync m16n8k16 accumulators: sc[nt] holds keys key0 + 8 nt + 2 c (+1) of rows r (elements 0, 1)
// and r + 8 (2, 3), c = lane % 4. Scales them to log2 units, masks keys past the request's length L or after the
// query position (-inf), and returns each row's max over the whole quad (every lane of the warp takes part).
template <int NT>
__device__ __forceinline__ void mask_scale_rowmax(float (&sc)[NT][4], int key0, int L, int pos, float scale_log2,
                                                  float* m0, float* m1) {
  const int c = threadIdx.x % 4;
  float a = -INFINITY, b = -INFINITY;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int key = key0 + nt * 8 + 2 * c + (e & 1);
      sc[nt][e] = key < L && key <= pos ? sc[nt][e] * scale_log2 : -INFINITY;
      if (e < 2) a = fmaxf(a, sc[nt][e]); else b = fmaxf(b, sc[nt][e]);
    }
#pragma unroll
  for (int o = 1; o <= 2; o <<= 1) {
    a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, o));
    b = fmaxf(b, __shfl_xor_sync(0xffffffffu, b, o));
  }
  *m0 = a;
  *m1 = b;
}

// P = exp2(S - base) in place (rows r: base0, r + 8: base1) and each row's sum of the fp32 values over the quad.
template <int NT>
__device__ __forceinline__ void exp2_rowsum(float (&sc)[NT][4], float base0, float base1, float* l0, float* l1) {
  float a = 0.f, b = 0.f;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float p = fast_exp2(sc[nt][e] - (e < 2 ? base0 : base1));
      sc[nt][e] = p;
      if (e < 2) a += p; else b += p;
    }
#pragma unroll
  for (int o = 1; o <= 2; o <<= 1) {
    a += __shfl_xor_sync(0xffffffffu, a, o);
    b += __shfl_xor_sync(0xffffffffu, b, o);
  }
  *l0 = a;
  *l1 = b;
}

// P of 16 keys as the mma.sync A fragment, rounded to bf16: p0 and p1 are the S tiles of keys key0 .. key0 + 7 and
// key0 + 8 .. key0 + 15 after exp2_rowsum (the accumulator layout is the A-fragment layout).
__device__ __forceinline__ uint4 p_fragment(const float (&p0)[4], const float (&p1)[4]) {
  return make_uint4(pack_bf16(p0[0], p0[1]), pack_bf16(p0[2], p0[3]), pack_bf16(p1[0], p1[1]), pack_bf16(p1[2], p1[3]));
}

// out += P · V over 16 keys key0 .. key0 + 15 and dims dim0 .. dim0 + 8 NT - 1 of the block in vs ([kKeys][kPad]),
// pa being P's A fragment (p_fragment); B[key][dim] = V[key][dim] by transposed ldmatrix, two 8-dim tiles per load.
template <int NT>
__device__ __forceinline__ void pv_16keys(float (&out)[NT][4], const uint4& pa, const __nv_bfloat16* vs, int key0,
                                          int dim0) {
  const std::uint32_t a[4] = {pa.x, pa.y, pa.z, pa.w};
  // This lane addresses row lane % 8 of matrix m: keys + 8 (m % 2), dims + 8 (m / 2).
  const int lane = threadIdx.x % 32, m = lane / 8;
  const __nv_bfloat16* vrow = vs + (key0 + (m % 2) * 8 + lane % 8) * kPad + dim0 + (m / 2) * 8;
#pragma unroll
  for (int nt = 0; nt < NT; nt += 2) {
    std::uint32_t bv[4];
    ldmatrix_x4_trans(bv, vrow + nt * 8);
    mma_bf16(out[nt], a, bv[0], bv[1]);
    mma_bf16(out[nt + 1], a, bv[2], bv[3]);
  }
}

// The block's rows [0, rows_valid) from src (row stride src_stride_t) into dst [kKeys][kPad] by cp.async, spread
// over kThreads threads; rows past rows_valid (keys after the token's position: the tail of the last page may hold
// anything, and keys the token does not see may hold NaN or inf, which P = 0 would still carry into O) are zeroed
// instead. The caller commits the group.
// The lines enter L2 marked evict-first: a decode step reads its K / V blocks once, and a model runs its other
// layers before the next step of this one, so nothing of them should stay. This also keeps benchmarks that replay
// one step honest: with normal priority the step's 4 MB of K / V (1 x 1M, M3 shapes) outlived the evict-first
// index-K stream in L2 until the next replay, which then read them from L2 — 0.4-0.8 us of the 1 x 1M step
// (H100, msa bench, alternating runs in three calls) that a real decode does not get.
template <int kThreads>
__device__ __forceinline__ void load_block_rows(__nv_bfloat16* dst, const __nv_bfloat16* src, std::int64_t src_stride_t,
                                                int rows_valid) {
  const std::uint64_t policy = sm90::l2_evict_first_policy();
  for (int chunk = threadIdx.x; chunk < kKeys * kDim / 8; chunk += kThreads) {
    const int row = chunk / (kDim / 8), col = (chunk % (kDim / 8)) * 8;
    if (row < rows_valid)
      cp_async16_hint(dst + row * kPad + col, src + row * src_stride_t + col, policy);
    else
      *reinterpret_cast<uint4*>(dst + row * kPad + col) = make_uint4(0, 0, 0, 0);
  }
}

}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_DECODE_DECODE_COMMON_CUH_
