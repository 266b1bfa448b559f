// warp_scan.cuh — prefix sums over the 32 lanes of a warp, for the compactions of msa's kernels.
#ifndef MSA_KERNELS_COMMON_WARP_SCAN_CUH_
#define MSA_KERNELS_COMMON_WARP_SCAN_CUH_

namespace msa {
namespace kernels {

// Inclusive prefix sum of v over lanes 0 .. lane (all 32 lanes must call it).
__device__ __forceinline__ int warp_inclusive_sum(int v) {
  const int lane = static_cast<int>(threadIdx.x % 32);
#pragma unroll
  for (int o = 1; o < 32; o *= 2) {
    const int y = __shfl_up_sync(0xffffffffu, v, o);
    v += lane >= o ? y : 0;
  }
  return v;
}

}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_COMMON_WARP_SCAN_CUH_
