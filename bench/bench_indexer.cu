// bench_indexer.cu — index-selection benchmark on the GPU (a program, not a test).
//
// Prefill: one causal sequence of N tokens, M3 shapes (H_idx 4, D 128, k 16), index TFLOP/s with
// FLOPs = H_idx * D * N^2. Decode: B requests x N context x Q queries, index-K bytes read per second.
// Inputs are uniform random bf16 (or, in the "fp8" cases, e4m3) made on the device; pages are scattered by a fixed
// permutation. fp8 prefill is held against twice the measured bf16 GEMM ceiling (Hopper's fp8 tensor-core rate is
// twice its bf16 rate; not measured here), fp8 decode against its halved index-K bytes. Each case is timed
// by replaying a captured CUDA graph (median of the replays). The top-k share is 1 - t(scores only) / t(full), where the
// scores-only run (an internal benchmark mode) scores and reduces every block but ranks none. `--json FILE` writes
// the results.
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "api/bench_hooks.h"
#include "bench_util.h"
#include "msa/msa.h"

namespace {

// Uniform values in [-1, 1) as T (__nv_bfloat16 or __nv_fp8_e4m3, both built from a float).
template <class T>
__global__ void fill_uniform(T* p, std::size_t n, unsigned seed) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    p[i] = T(static_cast<float>(msa_bench::hash32(static_cast<unsigned>(i), seed) & 0xffffff) / 8388608.0f - 1.0f);
}

struct Result {
  std::string name;
  double ms, tflops, tbps, floor_ratio, topk_share;
};

