// demo.cpp — `msa demo`: the whole MSA pipeline on a long synthetic problem with planted needles.
//
// Every request gets `needles` blocks whose index keys point along the index queries' common direction (so the
// index branch must find them) and whose main-branch keys match the query heads (so they carry almost all of the
// dense attention mass). The first needle sits in blocks 0..3, so every query with more than 16 visible blocks
// sees one. The demo then checks that each needle visible to a query was selected, and compares the sparse output
// with dense attention on sampled query tokens. Queries are processed in chunks (chunked prefill with history),
// which also gives the progress line.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <set>

#include <unistd.h>

#include "cli.h"
#include "msa/msa.h"
#include "problem.h"

namespace msa {
namespace cli {
namespace {

constexpr std::int64_t kChunk = 512;  // query tokens per call (a progress step)

// On a terminal the line updates in place; in a log only the finished line is written.
void progress(const char* phase, std::int64_t done, std::int64_t total) {
  static const bool tty = isatty(fileno(stderr)) != 0;
  if (!tty && done != total) return;
  std::fprintf(stderr, "\r  [%s] %3d%% (%lld/%lld query tokens)", phase, static_cast<int>(100 * done / std::max<std::int64_t>(total, 1)),
               static_cast<long long>(done), static_cast<long long>(total));
  if (done == total) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

// Unit vector along a random direction, scaled.
std::vector<float> direction(std::mt19937_64* rng, float scale) {
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> v(kHeadDim);
  double norm = 0;
  for (auto& x : v) {
    x = n(*rng);
    norm += x * x;
  }
  for (auto& x : v) x = static_cast<float>(x / std::sqrt(norm) * scale);
  return v;
}

void plant(testing::Problem* p, int needles, std::vector<std::vector<std::int64_t>>* needle_blocks) {
  std::mt19937_64 rng(p->spec.seed * 7919 + 17);
  const int Hq = p->spec.num_q_heads, Hkv = p->spec.num_kv_heads, G = Hq / Hkv;
  std::normal_distribution<float> noise(0.0f, 1.0f);
  const std::vector<float> u = direction(&rng, 1.0f);  // index direction
  std::vector<std::vector<float>> w;                   // main-branch direction per KV head
  for (int g = 0; g < Hkv; ++g) w.push_back(direction(&rng, 1.0f));

  // Index queries: 4 u + small noise; main queries: 8 w_g + N(0, 1).
  for (std::int64_t t = 0; t < p->total_q; ++t) {
    for (int g = 0; g < Hkv; ++g)
      for (int d = 0; d < kHeadDim; ++d)
        p->index_q[static_cast<std::size_t>((t * Hkv + g) * kHeadDim + d)] = testing::to_bf16(4.0f * u[d] + 0.25f * noise(rng));
    for (int h = 0; h < Hq; ++h)
      for (int d = 0; d < kHeadDim; ++d)
        p->q[static_cast<std::size_t>((t * Hq + h) * kHeadDim + d)] = testing::to_bf16(8.0f * w[h / G][d] + noise(rng));
  }
  needle_blocks->assign(static_cast<std::size_t>(p->num_requests()), {});
  for (std::int64_t b = 0; b < p->num_requests(); ++b) {
    const std::int64_t n_blocks = (p->spec.kv_lens[static_cast<std::size_t>(b)] + kBlockSize - 1) / kBlockSize;
    if (n_blocks < 2) continue;
    std::set<std::int64_t> chosen;
    chosen.insert(std::uniform_int_distribution<std::int64_t>(0, std::min<std::int64_t>(3, n_blocks - 2))(rng));
    std::uniform_int_distribution<std::int64_t> pick(0, n_blocks - 2);
    for (int tries = 0; static_cast<int>(chosen.size()) < std::min<std::int64_t>(needles, n_blocks - 1) && tries < 10000; ++tries)
      chosen.insert(pick(rng));
    for (std::int64_t j : chosen) {
      (*needle_blocks)[static_cast<std::size_t>(b)].push_back(j);
      const std::int64_t page = p->page(b, j);
      for (std::int64_t r = 0; r < kPageSize; ++r) {
        for (int d = 0; d < kHeadDim; ++d)
          p->index_k_cache[static_cast<std::size_t>((page * kPageSize + r) * kHeadDim + d)] = testing::to_bf16(16.0f * u[d]);
        for (int g = 0; g < Hkv; ++g)
          for (int d = 0; d < kHeadDim; ++d)
            p->k_cache[static_cast<std::size_t>(((page * Hkv + g) * kPageSize + r) * kHeadDim + d)] =
                testing::to_bf16(24.0f * w[g][d]);
      }
    }
  }
}

// Descriptors of request b's query tokens [i0, i0 + n) as one chunked-prefill request with history.
struct Chunk {
  std::int32_t cu[2];
  std::int32_t seq_len;
  Tensor page_table, cu_seqlens_q, seq_lens_k;
  std::int64_t t0;  // first global token
};

Chunk make_chunk(testing::Problem& p, std::int64_t b, std::int64_t i0, std::int64_t n) {
  Chunk c;
  c.cu[0] = 0;
  c.cu[1] = static_cast<std::int32_t>(n);
  c.seq_len = static_cast<std::int32_t>(p.position(b, i0 + n - 1) + 1);
  c.t0 = p.cu_seqlens_q[static_cast<std::size_t>(b)] + i0;
  c.page_table = make_tensor(p.page_table.data() + b * p.max_pages, DType::kInt32, {1, p.max_pages});
  c.cu_seqlens_q = make_tensor(c.cu, DType::kInt32, {2});
  c.seq_lens_k = make_tensor(&c.seq_len, DType::kInt32, {1});
  return c;
}

Tensor rows(Tensor t, std::int64_t first, std::int64_t n, int dim = 0) {
  t.data = static_cast<char*>(t.data) + first * t.stride[dim] * static_cast<std::int64_t>(dtype_size(t.dtype));
  t.shape[dim] = n;
  return t;
}

}  // namespace

int run_demo(Options& opts) {
  const std::string device = opts.get("device", "auto");
  const bool gpu = device == "cuda" || (device == "auto" && gpu_pipeline_available());
  const std::int64_t tokens = opts.get_int("tokens", gpu ? 131072 : 4096);
  const std::int64_t batch = opts.get_int("batch", 1);
  const int needles = static_cast<int>(opts.get_int("needles", 8));
  const std::int64_t sample = opts.get_int("sample", gpu ? 32 : 128);
  const std::uint64_t seed = static_cast<std::uint64_t>(opts.get_int("seed", 1));
  for (const auto& kv : opts.values)
    if (kv.first != "tokens" && kv.first != "batch" && kv.first != "needles" && kv.first != "sample" &&
        kv.first != "seed" && kv.first != "device")
      opts.errors.push_back("unknown option --" + kv.first);
  if (tokens < 1 || batch < 1 || needles < 1 || needles > 15 || sample < 1)
    opts.errors.push_back("need --tokens >= 1, --batch >= 1, 1 <= --needles <= 15, --sample >= 1");
  if (device != "auto" && device != "cpu" && device != "cuda") opts.errors.push_back("--device must be auto, cpu or cuda");
  if (!opts.errors.empty()) {
    for (const auto& e : opts.errors) std::fprintf(stderr, "msa demo: %s\n", e.c_str());
    return 2;
  }
  if (device == "cuda" && !gpu_pipeline_available()) {
    std::fprintf(stderr, "msa demo: --device cuda needs a CUDA build and an sm_90 (Hopper) GPU; use --device cpu\n");
    return 2;
  }

  testing::ProblemSpec spec;
  spec.q_lens.assign(static_cast<std::size_t>(batch), tokens);
  spec.kv_lens.assign(static_cast<std::size_t>(batch), tokens);
  spec.seed = seed;
  std::printf("msa demo: %lld request(s) x %lld tokens, Hq %d, Hkv = H_idx %d, head dim 128, block 128, k 16, device %s (%s)\n",
              static_cast<long long>(batch), static_cast<long long>(tokens), spec.num_q_heads, spec.num_kv_heads,
              gpu ? "cuda" : "cpu", device == "auto" ? "auto" : "requested");
  std::fprintf(stderr, "  generating the problem ...");
  testing::Problem p = testing::make_problem(spec);
  std::vector<std::vector<std::int64_t>> needle_blocks;
  plant(&p, needles, &needle_blocks);
  const std::int64_t Hq = spec.num_q_heads, Hkv = spec.num_kv_heads;
  std::fprintf(stderr, " done\n");

  double t_index = 0, t_attn = 0;
  auto t0 = std::chrono::steady_clock::now();
  if (gpu) {  // the whole batch in one call per phase, then the same checks on the downloaded results
    std::fprintf(stderr, "  running index selection and sparse attention on the GPU ...");
    const Status st = run_pipeline_gpu(p, &t_index, &t_attn);
    std::fprintf(stderr, " done\n");
    if (!st.ok()) {
      std::fprintf(stderr, "msa demo: GPU pipeline failed: %s\n", st.to_string().c_str());
      return 1;
    }
  }
  // Phase 1 (CPU): index selection, chunk by chunk.
  std::int64_t done = 0;
  for (std::int64_t b = 0; b < batch && !gpu; ++b)
    for (std::int64_t i0 = 0; i0 < tokens; i0 += kChunk) {
      const std::int64_t n = std::min(kChunk, tokens - i0);
      Chunk c = make_chunk(p, b, i0, n);
      IndexPrefillArgs a;
      a.index_q = rows(p.index_q_t(), c.t0, n);
      a.index_k_cache = p.index_k_cache_t();
      a.page_table = c.page_table;
      a.cu_seqlens_q = c.cu_seqlens_q;
      a.seq_lens_k = c.seq_lens_k;
      a.topk = rows(p.topk_t(), c.t0, n, 1);
      const Status st = index_select_prefill(a);
      if (!st.ok()) {
        std::fprintf(stderr, "\nmsa demo: index selection failed: %s\n", st.to_string().c_str());
        return 1;
      }
      progress("index selection", done += n, batch * tokens);
    }
  if (!gpu) t_index = seconds_since(t0);

  // Phase 2 (CPU): sparse attention.
  t0 = std::chrono::steady_clock::now();
  done = 0;
  for (std::int64_t b = 0; b < batch && !gpu; ++b)
    for (std::int64_t i0 = 0; i0 < tokens; i0 += kChunk) {
      const std::int64_t n = std::min(kChunk, tokens - i0);
      Chunk c = make_chunk(p, b, i0, n);
      SparsePrefillAttention attn;
      SparsePrefillPlanArgs pa;
      pa.topk = rows(p.topk_t(), c.t0, n, 1);
      pa.cu_seqlens_q = c.cu_seqlens_q;
      pa.seq_lens_k = c.seq_lens_k;
      pa.page_table = c.page_table;
      SparsePrefillRunArgs ra;
      ra.q = rows(p.q_t(), c.t0, n);
      ra.k_cache = p.k_cache_t();
      ra.v_cache = p.v_cache_t();
      ra.out = rows(p.out_t(), c.t0, n);
      ra.lse = rows(p.lse_t(), c.t0, n);
      Status st = attn.plan(pa);
      if (st.ok()) st = attn.run(ra);
      if (!st.ok()) {
        std::fprintf(stderr, "\nmsa demo: sparse attention failed: %s\n", st.to_string().c_str());
        return 1;
      }
      progress("sparse attention", done += n, batch * tokens);
    }
  if (!gpu) t_attn = seconds_since(t0);

  // Needle recall: every needle block below a query's local block must be in each of its heads' selections.
  std::int64_t expected = 0, found = 0;
  double idx_flops = 0, main_flops = 0, dense_flops = 0;
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t i = 0; i < tokens; ++i) {
      const std::int64_t t = p.cu_seqlens_q[static_cast<std::size_t>(b)] + i, pos = p.position(b, i);
      const std::int64_t local = pos / kBlockSize;
      dense_flops += 4.0 * Hq * kHeadDim * static_cast<double>(pos + 1);
      idx_flops += 2.0 * Hkv * kHeadDim * static_cast<double>(pos + 1);
      for (std::int64_t g = 0; g < Hkv; ++g) {
        std::set<std::int64_t> sel;
        for (int s = 0; s < spec.topk; ++s) {
          const std::int32_t id = p.topk[static_cast<std::size_t>((g * p.total_q + t) * spec.topk + s)];
          if (id < 0) continue;
          sel.insert(id);
          const std::int64_t keys = std::min<std::int64_t>(kBlockSize, pos + 1 - id * kBlockSize);
          main_flops += 4.0 * (Hq / Hkv) * kHeadDim * static_cast<double>(keys);
        }
        for (std::int64_t j : needle_blocks[static_cast<std::size_t>(b)])
          if (j < local) {
            ++expected;
            found += sel.count(j);
          }
      }
    }

