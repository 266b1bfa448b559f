// test_attention.cpp — CPU sparse attention, decode, partials and combine against hand results and an fp64 model.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>

#include "api/attention_cuda.h"
#include "test_util.h"

namespace msa {
namespace test {
namespace {

using testing::from_bf16;
using testing::to_bf16;

float q_at(const Problem& p, std::int64_t t, std::int64_t h, int d) {
  return from_bf16(p.q[static_cast<std::size_t>((t * p.spec.num_q_heads + h) * 128 + d)]);
}
float kv_at(const Problem& p, const std::vector<std::uint16_t>& c, std::int64_t page, std::int64_t g, std::int64_t r, int d) {
  return from_bf16(c[static_cast<std::size_t>(((page * p.spec.num_kv_heads + g) * 128 + r) * 128 + d)]);
}

// Independent fp64 model of one output row (written from the spec's formula, not from the implementation).
void model_row(const Problem& p, std::int64_t t, std::int64_t h, const std::vector<std::int32_t>& ids, double scale,
               std::vector<double>* o, double* lse) {
  std::int64_t b, i;
  locate(p, t, &b, &i);
  const std::int64_t pos = p.position(b, i), g = h / (p.spec.num_q_heads / p.spec.num_kv_heads);
  std::vector<std::pair<std::int64_t, std::int64_t>> keys;  // (page, row)
  for (std::int32_t id : ids)
    for (std::int64_t tk = id * 128; tk < id * 128 + 128; ++tk)
      if (tk <= pos) keys.push_back({p.page(b, id), tk - id * 128});
  o->assign(128, 0.0);
  if (keys.empty()) {
    *lse = -std::numeric_limits<double>::infinity();
    return;
  }
  std::vector<double> z;
  for (auto& k : keys) {
    double s = 0;
    for (int d = 0; d < 128; ++d) s += static_cast<double>(q_at(p, t, h, d)) * kv_at(p, p.k_cache, k.first, g, k.second, d);
    z.push_back(s * scale);
  }
  const double m = *std::max_element(z.begin(), z.end());
  double l = 0;
  for (std::size_t e = 0; e < keys.size(); ++e) {
    const double w = std::exp(z[e] - m);
    l += w;
    for (int d = 0; d < 128; ++d) (*o)[d] += w * kv_at(p, p.v_cache, keys[e].first, g, keys[e].second, d);
  }
  for (auto& v : *o) v /= l;
  *lse = m + std::log(l);
}

std::vector<std::int32_t> valid_ids(const Problem& p, std::int64_t g, std::int64_t t) {
  std::vector<std::int32_t> ids;
  for (int s = 0; s < p.spec.topk; ++s)
    if (topk_at(p, g, t, s) >= 0) ids.push_back(topk_at(p, g, t, s));
  return ids;
}

// Compares sampled rows of p.out / p.lse (bf16 output) with the fp64 model.
void expect_matches_model(const Problem& p, int rows_to_check, double scale = kDefaultSmScale) {
  const std::int64_t Hq = p.spec.num_q_heads, G = Hq / p.spec.num_kv_heads;
  std::mt19937_64 rng(p.spec.seed);
  for (int n = 0; n < rows_to_check && p.total_q > 0; ++n) {
    const std::int64_t t = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(p.total_q));
    const std::int64_t h = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(Hq));
    std::vector<double> o;
    double lse;
    model_row(p, t, h, valid_ids(p, h / G, t), scale, &o, &lse);
    for (int d = 0; d < 128; ++d) {
      const double got = from_bf16(p.out[static_cast<std::size_t>((t * Hq + h) * 128 + d)]);
      ASSERT_NEAR(got, o[d], 1e-3 + std::fabs(o[d]) * 8e-3) << "token " << t << " head " << h << " dim " << d;
    }
    ASSERT_NEAR(p.lse[static_cast<std::size_t>(t * Hq + h)], lse, 1e-4 * (1 + std::fabs(lse)));
  }
}

TEST(CPU_Attention, OneKeyGivesV) {
  Problem p = testing::make_problem(spec({1}, {1}));
  ASSERT_TRUE(select(p).ok());
  ASSERT_TRUE(sparse_prefill(p).ok());
  for (int h = 0; h < 16; ++h) {
    double s = 0;
    for (int d = 0; d < 128; ++d) {
      EXPECT_EQ(p.out[static_cast<std::size_t>(h * 128 + d)], p.v_cache[static_cast<std::size_t>(((p.page(0, 0) * 2 + h / 8) * 128) * 128 + d)]);
      s += static_cast<double>(q_at(p, 0, h, d)) * kv_at(p, p.k_cache, p.page(0, 0), h / 8, 0, d);
    }
    EXPECT_NEAR(p.lse[static_cast<std::size_t>(h)], s * kDefaultSmScale, 1e-4 * (1 + std::fabs(s)));
  }
}

TEST(CPU_Attention, UniformScoresGiveMeanOfV) {
  Problem p = testing::make_problem(spec({1}, {300}));  // position 299: blocks 0, 1, 2 (44 keys)
  std::fill(p.q.begin(), p.q.end(), 0);
  ASSERT_TRUE(select(p).ok());
  ASSERT_TRUE(sparse_prefill(p).ok());
  for (int h = 0; h < 16; ++h) {
    for (int d = 0; d < 128; ++d) {
      double mean = 0;
      for (int tk = 0; tk < 300; ++tk) mean += kv_at(p, p.v_cache, p.page(0, tk / 128), h / 8, tk % 128, d);
      mean /= 300;
      EXPECT_NEAR(from_bf16(p.out[static_cast<std::size_t>(h * 128 + d)]), mean, 1e-3 + std::fabs(mean) * 8e-3);
    }
    EXPECT_NEAR(p.lse[static_cast<std::size_t>(h)], std::log(300.0), 1e-5);
  }
}

TEST(CPU_Attention, PaddingRowGivesZeroAndMinusInf) {
  Problem p = testing::make_problem(spec({2}, {700}));
  ASSERT_TRUE(select(p).ok());
  for (int g = 0; g < 2; ++g)
    for (int s = 0; s < 16; ++s) p.topk[static_cast<std::size_t>((g * 2 + 1) * 16 + s)] = -1;  // token 1: padding row
  std::fill(p.out.begin(), p.out.end(), to_bf16(NAN));
  ASSERT_TRUE(sparse_prefill(p).ok());
  for (int h = 0; h < 16; ++h) {
    for (int d = 0; d < 128; ++d) EXPECT_EQ(p.out[static_cast<std::size_t>((16 + h) * 128 + d)], 0);
    EXPECT_EQ(p.lse[static_cast<std::size_t>(16 + h)], -std::numeric_limits<float>::infinity());
    EXPECT_TRUE(std::isfinite(p.lse[static_cast<std::size_t>(h)]));
  }
}

TEST(CPU_Attention, ShortRowsEqualDenseExactly) {
  // Every row has n_vis <= 16, so the selection is every visible block and MSA is dense causal GQA.
  Problem p = testing::make_problem(spec({1, 127, 129, 200, 300}, {1, 127, 129, 2000, 2048}, 32, 4));
  poison_cache_tails(p);
  ASSERT_TRUE(select(p).ok());
  ASSERT_TRUE(sparse_prefill(p).ok());
  std::vector<std::uint16_t> dense(p.out.size());
  std::vector<float> dense_lse(p.lse.size());
  ASSERT_TRUE(reference::dense_attention(p.q_t(), p.k_cache_t(), p.v_cache_t(), p.page_table_t(), p.cu_seqlens_q_t(),
                                         p.seq_lens_k_t(),
                                         make_tensor(dense.data(), DType::kBF16, {p.total_q, 32, 128}),
                                         make_tensor(dense_lse.data(), DType::kFP32, {p.total_q, 32}))
                  .ok());
  EXPECT_EQ(p.out, dense);
  EXPECT_EQ(0, std::memcmp(p.lse.data(), dense_lse.data(), dense_lse.size() * sizeof(float)));
}

TEST(CPU_Attention, RandomSelectionsMatchFp64Model) {
  // Irregular lengths, a zero-length request, chunked prefill with history, scattered pages.
  Problem p = testing::make_problem(spec({129, 0, 40, 1, 2049}, {2049, 0, 16385, 130, 2049}));
  poison_cache_tails(p);
  ASSERT_TRUE(select(p).ok());
  std::fill(p.out.begin(), p.out.end(), to_bf16(NAN));
  std::fill(p.lse.begin(), p.lse.end(), NAN);
  ASSERT_TRUE(sparse_prefill(p).ok());
  for (auto v : p.out) ASSERT_FALSE(std::isnan(from_bf16(v)));
  for (auto v : p.lse) ASSERT_TRUE(std::isfinite(v));
  expect_matches_model(p, 60);
}

TEST(CPU_Attention, CustomScale) {
  Problem p = testing::make_problem(spec({5}, {3000}));
  ASSERT_TRUE(select(p).ok());
  ASSERT_TRUE(sparse_prefill(p, 0.03).ok());
  expect_matches_model(p, 20, 0.03);
}

TEST(CPU_Attention, AnyOrderOfValidIdsGivesTheSameResult) {
  Problem p = testing::make_problem(spec({6, 3}, {4000, 2500}));
  ASSERT_TRUE(select(p).ok());
  ASSERT_TRUE(sparse_prefill(p).ok());
  const std::vector<std::uint16_t> first = p.out;
  std::mt19937_64 rng(p.spec.seed);
  for (std::int64_t r = 0; r < 2 * p.total_q; ++r) {
    auto* row = &p.topk[static_cast<std::size_t>(r * 16)];
    const int n = static_cast<int>(std::find(row, row + 16, -1) - row);
    std::shuffle(row, row + n, rng);
  }
  ASSERT_TRUE(sparse_prefill(p).ok());
  EXPECT_EQ(p.out, first);
}

TEST(CPU_Attention, NanQueryPoisonsOnlyItsRow) {
  Problem p = testing::make_problem(spec({2}, {500}));
  ASSERT_TRUE(select(p).ok());
  p.q[static_cast<std::size_t>((1 * 16 + 3) * 128 + 5)] = to_bf16(NAN);  // token 1, head 3
  ASSERT_TRUE(sparse_prefill(p).ok());
  for (int t = 0; t < 2; ++t)
    for (int h = 0; h < 16; ++h) {
      const bool poisoned = t == 1 && h == 3;
      EXPECT_EQ(std::isnan(p.lse[static_cast<std::size_t>(t * 16 + h)]), poisoned);
      EXPECT_EQ(std::isnan(from_bf16(p.out[static_cast<std::size_t>((t * 16 + h) * 128)])), poisoned);
    }
}

// A NaN in V reaches exactly the rows that see its key: the tokens at or after its position (their own block is
// always selected), for the query heads of its KV head. The tokens before it in the same block mask it: their rows
// stay finite (the reference sums visible keys only, so 0 * NaN never happens).
TEST(CPU_Attention, NanValueReachesOnlyRowsThatSeeIt) {
  Problem p = testing::make_problem(spec({4}, {300}));  // tokens at 296 .. 299, 16 query heads over 2 KV heads
  ASSERT_TRUE(select(p).ok());
  set_value_row(p, 0, 0, 298, NAN);  // KV head 0, key 298
  ASSERT_TRUE(sparse_prefill(p).ok());
  for (int t = 0; t < 4; ++t)
    for (int h = 0; h < 16; ++h) {
      const bool poisoned = t >= 2 && h < 8;
      EXPECT_EQ(std::isnan(from_bf16(p.out[static_cast<std::size_t>((t * 16 + h) * 128)])), poisoned)
          << "token " << t << " head " << h;
      EXPECT_TRUE(std::isfinite(p.lse[static_cast<std::size_t>(t * 16 + h)]));  // the scores do not involve V
    }
}

TEST(CPU_Attention, DecodeMatchesPrefillPath) {
  for (int Q : {1, 8}) {
    SCOPED_TRACE(::testing::Message() << "Q = " << Q);
    Problem p = testing::make_problem(spec({Q, Q}, {3000, Q + 1}, 64, 4));
    ASSERT_TRUE(select(p).ok());
    ASSERT_TRUE(sparse_prefill(p).ok());
    const std::vector<std::uint16_t> prefill = p.out;
    const std::vector<float> prefill_lse = p.lse;
    std::fill(p.out.begin(), p.out.end(), to_bf16(NAN));
    SparseDecodeAttention dec;
    SparseDecodePlanArgs pa;
    pa.batch_size = 4;  // capacity above the batch
    pa.queries_per_request = Q;
    ASSERT_TRUE(dec.plan(pa).ok());
    SparseDecodeRunArgs ra{p.q_t(), p.k_cache_t(), p.v_cache_t(), p.topk_t(), p.page_table_t(), p.seq_lens_k_t(),
                           p.out_t(), p.lse_t()};
    ASSERT_TRUE(dec.run(ra).ok());
    EXPECT_EQ(p.out, prefill);
    EXPECT_EQ(0, std::memcmp(p.lse.data(), prefill_lse.data(), p.lse.size() * sizeof(float)));
  }
}

TEST(CPU_Combine, PerBlockPartialsMergeToDirectAttention) {
  Problem p = testing::make_problem(spec({40, 3, 0}, {4000, 2100, 0}));
  ASSERT_TRUE(select(p).ok());
  const std::int64_t T = p.total_q;
  std::vector<float> po(static_cast<std::size_t>(16 * T * 16 * 128), NAN), pl(static_cast<std::size_t>(16 * T * 16), NAN);
  std::vector<std::int32_t> counts(static_cast<std::size_t>(T * 2), -7);
  const Tensor po_t = make_tensor(po.data(), DType::kFP32, {16, T, 16, 128});
  const Tensor pl_t = make_tensor(pl.data(), DType::kFP32, {16, T, 16});
  const Tensor c_t = make_tensor(counts.data(), DType::kInt32, {T, 2});
  ASSERT_TRUE(reference::sparse_attention_partials(p.q_t(), p.k_cache_t(), p.v_cache_t(), p.topk_t(), p.page_table_t(),
                                                   p.cu_seqlens_q_t(), p.seq_lens_k_t(), po_t, pl_t, c_t)
                  .ok());
  for (std::int64_t t = 0; t < T; ++t)
    for (int g = 0; g < 2; ++g) EXPECT_EQ(counts[static_cast<std::size_t>(t * 2 + g)], static_cast<int>(valid_ids(p, g, t).size()));
  ASSERT_TRUE(combine(CombineArgs{po_t, pl_t, c_t, p.out_t(), p.lse_t()}).ok());
  expect_matches_model(p, 40);
}

TEST(CPU_Combine, EmptyAndNonFiniteSplits) {
  const std::int64_t S = 3, T = 2, Hq = 2;
  std::vector<float> po(static_cast<std::size_t>(S * T * Hq * 128)), pl(static_cast<std::size_t>(S * T * Hq));
  for (std::size_t e = 0; e < po.size(); ++e) po[e] = static_cast<float>(e % 128) / 64.0f;
  // token 0: slot 0 valid, slot 1 has LSE -inf (weight 0), slot 2 beyond the count holds NaN (never read).
  // token 1: count 0 -> O = 0, LSE = -inf.
  for (int h = 0; h < 2; ++h) {
    pl[static_cast<std::size_t>((0 * T + 0) * Hq + h)] = 1.5f;
    pl[static_cast<std::size_t>((1 * T + 0) * Hq + h)] = -INFINITY;
    pl[static_cast<std::size_t>((2 * T + 0) * Hq + h)] = NAN;
  }
  for (int d = 0; d < 128; ++d) po[static_cast<std::size_t>(((2 * T + 0) * Hq + 0) * 128 + d)] = NAN;
  std::vector<std::int32_t> counts = {2, 0};
  std::vector<std::uint16_t> out(static_cast<std::size_t>(T * Hq * 128), 0xffff);
  std::vector<float> lse(static_cast<std::size_t>(T * Hq), 0.0f);
  CombineArgs a{make_tensor(po.data(), DType::kFP32, {S, T, Hq, 128}), make_tensor(pl.data(), DType::kFP32, {S, T, Hq}),
                make_tensor(counts.data(), DType::kInt32, {T, 1}), make_tensor(out.data(), DType::kBF16, {T, Hq, 128}),
                make_tensor(lse.data(), DType::kFP32, {T, Hq})};
  ASSERT_TRUE(combine(a).ok());
  for (int h = 0; h < 2; ++h) {
    EXPECT_FLOAT_EQ(lse[static_cast<std::size_t>(h)], 1.5f);
    for (int d = 0; d < 128; ++d)
      EXPECT_EQ(out[static_cast<std::size_t>(h * 128 + d)], to_bf16(static_cast<float>(d) / 64.0f));
    EXPECT_EQ(lse[static_cast<std::size_t>(2 + h)], -std::numeric_limits<float>::infinity());
    for (int d = 0; d < 128; ++d) EXPECT_EQ(out[static_cast<std::size_t>((2 + h) * 128 + d)], 0);
  }
}

// The CUDA prefill path's query chunks (host planning, no GPU): every token lands in exactly one chunk, and its
// chunk-local request has the same bottom-right position for it as the original request.
TEST(CPU_Attention, PrefillChunksKeepEveryPosition) {
  std::mt19937_64 rng(fresh_seed());
  for (int trial = 0; trial < 40; ++trial) {
    detail::BatchInfo batch;
    const int B = 1 + static_cast<int>(rng() % 6);
    batch.q_start.assign(1, 0);
    for (int b = 0; b < B; ++b) {
      const std::int64_t nq = rng() % 3 == 0 ? 0 : 1 + static_cast<std::int64_t>(rng() % 700);
      batch.q_start.push_back(batch.q_start.back() + nq);
      batch.kv_len.push_back(nq + static_cast<std::int64_t>(rng() % 3000));
    }
    for (std::int64_t chunk : {1, 7, 100, 1000, 1 << 20}) {
      std::vector<std::int32_t> meta;
      const std::vector<detail::PrefillChunk> chunks = detail::plan_prefill_chunks(batch, chunk, &meta);
      std::int64_t next = 0;
      for (const detail::PrefillChunk& c : chunks) {
        ASSERT_EQ(c.t0, next);
        ASSERT_GE(c.num_q, 1);
        ASSERT_LE(c.num_q, chunk);
        next += c.num_q;
        const std::int32_t* cu = meta.data() + c.meta;
        const std::int32_t* seq = cu + c.num_requests + 1;
        ASSERT_EQ(cu[0], 0);
        ASSERT_EQ(cu[c.num_requests], c.num_q);
        for (int r = 0; r < c.num_requests; ++r) {
          const std::int64_t b = c.b_first + r, nq_local = cu[r + 1] - cu[r];
          ASSERT_GE(nq_local, 0);
          ASSERT_GE(seq[r], nq_local);
          ASSERT_LE(seq[r], batch.kv_len[static_cast<std::size_t>(b)]);
          for (std::int64_t i = 0; i < nq_local; ++i) {
            const std::int64_t t = c.t0 + cu[r] + i;  // global token
            ASSERT_GE(t, batch.q_start[static_cast<std::size_t>(b)]);
            ASSERT_LT(t, batch.q_start[static_cast<std::size_t>(b + 1)]);
            ASSERT_EQ(seq[r] - nq_local + i, batch.position(b, t - batch.q_start[static_cast<std::size_t>(b)]))
                << "chunk " << chunk << " token " << t;
          }
        }
      }
      ASSERT_EQ(next, batch.num_q());
    }
  }
}

}  // namespace
}  // namespace test
}  // namespace msa
