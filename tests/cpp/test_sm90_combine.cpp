// test_sm90_combine.cpp — the CUDA combine against the CPU implementation on fresh random partials: bf16 and fp32
// partials, counts from 0 to S, non-finite partial LSEs, NaN in every slot past a row's count (never read), a
// strided LSE output; outputs poisoned before the run.
#include <cuda_runtime.h>

#include <cmath>
#include <random>

#include "cuda_test_util.h"
#include "test_util.h"

namespace msa {
namespace test {
namespace {

void check_combine(bool fp32_partials, std::uint64_t seed) {
  SCOPED_TRACE(seed_note(seed));
  const std::int64_t S = 16, T = 37, Hq = 16, Hkv = 2, G = Hq / Hkv, D = 128;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> val(-2.f, 2.f), lse(-6.f, 6.f);
  std::vector<std::int32_t> counts(static_cast<std::size_t>(T * Hkv));
  for (std::int64_t i = 0; i < T * Hkv; ++i) counts[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(rng() % (S + 1));
  counts[0] = 0;
  counts[1] = static_cast<std::int32_t>(S);
  std::vector<float> po32(static_cast<std::size_t>(S * T * Hq * D)), pl(static_cast<std::size_t>(S * T * Hq));
  for (std::int64_t s = 0; s < S; ++s)
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t h = 0; h < Hq; ++h) {
        const bool used = s < counts[static_cast<std::size_t>(t * Hkv + h / G)];
        const std::size_t r = static_cast<std::size_t>((s * T + t) * Hq + h);
        float l = used ? lse(rng) : NAN;
        if (used && rng() % 11 == 0) l = (rng() % 3 == 0) ? NAN : (rng() % 2 ? -INFINITY : INFINITY);
        pl[r] = l;
        for (std::int64_t d = 0; d < D; ++d) po32[r * D + static_cast<std::size_t>(d)] = used ? val(rng) : NAN;
      }
  std::vector<std::uint16_t> po16(po32.size());
  for (std::size_t i = 0; i < po32.size(); ++i) po16[i] = testing::to_bf16(po32[i]);
  const DType pdt = fp32_partials ? DType::kFP32 : DType::kBF16;
  void* po_host = fp32_partials ? static_cast<void*>(po32.data()) : static_cast<void*>(po16.data());

  // CPU reference.
  std::vector<std::uint16_t> out_ref(static_cast<std::size_t>(T * Hq * D));
  std::vector<float> lse_ref(static_cast<std::size_t>(T * Hq * 2));  // strided: every other float
  CombineArgs c;
  c.partial_out = make_tensor(po_host, pdt, {S, T, Hq, D});
  c.partial_lse = make_tensor(pl.data(), DType::kFP32, {S, T, Hq});
  c.split_counts = make_tensor(counts.data(), DType::kInt32, {T, Hkv});
  c.out = make_tensor(out_ref.data(), DType::kBF16, {T, Hq, D});
  c.lse = make_strided_tensor(lse_ref.data(), DType::kFP32, {T, Hq}, {2 * Hq, 2});
  ASSERT_TRUE(combine(c).ok());

  // GPU.
  DeviceBuffer<std::uint16_t> d_po16(fp32_partials ? std::vector<std::uint16_t>{} : po16);
  DeviceBuffer<float> d_po32(fp32_partials ? po32 : std::vector<float>{}), d_pl(pl),
      d_lse(std::vector<float>(lse_ref.size(), 12345.f));
  DeviceBuffer<std::int32_t> d_counts(counts);
  DeviceBuffer<std::uint16_t> d_out(std::vector<std::uint16_t>(out_ref.size(), 0x7fc1));  // NaN poison
  const Device dev = Device::cuda(0);
  CombineArgs g;
  g.partial_out = make_tensor(fp32_partials ? static_cast<void*>(d_po32.ptr) : static_cast<void*>(d_po16.ptr), pdt,
                              {S, T, Hq, D}, dev);
  g.partial_lse = make_tensor(d_pl.ptr, DType::kFP32, {S, T, Hq}, dev);
  g.split_counts = make_tensor(d_counts.ptr, DType::kInt32, {T, Hkv}, dev);
  g.out = make_tensor(d_out.ptr, DType::kBF16, {T, Hq, D}, dev);
  g.lse = make_strided_tensor(d_lse.ptr, DType::kFP32, {T, Hq}, {2 * Hq, 2}, dev);
  const Status st = combine(g);
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<std::uint16_t> out(out_ref.size());
  std::vector<float> lse_out(lse_ref.size());
  d_out.download(&out);
  d_lse.download(&lse_out);

  std::int64_t empty_rows = 0;
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t h = 0; h < Hq; ++h) {
      const float want_l = lse_ref[static_cast<std::size_t>(t * 2 * Hq + 2 * h)];
      const float got_l = lse_out[static_cast<std::size_t>(t * 2 * Hq + 2 * h)];
      if (std::isinf(want_l)) {
        ++empty_rows;
        ASSERT_EQ(got_l, want_l) << "t " << t << " h " << h;
      } else {
        ASSERT_NEAR(got_l, want_l, 1e-5f * std::max(1.f, std::fabs(want_l))) << "t " << t << " h " << h;
      }
      for (std::int64_t d = 0; d < D; ++d) {
        const std::size_t i = static_cast<std::size_t>((t * Hq + h) * D + d);
        const float want = testing::from_bf16(out_ref[i]), got = testing::from_bf16(out[i]);
        ASSERT_LE(std::fabs(got - want), std::ldexp(std::fabs(want), -7) + 1e-6f)  // one bf16 step
            << "t " << t << " h " << h << " d " << d;
      }
      EXPECT_EQ(lse_out[static_cast<std::size_t>(t * 2 * Hq + 2 * h + 1)], 12345.f);  // the stride gap is untouched
    }
  EXPECT_GT(empty_rows, 0);
}

TEST(SM90_Combine, Bf16PartialsMatchCpu) {
  MSA_REQUIRE_SM90();
  check_combine(false, random_seed());
}

TEST(SM90_Combine, Fp32PartialsMatchCpu) {
  MSA_REQUIRE_SM90();
  check_combine(true, random_seed());
}

}  // namespace
}  // namespace test
}  // namespace msa
