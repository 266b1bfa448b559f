// combine.cu — LSE-merge of the partial attention outputs of each (token, head): exactly split_counts[t, h / G]
// partials are read (never slots past the count), non-finite partial LSEs carry no weight, and a row with no
// weighted partial gets O = 0 and LSE = -inf. Same semantics as the CPU implementation (reference/attention_ref.cpp).
//
// One warp per (token, head): lane l owns dims 4l .. 4l + 3, so each partial row is one coalesced 256-byte (bf16) or
// 512-byte (fp32) warp load. Two passes over the <= S partial LSEs (max, then weights) keep every exponent <= 0;
// the partial loads of the second pass are independent, so the unrolled loop keeps several rows in flight.
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

  float m = -INFINITY;
  for (int s = 0; s < n; ++s) {
    const float l = lse_row[s * a.pl_stride_s];
    if (isfinite(l)) m = fmaxf(m, l);
  }
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  float wsum = 0.f;
  if (m != -INFINITY) {
    const std::int64_t base = t * a.po_stride_t + h * a.po_stride_h + 4 * lane;
#pragma unroll 4
    for (int s = 0; s < n; ++s) {
      const float l = lse_row[s * a.pl_stride_s];
      if (!isfinite(l)) continue;  // non-finite stats carry no weight
      const float w = expf(l - m);
      const float4 v = load4(a, base + s * a.po_stride_s);
      acc.x += w * v.x;
      acc.y += w * v.y;
      acc.z += w * v.z;
      acc.w += w * v.w;
      wsum += w;
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
