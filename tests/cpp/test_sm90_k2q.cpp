// test_sm90_k2q.cpp — the device k2q builder (CSR and work schedule) is byte-identical to the host builder and
// deterministic, on fresh random selections (valid ids shuffled inside each row: any order is allowed) and on hot rows.
#include <cuda_runtime.h>

#include <random>

#include "cuda_test_util.h"
#include "kernels/k2q/launch.h"
#include "test_util.h"

namespace msa {
namespace test {
namespace {

constexpr int kMaxQ = 48;  // queries per work item in these tests

struct DeviceCsr {
  std::int32_t total_rows = 0, num_items = 0;
  std::vector<std::int32_t> row_ptr, row_batch, row_block, q_indices, qsplit_indices, split_counts, items;
  bool operator==(const DeviceCsr& o) const {
    return total_rows == o.total_rows && row_ptr == o.row_ptr && row_batch == o.row_batch &&
           row_block == o.row_block && q_indices == o.q_indices && qsplit_indices == o.qsplit_indices &&
           split_counts == o.split_counts && num_items == o.num_items && items == o.items;
  }
};

DeviceCsr build_on_device(const Problem& p) {
  const int H = p.spec.num_kv_heads, k = p.spec.topk;
  const std::int64_t T = p.total_q;
  DeviceBuffer<std::int32_t> topk(p.topk), cu(p.cu_seqlens_q), seq(p.seq_lens_k);
  const kernels::K2qBuildArgs a = k2q_args(p, topk.ptr, cu.ptr, seq.ptr, kMaxQ);
  const std::int64_t r_cap = kernels::k2q_row_capacity(a);
  DeviceCsr h;
  h.row_ptr.assign(static_cast<std::size_t>(H * (r_cap + 1)), 0x7eadbeef);  // poisoned: every entry must be written
  h.row_batch.assign(static_cast<std::size_t>(r_cap), 0x7eadbeef);
  h.row_block.assign(static_cast<std::size_t>(r_cap), 0x7eadbeef);
  h.q_indices.assign(static_cast<std::size_t>(H * T * k), 0x7eadbeef);
  h.qsplit_indices.assign(static_cast<std::size_t>(H * T * k), 0x7eadbeef);
  h.split_counts.assign(static_cast<std::size_t>(T * H), 0x7eadbeef);
  h.items.assign(static_cast<std::size_t>(kernels::k2q_item_capacity(a) * 6), 0x7eadbeef);
  DeviceBuffer<std::int32_t> row_ptr(h.row_ptr), row_batch(h.row_batch), row_block(h.row_block), q(h.q_indices),
      qs(h.qsplit_indices), counts(h.split_counts), total(std::vector<std::int32_t>{-1}), items(h.items),
      num_items(std::vector<std::int32_t>{-1});
  const kernels::K2qBuildOutputs o{row_ptr.ptr, row_batch.ptr, row_block.ptr, q.ptr,
                                   qs.ptr,      counts.ptr,    total.ptr,     items.ptr, num_items.ptr};
  std::size_t bytes = 0;
  EXPECT_TRUE(kernels::k2q_workspace_bytes(a, &bytes).ok());
  void* ws = nullptr;
  EXPECT_EQ(cudaMalloc(&ws, std::max<std::size_t>(bytes, 1)), cudaSuccess);
  EXPECT_EQ(kernels::launch_k2q_build(a, o, ws, bytes / 2).code(), StatusCode::kInvalidArgument);  // too small
  const Status st = kernels::launch_k2q_build(a, o, ws, bytes);
  EXPECT_TRUE(st.ok()) << st.to_string();
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudaFree(ws);
  row_ptr.download(&h.row_ptr);
  row_batch.download(&h.row_batch);
  row_block.download(&h.row_block);
  q.download(&h.q_indices);
  qs.download(&h.qsplit_indices);
  counts.download(&h.split_counts);
  items.download(&h.items);
  std::vector<std::int32_t> t(1);
  total.download(&t);
  h.total_rows = t[0];
  num_items.download(&t);
  h.num_items = t[0];
  return h;
}

// The device CSR restricted to the reference's R rows equals the reference; rows past R are empty.
void expect_matches_host(Problem& p, const DeviceCsr& d) {
  reference::K2qCsr ref;
  ASSERT_TRUE(reference::build_k2q_csr(p.topk_t(), p.cu_seqlens_q_t(), p.seq_lens_k_t(), &ref).ok());
  const std::int64_t R = ref.total_rows, r_cap = static_cast<std::int64_t>(p.num_requests()) * p.max_pages;
  ASSERT_EQ(d.total_rows, R);
  for (std::int64_t r = 0; r < r_cap; ++r) {
    ASSERT_EQ(d.row_batch[r], r < R ? ref.row_batch[r] : -1) << "row " << r;
    ASSERT_EQ(d.row_block[r], r < R ? ref.row_block[r] : -1) << "row " << r;
  }
  for (int g = 0; g < p.spec.num_kv_heads; ++g) {
    const std::int32_t nnz = ref.row_ptr[static_cast<std::size_t>(g * (R + 1) + R)];
    for (std::int64_t r = 0; r <= r_cap; ++r)
      ASSERT_EQ(d.row_ptr[static_cast<std::size_t>(g * (r_cap + 1) + r)],
                r <= R ? ref.row_ptr[static_cast<std::size_t>(g * (R + 1) + r)] : nnz)
          << "head " << g << " row " << r;
  }
  EXPECT_EQ(d.q_indices, ref.q_indices);
  EXPECT_EQ(d.qsplit_indices, ref.qsplit_indices);
  EXPECT_EQ(d.split_counts, ref.split_counts);
  // Work schedule: the reference's items in the same order, then -1 entries.
  const std::vector<reference::K2qWorkItem> want = reference::build_k2q_schedule(ref, kMaxQ);
  ASSERT_EQ(d.num_items, static_cast<std::int32_t>(want.size()));
  for (std::size_t i = 0; i < d.items.size() / 6; ++i) {
    const std::int32_t* got = &d.items[i * 6];
    if (i < want.size()) {
      const reference::K2qWorkItem& w = want[i];
      const std::vector<std::int32_t> expect = {w.head_kv, w.row, w.q_begin, w.q_count, w.batch, w.kv_block};
      ASSERT_EQ(std::vector<std::int32_t>(got, got + 6), expect) << "item " << i;
    } else {
      ASSERT_EQ(std::vector<std::int32_t>(got, got + 6), std::vector<std::int32_t>(6, -1)) << "item " << i;
    }
  }
}

// Valid ids of every topk row in a random order (the attention contract accepts any order).
void shuffle_rows(Problem& p, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int k = p.spec.topk;
  for (std::size_t row = 0; row < p.topk.size() / k; ++row) {
    auto begin = p.topk.begin() + static_cast<std::ptrdiff_t>(row * k);
    const auto end = std::find(begin, begin + k, -1);
    std::shuffle(begin, end, rng);
  }
}

TEST(SM90_K2qDevice, ByteIdenticalToHostAndDeterministic) {
  MSA_REQUIRE_SM90();
  ProblemSpec s = spec({200, 0, 77, 5, 1, 129}, {2600, 0, 1900, 40000, 300, 129}, 16, 2);
  s.with_main = false;
  s.seed = random_seed();
  SCOPED_TRACE(seed_note(s.seed));
  Problem p = testing::make_problem(s);
  ASSERT_TRUE(select(p).ok());
  shuffle_rows(p, s.seed);
  const DeviceCsr first = build_on_device(p);
  expect_matches_host(p, first);
  EXPECT_TRUE(build_on_device(p) == first);  // bit-for-bit the same on a second run
}

TEST(SM90_K2qDevice, HotRowsAndShortK) {
  MSA_REQUIRE_SM90();
  // Every query of a 5000-token request picks block 0 and its own block: row (0, 0) holds all 5000 queries.
  ProblemSpec s = spec({5000, 3}, {5000, 700}, 16, 4);
  s.with_main = false;
  s.topk = 4;
  Problem p = testing::make_problem(s);
  for (int g = 0; g < 4; ++g)
    for (std::int64_t t = 0; t < p.total_q; ++t) {
      const std::int64_t b = t < 5000 ? 0 : 1, i = b == 0 ? t : t - 5000;
      const int local = static_cast<int>(p.position(b, i) / 128);
      std::int32_t* row = &p.topk[static_cast<std::size_t>((g * p.total_q + t) * 4)];
      row[0] = 0;
      int n = 1;
      if (local > 0) row[n++] = local;
      if (local > 2 && g % 2 == 0) row[n++] = 1;  // ids out of order in half the heads
      for (; n < 4; ++n) row[n] = -1;
    }
  expect_matches_host(p, build_on_device(p));
}

TEST(SM90_K2qDevice, NoQueries) {
  MSA_REQUIRE_SM90();
  ProblemSpec s = spec({0, 0}, {300, 0}, 16, 2);
  s.with_main = false;
  Problem p = testing::make_problem(s);
  expect_matches_host(p, build_on_device(p));
}

}  // namespace
}  // namespace test
}  // namespace msa
