// test_sm90_combine.cpp — the CUDA combine against the CPU implementation on fresh random partials: bf16 and fp32
// partials, counts from 0 to S, non-finite partial LSEs, NaN in every slot past a row's count (never read), a
// strided LSE output; outputs poisoned before the run. Also the kernel's units per CTA: same bits for every count,
// rows with a negative count left alone.
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "cuda_test_util.h"
#include "kernels/combine/launch.h"
#include "test_util.h"

namespace msa {
namespace test {
namespace {

// Random partials [S, T, Hq, 128] (fp32 values; the caller rounds them to bf16 where needed), their LSEs and
// counts from 0 to S per (token, KV head): non-finite LSEs here and there, NaN in every slot past a row's count.
struct RandomPartials {
  std::vector<std::int32_t> counts;
  std::vector<float> po32, pl;
  RandomPartials(std::mt19937_64& rng, std::int64_t S, std::int64_t T, std::int64_t Hq, std::int64_t Hkv) {
    const std::int64_t G = Hq / Hkv, D = 128;
    std::uniform_real_distribution<float> val(-2.f, 2.f), lse(-6.f, 6.f);
    counts.resize(static_cast<std::size_t>(T * Hkv));
    for (auto& c : counts) c = static_cast<std::int32_t>(rng() % (S + 1));
    counts[0] = 0;
    counts[1] = static_cast<std::int32_t>(S);
    po32.resize(static_cast<std::size_t>(S * T * Hq * D));
    pl.resize(static_cast<std::size_t>(S * T * Hq));
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
  }
};

// One row of a GPU combine against the CPU implementation's: the LSE equal where the CPU's is infinite, else within
// 1e-5 (relative, absolute below 1); each of the 128 output values within one bf16 step.
::testing::AssertionResult row_matches(const std::uint16_t* got, const std::uint16_t* want, float got_l, float want_l) {
  if (std::isinf(want_l) ? !(got_l == want_l) : !(std::fabs(got_l - want_l) <= 1e-5f * std::max(1.f, std::fabs(want_l))))
    return ::testing::AssertionFailure() << "lse " << got_l << ", cpu " << want_l;
  for (int d = 0; d < 128; ++d) {
    const float w = testing::from_bf16(want[d]), g = testing::from_bf16(got[d]);
    if (!(std::fabs(g - w) <= std::ldexp(std::fabs(w), -7) + 1e-6f))
      return ::testing::AssertionFailure() << "d " << d << ": " << g << ", cpu " << w;
  }
  return ::testing::AssertionSuccess();
}

void check_combine(bool fp32_partials, std::uint64_t seed) {
  SCOPED_TRACE(seed_note(seed));
  const std::int64_t S = 16, T = 37, Hq = 16, Hkv = 2, D = 128;
  std::mt19937_64 rng(seed);
  RandomPartials rp(rng, S, T, Hq, Hkv);
  std::vector<std::int32_t>& counts = rp.counts;
  std::vector<float>&po32 = rp.po32, &pl = rp.pl;
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
      const std::size_t l = static_cast<std::size_t>(t * 2 * Hq + 2 * h), o = static_cast<std::size_t>((t * Hq + h) * D);
      empty_rows += std::isinf(lse_ref[l]) ? 1 : 0;
      ASSERT_TRUE(row_matches(&out[o], &out_ref[o], lse_out[l], lse_ref[l])) << "t " << t << " h " << h;
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

// The kernel's units per CTA (CombineLaunch::units_per_cta, bf16 partials) change which CTA computes a row, never
// its bits: every count of units, the default included, gives the same output, rows whose count is negative keep
// their poison (another kernel writes them), and the others match the CPU implementation. 37 tokens x 16 heads are
// 37 units of 16 rows, so most counts leave the last CTA part-empty.
TEST(SM90_Combine, UnitsPerCtaChangeNoBit) {
  MSA_REQUIRE_SM90();
  const std::uint64_t seed = random_seed();
  SCOPED_TRACE(seed_note(seed));
  const std::int64_t S = 16, T = 37, Hq = 16, Hkv = 2, G = Hq / Hkv, D = 128;
  std::mt19937_64 rng(seed);
  RandomPartials rp(rng, S, T, Hq, Hkv);
  std::vector<std::int32_t> counts = rp.counts, cpu_counts = rp.counts;
  for (std::size_t i = 2; i < counts.size(); i += 3) counts[i] = -1, cpu_counts[i] = 0;
  std::vector<std::uint16_t> po16(rp.po32.size());
  for (std::size_t i = 0; i < po16.size(); ++i) po16[i] = testing::to_bf16(rp.po32[i]);

  std::vector<std::uint16_t> out_ref(static_cast<std::size_t>(T * Hq * D));
  std::vector<float> lse_ref(static_cast<std::size_t>(T * Hq));
  CombineArgs c;
  c.partial_out = make_tensor(po16.data(), DType::kBF16, {S, T, Hq, D});
  c.partial_lse = make_tensor(rp.pl.data(), DType::kFP32, {S, T, Hq});
  c.split_counts = make_tensor(cpu_counts.data(), DType::kInt32, {T, Hkv});
  c.out = make_tensor(out_ref.data(), DType::kBF16, {T, Hq, D});
  c.lse = make_tensor(lse_ref.data(), DType::kFP32, {T, Hq});
  ASSERT_TRUE(combine(c).ok());

  DeviceBuffer<std::uint16_t> d_po(po16), d_out(out_ref);
  DeviceBuffer<float> d_pl(rp.pl), d_lse(lse_ref);
  DeviceBuffer<std::int32_t> d_counts(counts);
  std::vector<std::uint16_t> first_out;
  std::vector<float> first_lse;
  for (int units : {0, 1, 2, 3, 8, 16, 40}) {
    SCOPED_TRACE("units_per_cta " + std::to_string(units));
    d_out.upload(std::vector<std::uint16_t>(out_ref.size(), 0x7fc1));  // NaN poison
    d_lse.upload(std::vector<float>(lse_ref.size(), 12345.f));
    kernels::CombineLaunch cl = kernels::contiguous_combine_launch(d_po.ptr, d_pl.ptr, d_counts.ptr, d_out.ptr,
                                                                   d_lse.ptr, T, static_cast<int>(Hq),
                                                                   static_cast<int>(Hkv), static_cast<int>(S));
    cl.units_per_cta = units;
    ASSERT_TRUE(kernels::launch_combine(cl).ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<std::uint16_t> out(out_ref.size());
    std::vector<float> lse(lse_ref.size());
    d_out.download(&out);
    d_lse.download(&lse);
    std::int64_t computed = 0;
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t h = 0; h < Hq; ++h) {
        const std::size_t row = static_cast<std::size_t>(t * Hq + h);
        const bool skipped = counts[static_cast<std::size_t>(t * Hkv + h / G)] < 0;
        computed += skipped ? 0 : 1;
        if (!skipped) {
          ASSERT_TRUE(row_matches(&out[row * D], &out_ref[row * D], lse[row], lse_ref[row])) << "t " << t << " h " << h;
          continue;
        }
        ASSERT_EQ(lse[row], 12345.f) << "t " << t << " h " << h;
        for (std::int64_t d = 0; d < D; ++d)
          ASSERT_EQ(out[row * D + static_cast<std::size_t>(d)], 0x7fc1) << "t " << t << " h " << h << " d " << d;
      }
    EXPECT_GT(computed, 0);
    EXPECT_LT(computed, T * Hq);
    if (first_out.empty()) {
      first_out = out, first_lse = lse;
    } else {
      EXPECT_EQ(out, first_out);
      EXPECT_EQ(0, std::memcmp(lse.data(), first_lse.data(), lse.size() * sizeof(float)));
    }
  }
}

}  // namespace
}  // namespace test
}  // namespace msa
