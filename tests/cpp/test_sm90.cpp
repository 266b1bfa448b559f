// test_sm90.cpp — GPU suites; each test skips when no sm_90 device is visible (CI has none).
#include <gtest/gtest.h>

#include "api/device.h"
#include "msa/msa.h"

namespace {

#define MSA_REQUIRE_SM90()                                              \
  do {                                                                  \
    if (!msa::sm90_device_available()) GTEST_SKIP() << "no sm_90 GPU"; \
  } while (0)

TEST(SM90_Runtime, ProbeKernelRunsSm90aCode) {
  MSA_REQUIRE_SM90();
  int arch = 0;
  const msa::Status st = msa::detail::cuda_probe_arch(0, &arch);
  ASSERT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(arch, 900);
}

TEST(SM90_Runtime, MalformedCudaDescriptorsAreRejected) {
  MSA_REQUIRE_SM90();
  // A malformed CUDA call is rejected on the host with InvalidArgument before any launch.
  msa::IndexPrefillArgs a;
  a.index_q = msa::make_tensor(reinterpret_cast<void*>(256), msa::DType::kBF16, {4, 4, 64}, msa::Device::cuda());
  EXPECT_EQ(msa::index_select_prefill(a).code(), msa::StatusCode::kInvalidArgument);
}

}  // namespace
