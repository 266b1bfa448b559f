// wgmma_throughput.cu — bf16 wgmma throughput on sm_90a for m64nNk16 with N = 16, 32, 64 and 128, A from registers
// (RS) or from shared memory (SS), B from shared memory, fp32 accumulators. The union-of-blocks schedule computes
// 64-row tiles of 4 tokens x 16 heads whatever subset of those tokens listed a block; computing S^T = K Q^T instead
// (keys on M, one token's 16 heads on N) would skip the tokens that did not list it, but with N = 16 per token.
// This tool measures what such narrow products cost against wide ones (docs/performance.md, "Narrow wgmma").
//
//   wgmma_throughput          prints, per mode and N, TFLOP/s over the whole GPU and FLOP per clock per SM
//
// One CTA per SM with kWarpgroups warpgroups; each issues kGroups commit groups of kPerGroup wgmma into one of two
// accumulator sets in turn, waiting for the group before the last, so one group is in flight while the next issues.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>

#include "kernels/sm90/common/sm90.cuh"

namespace {

namespace sm90 = msa::kernels::sm90;

constexpr int kWarpgroups = 2, kThreads = 128 * kWarpgroups, kPerGroup = 8, kGroups = 2048;

#define WT_ACC4(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3])
#define WT_ACC8(i) WT_ACC4(i), WT_ACC4(i + 4)
#define WT_ACC32(i) WT_ACC8(i), WT_ACC8(i + 8), WT_ACC8(i + 16), WT_ACC8(i + 24)
#define WT_L8 "%0, %1, %2, %3, %4, %5, %6, %7"
#define WT_L16 WT_L8 ", %8, %9, %10, %11, %12, %13, %14, %15"
#define WT_L32 WT_L16 ", %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define WT_L64                                                                                            \
  WT_L32 ", %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, "  \
         "%51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"

// One specialisation per N: the accumulator list, then A (four registers %a..%a+3, or a descriptor %a), then B.
template <int N>
struct Mma;
#define WT_MMA(N_, LIST, A0, A1, A2, A3, B, ...)                                                              \
  template <>                                                                                                 \
  struct Mma<N_> {                                                                                            \
    __device__ __forceinline__ static void rs(float (&d)[N_ / 2], const std::uint32_t (&a)[4], std::uint64_t b) { \
      asm volatile("wgmma.mma_async.sync.aligned.m64n" #N_ "k16.f32.bf16.bf16 {" LIST "}, {%" A0 ", %" A1     \
                   ", %" A2 ", %" A3 "}, %" B ", 1, 1, 1, 0;\n"                                               \
                   : __VA_ARGS__                                                                              \
                   : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));                                     \
    }                                                                                                         \
    __device__ __forceinline__ static void ss(float (&d)[N_ / 2], std::uint64_t a, std::uint64_t b) {         \
      asm volatile("wgmma.mma_async.sync.aligned.m64n" #N_ "k16.f32.bf16.bf16 {" LIST "}, %" A0 ", %" A1      \
                   ", 1, 1, 1, 0, 0;\n"                                                                       \
                   : __VA_ARGS__                                                                              \
                   : "l"(a), "l"(b));                                                                         \
    }                                                                                                         \
  };
WT_MMA(16, WT_L8, "8", "9", "10", "11", "12", WT_ACC8(0))
WT_MMA(32, WT_L16, "16", "17", "18", "19", "20", WT_ACC8(0), WT_ACC8(8))
WT_MMA(64, WT_L32, "32", "33", "34", "35", "36", WT_ACC32(0))
WT_MMA(128, WT_L64, "64", "65", "66", "67", "68", WT_ACC32(0), WT_ACC32(32))

