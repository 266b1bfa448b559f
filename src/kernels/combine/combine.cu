// combine.cu — LSE-merge of the partial attention outputs of each (token, head): exactly split_counts[t, h / G]
// partials are read (never slots past the count), non-finite partial LSEs carry no weight, and a row with no
// weighted partial gets O = 0 and LSE = -inf; a negative count means another kernel writes the row. Same semantics as the CPU implementation (reference/attention_ref.cpp).
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
#include "kernels/common/pdl.cuh"
#include "kernels/common/warp_mma.cuh"

namespace msa {
namespace kernels {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kMaxUnitsPerCta = 16;  // one split count per lane of a half-warp
// combine16 takes units of 16 rows (blockDim.x / 16), units_per_cta(a) per CTA, one after the other: two by
// default, more where many rows may belong to another kernel (CombineLaunch::units_per_cta). See launch.h for the
// measurements behind both.
__host__ __device__ inline int units_per_cta(const CombineLaunch& a) {
  if (a.partial_fp32) return 1;  // decode-sized grids: a second unit would add its latency to a short kernel
  return a.units_per_cta <= 0 ? 2 : a.units_per_cta < kMaxUnitsPerCta ? a.units_per_cta : kMaxUnitsPerCta;
}

__device__ __forceinline__ float4 load4(const CombineLaunch& a, std::int64_t off) {
  if (a.partial_fp32) return *reinterpret_cast<const float4*>(static_cast<const float*>(a.partial_out) + off);
  const uint2 raw = *reinterpret_cast<const uint2*>(static_cast<const __nv_bfloat16*>(a.partial_out) + off);
  const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
  const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
  return make_float4(lo.x, lo.y, hi.x, hi.y);
}

__global__ void __launch_bounds__(kWarpsPerBlock * 32) combine_kernel(const CombineLaunch a) {
  pdl_wait();  // the partials come from the attention kernel just before
  const std::int64_t row = (blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x) / 32;
  if (row >= a.total_q * a.num_q_heads) return;  // uniform per warp
  const int lane = threadIdx.x % 32;
  const std::int64_t t = row / a.num_q_heads;
  const int h = static_cast<int>(row % a.num_q_heads);
  const int count = a.split_counts[t * a.sc_stride_t + (h / a.group) * a.sc_stride_g];
  if (count < 0) return;  // written by another kernel (uniform per warp)
  const int n = min(count, a.num_splits);
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
  store_bf16x4(static_cast<__nv_bfloat16*>(a.out) + t * a.out_stride_t + h * a.out_stride_h + 4 * lane, acc, inv);
  if (a.lse != nullptr && lane == 0) a.lse[t * a.lse_stride_t + h * a.lse_stride_h] = empty ? -INFINITY : m + logf(wsum);
}

// The common case, at most 16 splits (topk <= 16): one thread per 8 dims of a (token, head) row (a half-warp per
// row), the CTA's units of 16 rows one after the other. The split counts of its units come in one load per lane;
// the LSEs and the partial rows of slots < n are all loaded as soon as n is known, independent of each other, so a
// row costs one memory round trip past the CTA's counts — with the row loads waiting for the LSEs it was three,
// and ncu showed the kernel latency-bound at 2.5 TB/s (0.55 eligible warps per scheduler, 25 % occupancy by
// registers). A slot whose LSE is non-finite carries no weight: its row is loaded but never used. Same arithmetic,
// in the same order, as combine_kernel.
template <bool kFp32>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) combine16_kernel(const CombineLaunch a) {
  pdl_wait();  // the partials come from the attention kernel just before
  const int units = units_per_cta(a);
  const std::int64_t rows = a.total_q * a.num_q_heads, first = blockIdx.x * static_cast<std::int64_t>(units);
  const int sub = static_cast<int>(threadIdx.x % 16), d = sub * 8;
  // The thread's row in unit u is u * 16 + threadIdx.x / 16. Its half-warp loads the split counts of the CTA's
  // units at once (lane `sub` the one of unit first + sub) and hands them out by shuffle, so a row whose count is
  // negative costs no round trip of its own.
  int mine = -1;  // also for rows past the end
  const std::int64_t my_row = ((first + sub) * blockDim.x + threadIdx.x) / 16;
  if (sub < units && my_row < rows)
    mine = a.split_counts[my_row / a.num_q_heads * a.sc_stride_t +
                          static_cast<int>(my_row % a.num_q_heads) / a.group * a.sc_stride_g];
#pragma unroll 1
  for (int j = 0; j < units; ++j) {
    const int count = __shfl_sync(0xffffffffu, mine, j, 16);  // every lane gets here: the loop is uniform
    if (count < 0) continue;  // written by another kernel, or past the rows (no collectives below)
    const std::int64_t row = ((first + j) * blockDim.x + threadIdx.x) / 16;
    const std::int64_t t = row / a.num_q_heads;
    const int h = static_cast<int>(row % a.num_q_heads);
    const int n = min(count, a.num_splits);
    const float* lse_row = a.partial_lse + t * a.pl_stride_t + h * a.pl_stride_h;
    const std::int64_t base = t * a.po_stride_t + h * a.po_stride_h + d;
    float l[16];
    // Raw rows in registers (no arrays whose address is taken: those would live in local memory).
    uint4 raw[16], raw_hi[kFp32 ? 16 : 1];
#pragma unroll
    for (int s = 0; s < 16; ++s) {
      l[s] = -INFINITY;
      raw[s] = make_uint4(0, 0, 0, 0);
      if (kFp32) raw_hi[kFp32 ? s : 0] = make_uint4(0, 0, 0, 0);
      if (s >= n) continue;  // slots past the count are never read
      l[s] = lse_row[s * a.pl_stride_s];
      if (kFp32) {
        const uint4* src = reinterpret_cast<const uint4*>(static_cast<const float*>(a.partial_out) + base + s * a.po_stride_s);
        raw[s] = src[0];
        raw_hi[kFp32 ? s : 0] = src[1];
      } else {
        raw[s] = *reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(a.partial_out) + base + s * a.po_stride_s);
      }
    }
    float m = -INFINITY;
#pragma unroll
    for (int s = 0; s < 16; ++s)
      if (isfinite(l[s])) m = fmaxf(m, l[s]);
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    float wsum = 0.f;
#pragma unroll
    for (int s = 0; s < 16; ++s) {
      if (m == -INFINITY || !isfinite(l[s])) continue;
      const float w = expf(l[s] - m);
      float v[8];
      if (kFp32) {
        const uint4 hi = raw_hi[kFp32 ? s : 0];
        v[0] = __uint_as_float(raw[s].x), v[1] = __uint_as_float(raw[s].y), v[2] = __uint_as_float(raw[s].z),
        v[3] = __uint_as_float(raw[s].w), v[4] = __uint_as_float(hi.x), v[5] = __uint_as_float(hi.y),
        v[6] = __uint_as_float(hi.z), v[7] = __uint_as_float(hi.w);
      } else {  // bf16 pairs: low half first
        v[0] = __uint_as_float(raw[s].x << 16), v[1] = __uint_as_float(raw[s].x & 0xffff0000u);
        v[2] = __uint_as_float(raw[s].y << 16), v[3] = __uint_as_float(raw[s].y & 0xffff0000u);
        v[4] = __uint_as_float(raw[s].z << 16), v[5] = __uint_as_float(raw[s].z & 0xffff0000u);
        v[6] = __uint_as_float(raw[s].w << 16), v[7] = __uint_as_float(raw[s].w & 0xffff0000u);
      }
#pragma unroll
      for (int c = 0; c < 8; ++c) acc[c] += w * v[c];
      wsum += w;
    }
    const bool empty = !(wsum > 0.f);
    const float inv = empty ? 0.f : 1.f / wsum;
    uint4 packed;
    packed.x = pack_bf16(acc[0] * inv, acc[1] * inv);
    packed.y = pack_bf16(acc[2] * inv, acc[3] * inv);
    packed.z = pack_bf16(acc[4] * inv, acc[5] * inv);
    packed.w = pack_bf16(acc[6] * inv, acc[7] * inv);
    *reinterpret_cast<uint4*>(static_cast<__nv_bfloat16*>(a.out) + t * a.out_stride_t + h * a.out_stride_h + d) = packed;
    if (a.lse != nullptr && d == 0) a.lse[t * a.lse_stride_t + h * a.lse_stride_h] = empty ? -INFINITY : m + logf(wsum);
  }
}

}  // namespace

