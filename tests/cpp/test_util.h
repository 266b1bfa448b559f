// test_util.h — shared helpers of the GoogleTest suites: problem shapes and op calls on a testing::Problem.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "msa/msa.h"
#include "msa/reference.h"
#include "problem.h"

namespace msa {
namespace test {

using testing::Problem;
using testing::ProblemSpec;

// The seed MSA_TEST_SEED names, when it is set: every seed below yields to it, so a failure that printed its seed
// can be replayed.
inline bool replay_seed(std::uint64_t* seed) {
  const char* e = std::getenv("MSA_TEST_SEED");
  if (e != nullptr) *seed = std::strtoull(e, nullptr, 10);
  return e != nullptr;
}

// The seed of a ProblemSpec from spec(): a new one per call, derived from gtest's random seed (so a run with
// --gtest_shuffle or --gtest_random_seed draws other inputs), or MSA_TEST_SEED's.
inline std::uint64_t fresh_seed() {
  std::uint64_t replay = 0;
  if (replay_seed(&replay)) return replay;
  static std::uint64_t s = static_cast<std::uint64_t>(::testing::UnitTest::GetInstance()->random_seed()) * 1000003u + 1;
  return ++s;
}

// A fresh seed per call (std::random_device), or MSA_TEST_SEED's.
inline std::uint64_t random_seed() {
  std::uint64_t replay = 0;
  if (replay_seed(&replay)) return replay;
  return std::random_device{}();
}

// The trace line of a test that drew its inputs from seed (SCOPED_TRACE(seed_note(seed))): a failure names it.
inline std::string seed_note(std::uint64_t seed) {
  return "seed " + std::to_string(seed) + " (MSA_TEST_SEED replays it)";
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

// Sets every index key of request 0's block j to (v, 0, ..., 0), so with all-ones queries the block scores v.
inline void set_index_block(Problem& p, int j, float v) {
  const std::int32_t page = p.page(0, j);
  for (int r = 0; r < 128; ++r)
    for (int d = 0; d < 128; ++d)
      p.index_k_cache[static_cast<std::size_t>((page * 128 + r) * 128 + d)] = testing::to_bf16(d == 0 ? v : 0.0f);
}

// Clustered selections: every row whose token sees more than k blocks lists 15 distinct blocks from a pool of 24
// fixed per (KV head, request, query block), in random order, then its local block (what real indexers tend to
// pick, and what makes the union-of-blocks schedule pay).
inline void cluster_selection(Problem& p, std::uint64_t seed) {
  const int k = p.spec.topk;
  std::mt19937_64 rng(seed);
  for (int g = 0; g < p.spec.num_kv_heads; ++g)
    for (std::int64_t b = 0, t = 0; b < p.num_requests(); ++b)
      for (std::int64_t i = 0; i < p.spec.q_lens[static_cast<std::size_t>(b)]; ++i, ++t) {
        const std::int64_t local = p.position(b, i) / 128;
        if (local + 1 <= k) continue;  // every visible block, as selected
        std::mt19937_64 pool_rng(seed ^ static_cast<std::uint64_t>((g * 64 + b) * 100003 + local));
        std::vector<std::int32_t> pool(static_cast<std::size_t>(local));
        for (std::int64_t j = 0; j < local; ++j) pool[static_cast<std::size_t>(j)] = static_cast<std::int32_t>(j);
        std::shuffle(pool.begin(), pool.end(), pool_rng);
        pool.resize(std::min<std::size_t>(24, pool.size()));
        std::shuffle(pool.begin(), pool.end(), rng);
        std::int32_t* row = p.topk.data() + (g * p.total_q + t) * k;
        for (int e = 0; e < k - 1; ++e) row[e] = pool[static_cast<std::size_t>(e)];
        row[k - 1] = static_cast<std::int32_t>(local);
      }
}

inline void shuffle_rows(Problem& p) {  // any order of valid ids is allowed (seeded by p.spec.seed)
  std::mt19937_64 rng(p.spec.seed);
  const int k = p.spec.topk;
  for (std::size_t row = 0; row < p.topk.size() / k; ++row) {
    auto begin = p.topk.begin() + static_cast<std::ptrdiff_t>(row * k);
    std::shuffle(begin, std::find(begin, begin + k, -1), rng);
  }
}

// Row t (128 bf16 words) of request b's KV head g in one of p's paged caches (p.k_cache or p.v_cache).
inline std::uint16_t* cache_row(Problem& p, std::vector<std::uint16_t>& cache, std::int64_t b, std::int64_t g,
                                std::int64_t t) {
  const std::int64_t page = p.page(b, t / 128), H = p.spec.num_kv_heads;
  return cache.data() + ((page * H + g) * 128 + t % 128) * 128;
}

// Sets V of (request b, KV head g, key position t) to x.
inline void set_value_row(Problem& p, std::int64_t b, int g, std::int64_t t, float x) {
  std::uint16_t* row = cache_row(p, p.v_cache, b, g, t);
  for (int d = 0; d < 128; ++d) row[d] = testing::to_bf16(x);
}

// Writes NaN into every K/V cache row past each request's length (the tail of its last page) and into the spare
// pages, so an attention kernel that lets those rows reach its output (even through P = 0 times V) fails.
inline void poison_cache_tails(Problem& p) {
  const std::uint16_t nan = 0x7fc1;
  const std::int64_t H = p.spec.num_kv_heads, page_elems = H * 128 * 128;
  std::vector<bool> used(static_cast<std::size_t>(p.num_pages), false);
  for (std::int64_t b = 0; b < p.num_requests(); ++b) {
    const std::int64_t L = p.seq_lens_k[static_cast<std::size_t>(b)], n_blocks = (L + 127) / 128;
    for (std::int64_t j = 0; j < n_blocks; ++j) used[static_cast<std::size_t>(p.page(b, j))] = true;
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t t = L; t < n_blocks * 128; ++t) {  // the rest of the last page
        std::uint16_t* k_row = cache_row(p, p.k_cache, b, h, t);
        std::uint16_t* v_row = cache_row(p, p.v_cache, b, h, t);
        for (int d = 0; d < 128; ++d) k_row[d] = v_row[d] = nan;
      }
  }
  for (std::int64_t page = 0; page < p.num_pages; ++page)
    if (!used[static_cast<std::size_t>(page)])
      for (std::int64_t e = 0; e < page_elems; ++e) {
        p.k_cache[static_cast<std::size_t>(page * page_elems + e)] = nan;
        p.v_cache[static_cast<std::size_t>(page * page_elems + e)] = nan;
      }
}

// Scales the key of request b at position t by 1 + per_token * t (all KV heads): later blocks then score higher,
// so a query's row max keeps rising from block to block and within blocks, and rows turn peaked (one key holding
// most of the softmax mass). The online softmax's rescale paths run on such inputs; with unscaled N(0, 1) keys a
// row's max over the first block it sees is within a few log2 units of its final max.
inline void ramp_keys(Problem& p, double per_token) {
  const std::int64_t H = p.spec.num_kv_heads;
  for (std::int64_t b = 0; b < p.num_requests(); ++b) {
    const std::int64_t L = p.seq_lens_k[static_cast<std::size_t>(b)];
    for (std::int64_t t = 0; t < L; ++t) {
      const float f = static_cast<float>(1.0 + per_token * static_cast<double>(t));
      for (std::int64_t h = 0; h < H; ++h) {
        std::uint16_t* row = cache_row(p, p.k_cache, b, h, t);
        for (int d = 0; d < 128; ++d) row[d] = testing::to_bf16(testing::from_bf16(row[d]) * f);
      }
    }
  }
}

// SparsePrefillAttention plan arguments for p's selection and batch; d: any type with Problem's accessors (Problem,
// DeviceProblem, ViewProblem).
template <typename D>
SparsePrefillPlanArgs prefill_plan_args(const Problem& p, D& d) {
  SparsePrefillPlanArgs pa;
  pa.topk = d.topk_t();
  pa.cu_seqlens_q = d.cu_seqlens_q_t();
  pa.seq_lens_k = d.seq_lens_k_t();
  pa.page_table = d.page_table_t();
  pa.num_q_heads = p.spec.num_q_heads;
  pa.num_kv_heads = p.spec.num_kv_heads;
  return pa;
}

// MsaPrefill's plan arguments for a problem's batch and heads (default schedule and chunking).
template <typename D>
MsaPrefillPlanArgs prefill_layer_plan_args(const Problem& p, D& d) {
  MsaPrefillPlanArgs pa;
  pa.cu_seqlens_q = d.cu_seqlens_q_t();
  pa.seq_lens_k = d.seq_lens_k_t();
  pa.page_table = d.page_table_t();
  pa.total_q = p.total_q;
  pa.num_q_heads = p.spec.num_q_heads;
  pa.num_kv_heads = p.spec.num_kv_heads;
  pa.topk = p.spec.topk;
  return pa;
}

// Runs the public sparse prefill op (plan + run) into p.out / p.lse.
inline Status sparse_prefill(Problem& p, double sm_scale = 0.0) {
  SparsePrefillAttention attn;
  SparsePrefillPlanArgs pa = prefill_plan_args(p, p);
  pa.sm_scale = sm_scale;
  MSA_RETURN_IF_ERROR(attn.plan(pa));
  SparsePrefillRunArgs ra{p.q_t(), p.k_cache_t(), p.v_cache_t(), p.out_t(), p.lse_t()};
  return attn.run(ra);
}

// The fp64 reference's out ([T, Hq, 128]) and LSE ([T, Hq]) for p's current topk, into *out and *lse (resized).
inline Status reference_fp64(Problem& p, std::vector<float>* out, std::vector<float>* lse, double sm_scale = 0.0) {
  const std::int64_t T = p.total_q, Hq = p.spec.num_q_heads;
  out->assign(static_cast<std::size_t>(T * Hq * 128), 0.f);
  lse->assign(static_cast<std::size_t>(T * Hq), 0.f);
  reference::AttentionOptions o64;
  o64.sm_scale = sm_scale;
  o64.fp64 = true;
  return reference::sparse_attention(p.q_t(), p.k_cache_t(), p.v_cache_t(), p.topk_t(), p.page_table_t(),
                                     p.cu_seqlens_q_t(), p.seq_lens_k_t(),
                                     make_tensor(out->data(), DType::kFP32, {T, Hq, 128}),
                                     make_tensor(lse->data(), DType::kFP32, {T, Hq}), o64);
}

// The attention error rule of design.md section 5 for a kernel's outputs `out` (bf16 [T, Hq, 128]) and `lse`
// ([T, Hq]) on problem p with its current topk: max|out - ref64| <= 2 max|emul - ref64| + 1e-3, where ref64 is the
// fp64 reference and emul the fp32 reference that rounds P to bf16 and writes bf16 as a kernel does; the LSE within
// 1e-4 (1 + |lse|) of ref64 (kernels sum the unrounded P); NaN/inf positions and empty rows exactly as in ref64.
// bf16_partials: the kernel stores per-block partials in bf16 and merges them (KV-outer + combine, whose contract
// is bf16 partials: include/msa/attention.h). Its rounding of each partial is a second rounding the P-only emul
// leaves out, one the rule's factor 2 does not always absorb (docs/attention.md, "Partials and design.md's error
// rule"); emul's error is then the larger of that of the P-only emulation and of the reference's own bf16 partials
// (P rounded, each block's normalised O rounded to bf16, then the reference combine).
inline void expect_attention_rule(Problem& p, const std::vector<std::uint16_t>& out, const std::vector<float>& lse,
                                  double sm_scale = 0.0, bool bf16_partials = false) {
  const std::int64_t T = p.total_q, Hq = p.spec.num_q_heads;
  ASSERT_GT(T, 0) << "a problem without query tokens makes this check compare nothing";
  std::vector<float> ref, ref_lse;
  ASSERT_TRUE(reference_fp64(p, &ref, &ref_lse, sm_scale).ok());
  std::vector<std::uint16_t> emul(ref.size());
  std::vector<float> emul_lse(ref_lse.size());
  reference::AttentionOptions oem;
  oem.sm_scale = sm_scale;
  oem.round_p_to_bf16 = true;
  ASSERT_TRUE(reference::sparse_attention(p.q_t(), p.k_cache_t(), p.v_cache_t(), p.topk_t(), p.page_table_t(),
                                          p.cu_seqlens_q_t(), p.seq_lens_k_t(),
                                          make_tensor(emul.data(), DType::kBF16, {T, Hq, 128}),
                                          make_tensor(emul_lse.data(), DType::kFP32, {T, Hq}), oem)
                  .ok());
  std::vector<std::uint16_t> emul_partials;
  if (bf16_partials) {
    const std::int64_t k = p.spec.topk, Hkv = p.spec.num_kv_heads;
    std::vector<std::uint16_t> po(static_cast<std::size_t>(k * T * Hq * 128));
    std::vector<float> pl(static_cast<std::size_t>(k * T * Hq));
    std::vector<std::int32_t> counts(static_cast<std::size_t>(T * Hkv));
    const Tensor po_t = make_tensor(po.data(), DType::kBF16, {k, T, Hq, 128});
    const Tensor pl_t = make_tensor(pl.data(), DType::kFP32, {k, T, Hq});
    const Tensor c_t = make_tensor(counts.data(), DType::kInt32, {T, Hkv});
    ASSERT_TRUE(reference::sparse_attention_partials(p.q_t(), p.k_cache_t(), p.v_cache_t(), p.topk_t(),
                                                     p.page_table_t(), p.cu_seqlens_q_t(), p.seq_lens_k_t(), po_t,
                                                     pl_t, c_t, oem)
                    .ok());
    emul_partials.resize(ref.size());
    ASSERT_TRUE(
        combine(CombineArgs{po_t, pl_t, c_t, make_tensor(emul_partials.data(), DType::kBF16, {T, Hq, 128}), Tensor{}})
            .ok());
  }
  double err = 0, emul_err = 0, emul_partials_err = 0;
  std::size_t worst = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double want = ref[i], have = testing::from_bf16(out[i]);
    if (!std::isfinite(want)) {
      ASSERT_EQ(std::isnan(want), std::isnan(have)) << "element " << i;
      if (!std::isnan(want)) {
        ASSERT_EQ(want, have) << "element " << i;
      }
      continue;
    }
    ASSERT_TRUE(std::isfinite(have)) << "element " << i << " = " << have << ", reference " << want;
    if (std::fabs(have - want) > err) {
      err = std::fabs(have - want);
      worst = i;
    }
    emul_err = std::max(emul_err, std::fabs(testing::from_bf16(emul[i]) - want));
    if (bf16_partials)
      emul_partials_err = std::max(emul_partials_err, std::fabs(testing::from_bf16(emul_partials[i]) - want));
  }
  const double bound = 2 * std::max(emul_err, emul_partials_err) + 1e-3;
  if (std::getenv("MSA_TEST_VERBOSE"))
    std::printf("attention rule: err %.6f, emul %.6f, emul with bf16 partials %.6f, bound %.6f\n", err, emul_err,
                emul_partials_err, bound);
  EXPECT_LE(err, bound) << "bf16-P emulation error " << emul_err << ", with bf16 partials "
                        << (bf16_partials ? std::to_string(emul_partials_err) : "(not modelled)")
                        << "; worst element: token " << worst / (Hq * 128) << ", head " << worst / 128 % Hq
                        << ", dim " << worst % 128 << ": " << testing::from_bf16(out[worst]) << " against "
                        << ref[worst] << " (emulation " << testing::from_bf16(emul[worst]) << ")";
  for (std::size_t i = 0; i < ref_lse.size(); ++i) {
    if (!std::isfinite(ref_lse[i])) {
      ASSERT_TRUE(ref_lse[i] == lse[i] || (std::isnan(ref_lse[i]) && std::isnan(lse[i]))) << "row " << i << ": " << lse[i];
      continue;
    }
    ASSERT_NEAR(lse[i], ref_lse[i], 1e-4 * (1 + std::fabs(ref_lse[i]))) << "row " << i;
  }
}

// Query token index -> (request, index in request).
inline void locate(const Problem& p, std::int64_t t, std::int64_t* b, std::int64_t* i) {
  std::int64_t r = 0;
  while (p.cu_seqlens_q[static_cast<std::size_t>(r + 1)] <= t) ++r;
  *b = r;
  *i = t - p.cu_seqlens_q[static_cast<std::size_t>(r)];
}

// Checks every row of p.topk: count, uniqueness, local last, -1 tail, n_vis <= k rows, and the score rule
// (every selected history block scores >= the exact (k-1)-th best - tol * row range; never a -inf block). worst,
// when given, receives the lowest (score - (k-1)-th best) / range of any selected block (0 when none falls short).
inline void expect_selection_contract(Problem& p, double tol = 1e-3, double* worst = nullptr) {
  if (worst != nullptr) *worst = 0;
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
        const double v = exact[static_cast<std::size_t>(row[s])];
        if (worst != nullptr && range > 0) *worst = std::min(*worst, (v - kth) / range);
        ASSERT_GE(v, kth - tol * range) << "block " << row[s];
      }
    }
  }
}

}  // namespace test
}  // namespace msa