// kRs: A from registers (a fixed fragment) or from shared memory; B is an N x 64 tile, its 4 k-slices reused.
template <int N, bool kRs>
__global__ void __launch_bounds__(kThreads, 1) wgmma_loop(float* sink, long long* cycles) {
  __shared__ __align__(1024) std::uint16_t a_tile[64 * 64];
  __shared__ __align__(1024) std::uint16_t b_tile[N * 64];
  for (int i = threadIdx.x; i < 64 * 64; i += kThreads) a_tile[i] = 0x3C00 ^ (i & 0x7F);  // bf16 near 2^-7
  for (int i = threadIdx.x; i < N * 64; i += kThreads) b_tile[i] = 0x3C00 ^ (i & 0x3F);
  sm90::fence_proxy_async_smem();
  __syncthreads();
  const std::uint64_t da = sm90::wgmma_desc_sw128(a_tile), db = sm90::wgmma_desc_sw128(b_tile);
  std::uint32_t a[4];
  for (int i = 0; i < 4; ++i) a[i] = 0x3C003C00u ^ (threadIdx.x * 4 + i);
  float d0[N / 2], d1[N / 2];
  for (int i = 0; i < N / 2; ++i) d0[i] = d1[i] = 0.f;
  const long long t0 = clock64();
  for (int g = 0; g < kGroups; ++g) {
    float(&d)[N / 2] = (g & 1) ? d1 : d0;
    sm90::wgmma_fence();
#pragma unroll
    for (int j = 0; j < kPerGroup; ++j) {  // k-slice j % 4
      if constexpr (kRs)
        Mma<N>::rs(d, a, sm90::wgmma_desc_advance(db, j & 3));
      else
        Mma<N>::ss(d, sm90::wgmma_desc_advance(da, j & 3), sm90::wgmma_desc_advance(db, j & 3));
    }
    sm90::wgmma_commit();
    sm90::wgmma_wait<1>();
    sm90::wgmma_fence_regs(d0);
    sm90::wgmma_fence_regs(d1);
  }
  sm90::wgmma_wait<0>();
  sm90::wgmma_fence_regs(d0);
  sm90::wgmma_fence_regs(d1);
  const long long t1 = clock64();
  float s = 0.f;
  for (int i = 0; i < N / 2; ++i) s += d0[i] + d1[i];
  sink[blockIdx.x * kThreads + threadIdx.x] = s;
  if (threadIdx.x == 0) cycles[blockIdx.x] = t1 - t0;
}

template <int N, bool kRs>
void measure(int sms, float* sink, long long* cycles) {
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  wgmma_loop<N, kRs><<<sms, kThreads>>>(sink, cycles);  // warm-up
  float best_ms = 1e30f;
  for (int rep = 0; rep < 5; ++rep) {
    cudaEventRecord(e0);
    wgmma_loop<N, kRs><<<sms, kThreads>>>(sink, cycles);
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms = 0.f;
    cudaEventElapsedTime(&ms, e0, e1);
    if (ms < best_ms) best_ms = ms;
  }
  long long cyc = 0;
  cudaMemcpy(&cyc, cycles, sizeof(cyc), cudaMemcpyDeviceToHost);
  const double flop_cta = 2.0 * 64 * N * 16 * kPerGroup * kGroups * kWarpgroups;
  std::printf("%s m64n%-3dk16  %7.1f TFLOP/s  %7.0f FLOP/clk/SM (CTA 0: %lld cycles)\n", kRs ? "RS" : "SS", N,
              flop_cta * sms / (best_ms * 1e-3) / 1e12, flop_cta / static_cast<double>(cyc), cyc);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
}

}  // namespace

int main() {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess || prop.major != 9) {
    std::printf("wgmma_throughput: needs an sm_90 GPU\n");
    return 1;
  }
  const int sms = prop.multiProcessorCount;
  float* sink = nullptr;
  long long* cycles = nullptr;
  cudaMalloc(&sink, sizeof(float) * sms * kThreads);
  cudaMalloc(&cycles, sizeof(long long) * sms);
  std::printf("%s, %d SMs, %d warpgroups per SM, %d wgmma per commit group\n", prop.name, sms, kWarpgroups, kPerGroup);
  measure<16, true>(sms, sink, cycles);
  measure<32, true>(sms, sink, cycles);
  measure<64, true>(sms, sink, cycles);
  measure<128, true>(sms, sink, cycles);
  measure<16, false>(sms, sink, cycles);
  measure<32, false>(sms, sink, cycles);
  measure<64, false>(sms, sink, cycles);
  measure<128, false>(sms, sink, cycles);
  const cudaError_t err = cudaDeviceSynchronize();
  if (err != cudaSuccess) {
    std::printf("wgmma_throughput: %s\n", cudaGetErrorString(err));
    return 1;
  }
  cudaFree(sink);
  cudaFree(cycles);
  return 0;
}
