// bench_util.h — shared helpers of msa's GPU benchmarks: error checks, a device hash for synthetic inputs, and
// graph-replay timing.
#ifndef MSA_BENCH_BENCH_UTIL_H_
#define MSA_BENCH_BENCH_UTIL_H_

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#define CHECK_CUDA(x)                                                                 \
  do {                                                                                \
    cudaError_t e_ = (x);                                                             \
    if (e_ != cudaSuccess) {                                                          \
      std::fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
      std::exit(1);                                                                   \
    }                                                                                 \
  } while (0)

namespace msa_bench {

// The FILE of `--json FILE` on the command line, or nullptr.
inline const char* json_path(int argc, char** argv) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--json") == 0) return argv[i + 1];
  return nullptr;
}

// Whether a CUDA device is visible; prints why not for `program` otherwise.
inline bool have_cuda_device(const char* program) {
  int count = 0;
  if (cudaGetDeviceCount(&count) == cudaSuccess && count > 0) return true;
  std::fprintf(stderr, "%s: no CUDA device\n", program);
  return false;
}

// A well-mixed 32-bit hash of (i, seed) for synthetic device inputs.
__device__ __forceinline__ unsigned hash32(unsigned i, unsigned seed) {
  unsigned x = i * 2654435761u ^ seed;
  x ^= x >> 15;
  x *= 2246822519u;
  x ^= x >> 13;
  return x;
}

// Fills n bf16 values in [-1, 1) from hash32(i, seed) (grid-stride: any launch shape covers all of them).
__global__ void fill_bf16_hash(__nv_bfloat16* p, std::size_t n, unsigned seed) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    p[i] = __float2bfloat16(static_cast<float>(hash32(static_cast<unsigned>(i), seed) & 0xffff) / 32768.0f - 1.0f);
}

// Synthetic topk [heads, T, k] for a uniform batch of requests with Q queries over L keys each (token t at position
// L - Q + t % Q): 15 random history blocks, one from each of k - 1 equal strata of the history (so ids are distinct),
// then the local block; all visible blocks while there are at most k.
__global__ void random_selection(std::int32_t* topk, std::int64_t T, int heads, int k, int Q, long long L,
                                 unsigned seed) {
  const std::int64_t p = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (p >= heads * T) return;
  const std::int64_t t = p % T;
  const int local = static_cast<int>((L - Q + t % Q) / 128);
  std::int32_t* row = topk + p * k;
  if (local + 1 <= k) {
    for (int s = 0; s < k; ++s) row[s] = s <= local ? s : -1;
    return;
  }
  for (int s = 0; s < k - 1; ++s) {
    const float u = static_cast<float>(hash32(static_cast<unsigned>(p * k + s), seed) & 0xffffff) / 16777216.0f;
    row[s] = static_cast<int>((static_cast<double>(s) + u) * local / (k - 1));
  }
  row[k - 1] = local;
}

// The SM clock in MHz right now: one thread counts clock64 cycles over ~20 us of %globaltimer. The prefill
// benchmarks run at the card's power cap (nvidia-smi: clock event reason "SW power cap"), where the clock moves
// with what ran just before; graph_median_ms prints it around each replay with trace_replays set.
__global__ void sm_clock_probe(unsigned* mhz) {
  unsigned long long t0, t1;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  const long long c0 = clock64();
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t1));
  } while (t1 - t0 < 20000);
  *mhz = static_cast<unsigned>(static_cast<unsigned long long>(clock64() - c0) * 1000ull / (t1 - t0));
}
inline unsigned sm_clock_mhz(cudaStream_t stream) {
  static unsigned* d = nullptr;
  if (d == nullptr) CHECK_CUDA(cudaMalloc(&d, sizeof(unsigned)));
  sm_clock_probe<<<1, 1, 0, stream>>>(d);
  unsigned h = 0;
  CHECK_CUDA(cudaMemcpyAsync(&h, d, sizeof(unsigned), cudaMemcpyDeviceToHost, stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  return h;
}

// graph_median_ms prints every timed replay (round, variant, ms, SM clock before and after) when set.
inline bool trace_replays = false;

// Median device time of one call of each variant: `reps` calls of each are captured in a CUDA graph on `stream`,
// and the graphs are replayed in rotating order (A B, B A, ...) `iters` times each after a warm-up replay, between
// CUDA events, so clock drift affects all alike. Replay keeps host-side argument checks and launch overheads out of
// the numbers, as in a graph-captured serving loop.
// settle: each timed replay follows an untimed replay of the same graph, so that no variant's time depends on the
// state (clocks, caches) its neighbour in the order leaves behind; twice the replays.
inline std::vector<double> graph_median_ms(const std::vector<std::function<void()>>& variants, cudaStream_t stream,
                                           int reps, int iters, bool settle = false) {
  const int n = static_cast<int>(variants.size());
  std::vector<cudaGraphExec_t> exec(static_cast<std::size_t>(n));
  for (int v = 0; v < n; ++v) {
    cudaGraph_t graph;
    CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    for (int r = 0; r < reps; ++r) variants[static_cast<std::size_t>(v)]();
    CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
    CHECK_CUDA(cudaGraphInstantiate(&exec[static_cast<std::size_t>(v)], graph, 0));
    CHECK_CUDA(cudaGraphDestroy(graph));
    CHECK_CUDA(cudaGraphLaunch(exec[static_cast<std::size_t>(v)], stream));
  }
  CHECK_CUDA(cudaStreamSynchronize(stream));
  cudaEvent_t e0, e1;
  CHECK_CUDA(cudaEventCreate(&e0));
  CHECK_CUDA(cudaEventCreate(&e1));
  std::vector<std::vector<float>> times(static_cast<std::size_t>(n));
  for (int i = 0; i < iters; ++i)
    for (int k = 0; k < n; ++k) {
      const int v = (i + k) % n;
      if (settle) CHECK_CUDA(cudaGraphLaunch(exec[static_cast<std::size_t>(v)], stream));
      const unsigned mhz_before = trace_replays ? sm_clock_mhz(stream) : 0;
      CHECK_CUDA(cudaEventRecord(e0, stream));
      CHECK_CUDA(cudaGraphLaunch(exec[static_cast<std::size_t>(v)], stream));
      CHECK_CUDA(cudaEventRecord(e1, stream));
      CHECK_CUDA(cudaEventSynchronize(e1));
      float ms = 0;
      CHECK_CUDA(cudaEventElapsedTime(&ms, e0, e1));
      if (trace_replays)
        std::printf("replay round %d variant %d: %.3f ms, SM clock %u MHz before, %u after\n", i, v, ms / reps,
                    mhz_before, sm_clock_mhz(stream));
      times[static_cast<std::size_t>(v)].push_back(ms / static_cast<float>(reps));
    }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::vector<double> med(static_cast<std::size_t>(n));
  for (int v = 0; v < n; ++v) {
    CHECK_CUDA(cudaGraphExecDestroy(exec[static_cast<std::size_t>(v)]));
    auto& t = times[static_cast<std::size_t>(v)];
    std::sort(t.begin(), t.end());
    med[static_cast<std::size_t>(v)] = t[t.size() / 2];
  }
  return med;
}

}  // namespace msa_bench

#endif  // MSA_BENCH_BENCH_UTIL_H_
