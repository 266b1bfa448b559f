// fast_math.cuh — 2^x as the hardware computes it: one MUFU.EX2 (ex2.approx.ftz.f32). exp2f() wraps the same
// instruction in a compare and two predicated multiplies per call so that results below 2^-126 come out as
// denormals instead of 0; a softmax weight that small changes nothing (the sums it enters are >= 1), so the hot
// loops use this. -inf gives 0, NaN stays NaN; for results >= 2^-126 it equals exp2f bit for bit. Also the
// natural-log LSE every attention kernel writes from its row statistics.
#ifndef MSA_KERNELS_COMMON_FAST_MATH_CUH_
#define MSA_KERNELS_COMMON_FAST_MATH_CUH_

#include <cmath>

namespace msa {
namespace kernels {

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// The natural-log LSE of a softmax row from its max m (log2 units) and its sum l of 2^(s - m); -inf for a row that
// saw no key (l = 0).
__device__ __forceinline__ float natural_lse(float m_log2, float l) {
  return l > 0.f ? (m_log2 + log2f(l)) * 0.6931471805599453f : -INFINITY;
}

}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_COMMON_FAST_MATH_CUH_
