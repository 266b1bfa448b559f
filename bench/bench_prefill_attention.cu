// bench_prefill_attention.cu — main-branch prefill benchmark on the GPU (a program, not a test): the CUDA path of
// SparsePrefillAttention (device k2q → KV-outer attention → combine, in query chunks) for one causal sequence.
//
// M3 heads (Hq 64, Hkv 4, D 128, k 16), N = 32K, 128K, 512K, 1M, two selection patterns (issue 4):
//   random    — 15 uniformly random history blocks (one per stratum, so distinct) + the local block;
//   clustered — the tokens of each 128-token query block draw their 15 history blocks from one pool of 24 random
//               blocks shared by that query block (+ the local block).
// Per-phase times come from graph replays that stop after k2q, after attention, and after combine (the plan's
// benchmark hook); effective TFLOP/s counts 4 Hq D per visible (query, key) pair. Bytes: the floor traffic of
// each phase (attention: Q per selected block + partials written; combine: partials read + output written).
// At N >= 512K a random case with 64K-token chunks follows (workspace printed with every line; --chunks picks
// other chunk sizes). The phases are those
// of the KV-outer schedule (kKvOuter); on the same inputs, alternating with those replays, the default schedule
// (kAuto: union of blocks where a tile's selections overlap) and, for clustered selections at every N and random
// ones up to 128K, the union-of-blocks kernel alone (kUnion) are timed end to end. kAuto is also timed in parts
// (timing-only replays, every case): the fronts alone (union mask + k2q), without the union kernel, and without the
// KV-outer attention and combine.
// --kv-heads H (Hq stays 64): another group size G = 64 / H (8, 16, 32, 64: G = 8, 4, 2, 1). The KV-outer chain's
// phases as above, and alternating with them the query-outer split kernel + combine end to end (the plan's
// split_kernel hook): the measurement behind KV-outer for every G; kAuto equals KV-outer there and kUnion does not
// exist. (Below G = 8 the KV-outer phases are not additive: a replay that stops after the attention can take longer
// than the whole chain.)
// Usage: bench_prefill_attention [--json FILE] [--min-n N] [--max-n N] [--chunks C1,C2,...] [--pattern P]
//                                [--iters I] [--settle] [--trace] [--kv-heads H]
// (--chunks: only the random cases at N >= 512K, with these max_chunk_tokens; --pattern random or clustered: only
// those cases; --iters: timed replays per variant, of which the median is printed: by default 7, 5 from 512K on;
// with 3 there the medians put kAuto 3-5 ms behind KV-outer at 1M random, with 9 1.5 ms, H100.)
// Replay order: the variants (0 k2q, 1 k2q + attention, 2 KV-outer, 3 kAuto, 4 kAuto's fronts, 5 kAuto without
// its union kernel, 6 kAuto without KV-outer + combine, 7 union alone) run in rotating order, so each follows the
// one before it. At N >= 512K the card runs at its power cap and its clock at a replay's start depends on the
// replay before (docs/performance.md, "Power cap and replay order"): at clustered 1M kAuto after the KV-outer
// replay ran ~13 ms slower than elsewhere (H100). --settle: each timed replay follows an untimed replay of the
// same variant, as layer after layer would (H200: KV-outer random 1M 266-270 -> 283-285 ms, clustered kAuto
// 1M 213.5-214.0 -> 203.6-203.8); --trace: every timed replay with the SM clock before and after it.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "api/attention_cuda.h"
#include "bench_util.h"

