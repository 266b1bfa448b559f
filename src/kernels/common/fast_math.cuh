// fast_math.cuh — 2^x as the hardware computes it: one MUFU.EX2 (ex2.approx.ftz.f32). exp2f() wraps the same
// instruction in a compare and two predicated multiplies per call so that results below 2^-126 come out as
// denormals instead of 0; a softmax weight that small changes nothing (the sums it enters are >= 1), so the hot
// loops use this. -inf gives 0, NaN stays NaN; for results >= 2^-126 it equals exp2f bit for bit.
#ifndef MSA_KERNELS_COMMON_FAST_MATH_CUH_
#define MSA_KERNELS_COMMON_FAST_MATH_CUH_

namespace msa {
namespace kernels {

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_COMMON_FAST_MATH_CUH_
