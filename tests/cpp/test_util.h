// test_util.h — shared helpers of the GoogleTest suites: problem shapes and op calls on a testing::Problem.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "msa/msa.h"
#include "problem.h"

namespace msa {
namespace test {

using testing::Problem;
using testing::ProblemSpec;

inline std::uint64_t fresh_seed() {
  static std::uint64_t s = static_cast<std::uint64_t>(::testing::UnitTest::GetInstance()->random_seed()) * 1000003u + 1;
  return ++s;
}

inline ProblemSpec spec(std::vector<std::int64_t> nq, std::vector<std::int64_t> L, int Hq = 16, int Hkv = 2) {
  ProblemSpec s;
  s.q_lens = std::move(nq);
  s.kv_lens = std::move(L);
  s.num_q_heads = Hq;
  s.num_kv_heads = Hkv;
  s.seed = fresh_seed();
  return s;
}

inline IndexPrefillArgs index_args(Problem& p) { return p.index_prefill_args(); }

inline Status select(Problem& p) { return index_select_prefill(index_args(p)); }

inline std::int32_t topk_at(const Problem& p, std::int64_t g, std::int64_t t, std::int64_t s) {
  return p.topk[static_cast<std::size_t>((g * p.total_q + t) * p.spec.topk + s)];
}

// Runs the public sparse prefill op (plan + run) into p.out / p.lse.
inline Status sparse_prefill(Problem& p, double sm_scale = 0.0) {
  SparsePrefillAttention attn;
  SparsePrefillPlanArgs pa;
  pa.topk = p.topk_t();
  pa.cu_seqlens_q = p.cu_seqlens_q_t();
  pa.seq_lens_k = p.seq_lens_k_t();
  pa.page_table = p.page_table_t();
  pa.num_q_heads = p.spec.num_q_heads;
  pa.num_kv_heads = p.spec.num_kv_heads;
  pa.sm_scale = sm_scale;
  MSA_RETURN_IF_ERROR(attn.plan(pa));
  SparsePrefillRunArgs ra{p.q_t(), p.k_cache_t(), p.v_cache_t(), p.out_t(), p.lse_t()};
  return attn.run(ra);
}

// Query token index -> (request, index in request).
inline void locate(const Problem& p, std::int64_t t, std::int64_t* b, std::int64_t* i) {
  std::int64_t r = 0;
  while (p.cu_seqlens_q[static_cast<std::size_t>(r + 1)] <= t) ++r;
  *b = r;
  *i = t - p.cu_seqlens_q[static_cast<std::size_t>(r)];
}

}  // namespace test
}  // namespace msa
