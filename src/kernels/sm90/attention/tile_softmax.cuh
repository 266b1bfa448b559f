// tile_softmax.cuh — softmax steps on a warp's share of a 64 x 128 wgmma score tile, shared by the KV-outer and
// union-of-blocks kernels. Thread (lane, c = lane % 4) holds columns 8 n + 2 c (+ 1) of rows r0 (acc[4n], acc[4n+1])
// and r1 (acc[4n+2], acc[4n+3]); with G = 16 a warp's rows are one token's 16 heads, so a key test is uniform over
// the warp (with G <= 8, KV-outer only, they are 16 / G tokens' G heads: r0 and r1 of different tokens).
// Scores stay raw (unscaled); exponents are 2^(s·scale − base) by one FFMA and one ex2 (scale > 0, validated, so
// the raw max is the scaled max).
#ifndef MSA_KERNELS_SM90_ATTENTION_TILE_SOFTMAX_CUH_
#define MSA_KERNELS_SM90_ATTENTION_TILE_SOFTMAX_CUH_

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "kernels/common/fast_math.cuh"

namespace msa {
namespace kernels {

// Keys first + 0 .. 127 after a row's token position become -inf: pos0 for row r0, pos1 for r1 (different tokens
// when a warp's 16 rows are 16 / G tokens x G heads, G <= 8). Only a token's own block needs it (keys >= L lie
// after the position too, as pos < L); a block wholly at or before both positions is left alone without a per-key
// test.
__device__ __forceinline__ void mask_keys_after_rows(float (&acc)[64], int first, int c, int pos0, int pos1) {
  if (first + 127 > min(pos0, pos1)) {
#pragma unroll
    for (int n = 0; n < 16; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        if (first + 8 * n + 2 * c + (e & 1) > (e < 2 ? pos0 : pos1)) acc[4 * n + e] = -INFINITY;
  }
}
// Both rows are one token's (at position pos).
__device__ __forceinline__ void mask_keys_after(float (&acc)[64], int first, int c, int pos) {
  mask_keys_after_rows(acc, first, c, pos, pos);
}

// The raw max of rows r0 (m0) and r1 (m1) over the tile's 128 columns (the quad's four threads combined).
__device__ __forceinline__ void tile_row_max(const float (&acc)[64], float& m0, float& m1) {
  m0 = -INFINITY;
  m1 = -INFINITY;
#pragma unroll
  for (int n = 0; n < 16; ++n) {
    m0 = fmaxf(m0, fmaxf(acc[4 * n], acc[4 * n + 1]));
    m1 = fmaxf(m1, fmaxf(acc[4 * n + 2], acc[4 * n + 3]));
  }
#pragma unroll
  for (int x = 1; x <= 2; x <<= 1) {
    m0 = fmaxf(m0, __shfl_xor_sync(0xffffffffu, m0, x));
    m1 = fmaxf(m1, __shfl_xor_sync(0xffffffffu, m1, x));
  }
}

// P = 2^(s·scale − base) of both rows, added to this thread's row sums l0 / l1 in fp32 (the exact softmax mass) and
// packed as bf16 A fragments of the 8 key slices for P·V; tile_exp_to_p_range does the column groups [N0, N1) only
// (key slices N0 / 2 .. N1 / 2 - 1).
template <int N0, int N1>
__device__ __forceinline__ void tile_exp_to_p_range(const float (&acc)[64], float scale, float base0, float base1,
                                                    float& l0, float& l1, std::uint32_t (&pa)[8][4]) {
#pragma unroll
  for (int n = N0; n < N1; ++n) {
    const float e0 = fast_exp2(fmaf(acc[4 * n], scale, -base0)), e1 = fast_exp2(fmaf(acc[4 * n + 1], scale, -base0));
    const float e2 = fast_exp2(fmaf(acc[4 * n + 2], scale, -base1)), e3 = fast_exp2(fmaf(acc[4 * n + 3], scale, -base1));
    l0 += e0 + e1;
    l1 += e2 + e3;
    const __nv_bfloat162 p0 = __floats2bfloat162_rn(e0, e1), p1 = __floats2bfloat162_rn(e2, e3);
    pa[n / 2][(n % 2) * 2 + 0] = *reinterpret_cast<const std::uint32_t*>(&p0);
    pa[n / 2][(n % 2) * 2 + 1] = *reinterpret_cast<const std::uint32_t*>(&p1);
  }
}
__device__ __forceinline__ void tile_exp_to_p(const float (&acc)[64], float scale, float base0, float base1, float& l0,
                                              float& l1, std::uint32_t (&pa)[8][4]) {
  tile_exp_to_p_range<0, 16>(acc, scale, base0, base1, l0, l1, pa);
}

}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_SM90_ATTENTION_TILE_SOFTMAX_CUH_
