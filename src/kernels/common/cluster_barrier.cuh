// cluster_barrier.cuh — the thread-block-cluster barrier phases (sm_90): arrive without ordering (a CTA only says it
// runs), arrive with release semantics (its stores to other CTAs' shared memory are done), and wait (acquire). Used
// by the fused decode attention (kernels/decode/decode_attention.cu) and by tools/synccheck_cluster_repro.cu, which
// reproduces that kernel's barrier pattern.
//
// The .aligned forms need the whole warp converged at the instruction, which the compiler does not know of an asm
// statement: each starts with __syncwarp().
#ifndef MSA_KERNELS_COMMON_CLUSTER_BARRIER_CUH_
#define MSA_KERNELS_COMMON_CLUSTER_BARRIER_CUH_

#include <cuda_runtime.h>

namespace msa {
namespace kernels {

__device__ __forceinline__ void cluster_arrive_relaxed() {
  __syncwarp();
  asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void cluster_arrive_release() {
  __syncwarp();
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() {
  __syncwarp();
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}

}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_COMMON_CLUSTER_BARRIER_CUH_
