// decode_rows.cu — decode attention with one CTA per (query token t, KV head g) streaming all of t's listed blocks
// (flash-decoding over a gathered block list), for batches with enough (t, g) rows to fill the GPU; small batches
// keep the split kernel (decode_attention.cu), which spreads one row over k CTAs.
//
// Why: the split kernel writes k partials per row and pays, per CTA, a launch and a chain of dependent metadata
// loads (topk row → page) before its only block load, with three CTAs per SM loading and computing in turn
// (1.8 TB/s at 64 x 32K on H100). Here the row's pages are resolved once, and a 3-stage cp.async ring keeps two
// 64 KiB block loads in flight while a block is computed; O stays in registers (online softmax) and goes straight
// to `out` — no partials, no combine.
//
// Eight warps; warp w owns keys 16 w .. 16 w + 15 of every block and its own running (max, sum, O) for the G heads
// (mma.sync m16n8k16, rows past G zero); the eight states are merged in shared memory at the end. Keys past the
// request's length or after the query are -inf; cache rows of keys after the query are zeroed, never loaded.
//
// Behind SparseDecodeAttention for T · Hkv ≥ 3/8 of the SM count (decode_prefers_rows in launch.h).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "kernels/common/pdl.cuh"
#include "kernels/decode/decode_common.cuh"

