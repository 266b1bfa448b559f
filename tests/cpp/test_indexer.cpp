// test_indexer.cpp — CPU index selection against the contract, with exact (fp64) scores as the judge.
#include "reference/numeric.h"
#include "test_util.h"

namespace msa {
namespace test {
namespace {

TEST(CPU_Indexer, AllZeroTieGivesSmallestIds) {
  Problem p = testing::make_problem(spec({1}, {2304}));
  std::fill(p.index_q.begin(), p.index_q.end(), 0);
  std::fill(p.index_k_cache.begin(), p.index_k_cache.end(), 0);
  ASSERT_TRUE(select(p).ok());
  for (int g = 0; g < 2; ++g)
    for (int s = 0; s < 16; ++s) EXPECT_EQ(topk_at(p, g, 0, s), s < 15 ? s : 17);
}

TEST(CPU_Indexer, ConstantScoresTieToSmallestIds) {
  Problem p = testing::make_problem(spec({3}, {5000}));
  std::fill(p.index_q.begin(), p.index_q.end(), testing::to_bf16(0.5f));
  std::fill(p.index_k_cache.begin(), p.index_k_cache.end(), testing::to_bf16(-0.25f));
  ASSERT_TRUE(select(p).ok());
  for (int t = 0; t < 3; ++t)
    for (int g = 0; g < 2; ++g)
      for (int s = 0; s < 16; ++s) EXPECT_EQ(topk_at(p, g, t, s), s < 15 ? s : 4999 / 128);
}

TEST(CPU_Indexer, Fp8E4m3Conversions) {
  for (int c = 0; c < 256; ++c) {  // every code decodes to a value that encodes back to it; NaN stays NaN
    const auto code = static_cast<std::uint8_t>(c);
    const float f = ref::fp8_e4m3_to_float(code);
    if ((c & 0x7f) == 0x7f) {
      EXPECT_TRUE(std::isnan(f)) << c;
      EXPECT_EQ(ref::float_to_fp8_e4m3(f) & 0x7f, 0x7f) << c;
      continue;
    }
    EXPECT_EQ(ref::float_to_fp8_e4m3(f), code) << c << " decodes to " << f;
  }
  EXPECT_EQ(ref::fp8_e4m3_to_float(0x38), 1.0f);
  EXPECT_EQ(ref::fp8_e4m3_to_float(0x7e), 448.0f);
  EXPECT_EQ(ref::fp8_e4m3_to_float(0x08), 0.015625f);     // smallest normal, 2^-6
  EXPECT_EQ(ref::fp8_e4m3_to_float(0x81), -0.001953125f);  // smallest subnormal, -2^-9
  EXPECT_EQ(ref::float_to_fp8_e4m3(1.0625f), 0x38);        // ties to the even significand
  EXPECT_EQ(ref::float_to_fp8_e4m3(1.1875f), 0x3a);
  EXPECT_EQ(ref::float_to_fp8_e4m3(0.0029296875f), 0x02);  // 1.5 * 2^-9: a subnormal tie, to even
  EXPECT_EQ(ref::float_to_fp8_e4m3(0.0009765625f), 0x00);  // 0.5 * 2^-9
  EXPECT_EQ(ref::float_to_fp8_e4m3(1000.0f), 0x7e);        // saturates
  EXPECT_EQ(ref::float_to_fp8_e4m3(-INFINITY), 0xfe);
}

TEST(CPU_Indexer, Fp8IndexSelectsAsItsBf16Values) {
  // Every e4m3 value is exact in bf16, and the CPU path converts either dtype to float and sums in one order: fp8
  // index tensors select exactly what bf16 tensors holding the same values select (prefill and decode).
  Problem p = testing::make_problem(spec({40, 129, 7, 0}, {16385, 4000, 2049, 300}));
  p.use_fp8_index();
  ASSERT_EQ(p.index_q_t().dtype, DType::kFP8E4M3);
  ASSERT_EQ(p.index_k_cache_t().dtype, DType::kFP8E4M3);
  ASSERT_TRUE(select(p).ok());
  expect_selection_contract(p);
  const std::vector<std::int32_t> fp8 = p.topk;
  std::vector<std::uint8_t> q8, k8;
  q8.swap(p.index_q8);
  k8.swap(p.index_k_cache8);
  ASSERT_TRUE(select(p).ok());
  EXPECT_EQ(p.topk, fp8);

  Problem d = testing::make_problem(spec({2, 2}, {9000, 700}));
  d.use_fp8_index();
  IndexDecodeArgs a{d.index_q_t(), d.index_k_cache_t(), d.page_table_t(), d.seq_lens_k_t(), 2, d.topk_t()};
  ASSERT_TRUE(index_select_decode(a).ok());
  const std::vector<std::int32_t> decode8 = d.topk;
  expect_selection_contract(d);
  d.index_q8.clear();
  d.index_k_cache8.clear();
  a.index_q = d.index_q_t();
  a.index_k_cache = d.index_k_cache_t();
  ASSERT_TRUE(index_select_decode(a).ok());
  EXPECT_EQ(d.topk, decode8);
}

TEST(CPU_Indexer, RandomIrregularFullPrefills) {
  for (std::int64_t L : {1, 127, 128, 129, 2047, 2048, 2049}) {
    SCOPED_TRACE(::testing::Message() << "L = " << L);
    Problem p = testing::make_problem(spec({L}, {L}));
    ASSERT_TRUE(select(p).ok());
    expect_selection_contract(p);
  }
}

TEST(CPU_Indexer, LongRowsAndChunkedHistory) {
  // 16385 tokens: the last 40 as a chunk with history; 2 more requests of odd lengths.
  Problem p = testing::make_problem(spec({40, 129, 7}, {16385, 4000, 2049}));
  ASSERT_TRUE(select(p).ok());
  expect_selection_contract(p);
}

TEST(CPU_Indexer, BatchWithZeroLengthRequests) {
  Problem p = testing::make_problem(spec({0, 300, 0, 5}, {0, 2600, 700, 3000}));
  ASSERT_TRUE(select(p).ok());
  expect_selection_contract(p);
}

TEST(CPU_Indexer, NanAndInfScores) {
  // One query at position 2431 (block 18): 18 history blocks. Blocks 1..6 are -inf, 7..9 NaN, block 12 +inf.
  Problem p = testing::make_problem(spec({1}, {2432}, 16, 1));
  std::fill(p.index_q.begin(), p.index_q.end(), testing::to_bf16(1.0f));
  for (int j = 1; j <= 6; ++j) set_index_block(p, j, -INFINITY);
  for (int j = 7; j <= 9; ++j) set_index_block(p, j, NAN);
  set_index_block(p, 12, INFINITY);
  ASSERT_TRUE(select(p).ok());
  // 18 - 9 = 9 finite history blocks: all of them, +inf first, then local, then -1.
  EXPECT_EQ(topk_at(p, 0, 0, 0), 12);
  std::set<int> got;
  for (int s = 0; s < 9; ++s) got.insert(topk_at(p, 0, 0, s));
  EXPECT_EQ(got, (std::set<int>{0, 10, 11, 12, 13, 14, 15, 16, 17}));
  EXPECT_EQ(topk_at(p, 0, 0, 9), 18);
  for (int s = 10; s < 16; ++s) EXPECT_EQ(topk_at(p, 0, 0, s), -1);
}

TEST(CPU_Indexer, DecodeMatchesPrefillWithSameQueries) {
  for (int Q : {1, 8}) {
    SCOPED_TRACE(::testing::Message() << "Q = " << Q);
    Problem p = testing::make_problem(spec({Q, Q, Q}, {Q + 5000, Q + 129, 2048}));
    ASSERT_TRUE(select(p).ok());
    std::vector<std::int32_t> prefill = p.topk;
    std::fill(p.topk.begin(), p.topk.end(), 12345);
    IndexDecodeArgs d;
    d.index_q = p.index_q_t();
    d.index_k_cache = p.index_k_cache_t();
    d.page_table = p.page_table_t();
    d.seq_lens_k = p.seq_lens_k_t();
    d.queries_per_request = Q;
    d.topk = p.topk_t();
    ASSERT_TRUE(index_select_decode(d).ok());
    EXPECT_EQ(p.topk, prefill);
    expect_selection_contract(p);
  }
}

TEST(CPU_Indexer, SmallerKAndStridedOutput) {
  // k = 4 written into a token-major [T, Hkv, k] buffer viewed as [Hkv, T, k].
  ProblemSpec s = spec({9}, {1500});
  s.topk = 4;
  Problem p = testing::make_problem(s);
  std::vector<std::int32_t> token_major(static_cast<std::size_t>(p.total_q * 2 * 4), 99);
  IndexPrefillArgs a = index_args(p);
  a.topk = make_strided_tensor(token_major.data(), DType::kInt32, {2, p.total_q, 4}, {4, 8, 1});
  ASSERT_TRUE(index_select_prefill(a).ok());
  ASSERT_TRUE(select(p).ok());
  for (std::int64_t t = 0; t < p.total_q; ++t)
    for (int g = 0; g < 2; ++g)
      for (int q = 0; q < 4; ++q) EXPECT_EQ(token_major[static_cast<std::size_t>((t * 2 + g) * 4 + q)], topk_at(p, g, t, q));
  expect_selection_contract(p);
}

}  // namespace
}  // namespace test
}  // namespace msa
