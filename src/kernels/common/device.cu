// device.cu — device.h for CUDA builds: device queries and a probe kernel that proves sm_90a code runs.
#include <cuda_runtime.h>

#include "api/device.h"

namespace msa {
namespace detail {
namespace {

__global__ void probe_arch_kernel(int* arch) {
#ifdef __CUDA_ARCH__
  *arch = __CUDA_ARCH__;
#endif
}

Status cuda_status(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::Ok();
  return Status::CudaError(std::string(what) + ": " + cudaGetErrorString(e));
}

}  // namespace

bool cuda_built() { return true; }

int cuda_device_major(int index) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device / no driver" error
    return -1;
  }
  if (index < 0 || index >= count) return -1;
  int major = -1;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, index) != cudaSuccess) return -1;
  return major;
}

Status cuda_probe_arch(int index, int* arch) {
  if (cuda_device_major(index) < 0) return Status::NotImplemented("no CUDA device " + std::to_string(index));
  MSA_RETURN_IF_ERROR(cuda_status(cudaSetDevice(index), "cudaSetDevice"));
  int* d_arch = nullptr;
  MSA_RETURN_IF_ERROR(cuda_status(cudaMalloc(&d_arch, sizeof(int)), "cudaMalloc"));
  MSA_RETURN_IF_ERROR(cuda_status(cudaMemset(d_arch, 0, sizeof(int)), "cudaMemset"));
  probe_arch_kernel<<<1, 1>>>(d_arch);
  Status st = cuda_status(cudaGetLastError(), "probe kernel launch");
  if (st.ok()) st = cuda_status(cudaMemcpy(arch, d_arch, sizeof(int), cudaMemcpyDeviceToHost), "cudaMemcpy");
  cudaFree(d_arch);
  return st;
}

Status cuda_path_missing(const std::string& op) {
  return Status::NotImplemented(op + ": the CUDA kernel for this operation is not available yet; pass CPU descriptors");
}

}  // namespace detail
}  // namespace msa
