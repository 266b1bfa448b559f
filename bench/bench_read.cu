// bench_read.cu — the card's plain streaming-read rate (a program, not a test): the ceiling for any kernel whose
// time is one pass over device memory, such as the decode step's index-K stream and dense decode's K / V stream.
//
// Reads N bytes once (128-bit non-coherent loads that skip L1, 8 in flight per thread, a grid-stride loop) for the
// two sizes of the 1M-token decode comparison: the index-K cache (1M tokens x 128 dims x bf16, 268 MB) and dense
// attention's K and V (1M x 4 KV heads x 128 dims x 2 x bf16, 2.15 GB). Consecutive calls alternate between two
// buffers of N bytes, so no call finds the previous one's data in L2. Timing: graph replay (bench_util.h), the same
// as the other benchmarks, for several launch shapes; the best shape is the card's rate. Then the 268 MB as a paged
// cache of 32 KiB pages in the three page orders of `msa bench --pages`: what the page order alone costs a reader.
// `--json FILE` writes the results.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"

namespace {

constexpr int kInFlight = 8;  // 16-byte loads issued per thread before any is used

// Sums every float of p[0 .. n4) (as float4) so that no load is dead; writes only if the sum hits a value the zeroed
// input never produces, which the compiler cannot know.
__global__ void read_once(const float4* __restrict__ p, std::int64_t n4, float* sink) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  float acc = 0.f;
  for (; i + (kInFlight - 1) * stride < n4; i += kInFlight * stride) {
    float4 v[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u)
      asm volatile("ld.global.nc.L1::no_allocate.v4.f32 {%0, %1, %2, %3}, [%4];\n"
                   : "=f"(v[u].x), "=f"(v[u].y), "=f"(v[u].z), "=f"(v[u].w)
                   : "l"(p + i + u * stride));
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) acc += (v[u].x + v[u].y) + (v[u].z + v[u].w);
  }
  for (; i < n4; i += stride) {
    const float4 v = p[i];
    acc += (v.x + v.y) + (v.z + v.w);
  }
  if (acc == 1234.5f) *sink = acc;
}

// The same read over a paged cache: 32 KiB pages, CTA c reading logical pages c, c + grid, ... (like the decode
// selection's interleaved splits), logical page i at physical page order[i]; 512 threads, two pages in flight, the
// next two page ids loaded while the current pages stream (so no page waits for its id).
constexpr int kPageBytes = 32768, kPageThreads = 512;
__global__ void read_paged(const float4* __restrict__ p, const int* __restrict__ order, int pages, float* sink) {
  constexpr int kPerThread = kPageBytes / 16 / kPageThreads;  // float4 per thread and page
  const int t = static_cast<int>(threadIdx.x), grid = static_cast<int>(gridDim.x);
  auto page_id = [&](int i) { return i < pages ? order[i] : 0; };
  float acc = 0.f;
  int i = static_cast<int>(blockIdx.x);
  int next_a = page_id(i), next_b = page_id(i + grid);
  for (; i < pages; i += 2 * grid) {
    const bool has_b = i + grid < pages;  // uniform over the CTA
    const float4* pa = p + static_cast<std::int64_t>(next_a) * (kPageBytes / 16);
    const float4* pb = p + static_cast<std::int64_t>(next_b) * (kPageBytes / 16);
    next_a = page_id(i + 2 * grid);
    next_b = page_id(i + 3 * grid);
    float4 v[2 * kPerThread];
#pragma unroll
    for (int u = 0; u < 2 * kPerThread; ++u) {
      v[u] = make_float4(0.f, 0.f, 0.f, 0.f);
      if (u < kPerThread || has_b)
        asm volatile("ld.global.nc.L1::no_allocate.v4.f32 {%0, %1, %2, %3}, [%4];\n"
                     : "=f"(v[u].x), "=f"(v[u].y), "=f"(v[u].z), "=f"(v[u].w)
                     : "l"((u < kPerThread ? pa : pb) + t + (u % kPerThread) * kPageThreads));
    }
#pragma unroll
    for (int u = 0; u < 2 * kPerThread; ++u) acc += (v[u].x + v[u].y) + (v[u].z + v[u].w);
  }
  if (acc == 1234.5f) *sink = acc;
}

struct Result {
  std::string name;
  long long bytes;
  int ctas_per_sm, threads;
  double us, tbps;
};

}  // namespace

