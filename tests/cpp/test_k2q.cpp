// test_k2q.cpp — the host k2q CSR builder and work schedule: hand case and invariants on random selections.
#include <algorithm>
#include <map>
#include <set>

#include "test_util.h"

namespace msa {
namespace test {
namespace {

TEST(CPU_K2q, HandBuiltCase) {
  // Two requests: A has 3 queries over 300 keys (3 blocks), B has 1 query over 129 keys (2 blocks). One head, k 3.
  // Rows level-major: (A,0)=0, (B,0)=1, (A,1)=2, (B,1)=3, (A,2)=4.
  std::vector<std::int32_t> topk = {
      2, 0, -1,  // A q0 (pos 297, local 2): blocks {0, 2}, listed unordered
      2, -1, -1, // A q1 (pos 298): only the local block
      1, 0, 2,   // A q2 (pos 299): all three
      1, 0, -1,  // B q0 (pos 128, local 1)
  };
  std::vector<std::int32_t> cu = {0, 3, 4}, seq = {300, 129};
  reference::K2qCsr csr;
  ASSERT_TRUE(reference::build_k2q_csr(make_tensor(topk.data(), DType::kInt32, {1, 4, 3}),
                                       make_tensor(cu.data(), DType::kInt32, {3}),
                                       make_tensor(seq.data(), DType::kInt32, {2}), &csr)
                  .ok());
  EXPECT_EQ(csr.total_rows, 5);
  EXPECT_EQ(csr.row_batch, (std::vector<std::int32_t>{0, 1, 0, 1, 0}));
  EXPECT_EQ(csr.row_block, (std::vector<std::int32_t>{0, 0, 1, 1, 2}));
  EXPECT_EQ(csr.row_ptr, (std::vector<std::int32_t>{0, 2, 3, 4, 5, 8}));
  const std::vector<std::int32_t> q = {0, 2, 0, 2, 0, 0, 1, 2, -1, -1, -1, -1};
  EXPECT_EQ(csr.q_indices, q);
  const std::vector<std::int32_t> qs = {0 | 0 << 24, 2 | 0 << 24, 0 | 0 << 24, 2 | 1 << 24, 0 | 1 << 24,
                                        0 | 1 << 24, 1 | 0 << 24, 2 | 2 << 24, -1, -1, -1, -1};
  EXPECT_EQ(csr.qsplit_indices, qs);
  EXPECT_EQ(csr.split_counts, (std::vector<std::int32_t>{2, 1, 3, 2}));

  const auto items = reference::build_k2q_schedule(csr, 2);
  ASSERT_EQ(items.size(), 6u);  // row 4 (3 queries) splits into 2 + 1
  EXPECT_EQ(items[0].q_count, 2);
  EXPECT_EQ(items[0].row, 0);
  EXPECT_EQ(items.back().q_count, 1);
}

TEST(CPU_K2q, InvariantsOnRandomSelections) {
  Problem p = testing::make_problem(spec({200, 0, 77, 5}, {2600, 0, 1900, 40000}, 16, 2));
  ASSERT_TRUE(select(p).ok());
  reference::K2qCsr csr;
  ASSERT_TRUE(reference::build_k2q_csr(p.topk_t(), p.cu_seqlens_q_t(), p.seq_lens_k_t(), &csr).ok());
  // Rows: level-major order.
  std::int64_t want_rows = 0;
  for (auto L : p.spec.kv_lens) want_rows += (L + 127) / 128;
  ASSERT_EQ(csr.total_rows, want_rows);
  for (std::int64_t r = 1; r < csr.total_rows; ++r) {
    const auto prev = std::make_pair(csr.row_block[r - 1], csr.row_batch[r - 1]);
    ASSERT_LT(prev, std::make_pair(csr.row_block[r], csr.row_batch[r]));
  }
  std::map<std::pair<std::int32_t, std::int32_t>, std::int32_t> row_of;
  for (std::int64_t r = 0; r < csr.total_rows; ++r) row_of[{csr.row_batch[r], csr.row_block[r]}] = static_cast<std::int32_t>(r);
  const std::int64_t T = p.total_q, R = csr.total_rows;
  for (int g = 0; g < 2; ++g) {
    // Each (query, valid id) appears exactly once, in its row, with slot = ascending-id rank; rows ascending.
    std::set<std::pair<std::int32_t, std::int32_t>> seen;  // (row, global token)
    const std::int32_t* rp = &csr.row_ptr[static_cast<std::size_t>(g * (R + 1))];
    ASSERT_EQ(rp[0], 0);
    for (std::int64_t r = 0; r < R; ++r) {
      ASSERT_LE(rp[r], rp[r + 1]);
      for (std::int32_t e = rp[r]; e < rp[r + 1]; ++e) {
        const std::int32_t qi = csr.q_indices[static_cast<std::size_t>(g * T * 16 + e)];
        const std::int32_t qs = csr.qsplit_indices[static_cast<std::size_t>(g * T * 16 + e)];
        ASSERT_EQ(qs & 0xFFFFFF, qi);
        if (e > rp[r]) {
          ASSERT_GT(qi, csr.q_indices[static_cast<std::size_t>(g * T * 16 + e - 1)]);
        }
        const std::int32_t b = csr.row_batch[r], blk = csr.row_block[r];
        const std::int32_t t = p.cu_seqlens_q[static_cast<std::size_t>(b)] + qi;
        std::vector<std::int32_t> ids;
        for (int s = 0; s < 16; ++s)
          if (topk_at(p, g, t, s) >= 0) ids.push_back(topk_at(p, g, t, s));
        std::sort(ids.begin(), ids.end());
        const auto it = std::find(ids.begin(), ids.end(), blk);
        ASSERT_NE(it, ids.end());
        ASSERT_EQ(qs >> 24, it - ids.begin());
        seen.insert({static_cast<std::int32_t>(r), t});
      }
    }
    std::int64_t total = 0;
    for (std::int64_t t = 0; t < T; ++t) {
      const std::int32_t n = csr.split_counts[static_cast<std::size_t>(t * 2 + g)];
      total += n;
      std::int64_t b, i;
      locate(p, t, &b, &i);
      for (int s = 0; s < n; ++s)
        ASSERT_TRUE(seen.count({row_of[{static_cast<std::int32_t>(b), topk_at(p, g, t, s)}], static_cast<std::int32_t>(t)}));
    }
    ASSERT_EQ(total, rp[R]);
    for (std::int64_t e = rp[R]; e < T * 16; ++e) ASSERT_EQ(csr.q_indices[static_cast<std::size_t>(g * T * 16 + e)], -1);
  }
  // Schedule: covers every entry once, bounded, head-major and largest first within a head.
  const auto items = reference::build_k2q_schedule(csr, 24);
  std::map<std::pair<int, int>, int> covered;
  for (std::size_t n = 0; n < items.size(); ++n) {
    ASSERT_GE(items[n].q_count, 1);
    ASSERT_LE(items[n].q_count, 24);
    if (n) {
      ASSERT_GE(items[n].head_kv, items[n - 1].head_kv);
      if (items[n].head_kv == items[n - 1].head_kv) {
        ASSERT_LE(items[n].q_count, items[n - 1].q_count);
      }
    }
    ASSERT_EQ(items[n].batch, csr.row_batch[items[n].row]);
    ASSERT_EQ(items[n].kv_block, csr.row_block[items[n].row]);
    covered[{items[n].head_kv, items[n].row}] += items[n].q_count;
  }
  for (int g = 0; g < 2; ++g)
    for (std::int64_t r = 0; r < R; ++r) {
      const int n = csr.row_ptr[static_cast<std::size_t>(g * (R + 1) + r + 1)] - csr.row_ptr[static_cast<std::size_t>(g * (R + 1) + r)];
      const int got = covered[std::make_pair(g, static_cast<int>(r))];
      ASSERT_EQ(got, n);
    }
}

}  // namespace
}  // namespace test
}  // namespace msa
