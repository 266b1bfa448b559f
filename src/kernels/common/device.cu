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

int cuda_sm_count(int index) {
  int sms = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, index) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return sms;
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

Status require_sm90(int index, const std::string& op) {
  const int major = cuda_device_major(index);
  if (major == 9) return Status::Ok();
  if (major < 0) return Status::NotImplemented(op + ": no CUDA device " + std::to_string(index) + " is visible");
  return Status::NotImplemented(op + ": the CUDA kernels need an sm_90 (Hopper) GPU; device " +
                                std::to_string(index) + " has compute capability " + std::to_string(major) + ".x");
}

Status cuda_copy_to_host(void* host, const void* device_ptr, std::size_t bytes, int index) {
  if (bytes == 0) return Status::Ok();
  MSA_RETURN_IF_ERROR(cuda_status(cudaSetDevice(index), "cudaSetDevice"));
  return cuda_status(cudaMemcpy(host, device_ptr, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy (plan metadata)");
}

Status DeviceBuffer::upload(const void* host, std::size_t bytes, int index) {
  reset();
  if (bytes == 0) return Status::Ok();
  MSA_RETURN_IF_ERROR(cuda_status(cudaSetDevice(index), "cudaSetDevice"));
  MSA_RETURN_IF_ERROR(cuda_status(cudaMalloc(&ptr_, bytes), "cudaMalloc (plan metadata)"));
  index_ = index;
  const Status st = cuda_status(cudaMemcpy(ptr_, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy (plan metadata)");
  if (!st.ok()) reset();
  return st;
}

void DeviceBuffer::reset() {
  if (ptr_ == nullptr) return;
  int current = 0;
  const bool switch_device = cudaGetDevice(&current) == cudaSuccess && current != index_;
  if (switch_device) cudaSetDevice(index_);
  cudaFree(ptr_);
  if (switch_device) cudaSetDevice(current);
  ptr_ = nullptr;
}

Status SideStream::create(int index, int events) {
  reset();
  int current = 0;
  MSA_RETURN_IF_ERROR(cuda_status(cudaGetDevice(&current), "cudaGetDevice"));
  MSA_RETURN_IF_ERROR(cuda_status(cudaSetDevice(index), "cudaSetDevice"));
  index_ = index;
  cudaStream_t s = nullptr;
  Status st = cuda_status(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate (plan)");
  if (st.ok()) stream_ = s;
  for (int e = 0; st.ok() && e < events; ++e) {
    cudaEvent_t ev = nullptr;
    st = cuda_status(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), "cudaEventCreate (plan)");
    if (st.ok()) events_.push_back(ev);
  }
  cudaSetDevice(current);  // the caller's device, as it was
  if (!st.ok()) reset();
  return st;
}

void SideStream::reset() {
  if (stream_ == nullptr && events_.empty()) return;
  int current = 0;
  const bool switch_device = cudaGetDevice(&current) == cudaSuccess && current != index_;
  if (switch_device) cudaSetDevice(index_);
  for (void* ev : events_) cudaEventDestroy(static_cast<cudaEvent_t>(ev));
  events_.clear();
  if (stream_ != nullptr) cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
  stream_ = nullptr;
  if (switch_device) cudaSetDevice(current);
}

Status SideStream::record(int e, void* stream) const {
  return cuda_status(cudaEventRecord(static_cast<cudaEvent_t>(events_[e]), static_cast<cudaStream_t>(stream)),
                     "cudaEventRecord (side stream)");
}

Status SideStream::wait(void* stream, int e) const {
  return cuda_status(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), static_cast<cudaEvent_t>(events_[e]), 0),
                     "cudaStreamWaitEvent (side stream)");
}

}  // namespace detail
}  // namespace msa
