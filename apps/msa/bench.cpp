// bench.cpp — `msa bench`: times one MSA layer on the GPU, phase by phase and end to end, against its floors.
//
// Prefill: one MsaPrefill-equivalent call on B requests of N causal tokens (index selection, then per query chunk
// k2q → sparse attention → combine); decode: B requests x N context x Q queries (index selection, then split
// attention → combine). Every phase is timed by replaying a CUDA graph of it (the layer's launch sequence cut after
// that phase; differences give per-phase times), and the whole layer by replaying a graph of MsaPrefill::run /
// MsaDecode::run. Inputs are synthetic (a tiled pool of random bf16 values, --values; the selection is whatever the
// index branch picks on them; pages strided, shuffled or ordered, --pages; index_q and the index-K cache in bf16 or
// fp8 e4m3, --index-dtype). Floors: FLOPs at the card's bf16 GEMM
// ceiling (736 TFLOP/s measured on our H100) and bytes at its copy ceiling (2.99 TB/s), both from
// docs/performance.md.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cli.h"
#include "msa/msa.h"

#ifdef MSA_CLI_WITH_CUDA
#include <cuda_runtime.h>

#include "api/attention_cuda.h"
#include "reference/numeric.h"
#endif

namespace msa {
namespace cli {

#ifndef MSA_CLI_WITH_CUDA
int run_bench(Options&) {
  std::fprintf(stderr, "msa bench: this build has no CUDA; the benchmark times the GPU path\n");
  return 1;
}
#else
namespace {

constexpr double kGemmCeiling = 736e12, kCopyCeiling = 2.99e12;

struct Buffer {
  void* ptr = nullptr;
  explicit Buffer(std::size_t bytes) {
    if (cudaMalloc(&ptr, std::max<std::size_t>(bytes, 256)) != cudaSuccess) {
      std::fprintf(stderr, "msa bench: cudaMalloc of %.2f GB failed\n", bytes / 1e9);
      std::exit(1);
    }
  }
  ~Buffer() { cudaFree(ptr); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

// Fills n values, bf16 bits or (fp8: index tensors under --index-dtype fp8) e4m3 bits, by tiling a pool of N(0, 1)
// values rounded to that type (a full-size host copy of 16 GB would take minutes). The pool of 2^22 values
// (--values tiled) repeats every 256 index-K pages, so blocks 256 apart score alike and the selection's ties decide;
// 2^22 + 1021 values (--values distinct) shift every block's values against the pool.
template <class T>
void fill_tiled(void* dst, std::size_t n, std::uint64_t seed, bool distinct, T (*round)(float)) {
  std::vector<T> pool((std::size_t{1} << 22) + (distinct ? 1021 : 0));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  for (auto& v : pool) v = round(d(rng));
  for (std::size_t at = 0; at < n; at += pool.size()) {
    const std::size_t len = std::min(pool.size(), n - at);
    cudaMemcpy(static_cast<T*>(dst) + at, pool.data(), len * sizeof(T), cudaMemcpyHostToDevice);
  }
}

void fill(void* dst, std::size_t n, std::uint64_t seed, bool distinct, bool fp8 = false) {
  if (fp8)
    fill_tiled<std::uint8_t>(dst, n, seed, distinct, ref::float_to_fp8_e4m3);
  else
    fill_tiled<std::uint16_t>(dst, n, seed, distinct, ref::float_to_bf16);
}

void check(const Status& st, const char* what) {
  if (!st.ok()) {
    std::fprintf(stderr, "\nmsa bench: %s: %s\n", what, st.to_string().c_str());
    std::exit(1);
  }
}

// Median per-call time (ms) of fn captured `reps` times in one graph, replayed `iters` times.
double graph_ms(cudaStream_t stream, const std::function<void()>& fn, int reps, int iters, const char* phase) {
  std::fprintf(stderr, "\r  timing %-28s", phase);
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
  for (int r = 0; r < reps; ++r) fn();
  if (cudaStreamEndCapture(stream, &graph) != cudaSuccess || cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) {
    std::fprintf(stderr, "\nmsa bench: graph capture of %s failed\n", phase);
    std::exit(1);
  }
  cudaGraphDestroy(graph);
  cudaGraphLaunch(exec, stream);  // warm-up
  cudaStreamSynchronize(stream);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<float> t;
  for (int i = 0; i < iters; ++i) {
    cudaEventRecord(e0, stream);
    cudaGraphLaunch(exec, stream);
    cudaEventRecord(e1, stream);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    t.push_back(ms / reps);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaGraphExecDestroy(exec);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) {
    std::fprintf(stderr, "\nmsa bench: %s: %s\n", phase, cudaGetErrorString(e));
    std::exit(1);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Phase {
  std::string name;
  double ms;
};

}  // namespace

int run_bench(Options& opts) {
  const std::string mode = opts.get("mode", "prefill");
  const std::int64_t N = opts.get_int("tokens", mode == "decode" ? 1 << 20 : 1 << 17);
  const int B = static_cast<int>(opts.get_int("batch", 1));
  const int Q = static_cast<int>(opts.get_int("queries", 1));
  const int Hq = static_cast<int>(opts.get_int("heads", kM3NumQHeads));
  const int Hkv = static_cast<int>(opts.get_int("kv-heads", kM3NumKVHeads));
  const int k = static_cast<int>(opts.get_int("topk", kDefaultTopK));
  const int iters = static_cast<int>(opts.get_int("iters", mode == "decode" ? 20 : (N >= (1 << 19) ? 3 : 7)));
  const std::string json = opts.get("json", "");
  const std::string values = opts.get("values", "tiled"), page_order = opts.get("pages", "strided");
  const std::string index_dtype = opts.get("index-dtype", "bf16");
  for (const auto& kv : opts.values)
    if (kv.first != "mode" && kv.first != "tokens" && kv.first != "batch" && kv.first != "queries" &&
        kv.first != "heads" && kv.first != "kv-heads" && kv.first != "topk" && kv.first != "iters" && kv.first != "json" &&
        kv.first != "values" && kv.first != "pages" && kv.first != "index-dtype")
      opts.errors.push_back("unknown option --" + kv.first);
  if (mode != "prefill" && mode != "decode") opts.errors.push_back("--mode must be prefill or decode");
  if (values != "tiled" && values != "distinct") opts.errors.push_back("--values must be tiled or distinct");
  if (index_dtype != "bf16" && index_dtype != "fp8") opts.errors.push_back("--index-dtype must be bf16 or fp8");
  if (page_order != "strided" && page_order != "shuffled" && page_order != "ordered")
    opts.errors.push_back("--pages must be strided, shuffled or ordered");
  if (N < 1 || B < 1 || Q < 1 || iters < 1) opts.errors.push_back("--tokens, --batch, --queries, --iters must be >= 1");
  if (mode == "decode" && Q > N) opts.errors.push_back("--queries must be <= --tokens");
  if (!opts.errors.empty()) {
    for (const auto& e : opts.errors) std::fprintf(stderr, "msa bench: %s\n", e.c_str());
    return 2;
  }
  if (!sm90_device_available()) {
    std::fprintf(stderr, "msa bench: needs an sm_90 (Hopper) GPU\n");
    return 1;
  }
  const bool prefill = mode == "prefill";
  const std::int64_t pages_per = (N + 127) / 128, pages = pages_per * B;
  const std::int64_t T = prefill ? N * B : static_cast<std::int64_t>(B) * Q;
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  const bool fp8 = index_dtype == "fp8";
  const DType idt = fp8 ? DType::kFP8E4M3 : DType::kBF16;
  const int ib = fp8 ? 1 : 2;  // bytes per index element
  std::printf("msa bench: %s, %d request(s) x %lld tokens%s, Hq %d, Hkv = H_idx %d, k %d, bf16 (index %s), %s values, "
              "%s pages, on %s\n", mode.c_str(), B, static_cast<long long>(N),
              prefill ? "" : (" x " + std::to_string(Q) + " queries").c_str(), Hq, Hkv, k, fp8 ? "fp8 e4m3" : "bf16",
              values.c_str(), page_order.c_str(), prop.name);

  cudaStream_t stream;
  cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  const Device dev = Device::cuda(0, stream);
  std::fprintf(stderr, "  allocating and filling inputs ...");
  Buffer q(T * Hq * 128 * 2), iq(T * Hkv * 128 * ib), kc(pages * Hkv * 128 * 128 * 2), vc(pages * Hkv * 128 * 128 * 2),
      ikc(pages * 128 * 128 * ib), out(T * Hq * 128 * 2), topk(static_cast<std::size_t>(Hkv) * T * k * 4),
      meta(static_cast<std::size_t>(B) * (pages_per + 3) * 4 + 16);
  const bool distinct = values == "distinct";
  fill(q.ptr, static_cast<std::size_t>(T) * Hq * 128, 1, distinct);
  fill(iq.ptr, static_cast<std::size_t>(T) * Hkv * 128, 2, distinct, fp8);
  fill(kc.ptr, static_cast<std::size_t>(pages) * Hkv * 128 * 128, 3, distinct);
  fill(vc.ptr, static_cast<std::size_t>(pages) * Hkv * 128 * 128, 4, distinct);
  fill(ikc.ptr, static_cast<std::size_t>(pages) * 128 * 128, 5, distinct, fp8);
  std::vector<std::int32_t> pt(static_cast<std::size_t>(pages)), cu(B + 1), seq(B, static_cast<std::int32_t>(N));
  // Logical block i of the batch sits at page (7919 i) mod pages (--pages strided), at a random permutation of the
  // pages (--pages shuffled, like scripts/dense_compare.py's caches), or at page i (--pages ordered: the caches as
  // contiguous as dense attention's K and V).
  for (std::int64_t i = 0; i < pages; ++i)
    pt[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(page_order == "strided" ? (i * 7919) % pages : i);
  if (page_order == "shuffled") std::shuffle(pt.begin(), pt.end(), std::mt19937_64(6));
  for (int b = 0; b <= B; ++b) cu[static_cast<std::size_t>(b)] = static_cast<std::int32_t>(b * (prefill ? N : Q));
  auto* m32 = static_cast<std::int32_t*>(meta.ptr);
  cudaMemcpy(m32, pt.data(), pt.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(m32 + pages, cu.data(), cu.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(m32 + pages + B + 1, seq.data(), seq.size() * 4, cudaMemcpyHostToDevice);
  std::fprintf(stderr, " done\n");
  const Tensor q_t = make_tensor(q.ptr, DType::kBF16, {T, Hq, 128}, dev), iq_t = make_tensor(iq.ptr, idt, {T, Hkv, 128}, dev),
               kc_t = make_tensor(kc.ptr, DType::kBF16, {pages, Hkv, 128, 128}, dev),
               vc_t = make_tensor(vc.ptr, DType::kBF16, {pages, Hkv, 128, 128}, dev),
               ikc_t = make_tensor(ikc.ptr, idt, {pages, 128, 128}, dev),
               out_t = make_tensor(out.ptr, DType::kBF16, {T, Hq, 128}, dev),
               topk_t = make_tensor(topk.ptr, DType::kInt32, {Hkv, T, k}, dev),
               pt_t = make_tensor(m32, DType::kInt32, {B, pages_per}, dev),
               cu_t = make_tensor(m32 + pages, DType::kInt32, {B + 1}, dev),
               seq_t = make_tensor(m32 + pages + B + 1, DType::kInt32, {B}, dev);

  std::vector<Phase> phases;
  double total_ms = 0, flops = 0, bytes = 0;
  if (prefill) {
    IndexPrefillArgs sel{iq_t, ikc_t, pt_t, cu_t, seq_t, topk_t};
    check(index_select_prefill(sel), "index selection");  // a real selection for the attention phases
    double t_sel = 0, t_cut[3] = {0, 0, 0};
    {  // per-phase times from the attention plan's phase hook; its workspace is freed before the layer's
      SparsePrefillPlanArgs pa;
      pa.topk = topk_t;
      pa.cu_seqlens_q = cu_t;
      pa.seq_lens_k = seq_t;
      pa.page_table = pt_t;
      pa.num_q_heads = Hq;
      pa.num_kv_heads = Hkv;
      detail::PrefillCudaPlan plan;
      check(detail::plan_prefill_cuda(pa, 0, &plan), "attention plan");
      Buffer ws(plan.workspace_bytes);
      const SparsePrefillRunArgs ra{q_t, kc_t, vc_t, out_t, Tensor{}};
      t_sel = graph_ms(
          stream, [&] { check(index_select_prefill(sel), "index selection"); }, 1, iters, "index selection");
      const char* names[3] = {"k2q", "attention", "combine"};
      for (int ph = 1; ph <= 3; ++ph)
        t_cut[ph - 1] = graph_ms(
            stream,
            [&] { check(detail::run_prefill_cuda(plan, topk_t, ra, ws.ptr, plan.workspace_bytes, ph), names[ph - 1]); },
            1, iters, names[ph - 1]);
    }
    MsaPrefill layer;
    MsaPrefillPlanArgs lp;
    lp.cu_seqlens_q = cu_t;
    lp.seq_lens_k = seq_t;
    lp.page_table = pt_t;
    lp.total_q = T;
    lp.num_q_heads = Hq;
    lp.num_kv_heads = Hkv;
    lp.topk = k;
    check(layer.plan(lp), "MsaPrefill::plan");
    Buffer lws(layer.workspace_bytes());
    const MsaPrefillRunArgs lr{q_t, kc_t, vc_t, iq_t, ikc_t, out_t, Tensor{}, Tensor{}};
    total_ms = graph_ms(stream, [&] { check(layer.run(lr, lws.ptr, layer.workspace_bytes()), "MsaPrefill::run"); }, 1, iters, "end to end");
    phases = {{"index selection", t_sel}, {"k2q", t_cut[0]}, {"attention", t_cut[1] - t_cut[0]}, {"combine", t_cut[2] - t_cut[1]}};
    // FLOPs: index GEMM H_idx * 128 * 2 per causal (query, key) pair; main 4 Hq 128 per visible pair.
    double pairs_all = 0, pairs_vis = 0;
    for (std::int64_t t = 0; t < N; ++t) {
      pairs_all += static_cast<double>(t + 1);
      pairs_vis += t / 128 + 1 <= k ? t + 1 : (k - 1) * 128 + t % 128 + 1;
    }
    flops = B * (pairs_all * Hkv * 128 * 2 + pairs_vis * 4.0 * Hq * 128);
    // Bytes: q and index q read, K, V and index K read once, out written. (FLOPs are floored at the bf16 rate, also
    // under --index-dtype fp8, whose tensor cores are twice as fast.)
    bytes = static_cast<double>(T) * (Hq * 256 + Hkv * 128 * ib) + (2.0 * Hkv * 32768 + 128 * 128 * ib) * pages +
            T * Hq * 256.0;
  } else {
    MsaDecode layer;
    MsaDecodePlanArgs lp;
    lp.batch_size = B;
    lp.queries_per_request = Q;
    lp.num_q_heads = Hq;
    lp.num_kv_heads = Hkv;
    lp.topk = k;
    lp.device = dev;
    check(layer.plan(lp), "MsaDecode::plan");
    Buffer lws(layer.workspace_bytes());
    IndexDecodeArgs sel{iq_t, ikc_t, pt_t, seq_t, Q, topk_t};
    std::size_t sel_bytes = 0;
    check(index_select_decode_workspace_size(sel, &sel_bytes), "selection workspace");
    Buffer sws(sel_bytes);
    const double t_sel = graph_ms(stream, [&] { check(index_select_decode(sel, sws.ptr, sel_bytes), "index selection"); }, 10, iters, "index selection");
    SparseDecodeAttention attn;
    check(attn.plan(lp), "SparseDecodeAttention::plan");
    Buffer aws(attn.workspace_bytes());
    const SparseDecodeRunArgs ar{q_t, kc_t, vc_t, topk_t, pt_t, seq_t, out_t, Tensor{}};
    const double t_attn = graph_ms(stream, [&] { check(attn.run(ar, aws.ptr, attn.workspace_bytes()), "attention"); }, 10, iters, "attention + combine");
    const MsaDecodeRunArgs lr{q_t, kc_t, vc_t, iq_t, ikc_t, pt_t, seq_t, out_t, Tensor{}, Tensor{}};
    total_ms = graph_ms(stream, [&] { check(layer.run(lr, lws.ptr, layer.workspace_bytes()), "MsaDecode::run"); }, 10, iters, "end to end");
    phases = {{"index selection", t_sel}, {"attention + combine", t_attn}};
    flops = static_cast<double>(T) * (N * Hkv * 256.0 + 16.0 * 128 * 4 * Hq * 128);
    bytes = static_cast<double>(B) * N * 128 * ib +
            static_cast<double>(T) * Hkv * std::min<std::int64_t>(k, pages_per) * 65536;
  }
  std::fprintf(stderr, "\r%60s\r", "");
  for (const Phase& p : phases) std::printf("  %-22s %12.4f ms\n", p.name.c_str(), p.ms);
  const double floor_ms = std::max(flops / kGemmCeiling, bytes / kCopyCeiling) * 1e3;
  std::printf("  %-22s %12.4f ms   %.1f TFLOP/s, %.2f TB/s of floor bytes, %.2fx the floor (%.4f ms: %.3g FLOP at "
              "736 TFLOP/s, %.3g B at 2.99 TB/s)\n",
              "end to end", total_ms, flops / (total_ms * 1e-3) / 1e12, bytes / (total_ms * 1e-3) / 1e12,
              total_ms / floor_ms, floor_ms, flops, bytes);
  if (!json.empty()) {
    FILE* f = std::fopen(json.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "msa bench: cannot write %s\n", json.c_str());
      return 1;
    }
    std::fprintf(f, "{\"mode\": \"%s\", \"device\": \"%s\", \"batch\": %d, \"tokens\": %lld, \"queries\": %d, \"heads\": %d, "
                    "\"kv_heads\": %d, \"topk\": %d, \"values\": \"%s\", \"pages\": \"%s\", \"index_dtype\": \"%s\", "
                    "\"phases_ms\": {",
                 mode.c_str(), prop.name, B, static_cast<long long>(N), Q, Hq, Hkv, k, values.c_str(), page_order.c_str(),
                 index_dtype.c_str());
    for (std::size_t i = 0; i < phases.size(); ++i)
      std::fprintf(f, "%s\"%s\": %.5f", i ? ", " : "", phases[i].name.c_str(), phases[i].ms);
    std::fprintf(f, "}, \"total_ms\": %.5f, \"flops\": %.6g, \"floor_bytes\": %.6g, \"floor_ms\": %.5f}\n", total_ms, flops,
                 bytes, floor_ms);
    std::fclose(f);
  }
  cudaStreamDestroy(stream);
  return 0;
}
#endif

}  // namespace cli
}  // namespace msa
