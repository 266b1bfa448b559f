// test_indexer.cpp — CPU index selection against the contract, with exact (fp64) scores as the judge.
#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include "test_util.h"

namespace msa {
namespace test {
namespace {

// Checks every row of p.topk: count, uniqueness, local last, -1 tail, n_vis <= k rows, and the score rule
// (every selected history block scores >= the exact (k-1)-th best - 1e-3 * row range; never a -inf block).
void expect_selection_contract(Problem& p) {
  const std::int64_t H = p.spec.num_kv_heads, k = p.spec.topk;
  for (std::int64_t t = 0; t < p.total_q; ++t) {
    std::int64_t b, i;
    locate(p, t, &b, &i);
    const std::int64_t local = p.position(b, i) / kBlockSize, n_vis = local + 1;
    for (std::int64_t g = 0; g < H; ++g) {
      SCOPED_TRACE(::testing::Message() << "token " << t << " head " << g << " n_vis " << n_vis);
      std::vector<double> exact;
      ASSERT_TRUE(reference::index_block_scores(p.index_q_t(), p.index_k_cache_t(), p.page_table_t(),
                                                p.cu_seqlens_q_t(), p.seq_lens_k_t(), t, static_cast<int>(g), &exact)
                      .ok());
      std::vector<std::int32_t> row;
      for (std::int64_t s = 0; s < k; ++s) row.push_back(topk_at(p, g, t, s));
      if (n_vis <= k) {
        for (std::int64_t s = 0; s < k; ++s) ASSERT_EQ(row[s], s < n_vis ? s : -1);
        continue;
      }
      std::int64_t finite = 0;
      for (double v : exact) finite += v > -std::numeric_limits<double>::infinity();
      const std::int64_t count = std::min<std::int64_t>(k - 1, finite) + 1;
      for (std::int64_t s = 0; s < k; ++s) ASSERT_EQ(row[s] == -1, s >= count) << "slot " << s;
      ASSERT_EQ(row[count - 1], local);
      std::set<std::int32_t> uniq(row.begin(), row.begin() + count);
      ASSERT_EQ(static_cast<std::int64_t>(uniq.size()), count);
      std::vector<double> finite_sorted;
      for (double v : exact)
        if (v > -std::numeric_limits<double>::infinity()) finite_sorted.push_back(v);
      std::sort(finite_sorted.rbegin(), finite_sorted.rend());
      if (finite_sorted.empty()) continue;
      const double kth = finite_sorted[static_cast<std::size_t>(count - 2 < 0 ? 0 : count - 2)];
      const double range = std::isfinite(finite_sorted.front() - finite_sorted.back())
                               ? finite_sorted.front() - finite_sorted.back() : 0.0;
      for (std::int64_t s = 0; s + 1 < count; ++s) {
        ASSERT_GE(row[s], 0);
        ASSERT_LT(row[s], local);
        ASSERT_GE(exact[static_cast<std::size_t>(row[s])], kth - 1e-3 * range) << "block " << row[s];
      }
    }
  }
}

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
  auto set_block = [&](int j, float v) {
    const std::int32_t page = p.page(0, j);
    for (int r = 0; r < 128; ++r)
      for (int d = 0; d < 128; ++d)
        p.index_k_cache[static_cast<std::size_t>((page * 128 + r) * 128 + d)] = testing::to_bf16(d == 0 ? v : 0.0f);
  };
  for (int j = 1; j <= 6; ++j) set_block(j, -INFINITY);
  for (int j = 7; j <= 9; ++j) set_block(j, NAN);
  set_block(12, INFINITY);
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