namespace msa {
namespace kernels {
namespace {

constexpr int kWarps = 8, kThreads = kWarps * 32, kStages = 3;
constexpr int kKvBytes = kKeys * kPad * 2, kStageBytes = 2 * kKvBytes, kQBytes = 16 * kPad * 2;
constexpr int kOPad = 132;  // fp32 row stride of the final merge
constexpr std::size_t kSmemBytes = static_cast<std::size_t>(kStages) * kStageBytes + kQBytes;
static_assert(kWarps * 16 * kOPad * sizeof(float) <= static_cast<std::size_t>(kStages) * kStageBytes, "merge fits");

// Issues (all threads) the cp.async loads of block `block` (page `page`) into `stage` as one commit group; an
// out-of-range slot commits an empty group so the group count per step stays fixed. The token sees keys
// 0 .. seen - 1 (seen = position + 1 <= L); rows of later keys are zeroed, not loaded (P = 0 times a NaN or inf
// there would still poison O).
__device__ void load_block(const DecodeAttentionLaunch& a, unsigned char* stage, bool valid, int page, int block,
                           int g, int seen) {
  if (valid) {
    auto* ks = reinterpret_cast<__nv_bfloat16*>(stage);
    auto* vs = reinterpret_cast<__nv_bfloat16*>(stage + kKvBytes);
    const auto* kg = static_cast<const __nv_bfloat16*>(a.k_cache) + page * a.kv_stride_page + g * a.kv_stride_h;
    const auto* vg = static_cast<const __nv_bfloat16*>(a.v_cache) + page * a.kv_stride_page + g * a.kv_stride_h;
    const int rows_valid = min(kKeys, seen - block * kKeys);
    load_block_rows<kThreads>(ks, kg, a.kv_stride_t, rows_valid);
    load_block_rows<kThreads>(vs, vg, a.kv_stride_t, rows_valid);
  }
  asm volatile("cp.async.commit_group;\n" ::);
}

__global__ void __launch_bounds__(kThreads, 1) decode_rows_kernel(const DecodeAttentionLaunch a, const DecodeOut o) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ float warp_m[kWarps][16], warp_l[kWarps][16];
  auto* qs = reinterpret_cast<__nv_bfloat16*>(smem + kStages * kStageBytes);
  const std::int64_t t = blockIdx.x / a.num_kv_heads;
  const int g = static_cast<int>(blockIdx.x % a.num_kv_heads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, r = lane / 4, c = lane % 4;
  const int G = a.num_q_heads / a.num_kv_heads;
  // The token's Q rows of the G heads into shared memory (rows >= G zero); the barrier before the fragments below
  // orders the stores. With inputs_before_wait they and the token's place are read before the wait; otherwise
  // after it, the Q rows behind the first block loads.
  auto stage_q = [&] {
    const auto* qg = static_cast<const __nv_bfloat16*>(a.q) + t * a.q_stride_t + static_cast<std::int64_t>(g) * G * a.q_stride_h;
    const int row = threadIdx.x / 16, col = (threadIdx.x % 16) * 8;
    *reinterpret_cast<uint4*>(qs + row * kPad + col) =
        row < G ? *reinterpret_cast<const uint4*>(qg + row * a.q_stride_h + col) : make_uint4(0, 0, 0, 0);
  };
  QueryPlace place;
  if (a.inputs_before_wait) {
    place = locate_query(a, t);
    stage_q();
  }
  pdl_wait();  // topk (the selection) and the caches come from earlier kernels of the run
  if (!a.inputs_before_wait) place = locate_query(a, t);

  // The row's listed blocks: lane j holds block j and its page (valid ids are a prefix of the row).
  const std::int32_t* list = a.topk + g * a.topk_stride_h + t * a.topk_stride_t;
  const int my_block = lane < a.k ? list[lane * a.topk_stride_s] : -1;
  const int count = __popc(__ballot_sync(0xffffffffu, my_block >= 0));
  const int b = place.request, L = place.kv_len, pos = place.position;
  const int my_page = my_block >= 0 ? a.page_table[static_cast<std::int64_t>(b) * a.pt_stride_b + my_block * a.pt_stride_j] : 0;

  // Ring prologue: blocks 0, 1, 2.
#pragma unroll
  for (int s = 0; s < kStages; ++s)
    load_block(a, smem + s * kStageBytes, s < count, __shfl_sync(0xffffffffu, my_page, s),
               __shfl_sync(0xffffffffu, my_block, s), g, pos + 1);
  if (!a.inputs_before_wait) stage_q();
  __syncthreads();  // the Q rows are in shared memory: their fragments in registers for every block
  std::uint32_t qa[kDim / 16][4];
#pragma unroll
  for (int kk = 0; kk < kDim / 16; ++kk) {
    const __nv_bfloat16* q0 = qs + r * kPad + kk * 16 + 2 * c;
    qa[kk][0] = *reinterpret_cast<const std::uint32_t*>(q0);
    qa[kk][1] = *reinterpret_cast<const std::uint32_t*>(q0 + 8 * kPad);
    qa[kk][2] = *reinterpret_cast<const std::uint32_t*>(q0 + 8);
    qa[kk][3] = *reinterpret_cast<const std::uint32_t*>(q0 + 8 * kPad + 8);
  }

  const float scale = a.sm_scale * 1.4426950408889634f;  // log2 units
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;  // this warp's running max and sum, rows r and r + 8
  float out[kDim / 8][4];
#pragma unroll
  for (int nt = 0; nt < kDim / 8; ++nt) out[nt][0] = out[nt][1] = out[nt][2] = out[nt][3] = 0.f;
  const int key_base = warp * 16;
  for (int n = 0; n < count; ++n) {
    const unsigned char* stage = smem + (n % kStages) * kStageBytes;
    const auto* ks = reinterpret_cast<const __nv_bfloat16*>(stage);
    const auto* vs = reinterpret_cast<const __nv_bfloat16*>(stage + kKvBytes);
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kStages - 1) : "memory");  // this thread's copies of block n
    __syncthreads();                                                          // everyone's
    const int block = __shfl_sync(0xffffffffu, my_block, n);
    float sc[2][4] = {};
#pragma unroll
    for (int kk = 0; kk < kDim / 16; ++kk)
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const __nv_bfloat16* krow = ks + (key_base + nt * 8 + r) * kPad + kk * 16 + 2 * c;
        mma_bf16(sc[nt], qa[kk], *reinterpret_cast<const std::uint32_t*>(krow), *reinterpret_cast<const std::uint32_t*>(krow + 8));
      }
    float bm0, bm1;
    mask_scale_rowmax(sc, block * kKeys + key_base, L, pos, scale, &bm0, &bm1);
    // Online softmax: rescale the running state to the new max (a state still at -inf has nothing to rescale).
    const float nm0 = fmaxf(m0, bm0), nm1 = fmaxf(m1, bm1);
    const float base0 = nm0 == -INFINITY ? 0.f : nm0, base1 = nm1 == -INFINITY ? 0.f : nm1;
    const float f0 = m0 == -INFINITY ? 0.f : exp2f(m0 - base0), f1 = m1 == -INFINITY ? 0.f : exp2f(m1 - base1);
    m0 = nm0;
    m1 = nm1;
    float bl0, bl1;
    exp2_rowsum(sc, base0, base1, &bl0, &bl1);
    l0 = l0 * f0 + bl0;  // fp32 sums of the unrounded P: the LSE is the exact softmax mass
    l1 = l1 * f1 + bl1;
#pragma unroll
    for (int nt = 0; nt < kDim / 8; ++nt) {
      out[nt][0] *= f0;
      out[nt][1] *= f0;
      out[nt][2] *= f1;
      out[nt][3] *= f1;
    }
    pv_16keys(out, p_fragment(sc[0], sc[1]), vs, key_base, 0);
    __syncthreads();  // every warp is done with this stage: refill it with block n + kStages
    const int next = n + kStages;
    load_block(a, smem + (n % kStages) * kStageBytes, next < count, __shfl_sync(0xffffffffu, my_page, next & 31),
               __shfl_sync(0xffffffffu, my_block, next & 31), g, pos + 1);
  }
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
  __syncthreads();  // the ring's space takes the warps' O below

