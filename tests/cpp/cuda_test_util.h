// cuda_test_util.h — helpers of the GPU suites (CUDA builds only): skip without an sm_90 device, device buffers.
#ifndef MSA_TESTS_CUDA_TEST_UTIL_H_
#define MSA_TESTS_CUDA_TEST_UTIL_H_

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "kernels/combine/launch.h"
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

// The combine launch for contiguous partials [S, T, Hq, 128] bf16 / [S, T, Hq], counts [T, Hkv] and outputs
// [T, Hq, 128] bf16 / [T, Hq], all on device 0's default stream.
inline kernels::CombineLaunch contiguous_combine(void* partial_out, float* partial_lse, std::int32_t* split_counts,
                                                 void* out, float* lse, std::int64_t T, int Hq, int Hkv, int S) {
  kernels::CombineLaunch c{};
  c.partial_out = partial_out;
  c.po_stride_s = T * Hq * 128;
  c.po_stride_t = static_cast<std::int64_t>(Hq) * 128;
  c.po_stride_h = 128;
  c.partial_lse = partial_lse;
  c.pl_stride_s = T * Hq;
  c.pl_stride_t = Hq;
  c.pl_stride_h = 1;
  c.split_counts = split_counts;
  c.sc_stride_t = Hkv;
  c.sc_stride_g = 1;
  c.out = out;
  c.out_stride_t = static_cast<std::int64_t>(Hq) * 128;
  c.out_stride_h = 128;
  c.lse = lse;
  c.lse_stride_t = Hq;
  c.lse_stride_h = 1;
  c.total_q = T;
  c.num_q_heads = Hq;
  c.group = Hq / Hkv;
  c.num_splits = S;
  return c;
}

}  // namespace test
}  // namespace msa

#endif  // MSA_TESTS_CUDA_TEST_UTIL_H_
