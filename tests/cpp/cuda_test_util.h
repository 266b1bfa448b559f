// cuda_test_util.h — helpers of the GPU suites (CUDA builds only): skip without an sm_90 device, device buffers.
#ifndef MSA_TESTS_CUDA_TEST_UTIL_H_
#define MSA_TESTS_CUDA_TEST_UTIL_H_

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "msa/msa.h"

#define MSA_REQUIRE_SM90()                                              \
  do {                                                                  \
    if (!msa::sm90_device_available()) GTEST_SKIP() << "no sm_90 GPU"; \
  } while (0)

namespace msa {
namespace test {

// A device copy of a host vector (at least one element, so empty inputs still get a valid pointer).
template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  explicit DeviceBuffer(const std::vector<T>& host) {
    EXPECT_EQ(cudaMalloc(&ptr, std::max<std::size_t>(host.size(), 1) * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(ptr); }
  void download(std::vector<T>* host) const {
    EXPECT_EQ(cudaMemcpy(host->data(), ptr, host->size() * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  }
};

}  // namespace test
}  // namespace msa

#endif  // MSA_TESTS_CUDA_TEST_UTIL_H_
