// check.cpp — `msa check`: a self-check of the CPU implementation on fresh random inputs.
//
// Each check states a property of the MSA contract and prints PASS or FAIL; the exit code is non-zero on any FAIL.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "cli.h"
#include "msa/msa.h"
#include "problem.h"

namespace msa {
namespace cli {
namespace {

using testing::Problem;
using testing::ProblemSpec;

ProblemSpec small_spec(std::vector<std::int64_t> nq, std::vector<std::int64_t> L, std::uint64_t seed) {
  ProblemSpec s;
  s.q_lens = std::move(nq);
  s.kv_lens = std::move(L);
  s.num_q_heads = 16;
  s.num_kv_heads = 2;
  s.seed = seed;
  return s;
}

Status select(Problem& p) { return index_select_prefill(p.index_prefill_args()); }

std::string check_ties(std::uint64_t seed) {
  Problem p = testing::make_problem(small_spec({1}, {2304}, seed));
  std::fill(p.index_q.begin(), p.index_q.end(), 0);
  std::fill(p.index_k_cache.begin(), p.index_k_cache.end(), 0);
  const Status st = select(p);
  if (!st.ok()) return st.to_string();
  for (int g = 0; g < 2; ++g)
    for (int s = 0; s < 16; ++s) {
      const int want = s < 15 ? s : 17;
      if (p.topk[static_cast<std::size_t>(g * 16 + s)] != want) return "topk differs from [0..14, 17]";
    }
  return "";
}

std::string check_dense_equivalence(std::uint64_t seed) {
  Problem p = testing::make_problem(small_spec({300, 2048}, {300, 2048}, seed));
  Status st = select(p);
  if (!st.ok()) return st.to_string();
  std::vector<float> sparse(p.out.size()), dense(p.out.size());
  const Tensor so = make_tensor(sparse.data(), DType::kFP32, {p.total_q, 16, kHeadDim});
  const Tensor dout = make_tensor(dense.data(), DType::kFP32, {p.total_q, 16, kHeadDim});
  st = reference::sparse_attention(p.q_t(), p.k_cache_t(), p.v_cache_t(), p.topk_t(), p.page_table_t(),
                                   p.cu_seqlens_q_t(), p.seq_lens_k_t(), so, Tensor{});
  if (st.ok())
    st = reference::dense_attention(p.q_t(), p.k_cache_t(), p.v_cache_t(), p.page_table_t(), p.cu_seqlens_q_t(),
                                    p.seq_lens_k_t(), dout, Tensor{});
  if (!st.ok()) return st.to_string();
  if (std::memcmp(sparse.data(), dense.data(), sparse.size() * sizeof(float)) != 0)
    return "sparse attention with n_vis <= 16 differs from dense attention";
  return "";
}

std::string check_selection_rule(std::uint64_t seed) {
  Problem p = testing::make_problem(small_spec({24, 5}, {5000, 3000}, seed));
  const Status st = select(p);
  if (!st.ok()) return st.to_string();
  for (std::int64_t t = 0; t < p.total_q; ++t)
    for (int g = 0; g < 2; ++g) {
      std::vector<double> exact;
      const Status s2 = reference::index_block_scores(p.index_q_t(), p.index_k_cache_t(), p.page_table_t(),
                                                      p.cu_seqlens_q_t(), p.seq_lens_k_t(), t, g, &exact);
      if (!s2.ok()) return s2.to_string();
      std::vector<double> sorted = exact;
      std::sort(sorted.rbegin(), sorted.rend());
      const double kth = sorted[14], range = sorted.front() - sorted.back();
      const std::int32_t* row = &p.topk[static_cast<std::size_t>((g * p.total_q + t) * 16)];
      if (row[15] != static_cast<std::int32_t>(exact.size())) return "local block is not last";
      for (int s = 0; s < 15; ++s)
        if (exact[static_cast<std::size_t>(row[s])] < kth - 1e-3 * range) return "a selected block is not in the top 15";
    }
  return "";
}

// fp8 e4m3 index tensors select exactly what bf16 tensors holding the same values select (every e4m3 value is exact
// in bf16, and the CPU path sums either dtype in one order).
std::string check_fp8_index(std::uint64_t seed) {
  Problem p = testing::make_problem(small_spec({24, 5}, {5000, 3000}, seed));
  p.use_fp8_index();
  Status st = select(p);
  if (!st.ok()) return st.to_string();
  const std::vector<std::int32_t> fp8 = p.topk;
  p.index_q8.clear();
  p.index_k_cache8.clear();
  st = select(p);
  if (!st.ok()) return st.to_string();
  return p.topk == fp8 ? "" : "fp8 and bf16 selections differ";
}

std::string check_combine(std::uint64_t seed) {
  Problem p = testing::make_problem(small_spec({40, 3}, {4000, 2100}, seed));
  Status st = select(p);
  if (!st.ok()) return st.to_string();
  const std::int64_t T = p.total_q;
  std::vector<float> po(static_cast<std::size_t>(16 * T * 16 * kHeadDim)), pl(static_cast<std::size_t>(16 * T * 16));
  std::vector<std::int32_t> counts(static_cast<std::size_t>(T * 2));
  const Tensor po_t = make_tensor(po.data(), DType::kFP32, {16, T, 16, kHeadDim});
  const Tensor pl_t = make_tensor(pl.data(), DType::kFP32, {16, T, 16});
  const Tensor c_t = make_tensor(counts.data(), DType::kInt32, {T, 2});
  st = reference::sparse_attention_partials(p.q_t(), p.k_cache_t(), p.v_cache_t(), p.topk_t(), p.page_table_t(),
                                            p.cu_seqlens_q_t(), p.seq_lens_k_t(), po_t, pl_t, c_t);
  if (!st.ok()) return st.to_string();
  CombineArgs ca{po_t, pl_t, c_t, p.out_t(), p.lse_t()};
  st = combine(ca);
  std::vector<float> direct(p.out.size()), direct_lse(p.lse.size());
  if (st.ok())
    st = reference::sparse_attention(p.q_t(), p.k_cache_t(), p.v_cache_t(), p.topk_t(), p.page_table_t(),
                                     p.cu_seqlens_q_t(), p.seq_lens_k_t(),
                                     make_tensor(direct.data(), DType::kFP32, {T, 16, kHeadDim}),
                                     make_tensor(direct_lse.data(), DType::kFP32, {T, 16}));
  if (!st.ok()) return st.to_string();
  for (std::size_t e = 0; e < direct.size(); ++e)
    if (std::fabs(testing::from_bf16(p.out[e]) - direct[e]) > 1e-2 * (1.0 + std::fabs(direct[e])))
      return "combined partials differ from direct sparse attention";
  for (std::size_t e = 0; e < direct_lse.size(); ++e)
    if (std::fabs(p.lse[e] - direct_lse[e]) > 1e-4 * (1.0 + std::fabs(direct_lse[e]))) return "combined LSE differs";
  return "";
}

std::string check_k2q(std::uint64_t seed) {
  Problem p = testing::make_problem(small_spec({200, 0, 77}, {2600, 0, 1900}, seed));
  const Status st = select(p);
  if (!st.ok()) return st.to_string();
  reference::K2qCsr csr;
  const Status s2 = reference::build_k2q_csr(p.topk_t(), p.cu_seqlens_q_t(), p.seq_lens_k_t(), &csr);
  if (!s2.ok()) return s2.to_string();
  for (int g = 0; g < 2; ++g) {
    const std::int32_t* rp = &csr.row_ptr[static_cast<std::size_t>(g * (csr.total_rows + 1))];
    std::int64_t want = 0;
    for (std::int64_t t = 0; t < p.total_q; ++t) want += csr.split_counts[static_cast<std::size_t>(t * 2 + g)];
    if (rp[csr.total_rows] != want) return "CSR nnz differs from the sum of split counts";
    for (std::int64_t r = 0; r < csr.total_rows; ++r)
      for (std::int32_t e = rp[r] + 1; e < rp[r + 1]; ++e)
        if (csr.q_indices[static_cast<std::size_t>(g * p.total_q * 16 + e)] <=
            csr.q_indices[static_cast<std::size_t>(g * p.total_q * 16 + e - 1)])
          return "CSR row not ascending";
  }
  return "";
}

}  // namespace

int run_check(Options& opts) {
  const std::uint64_t seed = static_cast<std::uint64_t>(
      opts.get_int("seed", std::chrono::steady_clock::now().time_since_epoch().count() & 0xffffff));
  std::printf("msa check (seed %llu)\n", static_cast<unsigned long long>(seed));
  struct Item { const char* name; std::function<std::string(std::uint64_t)> fn; };
  const Item items[] = {
      {"ties go to the smaller block id ([0..14, 17])", check_ties},
      {"n_vis <= 16: sparse attention equals dense exactly", check_dense_equivalence},
      {"selection = 15 best history blocks (exact fp64 scores) + local", check_selection_rule},
      {"fp8 e4m3 index tensors select as bf16 ones of the same values", check_fp8_index},
      {"combine of per-block partials equals direct attention", check_combine},
      {"k2q CSR: counts and ascending rows", check_k2q},
  };
  int failed = 0;
  for (const Item& it : items) {
    const std::string err = it.fn(seed);
    std::printf("  %-66s %s%s\n", it.name, err.empty() ? "PASS" : "FAIL: ", err.c_str());
    failed += !err.empty();
  }
  std::printf("%d passed, %d failed\n", static_cast<int>(sizeof(items) / sizeof(items[0])) - failed, failed);
  return failed == 0 ? 0 : 1;
}

}  // namespace cli
}  // namespace msa
