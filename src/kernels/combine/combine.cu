// combine.cu — LSE-merge of the partial attention outputs of each (token, head): exactly split_counts[t, h / G]
// partials are read (never slots past the count), non-finite partial LSEs carry no weight, and a row with no
// weighted partial gets O = 0 and LSE = -inf. Same semantics as the CPU implementation (reference/attention_ref.cpp).
//
// One warp per (token, head): lane l owns dims 4l .. 4l + 3, so each partial row is one coalesced 256-byte (bf16) or
// 512-byte (fp32) warp load. The partial LSEs are spread over the lanes (max by shuffles, so every exponent is
// <= 0), and the rows are loaded eight at a time before any is used, to keep many rows in flight.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/combine/launch.h"

namespace msa {
namespace kernels {
namespace {

constexpr int kWarpsPerBlock = 8;

__device__ __forceinline__ float4 load4(const CombineLaunch& a, std::int64_t off) {
  if (a.partial_fp32) return *reinterpret_cast<const float4*>(static_cast<const float*>(a.partial_out) + off);
  const uint2 raw = *reinterpret_cast<const uint2*>(static_cast<const __nv_bfloat16*>(a.partial_out) + off);
  const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
  const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
  return make_float4(lo.x, lo.y, hi.x, hi.y);
}

__global__ void __launch_bounds__(kWarpsPerBlock * 32) combine_kernel(const CombineLaunch a) {
  const std::int64_t row = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) / 32;
  if (row >= a.total_q * a.num_q_heads) return;  // uniform per warp
  const int lane = threadIdx.x % 32;
  const std::int64_t t = row / a.num_q_heads;
  const int h = static_cast<int>(row % a.num_q_heads);
  const int n = min(max(a.split_counts[t * a.sc_stride_t + (h / a.group) * a.sc_stride_g], 0), a.num_splits);
  const float* lse_row = a.partial_lse + t * a.pl_stride_t + h * a.pl_stride_h;

  // Slot s's LSE lives in lane s % 32 (one load per lane per 32 slots), so the max and the weights cost shuffles,
  // not dependent loads, and all partial rows of a group of 8 are loaded before any is used.
  float m = -INFINITY;
  for (int s0 = 0; s0 < n; s0 += 32) {
    const float l = s0 + lane < n ? lse_row[(s0 + lane) * a.pl_stride_s] : -INFINITY;
    if (isfinite(l)) m = fmaxf(m, l);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  float wsum = 0.f;
  if (m != -INFINITY) {
    const std::int64_t base = t * a.po_stride_t + h * a.po_stride_h + 4 * lane;
    for (int s0 = 0; s0 < n; s0 += 32) {
      const int cnt = min(32, n - s0);
      const float l = lane < cnt ? lse_row[(s0 + lane) * a.pl_stride_s] : -INFINITY;
      const float w_lane = isfinite(l) ? expf(l - m) : -1.f;  // -1: no weight (non-finite stats), row not read
      for (int j = 0; j < cnt; j += 8) {
        float w[8];
        float4 v[8];
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          w[u] = __shfl_sync(0xffffffffu, w_lane, (j + u) & 31);
          const bool use = j + u < cnt && w[u] >= 0.f;
          v[u] = use ? load4(a, base + (s0 + j + u) * a.po_stride_s) : make_float4(0.f, 0.f, 0.f, 0.f);
          if (!use) w[u] = 0.f;
        }
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          if (w[u] == 0.f) continue;  // skipped rows may hold anything (0 * NaN must not reach the sum)
          acc.x += w[u] * v[u].x;
          acc.y += w[u] * v[u].y;
          acc.z += w[u] * v[u].z;
          acc.w += w[u] * v[u].w;
          wsum += w[u];
        }
      }
    }
  }
  const bool empty = !(wsum > 0.f);
  const float inv = empty ? 0.f : 1.f / wsum;
  const __nv_bfloat162 lo = __floats2bfloat162_rn(acc.x * inv, acc.y * inv);
  const __nv_bfloat162 hi = __floats2bfloat162_rn(acc.z * inv, acc.w * inv);
  uint2 packed;
  packed.x = *reinterpret_cast<const unsigned*>(&lo);
  packed.y = *reinterpret_cast<const unsigned*>(&hi);
  *reinterpret_cast<uint2*>(static_cast<__nv_bfloat16*>(a.out) + t * a.out_stride_t + h * a.out_stride_h + 4 * lane) =
      packed;
  if (a.lse != nullptr && lane == 0) a.lse[t * a.lse_stride_t + h * a.lse_stride_h] = empty ? -INFINITY : m + logf(wsum);
}

}  // namespace

Status launch_combine(const CombineLaunch& a) {
  const std::int64_t rows = a.total_q * a.num_q_heads;
  if (rows == 0) return Status::Ok();
  int current = 0;
  cudaError_t e = cudaGetDevice(&current);
  if (e == cudaSuccess && current != a.device) e = cudaSetDevice(a.device);
  if (e == cudaSuccess) {
    const std::int64_t blocks = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
    combine_kernel<<<static_cast<unsigned>(blocks), kWarpsPerBlock * 32, 0, static_cast<cudaStream_t>(a.stream)>>>(a);
    e = cudaGetLastError();
  }
  if (current != a.device) cudaSetDevice(current);
  return e == cudaSuccess ? Status::Ok() : Status::CudaError(std::string("combine: ") + cudaGetErrorString(e));
}

}  // namespace kernels
}  // namespace msa
