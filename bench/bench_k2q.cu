// bench_k2q.cu — device k2q build (CSR + work schedule) benchmark on the GPU (a program, not a test).
//
// One causal sequence of N tokens, H_idx = Hkv 4, k 16: every query selects 15 random history blocks (one from each
// of 15 equal strata of its history, so ids are distinct) plus its own block, or all of its blocks while it has
// at most 16. Work items of at most 64 queries. Timed by graph replay (bench_util.h). The byte floor counts reading
// topk and writing q_indices and qsplit_indices once: 12 bytes per (head, token, slot). `--json FILE` writes the
// results.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench_util.h"
#include "kernels/k2q/launch.h"

namespace {

constexpr int kHeads = 4, kTopk = 16, kMaxQ = 64;

struct Result {
  std::string name;
  double ms, tbps, floor_ratio;
};

Result run_case(const std::string& name, long long N, int iters) {
  const long long T = N, pages = (N + 127) / 128;
  std::int32_t *topk, *cu, *seq;
  CHECK_CUDA(cudaMalloc(&topk, kHeads * T * kTopk * 4));
  CHECK_CUDA(cudaMalloc(&cu, 8));
  CHECK_CUDA(cudaMalloc(&seq, 4));
  const std::int32_t h_cu[2] = {0, static_cast<std::int32_t>(T)}, h_seq = static_cast<std::int32_t>(N);
  CHECK_CUDA(cudaMemcpy(cu, h_cu, 8, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(seq, &h_seq, 4, cudaMemcpyHostToDevice));
  msa_bench::random_selection<<<static_cast<unsigned>((kHeads * T + 255) / 256), 256>>>(topk, T, kHeads, kTopk,
                                                                                        static_cast<int>(T), N, 7u);
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

  msa::kernels::K2qBuildArgs a{};
  a.topk = topk;
  a.topk_stride_h = T * kTopk;
  a.topk_stride_t = kTopk;
  a.topk_stride_s = 1;
  a.cu_seqlens_q = cu;
  a.cu_stride = 1;
  a.seq_lens_k = seq;
  a.seq_stride = 1;
  a.num_heads = kHeads;
  a.k = kTopk;
  a.num_requests = 1;
  a.total_q = T;
  a.max_blocks = static_cast<int>(pages);
  a.max_q_per_item = kMaxQ;
  a.stream = stream;
  const long long r_cap = msa::kernels::k2q_row_capacity(a), items = msa::kernels::k2q_item_capacity(a);
  std::vector<std::int32_t*> out(9);
  const long long sizes[9] = {kHeads * (r_cap + 1), r_cap, r_cap, kHeads * T * kTopk, kHeads * T * kTopk,
                              T * kHeads, 1, items * 6, 1};
  for (int i = 0; i < 9; ++i) CHECK_CUDA(cudaMalloc(&out[i], sizes[i] * 4));
  const msa::kernels::K2qBuildOutputs o{out[0], out[1], out[2], out[3], out[4], out[5], out[6], out[7], out[8]};
  std::size_t bytes = 0;
  if (!msa::kernels::k2q_workspace_bytes(a, &bytes).ok()) std::exit(1);
  void* ws;
  CHECK_CUDA(cudaMalloc(&ws, bytes));
  auto build = [&] {
    const msa::Status st = msa::kernels::launch_k2q_build(a, o, ws, bytes);
    if (!st.ok()) {
      std::fprintf(stderr, "%s: %s\n", name.c_str(), st.to_string().c_str());
      std::exit(1);
    }
  };
  const double ms = msa_bench::graph_median_ms({build}, stream, 1, iters)[0];
  const double floor_bytes = 12.0 * kHeads * T * kTopk;
  Result r{name, ms, floor_bytes / (ms * 1e-3) / 1e12, ms / (floor_bytes / 2.99e12 * 1e3)};
  for (std::int32_t* p : out) cudaFree(p);
  cudaFree(ws);
  cudaFree(topk);
  cudaFree(cu);
  cudaFree(seq);
  CHECK_CUDA(cudaStreamDestroy(stream));
  std::printf("%-24s %10.3f ms  %6.3f TB/s of the byte floor  %6.2fx floor  (workspace %.1f MB)\n", r.name.c_str(),
              r.ms, r.tbps, r.floor_ratio, bytes / 1e6);
  std::fflush(stdout);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const char* json = msa_bench::json_path(argc, argv);
  if (!msa_bench::have_cuda_device("bench_k2q")) return 1;
  std::printf("k2q build, CSR + schedule (Hkv 4, k 16, items of <= %d queries)\n", kMaxQ);
  std::vector<Result> rs;
  for (long long n : {32768LL, 131072LL, 524288LL, 1048576LL})
    rs.push_back(run_case("prefill N=" + std::to_string(n / 1024) + "K", n, 7));
  if (json) {
    FILE* f = std::fopen(json, "w");
    std::fprintf(f, "[\n");
    for (std::size_t i = 0; i < rs.size(); ++i)
      std::fprintf(f, "  {\"case\": \"%s\", \"ms\": %.4f, \"tbps\": %.4f, \"x_floor\": %.3f}%s\n", rs[i].name.c_str(),
                   rs[i].ms, rs[i].tbps, rs[i].floor_ratio, i + 1 < rs.size() ? "," : "");
    std::fprintf(f, "]\n");
    std::fclose(f);
  }
  return 0;
}