  // Dense comparison on evenly spaced sampled query tokens (one-token requests ending at the query's position).
  t0 = std::chrono::steady_clock::now();
  const std::int64_t total = batch * tokens, n_sample = std::min(sample, total);
  double err2 = 0, ref2 = 0, max_abs = 0;
  std::vector<float> dense(static_cast<std::size_t>(Hq * kHeadDim));
  for (std::int64_t s = 0; s < n_sample; ++s) {
    const std::int64_t flat = total - 1 - s * (total / n_sample);  // the last token first: the longest rows
    const std::int64_t b = flat / tokens, i = flat % tokens, t = p.cu_seqlens_q[static_cast<std::size_t>(b)] + i;
    Chunk c = make_chunk(p, b, i, 1);
    const Tensor out = make_tensor(dense.data(), DType::kFP32, {1, Hq, kHeadDim});
    const Status st = reference::dense_attention(rows(p.q_t(), t, 1), p.k_cache_t(), p.v_cache_t(), c.page_table,
                                                 c.cu_seqlens_q, c.seq_lens_k, out, Tensor{});
    if (!st.ok()) {
      std::fprintf(stderr, "\nmsa demo: dense attention failed: %s\n", st.to_string().c_str());
      return 1;
    }
    for (std::int64_t e = 0; e < Hq * kHeadDim; ++e) {
      const double ref = dense[static_cast<std::size_t>(e)];
      const double got = testing::from_bf16(p.out[static_cast<std::size_t>(t * Hq * kHeadDim + e)]);
      err2 += (got - ref) * (got - ref);
      ref2 += ref * ref;
      max_abs = std::max(max_abs, std::fabs(got - ref));
    }
    progress("dense reference", s + 1, n_sample);
  }
  const double t_dense = seconds_since(t0);
  const double rel = std::sqrt(err2 / std::max(ref2, 1e-300));