  // Merge the eight warp states: M = max m_w, l = sum l_w 2^(m_w - M), O = sum O_w 2^(m_w - M) / l.
  if (c == 0) {
    warp_m[warp][r] = m0;
    warp_m[warp][r + 8] = m1;
    warp_l[warp][r] = l0;
    warp_l[warp][r + 8] = l1;
  }
  auto* osum = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int nt = 0; nt < kDim / 8; ++nt) {
    *reinterpret_cast<float2*>(osum + (warp * 16 + r) * kOPad + nt * 8 + 2 * c) = make_float2(out[nt][0], out[nt][1]);
    *reinterpret_cast<float2*>(osum + (warp * 16 + r + 8) * kOPad + nt * 8 + 2 * c) = make_float2(out[nt][2], out[nt][3]);
  }
  __syncthreads();
  for (int item = threadIdx.x; item < G * 32; item += kThreads) {
    const int row = item / 32, d = (item % 32) * 4;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, warp_m[w][row]);
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    float lsum = 0.f;
    if (M != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        if (warp_m[w][row] == -INFINITY) continue;
        const float f = exp2f(warp_m[w][row] - M);
        const float4 u = *reinterpret_cast<const float4*>(osum + (w * 16 + row) * kOPad + d);
        v.x += f * u.x;
        v.y += f * u.y;
        v.z += f * u.z;
        v.w += f * u.w;
        lsum += f * warp_l[w][row];
      }
    }
    const float inv = lsum > 0.f ? 1.f / lsum : 0.f;
    const std::int64_t h = static_cast<std::int64_t>(g) * G + row;
    store_bf16x4(static_cast<__nv_bfloat16*>(o.out) + t * o.out_stride_t + h * o.out_stride_h + d, v, inv);
    if (o.lse != nullptr && d == 0)
      o.lse[t * o.lse_stride_t + h * o.lse_stride_h] = natural_lse(M, lsum);
  }
}

}  // namespace

Status launch_decode_attention_rows(const DecodeAttentionLaunch& a, void* out, std::int64_t out_stride_t,
                                    std::int64_t out_stride_h, float* lse, std::int64_t lse_stride_t,
                                    std::int64_t lse_stride_h) {
  if (a.handoff != nullptr) return Status::InvalidArgument("decode attention (rows): only the fused kernel takes a handoff");
  const int G = a.num_kv_heads > 0 ? a.num_q_heads / a.num_kv_heads : 0;
  if (G < 1 || G > 16 || (G & (G - 1)) != 0 || G * a.num_kv_heads != a.num_q_heads)
    return Status::NotImplemented("decode attention on CUDA: Hq / Hkv must be 1, 2, 4, 8 or 16");
  if (a.k < 1 || a.k > 16) return Status::InvalidArgument("decode attention: k must be in [1, 16]");
  if (a.total_q == 0) return Status::Ok();
  cudaError_t e = cudaFuncSetAttribute(decode_rows_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(kSmemBytes));
  if (e == cudaSuccess) {
    const DecodeOut o{out, out_stride_t, out_stride_h, lse, lse_stride_t, lse_stride_h};
    e = launch_pdl(decode_rows_kernel, dim3(static_cast<unsigned>(a.total_q * a.num_kv_heads)), dim3(kThreads),
                   kSmemBytes, static_cast<cudaStream_t>(a.stream), a, o);
    if (e == cudaSuccess) e = cudaGetLastError();
  }
  return e == cudaSuccess ? Status::Ok() : Status::CudaError(std::string("decode attention (rows): ") + cudaGetErrorString(e));
}

}  // namespace kernels
}  // namespace msa
