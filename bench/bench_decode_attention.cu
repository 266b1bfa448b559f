// bench_decode_attention.cu — decode attention benchmark on the GPU (a program, not a test).
//
// M3 heads (Hq 64, Hkv 4, D 128, k 16); B requests × L context × Q queries; each query selects 15 random history
// blocks plus its local block (bench_util.h). Cases of issue 4: 1 × 1M × 1, 8 × 128K × 8, 64 × 32K × 1. Reports the
// time of the split kernel + combine (SparseDecodeAttention's CUDA path, graph replay), the selected-KV bytes per
// second (16 blocks × Hkv × K+V 64 KiB per query token, the issue's measure), the combine alone, and the rows
// kernel (one CTA per token and KV head, no partials: decode_rows.cu). `--json FILE` writes the results.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench_util.h"
#include "kernels/combine/launch.h"
#include "kernels/decode/launch.h"

namespace {

constexpr int kHq = 64, kHkv = 4, kTopk = 16;

struct Result {
  std::string name;
  double us, kv_tbps, combine_us, rows_us, fused_us;
};

Result run_case(const std::string& name, int B, long long L, int Q, int reps, int iters) {
  const long long pages_per = (L + 127) / 128, pages = pages_per * B, T = static_cast<long long>(B) * Q;
  const std::size_t kv_elems = static_cast<std::size_t>(pages) * kHkv * 128 * 128;
  __nv_bfloat16 *q, *kc, *vc;
  std::int32_t *topk, *pt, *seq, *counts;
  CHECK_CUDA(cudaMalloc(&q, T * kHq * 128 * 2));
  CHECK_CUDA(cudaMalloc(&kc, kv_elems * 2));
  CHECK_CUDA(cudaMalloc(&vc, kv_elems * 2));
  CHECK_CUDA(cudaMalloc(&topk, kHkv * T * kTopk * 4));
  CHECK_CUDA(cudaMalloc(&pt, B * pages_per * 4));
  CHECK_CUDA(cudaMalloc(&seq, B * 4));
  CHECK_CUDA(cudaMalloc(&counts, T * kHkv * 4));
  msa_bench::fill_bf16_hash<<<1024, 256>>>(q, static_cast<std::size_t>(T) * kHq * 128, 1u);
  msa_bench::fill_bf16_hash<<<4096, 256>>>(kc, kv_elems, 2u);
  msa_bench::fill_bf16_hash<<<4096, 256>>>(vc, kv_elems, 3u);
  msa_bench::random_selection<<<static_cast<unsigned>((kHkv * T + 255) / 256), 256>>>(topk, T, kHkv, kTopk, Q, L, 4u);
  std::vector<std::int32_t> h_pt(B * pages_per), h_seq(B, static_cast<std::int32_t>(L));
  for (long long i = 0; i < B * pages_per; ++i) h_pt[i] = static_cast<std::int32_t>((i * 7919) % pages);  // scattered
  CHECK_CUDA(cudaMemcpy(pt, h_pt.data(), h_pt.size() * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(seq, h_seq.data(), h_seq.size() * 4, cudaMemcpyHostToDevice));
  const std::size_t rows = static_cast<std::size_t>(kTopk) * T * kHq;
  __nv_bfloat16* out;
  float *po, *pl, *lse;  // fp32 partials, as the split kernel writes them
  CHECK_CUDA(cudaMalloc(&po, rows * 128 * 4));
  CHECK_CUDA(cudaMalloc(&pl, rows * 4));
  CHECK_CUDA(cudaMalloc(&out, T * kHq * 128 * 2));
  CHECK_CUDA(cudaMalloc(&lse, T * kHq * 4));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

  msa::kernels::DecodeAttentionLaunch a{};
  a.q = q;
  a.q_stride_t = kHq * 128;
  a.q_stride_h = 128;
  a.k_cache = kc;
  a.v_cache = vc;
  a.kv_stride_page = kHkv * 128 * 128;
  a.kv_stride_h = 128 * 128;
  a.kv_stride_t = 128;
  a.topk = topk;
  a.topk_stride_h = T * kTopk;
  a.topk_stride_t = kTopk;
  a.topk_stride_s = 1;
  a.page_table = pt;
  a.pt_stride_b = pages_per;
  a.pt_stride_j = 1;
  a.seq_lens_k = seq;
  a.seq_stride = 1;
  a.num_requests = B;
  a.total_q = T;
  a.queries_per_request = Q;
  a.num_q_heads = kHq;
  a.num_kv_heads = kHkv;
  a.k = kTopk;
  a.sm_scale = 0.08838834764831845f;
  a.partial_out = po;
  a.partial_lse = pl;
  a.split_counts = counts;
  a.stream = stream;
  msa::kernels::CombineLaunch c =
      msa::kernels::contiguous_combine_launch(po, pl, counts, out, lse, T, kHq, kHkv, kTopk);
  c.partial_fp32 = true;
  c.stream = stream;
  auto check = [&](const msa::Status& st) {
    if (!st.ok()) {
      std::fprintf(stderr, "%s: %s\n", name.c_str(), st.to_string().c_str());
      std::exit(1);
    }
  };
  const std::vector<double> t = msa_bench::graph_median_ms(
      {[&] {
         check(msa::kernels::launch_decode_attention(a));
         check(msa::kernels::launch_combine(c));
       },
       [&] { check(msa::kernels::launch_combine(c)); },
       [&] { check(msa::kernels::launch_decode_attention_rows(a, out, kHq * 128, 128, lse, kHq, 1)); },
       [&] { check(msa::kernels::launch_decode_attention_fused(a, out, kHq * 128, 128, lse, kHq, 1)); }},
      stream, reps, iters);
  const double kv_bytes = static_cast<double>(T) * kHkv * kTopk * 2 * 128 * 128 * 2;
  Result r{name, t[0] * 1e3, kv_bytes / (t[0] * 1e-3) / 1e12, t[1] * 1e3, t[2] * 1e3, t[3] * 1e3};
  for (void* p : {static_cast<void*>(q), static_cast<void*>(kc), static_cast<void*>(vc), static_cast<void*>(topk),
                  static_cast<void*>(pt), static_cast<void*>(seq), static_cast<void*>(counts), static_cast<void*>(po),
                  static_cast<void*>(pl), static_cast<void*>(out), static_cast<void*>(lse)})
    cudaFree(p);
  CHECK_CUDA(cudaStreamDestroy(stream));
  std::printf("%-24s %9.1f us  %6.3f TB/s of selected KV  (combine alone %.1f us; rows kernel %.1f us, %.3f TB/s; "
              "fused cluster kernel %.1f us)\n",
              r.name.c_str(), r.us, r.kv_tbps, r.combine_us, r.rows_us, kv_bytes / (r.rows_us * 1e-6) / 1e12, r.fused_us);
  std::fflush(stdout);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const char* json = msa_bench::json_path(argc, argv);
  if (!msa_bench::have_cuda_device("bench_decode_attention")) return 1;
  std::printf("decode attention, split kernel + combine (Hq 64, Hkv 4, k 16, bf16)\n");
  std::vector<Result> rs;
  rs.push_back(run_case("decode 1 x 1M x 1", 1, 1 << 20, 1, 20, 21));
  rs.push_back(run_case("decode 8 x 128K x 8", 8, 1 << 17, 8, 10, 21));
  rs.push_back(run_case("decode 64 x 32K x 1", 64, 1 << 15, 1, 10, 21));
  // Where the rows kernel overtakes split + combine: B x 32K x 1 for T * Hkv from 32 to 512 rows (1 to 4 waves of
  // rows CTAs on 132 SMs); SparseDecodeAttention's choice between the two is set from these lines.
  std::printf("sweep, B x 32K x 1 (T * Hkv = 4 B rows):\n");
  for (int b : {1, 2, 3, 4, 6, 8, 10, 12, 13, 14, 16, 18, 20, 22, 24, 32, 36, 40, 48, 56, 66, 80, 96, 128})
    rs.push_back(run_case("sweep " + std::to_string(b) + " x 32K x 1", b, 1 << 15, 1, 5, 11));
  if (json) {
    FILE* f = std::fopen(json, "w");
    std::fprintf(f, "[\n");
    for (std::size_t i = 0; i < rs.size(); ++i)
      std::fprintf(f,
                   "  {\"case\": \"%s\", \"us\": %.2f, \"kv_tbps\": %.4f, \"combine_us\": %.2f, "
                   "\"rows_kernel_us\": %.2f, \"fused_kernel_us\": %.2f}%s\n",
                   rs[i].name.c_str(), rs[i].us, rs[i].kv_tbps, rs[i].combine_us, rs[i].rows_us, rs[i].fused_us,
                   i + 1 < rs.size() ? "," : "");
    std::fprintf(f, "]\n");
    std::fclose(f);
  }
  return 0;
}
