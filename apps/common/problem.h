// problem.h — synthetic MSA problems (owning host buffers + descriptors) for the tool, tests and benchmarks.
//
// A problem is a batch of requests with per-request query counts and KV lengths, M3-style tensors filled with
// seeded normal values, and page tables that map logical blocks to shuffled physical pages (with spare pages), so
// every consumer exercises scattered, unordered paging.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "msa/indexer.h"
#include "msa/types.h"

namespace msa {
namespace testing {

struct ProblemSpec {
  std::vector<std::int64_t> q_lens;   // nq_b
  std::vector<std::int64_t> kv_lens;  // L_b >= nq_b
  int num_q_heads = 64;
  int num_kv_heads = 4;
  int topk = 16;
  std::uint64_t seed = 1;
  int spare_pages = 3;        // physical pages no request uses
  bool shuffle_pages = true;  // scatter logical blocks over physical pages
  bool with_main = true;      // allocate q, k_cache, v_cache
};

struct Problem {
  ProblemSpec spec;
  std::int64_t total_q = 0, num_pages = 0, max_pages = 0;
  std::vector<std::uint16_t> q, k_cache, v_cache, index_q, index_k_cache;  // bf16 bit patterns
  // fp8 e4m3 copies of index_q and index_k_cache, filled by use_fp8_index(); while they are non-empty,
  // index_q_t() and index_k_cache_t() describe them instead of the bf16 ones.
  std::vector<std::uint8_t> index_q8, index_k_cache8;
  std::vector<std::int32_t> page_table, cu_seqlens_q, seq_lens_k, topk;
  std::vector<std::uint16_t> out;  // [T, Hq, 128] bf16
  std::vector<float> lse;          // [T, Hq]

  std::int64_t num_requests() const { return static_cast<std::int64_t>(spec.q_lens.size()); }
  std::int64_t position(std::int64_t b, std::int64_t i) const;  // bottom-right aligned query position
  // Physical page of logical block j of request b.
  std::int32_t page(std::int64_t b, std::int64_t j) const { return page_table[static_cast<std::size_t>(b * max_pages + j)]; }

  Tensor q_t();
  Tensor k_cache_t();
  Tensor v_cache_t();
  Tensor index_q_t();
  Tensor index_k_cache_t();
  Tensor page_table_t();
  Tensor cu_seqlens_q_t();
  Tensor seq_lens_k_t();
  Tensor topk_t();
  Tensor out_t();
  Tensor lse_t();
  // Index-selection arguments over the whole problem, writing into topk.
  IndexPrefillArgs index_prefill_args();
  // Rounds index_q and index_k_cache to fp8 e4m3 and keeps both copies (the bf16 ones then hold the same values,
  // exactly); the index descriptors become fp8. Call it again after editing the bf16 copies.
  void use_fp8_index();
};

Problem make_problem(const ProblemSpec& spec);

// Fills `v` with bf16-rounded N(0, scale^2) values.
void fill_normal(std::vector<std::uint16_t>* v, std::mt19937_64* rng, float scale);
std::uint16_t to_bf16(float f);
float from_bf16(std::uint16_t h);

}  // namespace testing
}  // namespace msa