Status launch_combine(const CombineLaunch& a) {
  const std::int64_t rows = a.total_q * a.num_q_heads;
  if (rows == 0) return Status::Ok();
  int current = 0;
  cudaError_t e = cudaGetDevice(&current);
  if (e == cudaSuccess && current != a.device) e = cudaSetDevice(a.device);
  if (e == cudaSuccess) {
    const auto stream = static_cast<cudaStream_t>(a.stream);
    if (a.num_splits <= 16) {  // two rows per warp, units of 2 * kWarpsPerBlock rows
      const std::int64_t per_block = 2 * kWarpsPerBlock * units_per_cta(a);
      const std::int64_t blocks = (rows + per_block - 1) / per_block;
      e = launch_pdl(a.partial_fp32 ? combine16_kernel<true> : combine16_kernel<false>,
                     dim3(static_cast<unsigned>(blocks)), dim3(kWarpsPerBlock * 32), 0, stream, a);
    } else {
      const std::int64_t blocks = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
      e = launch_pdl(combine_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kWarpsPerBlock * 32), 0, stream, a);
    }
    if (e == cudaSuccess) e = cudaGetLastError();
  }
  if (current != a.device) cudaSetDevice(current);
  return e == cudaSuccess ? Status::Ok() : Status::CudaError(std::string("combine: ") + cudaGetErrorString(e));
}

}  // namespace kernels
}  // namespace msa