int main(int argc, char** argv) {
  const char* json = msa_bench::json_path(argc, argv);
  if (!msa_bench::have_cuda_device("bench_read")) return 1;
  int sms = 0;
  CHECK_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const struct {
    const char* name;
    long long bytes;
  } sizes[] = {{"index-K of 1M tokens (268 MB)", 1LL << 28}, {"dense K+V of 1M tokens, 4 heads (2.15 GB)", 1LL << 31}};
  const struct {
    int ctas_per_sm, threads;
  } shapes[] = {{1, 1024}, {2, 512}, {2, 1024}, {4, 256}, {8, 256}};
  unsigned char* buf = nullptr;
  CHECK_CUDA(cudaMalloc(&buf, 2 * (1LL << 31)));
  CHECK_CUDA(cudaMemset(buf, 0, 2 * (1LL << 31)));
  float* sink = nullptr;
  CHECK_CUDA(cudaMalloc(&sink, sizeof(float)));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  std::printf("plain streaming read, %d SMs (graph replay, median per call)\n", sms);
  std::vector<Result> rs;
  // Times launch(src) on a grid of per-SM CTAs x threads, each call reading one of two buffers of `bytes` (alternated
  // between the calls captured in one graph); records the result and keeps the fastest in *best.
  auto measure = [&](const char* name, long long bytes, int per_sm, int threads, Result* best, auto launch) {
    int call = 0;
    auto run = [&] {
      launch(reinterpret_cast<const float4*>(buf + (call++ % 2) * bytes), dim3(sms * per_sm), dim3(threads));
    };
    const double ms = msa_bench::graph_median_ms(std::vector<std::function<void()>>{run}, stream, 10, 11)[0];
    const Result r{name, bytes, per_sm, threads, ms * 1e3, bytes / (ms * 1e-3) / 1e12};
    rs.push_back(r);
    if (best->us == 0 || r.us < best->us) *best = r;
    return r;
  };
  for (const auto& sz : sizes) {
    Result best{};
    for (const auto& sh : shapes) {
      const Result r =
          measure(sz.name, sz.bytes, sh.ctas_per_sm, sh.threads, &best, [&](const float4* src, dim3 g, dim3 b) {
            read_once<<<g, b, 0, stream>>>(src, sz.bytes / 16, sink);
          });
      std::printf("%-44s %d x %-4d per SM x %4d threads  %9.2f us  %.3f TB/s\n", sz.name, sms, sh.ctas_per_sm,
                  sh.threads, r.us, r.tbps);
    }
    std::printf("%-44s best %9.2f us  %.3f TB/s\n", sz.name, best.us, best.tbps);
    std::fflush(stdout);
  }
  // The index-K of 1M tokens as a paged cache, in three page orders (those of `msa bench --pages`), best of three
  // grids.
  {
    const int pages = static_cast<int>((1LL << 28) / kPageBytes);
    std::vector<int> ordered(pages), strided(pages), shuffled(pages);
    for (int i = 0; i < pages; ++i) {
      ordered[i] = shuffled[i] = i;
      strided[i] = static_cast<int>((7919LL * i) % pages);
    }
    std::mt19937_64 rng(6);
    std::shuffle(shuffled.begin(), shuffled.end(), rng);
    int* order = nullptr;
    CHECK_CUDA(cudaMalloc(&order, pages * sizeof(int)));
    const struct {
      const char* name;
      const std::vector<int>* order;
    } orders[] = {{"paged index-K, pages ordered", &ordered}, {"paged index-K, pages strided", &strided},
                  {"paged index-K, pages shuffled", &shuffled}};
    for (const auto& o : orders) {
      CHECK_CUDA(cudaMemcpy(order, o.order->data(), pages * sizeof(int), cudaMemcpyHostToDevice));
      Result best{};
      for (int per : {1, 2, 3})
        measure(o.name, 1LL << 28, per, kPageThreads, &best, [&](const float4* src, dim3 g, dim3 b) {
          read_paged<<<g, b, 0, stream>>>(src, order, pages, sink);
        });
      std::printf("%-44s best %9.2f us  %.3f TB/s\n", o.name, best.us, best.tbps);
    }
    CHECK_CUDA(cudaFree(order));
  }
  if (json) {
    FILE* f = std::fopen(json, "w");
    std::fprintf(f, "[\n");
    for (std::size_t i = 0; i < rs.size(); ++i)
      std::fprintf(f, "  {\"case\": \"%s\", \"bytes\": %lld, \"ctas_per_sm\": %d, \"threads\": %d, \"us\": %.2f, "
                   "\"tbps\": %.4f}%s\n", rs[i].name.c_str(), rs[i].bytes, rs[i].ctas_per_sm, rs[i].threads,
                   rs[i].us, rs[i].tbps, i + 1 < rs.size() ? "," : "");
    std::fprintf(f, "]\n");
    std::fclose(f);
  }
  CHECK_CUDA(cudaFree(buf));
  CHECK_CUDA(cudaFree(sink));
  return 0;
}