// B requests of L tokens with Q queries each (Q = L: a full prefill).
Result run_case(const std::string& name, int B, long long L, int Q, int reps, int iters, bool prefill, bool fp8) {
  const int H = 4, k = 16, eb = fp8 ? 1 : 2;  // eb: bytes per index element
  const long long pages_per = (L + 127) / 128, pages = pages_per * B;
  const long long T = static_cast<long long>(B) * Q;
  void *iq, *ik;
  int *pt, *cu, *seq, *topk;
  CHECK_CUDA(cudaMalloc(&iq, T * H * 128 * eb));
  CHECK_CUDA(cudaMalloc(&ik, pages * 128 * 128 * eb));
  CHECK_CUDA(cudaMalloc(&pt, B * pages_per * 4));
  CHECK_CUDA(cudaMalloc(&cu, (B + 1) * 4));
  CHECK_CUDA(cudaMalloc(&seq, B * 4));
  CHECK_CUDA(cudaMalloc(&topk, H * T * k * 4));
  const auto nq = static_cast<std::size_t>(T * H * 128), nk = static_cast<std::size_t>(pages * 128 * 128);
  if (fp8) {
    fill_uniform<<<1024, 256>>>(static_cast<__nv_fp8_e4m3*>(iq), nq, 1u);
    fill_uniform<<<1024, 256>>>(static_cast<__nv_fp8_e4m3*>(ik), nk, 2u);
  } else {
    fill_uniform<<<1024, 256>>>(static_cast<__nv_bfloat16*>(iq), nq, 1u);
    fill_uniform<<<1024, 256>>>(static_cast<__nv_bfloat16*>(ik), nk, 2u);
  }
  std::vector<int> h_pt(B * pages_per), h_cu(B + 1), h_seq(B, static_cast<int>(L));
  for (long long i = 0; i < B * pages_per; ++i) h_pt[i] = static_cast<int>((i * 7919) % pages);  // scattered
  for (int b = 0; b <= B; ++b) h_cu[b] = b * Q;
  CHECK_CUDA(cudaMemcpy(pt, h_pt.data(), h_pt.size() * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(cu, h_cu.data(), h_cu.size() * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(seq, h_seq.data(), h_seq.size() * 4, cudaMemcpyHostToDevice));

  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const msa::Device dev = msa::Device::cuda(0, stream);
  msa::IndexPrefillArgs pa;
  const msa::DType dt = fp8 ? msa::DType::kFP8E4M3 : msa::DType::kBF16;
  pa.index_q = msa::make_tensor(iq, dt, {T, H, 128}, dev);
  pa.index_k_cache = msa::make_tensor(ik, dt, {pages, 128, 128}, dev);
  pa.page_table = msa::make_tensor(pt, msa::DType::kInt32, {B, pages_per}, dev);
  pa.cu_seqlens_q = msa::make_tensor(cu, msa::DType::kInt32, {B + 1}, dev);
  pa.seq_lens_k = msa::make_tensor(seq, msa::DType::kInt32, {B}, dev);
  pa.topk = msa::make_tensor(topk, msa::DType::kInt32, {H, T, k}, dev);
  msa::IndexDecodeArgs da;
  da.index_q = pa.index_q;
  da.index_k_cache = pa.index_k_cache;
  da.page_table = pa.page_table;
  da.seq_lens_k = pa.seq_lens_k;
  da.queries_per_request = Q;
  da.topk = pa.topk;
  std::size_t ws_bytes = 0;
  void* ws = nullptr;
  if (!prefill) {
    const msa::Status st = msa::index_select_decode_workspace_size(da, &ws_bytes);
    if (!st.ok() || (ws_bytes && cudaMalloc(&ws, ws_bytes) != cudaSuccess)) {
      std::fprintf(stderr, "%s: workspace: %s\n", name.c_str(), st.to_string().c_str());
      std::exit(1);
    }
  }
  auto run = [&](bool scores_only) {
    msa::Status st;
    if (prefill)
      st = scores_only ? msa::detail::index_select_prefill_scores_only(pa) : msa::index_select_prefill(pa);
    else
      st = scores_only ? msa::detail::index_select_decode_scores_only(da, ws, ws_bytes)
                       : msa::index_select_decode(da, ws, ws_bytes);
    if (!st.ok()) {
      std::fprintf(stderr, "%s: %s\n", name.c_str(), st.to_string().c_str());
      std::exit(1);
    }
  };
  const std::vector<double> t = msa_bench::graph_median_ms({[&] { run(false); }, [&] { run(true); }}, stream, reps, iters);
  const double ms = t[0], scores_ms = t[1];
  CHECK_CUDA(cudaStreamDestroy(stream));
  Result r{name, ms, 0, 0, 0, 1.0 - scores_ms / ms};
  if (prefill) {
    const double flops = static_cast<double>(H) * 128.0 * static_cast<double>(L) * static_cast<double>(L);
    r.tflops = flops / (ms * 1e-3) / 1e12;
    r.floor_ratio = ms / (flops / (fp8 ? 2 * 736e12 : 736e12) * 1e3);
  } else {
    const double bytes = static_cast<double>(B) * static_cast<double>(L) * 128 * eb;
    r.tbps = bytes / (ms * 1e-3) / 1e12;
    r.floor_ratio = ms / (bytes / 2.99e12 * 1e3);
  }
  for (void* p : {static_cast<void*>(iq), static_cast<void*>(ik), static_cast<void*>(pt), static_cast<void*>(cu),
                  static_cast<void*>(seq), static_cast<void*>(topk), ws})
    cudaFree(p);
  std::printf("%-24s %10.3f ms  %7.1f TFLOP/s  %6.3f TB/s  %5.2fx floor  top-k %5.1f%%\n", r.name.c_str(), r.ms,
              r.tflops, r.tbps, r.floor_ratio, 100.0 * r.topk_share);
  std::fflush(stdout);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const char* json = nullptr;
  bool quick = false;
  const char* filter = "";  // run only the cases whose name contains this
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    if (!std::strcmp(argv[i], "--filter") && i + 1 < argc) filter = argv[++i];
  }
  if (!msa::sm90_device_available()) {
    std::fprintf(stderr, "bench_indexer: no sm_90 GPU\n");
    return 1;
  }
  std::printf("index selection (H_idx 4, D 128, k 16, bf16; fp8 cases: e4m3 index_q and index-K)\n");
  std::vector<Result> rs;
  auto add = [&](const char* name, int B, long long L, int Q, int reps, int iters, bool prefill) {
    if (std::strstr(name, filter) != nullptr)
      rs.push_back(run_case(name, B, L, Q, reps, iters, prefill, std::strncmp(name, "fp8 ", 4) == 0));
  };
  add("prefill N=32K", 1, 32768, 32768, 4, 11, true);
  add("prefill N=128K", 1, 131072, 131072, 1, 11, true);
  if (!quick) {
    add("prefill N=512K", 1, 524288, 524288, 1, 5, true);
    add("prefill N=1M", 1, 1048576, 1048576, 1, 5, true);
  }
  add("decode 1 x 1M x 1", 1, 1048576, 1, 10, 21, false);
  add("decode 8 x 128K x 8", 8, 131072, 8, 10, 21, false);
  add("fp8 prefill N=128K", 1, 131072, 131072, 1, 11, true);
  if (!quick) add("fp8 prefill N=1M", 1, 1048576, 1048576, 1, 5, true);
  add("fp8 decode 1 x 1M x 1", 1, 1048576, 1, 10, 21, false);
  add("fp8 decode 8 x 128K x 8", 8, 131072, 8, 10, 21, false);
  if (json) {
    FILE* f = std::fopen(json, "w");
    std::fprintf(f, "[\n");
    for (std::size_t i = 0; i < rs.size(); ++i)
      std::fprintf(f, "  {\"case\": \"%s\", \"ms\": %.4f, \"tflops\": %.2f, \"tbps\": %.4f, \"x_floor\": %.3f, "
                   "\"topk_share\": %.4f}%s\n",
                   rs[i].name.c_str(), rs[i].ms, rs[i].tflops, rs[i].tbps, rs[i].floor_ratio, rs[i].topk_share,
                   i + 1 < rs.size() ? "," : "");
    std::fprintf(f, "]\n");
    std::fclose(f);
  }
  return 0;
}