  const bool needles_ok = found == expected;
  const bool error_ok = rel < 1e-2;
  std::printf("\nneedles      : %lld of %lld (query, head, needle) pairs selected -> %s\n",
              static_cast<long long>(found), static_cast<long long>(expected), needles_ok ? "all found" : "MISSED");
  std::printf("error        : relative L2 %.3e, max abs %.3e vs dense attention on %lld sampled tokens -> %s\n", rel,
              max_abs, static_cast<long long>(n_sample), error_ok ? "ok (< 1e-2)" : "TOO LARGE");
  std::printf("time (%s)   : index selection %.3f s, sparse attention %.3f s (wall, first calls included), dense "
              "reference on the CPU (%lld tokens) %.3f s\n",
              gpu ? "gpu" : "cpu", t_index, t_attn, static_cast<long long>(n_sample), t_dense);
  std::printf("attention FLOPs: dense %.3e, MSA %.3e (index %.3e + main %.3e) -> %.2fx fewer\n", dense_flops,
              idx_flops + main_flops, idx_flops, main_flops, dense_flops / (idx_flops + main_flops));
  std::printf("result       : %s\n", needles_ok && error_ok ? "PASS" : "FAIL");
  return needles_ok && error_ok ? 0 : 1;
}

}  // namespace cli
}  // namespace msa
