// pdl.cuh — programmatic dependent launch (sm_90) for the kernels of one run(): a kernel launched with
// launch_pdl() may be scheduled while the previous kernel on the stream drains, so its launch and prologue overlap
// that tail. Contract: such a kernel calls pdl_wait() before its first access to device memory written by earlier
// work on the stream (pdl_wait returns once that work has completed and its writes are visible; it is a no-op for
// a kernel launched without the attribute), and may call pdl_launch_dependents() to let the next kernel be
// scheduled early in turn.
#ifndef MSA_KERNELS_COMMON_PDL_CUH_
#define MSA_KERNELS_COMMON_PDL_CUH_

#include <cuda_runtime.h>

#include <cstddef>
#include <utility>

namespace msa {
namespace kernels {

__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
__device__ __forceinline__ void pdl_launch_dependents() {
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}

// launch_pdl with thread-block clusters of `cluster` CTAs (the kernel's grid must be a multiple of it).
template <typename... Params, typename... Args>
cudaError_t launch_pdl_clusters(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem,
                                cudaStream_t stream, dim3 cluster, Args&&... args) {
  cudaLaunchAttribute attr[2];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  attr[1].id = cudaLaunchAttributeClusterDimension;
  attr[1].val.clusterDim.x = cluster.x;
  attr[1].val.clusterDim.y = cluster.y;
  attr[1].val.clusterDim.z = cluster.z;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = cluster.x * cluster.y * cluster.z > 1 ? 2 : 1;  // no cluster attribute for single CTAs
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

template <typename... Params, typename... Args>
cudaError_t launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem, cudaStream_t stream,
                       Args&&... args) {
  return launch_pdl_clusters(kernel, grid, block, smem, stream, dim3(1, 1, 1), std::forward<Args>(args)...);
}

}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_COMMON_PDL_CUH_