namespace {

constexpr int kHq = 64, kTopk = 16;
int g_hkv = 4;  // Hkv (--kv-heads)

// Clustered selection for one sequence of T tokens (token t at position t): pool of 24 stratified random blocks of
// [0, qb) per (head, query block qb); each token takes 15 distinct pool entries (partial Fisher-Yates), then qb.
__global__ void clustered_selection(std::int32_t* topk, std::int64_t T, int heads, int k, unsigned seed) {
  constexpr int kPool = 24;
  const std::int64_t p = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (p >= heads * T) return;
  const std::int64_t t = p % T;
  const int h = static_cast<int>(p / T), qb = static_cast<int>(t / 128);
  std::int32_t* row = topk + p * k;
  if (qb + 1 <= k) {
    for (int s = 0; s < k; ++s) row[s] = s <= qb ? s : -1;
    return;
  }
  int pool[kPool];
  const int n = qb < kPool ? qb : kPool;
  for (int i = 0; i < n; ++i) {
    if (qb < kPool) {
      pool[i] = i;
    } else {
      const unsigned key = static_cast<unsigned>((h * 131071 + qb) * kPool + i);
      const float u = static_cast<float>(msa_bench::hash32(key, seed) & 0xffffff) / 16777216.0f;
      pool[i] = static_cast<int>((static_cast<double>(i) + u) * qb / kPool);
    }
  }
  for (int s = 0; s < k - 1; ++s) {
    const int j = s + static_cast<int>(msa_bench::hash32(static_cast<unsigned>(p * k + s), seed ^ 0x9e3779b9u) %
                                       static_cast<unsigned>(n - s));
    const int v = pool[j];
    pool[j] = pool[s];
    pool[s] = v;
    row[s] = v;
  }
  row[k - 1] = qb;
}

struct Result {
  std::string name;
  long long n, chunk;
  double workspace_gb, k2q_ms, attn_ms, combine_ms, total_ms, tflops, attn_gb, combine_gb;
  double auto_ms, union_ms;  // the kAuto and kUnion schedules end to end (union_ms 0 when not timed); G != 16: auto_ms
                             // is the split kernel + combine end to end
  double auto_front_ms, auto_no_union_ms, auto_no_kv_outer_ms;  // kAuto in parts
};

bool g_settle = false;  // --settle: every timed replay follows an untimed one of the same variant (graph_median_ms)

Result run_case(long long N, bool clustered, long long chunk, int iters) {
  const long long T = N, pages = (N + 127) / 128;
  const std::size_t kv_elems = static_cast<std::size_t>(pages) * g_hkv * 128 * 128;
  __nv_bfloat16 *q, *kc, *vc, *out;
  float* lse;
  std::int32_t *topk, *pt, *cu, *seq;
  CHECK_CUDA(cudaMalloc(&q, static_cast<std::size_t>(T) * kHq * 128 * 2));
  CHECK_CUDA(cudaMalloc(&out, static_cast<std::size_t>(T) * kHq * 128 * 2));
  CHECK_CUDA(cudaMalloc(&lse, static_cast<std::size_t>(T) * kHq * 4));
  CHECK_CUDA(cudaMalloc(&kc, kv_elems * 2));
  CHECK_CUDA(cudaMalloc(&vc, kv_elems * 2));
  CHECK_CUDA(cudaMalloc(&topk, static_cast<std::size_t>(g_hkv) * T * kTopk * 4));
  CHECK_CUDA(cudaMalloc(&pt, pages * 4));
  CHECK_CUDA(cudaMalloc(&cu, 2 * 4));
  CHECK_CUDA(cudaMalloc(&seq, 4));
  msa_bench::fill_bf16_hash<<<4096, 256>>>(q, static_cast<std::size_t>(T) * kHq * 128, 1u);
  msa_bench::fill_bf16_hash<<<4096, 256>>>(kc, kv_elems, 2u);
  msa_bench::fill_bf16_hash<<<4096, 256>>>(vc, kv_elems, 3u);
  const unsigned sel_blocks = static_cast<unsigned>((g_hkv * T + 255) / 256);
  if (clustered)
    clustered_selection<<<sel_blocks, 256>>>(topk, T, g_hkv, kTopk, 4u);
  else
    msa_bench::random_selection<<<sel_blocks, 256>>>(topk, T, g_hkv, kTopk, static_cast<int>(T), N, 4u);
  std::vector<std::int32_t> h_pt(pages);
  for (long long i = 0; i < pages; ++i) h_pt[i] = static_cast<std::int32_t>((i * 7919) % pages);  // scattered
  const std::int32_t h_cu[2] = {0, static_cast<std::int32_t>(T)}, h_seq = static_cast<std::int32_t>(N);
  CHECK_CUDA(cudaMemcpy(pt, h_pt.data(), h_pt.size() * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(cu, h_cu, 8, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(seq, &h_seq, 4, cudaMemcpyHostToDevice));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  CHECK_CUDA(cudaDeviceSynchronize());

  const msa::Device dev = msa::Device::cuda(0, stream);
  msa::SparsePrefillPlanArgs pa;
  pa.topk = msa::make_tensor(topk, msa::DType::kInt32, {g_hkv, T, kTopk}, dev);
  pa.cu_seqlens_q = msa::make_tensor(cu, msa::DType::kInt32, {2}, dev);
  pa.seq_lens_k = msa::make_tensor(seq, msa::DType::kInt32, {1}, dev);
  pa.page_table = msa::make_tensor(pt, msa::DType::kInt32, {1, pages}, dev);
  pa.num_q_heads = kHq;
  pa.num_kv_heads = g_hkv;
  // Per-phase times of the KV-outer chain alone (kKvOuter), then the default schedule (kAuto: union of blocks for
  // tiles whose selections overlap, KV-outer elsewhere) and the union kernel alone (kUnion), end to end.
  const bool g16 = kHq == 16 * g_hkv;
  const bool time_union = g16 && (clustered || N <= (1 << 17));
  msa::detail::PrefillCudaPlan plan, auto_plan, union_plan;
  const std::string name = std::string(clustered ? "clustered " : "random    ") + std::to_string(N / 1024) + "K" +
                           (chunk > 0 ? " chunk " + std::to_string(chunk / 1024) + "K" : "") +
                           (g_hkv != 4 ? " G" + std::to_string(kHq / g_hkv) : "");
  auto check = [&](const msa::Status& st) {
    if (!st.ok()) {
      std::fprintf(stderr, "%s: %s\n", name.c_str(), st.to_string().c_str());
      std::exit(1);
    }
  };
  pa.schedule = msa::PrefillSchedule::kKvOuter;
  check(msa::detail::plan_prefill_cuda(pa, chunk, &plan));
  pa.schedule = msa::PrefillSchedule::kAuto;
  check(msa::detail::plan_prefill_cuda(pa, chunk, &auto_plan, !g16));  // G != 16: the split kernel instead
  if (time_union) {
    pa.schedule = msa::PrefillSchedule::kUnion;
    check(msa::detail::plan_prefill_cuda(pa, chunk, &union_plan));
  }
  const std::size_t ws_bytes = std::max(plan.workspace_bytes, auto_plan.workspace_bytes);
  void* ws = nullptr;
  CHECK_CUDA(cudaMalloc(&ws, ws_bytes));
  const msa::SparsePrefillRunArgs ra{msa::make_tensor(q, msa::DType::kBF16, {T, kHq, 128}, dev),
                                     msa::make_tensor(kc, msa::DType::kBF16, {pages, g_hkv, 128, 128}, dev),
                                     msa::make_tensor(vc, msa::DType::kBF16, {pages, g_hkv, 128, 128}, dev),
                                     msa::make_tensor(out, msa::DType::kBF16, {T, kHq, 128}, dev),
                                     msa::make_tensor(lse, msa::DType::kFP32, {T, kHq}, dev)};
  std::vector<std::function<void()>> variants;
  for (int phases = 1; phases <= 3; ++phases)
    variants.push_back([&, phases] { check(msa::detail::run_prefill_cuda(plan, pa.topk, ra, ws, ws_bytes, phases)); });
  variants.push_back([&] { check(msa::detail::run_prefill_cuda(auto_plan, pa.topk, ra, ws, ws_bytes)); });

  // kAuto in parts, at every N and pattern: what kAuto spends over the KV-outer chain shows in them.
  if (g16) {
    variants.push_back([&] { check(msa::detail::run_prefill_cuda(auto_plan, pa.topk, ra, ws, ws_bytes, 1)); });
    variants.push_back([&] {
      check(msa::detail::run_prefill_cuda(auto_plan, pa.topk, ra, ws, ws_bytes, 3, msa::detail::kSkipUnionBack));
    });
    variants.push_back([&] {
      check(msa::detail::run_prefill_cuda(auto_plan, pa.topk, ra, ws, ws_bytes, 3, msa::detail::kSkipKvOuterBack));
    });
  }
  if (time_union)
    variants.push_back([&] { check(msa::detail::run_prefill_cuda(union_plan, pa.topk, ra, ws, ws_bytes)); });
  const std::vector<double> t = msa_bench::graph_median_ms(variants, stream, 1, iters, g_settle);

  // Visible (query, key) pairs: every key <= t of the 16 listed blocks (all keys <= t while n_vis <= 16).
  double pairs = 0;
  for (long long tok = 0; tok < T; ++tok) pairs += tok / 128 + 1 <= kTopk ? tok + 1 : (kTopk - 1) * 128 + tok % 128 + 1;
  const double flops = pairs * g_hkv * (kHq / g_hkv) * 4.0 * 128;
  const double partial_bytes = static_cast<double>(T) * kTopk * kHq * (128 * 2 + 4);
  const double q_bytes = static_cast<double>(T) * kTopk * kHq * 128 * 2;  // Q of each (token, selected block, head)
  Result r{name, N, chunk > 0 ? chunk : static_cast<long long>(msa::detail::kDefaultPrefillChunkTokens),
           static_cast<double>(ws_bytes) / 1e9, t[0], t[1] - t[0], t[2] - t[1], t[2], flops / (t[2] * 1e-3) / 1e12,
           (q_bytes + partial_bytes) / 1e9, (partial_bytes + static_cast<double>(T) * kHq * (256 + 4)) / 1e9,
           t[3], time_union ? t[7] : 0.0, g16 ? t[4] : 0.0, g16 ? t[5] : 0.0, g16 ? t[6] : 0.0};
  for (void* p : {static_cast<void*>(q), static_cast<void*>(kc), static_cast<void*>(vc), static_cast<void*>(topk),
                  static_cast<void*>(pt), static_cast<void*>(cu), static_cast<void*>(seq), static_cast<void*>(out),
                  static_cast<void*>(lse), ws})
    cudaFree(p);
  CHECK_CUDA(cudaStreamDestroy(stream));
  std::printf("%-24s k2q %7.3f ms | attention %9.3f ms (%5.2f TB/s floor bytes) | combine %8.3f ms (%5.2f TB/s) | "
              "total %9.3f ms  %6.1f eff. TFLOP/s  (workspace %.1f GB)\n",
              r.name.c_str(), r.k2q_ms, r.attn_ms, r.attn_gb / r.attn_ms, r.combine_ms,
              r.combine_gb / r.combine_ms, r.total_ms, r.tflops, r.workspace_gb);
  std::printf("%-24s %s %9.3f ms  %6.1f eff. TFLOP/s", r.name.c_str(),
              g16 ? "default schedule (kAuto)" : "split kernel + combine", r.auto_ms, flops / (r.auto_ms * 1e-3) / 1e12);
  if (time_union)
    std::printf(" | union of blocks alone %9.3f ms  %6.1f eff. TFLOP/s", r.union_ms, flops / (r.union_ms * 1e-3) / 1e12);
  std::printf("\n");
  if (g16)
    std::printf("%-24s kAuto in parts: fronts (mask + k2q) %7.3f ms | without union kernel %8.3f ms | without "
                "KV-outer + combine %8.3f ms\n",
                r.name.c_str(), r.auto_front_ms, r.auto_no_union_ms, r.auto_no_kv_outer_ms);
  std::fflush(stdout);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const char* json = msa_bench::json_path(argc, argv);
  long long min_n = 1 << 15, max_n = 1 << 20;
  std::vector<long long> chunks{65536};  // the extra random cases at N >= 512K
  bool chunks_only = false;
  const char* pattern = nullptr;  // --pattern random|clustered: only those cases (e.g. for a profiler)
  int iters = 0;                  // --iters: timed replays per variant (median); default 7, 5 from 512K on
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--pattern") == 0) pattern = argv[i + 1];
    if (std::strcmp(argv[i], "--max-n") == 0) max_n = std::atoll(argv[i + 1]);
    if (std::strcmp(argv[i], "--min-n") == 0) min_n = std::atoll(argv[i + 1]);
    if (std::strcmp(argv[i], "--iters") == 0) iters = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--kv-heads") == 0) g_hkv = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--chunks") == 0) {  // comma-separated list; also skips the default-chunk cases
      chunks.clear();
      chunks_only = true;
      for (const char* c = argv[i + 1]; *c != '\0';) {
        chunks.push_back(std::atoll(c));
        while (*c != '\0' && *c != ',') ++c;
        if (*c == ',') ++c;
      }
    }
  }
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--settle") == 0) g_settle = true;
    if (std::strcmp(argv[i], "--trace") == 0) msa_bench::trace_replays = true;
  }
  if (g_hkv != 4 && g_hkv != 8 && g_hkv != 16 && g_hkv != 32 && g_hkv != 64) {
    std::fprintf(stderr, "--kv-heads: 4, 8, 16, 32 or 64 (G = 16, 8, 4, 2, 1)\n");
    return 2;
  }
  if (!msa_bench::have_cuda_device("bench_prefill_attention")) return 1;
  std::printf("sparse prefill attention, CUDA path: k2q + KV-outer + combine (Hq 64, Hkv %d, k 16, bf16, chunks of "
              "%lld tokens)\n",
              g_hkv, static_cast<long long>(msa::detail::kDefaultPrefillChunkTokens));
  std::vector<Result> rs;
  for (long long n : {1LL << 15, 1LL << 17, 1LL << 19, 1LL << 20}) {
    if (n > max_n) break;
    if (n < min_n) continue;
    const int replays = iters > 0 ? iters : n >= (1 << 19) ? 5 : 7;  // timed replays per variant (median)
    if (!chunks_only)
      for (bool clustered : {false, true})
        if (pattern == nullptr || std::strcmp(pattern, clustered ? "clustered" : "random") == 0)
          rs.push_back(run_case(n, clustered, 0, replays));
    // At large N every 16K-token chunk reloads K/V of nearly every block it touches; larger chunks (more
    // workspace: max_chunk_tokens) cut that traffic.
    if (n >= (1 << 19) && (pattern == nullptr || std::strcmp(pattern, "random") == 0))
      for (long long c : chunks) rs.push_back(run_case(n, false, c, replays));
  }
  if (json) {
    FILE* f = std::fopen(json, "w");
    std::fprintf(f, "[\n");
    for (std::size_t i = 0; i < rs.size(); ++i)
      std::fprintf(f,
                   "  {\"case\": \"%s\", \"n\": %lld, \"chunk\": %lld, \"workspace_gb\": %.2f, \"k2q_ms\": %.4f, "
                   "\"attention_ms\": %.4f, \"combine_ms\": %.4f, "
                   "\"total_ms\": %.4f, \"eff_tflops\": %.2f, \"attention_floor_gb\": %.3f, \"combine_gb\": %.3f, "
                   "\"auto_ms\": %.4f, \"union_ms\": %.4f, \"auto_front_ms\": %.4f, \"auto_no_union_ms\": %.4f, "
                   "\"auto_no_kv_outer_ms\": %.4f}%s\n",
                   rs[i].name.c_str(), rs[i].n, rs[i].chunk, rs[i].workspace_gb, rs[i].k2q_ms, rs[i].attn_ms,
                   rs[i].combine_ms, rs[i].total_ms, rs[i].tflops, rs[i].attn_gb, rs[i].combine_gb, rs[i].auto_ms,
                   rs[i].union_ms, rs[i].auto_front_ms, rs[i].auto_no_union_ms, rs[i].auto_no_kv_outer_ms,
                   i + 1 < rs.size() ? "," : "");
    std::fprintf(f, "]\n");
    std::fclose(f);
  }
  return 0;
}
