// problem.cpp — see problem.h.
#include "problem.h"

#include <algorithm>
#include <numeric>

#include "msa/params.h"
#include "reference/numeric.h"

namespace msa {
namespace testing {

std::uint16_t to_bf16(float f) { return ref::float_to_bf16(f); }
float from_bf16(std::uint16_t h) { return ref::bf16_to_float(h); }

void fill_normal(std::vector<std::uint16_t>* v, std::mt19937_64* rng, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  for (auto& x : *v) x = to_bf16(dist(*rng));
}

std::int64_t Problem::position(std::int64_t b, std::int64_t i) const {
  return spec.kv_lens[static_cast<std::size_t>(b)] - spec.q_lens[static_cast<std::size_t>(b)] + i;
}

Problem make_problem(const ProblemSpec& spec) {
  Problem p;
  p.spec = spec;
  const std::int64_t B = static_cast<std::int64_t>(spec.q_lens.size());
  const std::int64_t Hq = spec.num_q_heads, Hkv = spec.num_kv_heads;
  std::mt19937_64 rng(spec.seed);

  p.cu_seqlens_q.assign(static_cast<std::size_t>(B + 1), 0);
  p.seq_lens_k.assign(static_cast<std::size_t>(B), 0);
  std::int64_t used_pages = 0;
  for (std::int64_t b = 0; b < B; ++b) {
    p.cu_seqlens_q[static_cast<std::size_t>(b + 1)] =
        p.cu_seqlens_q[static_cast<std::size_t>(b)] + static_cast<std::int32_t>(spec.q_lens[static_cast<std::size_t>(b)]);
    p.seq_lens_k[static_cast<std::size_t>(b)] = static_cast<std::int32_t>(spec.kv_lens[static_cast<std::size_t>(b)]);
    const std::int64_t pages = (spec.kv_lens[static_cast<std::size_t>(b)] + kPageSize - 1) / kPageSize;
    used_pages += pages;
    p.max_pages = std::max(p.max_pages, pages);
  }
  p.max_pages = std::max<std::int64_t>(p.max_pages, 1);
  p.total_q = p.cu_seqlens_q.back();
  p.num_pages = used_pages + spec.spare_pages;

  std::vector<std::int32_t> phys(static_cast<std::size_t>(p.num_pages));
  std::iota(phys.begin(), phys.end(), 0);
  if (spec.shuffle_pages) std::shuffle(phys.begin(), phys.end(), rng);
  p.page_table.assign(static_cast<std::size_t>(B * p.max_pages), 0);
  std::size_t next = 0;
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t pages = (spec.kv_lens[static_cast<std::size_t>(b)] + kPageSize - 1) / kPageSize;
    for (std::int64_t j = 0; j < pages; ++j) p.page_table[static_cast<std::size_t>(b * p.max_pages + j)] = phys[next++];
  }

  const std::int64_t T = p.total_q;
  p.index_q.resize(static_cast<std::size_t>(T * Hkv * kHeadDim));
  p.index_k_cache.resize(static_cast<std::size_t>(p.num_pages * kPageSize * kHeadDim));
  fill_normal(&p.index_q, &rng, 1.0f);
  fill_normal(&p.index_k_cache, &rng, 1.0f);
  if (spec.with_main) {
    p.q.resize(static_cast<std::size_t>(T * Hq * kHeadDim));
    p.k_cache.resize(static_cast<std::size_t>(p.num_pages * Hkv * kPageSize * kHeadDim));
    p.v_cache.resize(p.k_cache.size());
    fill_normal(&p.q, &rng, 1.0f);
    fill_normal(&p.k_cache, &rng, 1.0f);
    fill_normal(&p.v_cache, &rng, 1.0f);
    p.out.assign(static_cast<std::size_t>(T * Hq * kHeadDim), 0);
    p.lse.assign(static_cast<std::size_t>(T * Hq), 0.0f);
  }
  p.topk.assign(static_cast<std::size_t>(Hkv * T * spec.topk), -1);
  return p;
}

Tensor Problem::q_t() { return make_tensor(q.data(), DType::kBF16, {total_q, spec.num_q_heads, kHeadDim}); }
Tensor Problem::k_cache_t() {
  return make_tensor(k_cache.data(), DType::kBF16, {num_pages, spec.num_kv_heads, kPageSize, kHeadDim});
}
Tensor Problem::v_cache_t() {
  return make_tensor(v_cache.data(), DType::kBF16, {num_pages, spec.num_kv_heads, kPageSize, kHeadDim});
}
Tensor Problem::index_q_t() {
  const bool fp8 = !index_q8.empty();
  return make_tensor(fp8 ? static_cast<void*>(index_q8.data()) : index_q.data(), fp8 ? DType::kFP8E4M3 : DType::kBF16,
                     {total_q, spec.num_kv_heads, kHeadDim});
}
Tensor Problem::index_k_cache_t() {
  const bool fp8 = !index_k_cache8.empty();
  return make_tensor(fp8 ? static_cast<void*>(index_k_cache8.data()) : index_k_cache.data(),
                     fp8 ? DType::kFP8E4M3 : DType::kBF16, {num_pages, kPageSize, kHeadDim});
}

void Problem::use_fp8_index() {
  auto round = [](std::vector<std::uint16_t>& bf16, std::vector<std::uint8_t>* fp8) {
    fp8->resize(std::max<std::size_t>(bf16.size(), 1), 0);  // never empty: an empty problem stays fp8 too
    for (std::size_t i = 0; i < bf16.size(); ++i) {
      (*fp8)[i] = ref::float_to_fp8_e4m3(from_bf16(bf16[i]));
      bf16[i] = to_bf16(ref::fp8_e4m3_to_float((*fp8)[i]));
    }
  };
  round(index_q, &index_q8);
  round(index_k_cache, &index_k_cache8);
}
Tensor Problem::page_table_t() {
  return make_tensor(page_table.data(), DType::kInt32, {num_requests(), max_pages});
}
Tensor Problem::cu_seqlens_q_t() { return make_tensor(cu_seqlens_q.data(), DType::kInt32, {num_requests() + 1}); }
Tensor Problem::seq_lens_k_t() { return make_tensor(seq_lens_k.data(), DType::kInt32, {num_requests()}); }
Tensor Problem::topk_t() {
  return make_tensor(topk.data(), DType::kInt32, {spec.num_kv_heads, total_q, spec.topk});
}
Tensor Problem::out_t() { return make_tensor(out.data(), DType::kBF16, {total_q, spec.num_q_heads, kHeadDim}); }
Tensor Problem::lse_t() { return make_tensor(lse.data(), DType::kFP32, {total_q, spec.num_q_heads}); }

IndexPrefillArgs Problem::index_prefill_args() {
  IndexPrefillArgs a;
  a.index_q = index_q_t();
  a.index_k_cache = index_k_cache_t();
  a.page_table = page_table_t();
  a.cu_seqlens_q = cu_seqlens_q_t();
  a.seq_lens_k = seq_lens_k_t();
  a.topk = topk_t();
  return a;
}

}  // namespace testing
}  // namespace msa
