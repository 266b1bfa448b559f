// ex2_throughput.cu — how many exponents per clock an SM computes with ex2.approx on f32, f16x2 and bf16x2 operands,
// and the relative error of ex2.approx.f16x2 on every f16 input in [-14, 0]. The attention softmax spends one MUFU
// ex2 per score; a packed form would only help if it returned two results in the time of one (on sm_90a it does
// not: f16x2 and bf16x2 issue at half the rate of f32, docs/performance.md).
//
//   ex2_throughput          prints instructions and results per clock per SM, and the f16x2 error
//
// Each of 1024 threads per CTA (one CTA per SM) runs 8 independent chains of 1024 ex2 instructions; clock64 around
// the loop of CTA 0, thread 0 gives the cycles.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace {

constexpr int kThreads = 1024, kChains = 8, kSteps = 1024;

template <int kMode>  // 0: f32, 1: f16x2, 2: bf16x2
__global__ void __launch_bounds__(kThreads) ex2_loop(float* sink, long long* cycles) {
  float f[kChains];
  std::uint32_t h[kChains];
  for (int i = 0; i < kChains; ++i) {
    f[i] = -1e-3f * static_cast<float>(threadIdx.x + i);
    h[i] = 0xBC00BC00u ^ (threadIdx.x + i);  // small negative halves
  }
  __syncthreads();
  const long long t0 = clock64();
  for (int step = 0; step < kSteps; ++step) {
#pragma unroll
    for (int i = 0; i < kChains; ++i) {
      if (kMode == 0) asm volatile("ex2.approx.ftz.f32 %0, %0;" : "+f"(f[i]));
      if (kMode == 1) asm volatile("ex2.approx.f16x2 %0, %0;" : "+r"(h[i]));
      if (kMode == 2) asm volatile("ex2.approx.ftz.bf16x2 %0, %0;" : "+r"(h[i]));
    }
  }
  const long long t1 = clock64();
  float acc = 0.f;
  for (int i = 0; i < kChains; ++i) acc += f[i] + __uint_as_float(h[i]);
  sink[blockIdx.x * kThreads + threadIdx.x] = acc;  // keeps the chains alive
  if (blockIdx.x == 0 && threadIdx.x == 0) *cycles = t1 - t0;
}

// One thread per negative f16 bit pattern below -inf: ex2.approx.f16x2 of (x, x) against exp2 in double.
__global__ void f16_error(float* err, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const auto bits = static_cast<unsigned short>(0x8000u | static_cast<unsigned>(i));
  const std::uint32_t in = bits | (static_cast<std::uint32_t>(bits) << 16);
  std::uint32_t out;
  asm("ex2.approx.f16x2 %0, %1;" : "=r"(out) : "r"(in));
  float x, y;
  asm("{ .reg .f16 t; mov.b16 t, %1; cvt.f32.f16 %0, t; }" : "=f"(x) : "h"(bits));
  asm("{ .reg .f16 t; mov.b16 t, %1; cvt.f32.f16 %0, t; }" : "=f"(y) : "h"(static_cast<unsigned short>(out & 0xFFFFu)));
  const double ref = exp2(static_cast<double>(x));
  err[i] = x >= -14.f ? static_cast<float>(fabs(y - ref) / ref) : 0.f;
}

bool ok(cudaError_t e) {
  if (e != cudaSuccess) std::fprintf(stderr, "CUDA error: %s\n", cudaGetErrorString(e));
  return e == cudaSuccess;
}

}  // namespace

int main() {
  int sms = 0;
  if (!ok(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0))) return 1;
  float* sink = nullptr;
  long long* cycles = nullptr;
  if (!ok(cudaMalloc(&sink, static_cast<std::size_t>(sms) * kThreads * sizeof(float))) ||
      !ok(cudaMallocManaged(&cycles, sizeof(long long))))
    return 1;
  const char* names[3] = {"f32", "f16x2", "bf16x2"};
  for (int mode = 0; mode < 3; ++mode) {
    for (int rep = 0; rep < 2; ++rep) {  // the second run is the one reported (warm clocks and caches)
      if (mode == 0) ex2_loop<0><<<sms, kThreads>>>(sink, cycles);
      if (mode == 1) ex2_loop<1><<<sms, kThreads>>>(sink, cycles);
      if (mode == 2) ex2_loop<2><<<sms, kThreads>>>(sink, cycles);
      if (!ok(cudaDeviceSynchronize())) return 1;
    }
    const double instr = static_cast<double>(kThreads) * kChains * kSteps / static_cast<double>(*cycles);
    std::printf("%-7s %lld cycles: %.2f ex2 instructions per clock per SM, %.2f results\n", names[mode], *cycles, instr,
                instr * (mode == 0 ? 1 : 2));
  }
  const int n = 0x7C00;  // every finite negative f16
  float* err = nullptr;
  if (!ok(cudaMallocManaged(&err, n * sizeof(float)))) return 1;
  f16_error<<<(n + 255) / 256, 256>>>(err, n);
  if (!ok(cudaDeviceSynchronize())) return 1;
  float worst = 0.f;
  for (int i = 0; i < n; ++i) worst = std::max(worst, err[i]);
  std::printf("ex2.approx.f16x2 on x in [-14, 0]: max relative error %.3g (2^%.2f)\n", worst, std::log2(worst));
  cudaFree(err);
  cudaFree(cycles);
  cudaFree(sink);
  return 0;
}
