// decode_attention.cu — split sparse attention: one warp per (query token t, KV head g, slot s of t's topk list),
// for decode batches (Q queries per request) and, as a query-outer baseline, varlen prefill batches.
// It loads the K and V block of that slot once into shared memory (cp.async), computes S = Q·Kᵀ for the G query
// heads of group g (one m16 row tile of mma.sync m16n8k16, rows past G padded with zeros), a single-tile softmax
// (the block is the whole tile: key positions past the request's length or after the query are -inf), O = P·V
// with P rounded to bf16, and writes O / rowsum (bf16) and the natural-log LSE to slot s. The combine kernel then
// merges exactly split_counts[t, g] slots. Grid = T x Hkv x k CTAs: fixed by shapes, so a run can be captured in a
// graph.
//
// Invariants: G in {1, 2, 4, 8, 16}; slots at or past a row's valid count exit at once (never read by combine);
// every lane of the warp takes part in every shuffle.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "kernels/common/search.cuh"
#include "kernels/decode/launch.h"

namespace msa {
namespace kernels {
namespace {

constexpr int kKeys = 128, kDim = 128, kPad = 136;  // padded smem rows (272 B) keep fragment loads conflict-free
constexpr std::size_t kSmemBytes = 2 * kKeys * kPad * sizeof(__nv_bfloat16);

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(static_cast<unsigned>(__cvta_generic_to_shared(smem))),
               "l"(gmem));
}

__device__ __forceinline__ void mma_bf16(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ std::uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const std::uint32_t*>(&v);
}

__device__ __forceinline__ std::uint32_t pack_halves(__nv_bfloat16 lo, __nv_bfloat16 hi) {
  return static_cast<std::uint32_t>(__bfloat16_as_ushort(lo)) | (static_cast<std::uint32_t>(__bfloat16_as_ushort(hi)) << 16);
}

__global__ void __launch_bounds__(32) decode_attention_kernel(const DecodeAttentionLaunch a) {
  extern __shared__ __align__(16) unsigned char smem[];
  auto* ks = reinterpret_cast<__nv_bfloat16*>(smem);
  auto* vs = ks + kKeys * kPad;

  const std::int64_t t = blockIdx.x / a.num_kv_heads;
  const int g = static_cast<int>(blockIdx.x % a.num_kv_heads), s = static_cast<int>(blockIdx.y);
  const int lane = threadIdx.x, r = lane / 4, c = lane % 4;
  const int G = a.num_q_heads / a.num_kv_heads;

  const std::int32_t* list = a.topk + g * a.topk_stride_h + t * a.topk_stride_t;
  int count = 0;
  while (count < a.k && list[count * a.topk_stride_s] >= 0) ++count;
  if (s == 0 && lane == 0) a.split_counts[t * a.num_kv_heads + g] = count;
  if (s >= count) return;  // uniform over the CTA

  int b, i, nq;  // request, query index in it, its query count
  if (a.cu_seqlens_q == nullptr) {
    b = static_cast<int>(t / a.queries_per_request);
    i = static_cast<int>(t % a.queries_per_request);
    nq = a.queries_per_request;
  } else {
    b = last_at_most(a.cu_seqlens_q, a.cu_stride, a.num_requests, t);
    i = static_cast<int>(t - a.cu_seqlens_q[b * a.cu_stride]);
    nq = a.cu_seqlens_q[(b + 1) * a.cu_stride] - a.cu_seqlens_q[b * a.cu_stride];
  }
  const int L = a.seq_lens_k[b * a.seq_stride];
  const int pos = L - nq + i;  // bottom-right aligned query position
  const int block = list[s * a.topk_stride_s];
  const int page = a.page_table[static_cast<std::int64_t>(b) * a.pt_stride_b + block * a.pt_stride_j];

  // K and V of the block: 2 x 2048 chunks of 16 bytes, 128 per lane.
  const auto* kg = static_cast<const __nv_bfloat16*>(a.k_cache) + page * a.kv_stride_page + g * a.kv_stride_h;
  const auto* vg = static_cast<const __nv_bfloat16*>(a.v_cache) + page * a.kv_stride_page + g * a.kv_stride_h;
  // Rows of keys >= L (the tail of the last page) may hold anything, NaN included, and P = 0 times NaN would still
  // poison O: they are zeroed instead of loaded.
  const int rows_valid = min(kKeys, L - block * kKeys);
  for (int chunk = lane; chunk < kKeys * kDim / 8; chunk += 32) {
    const int row = chunk / (kDim / 8), col = (chunk % (kDim / 8)) * 8;
    if (row < rows_valid) {
      cp_async16(ks + row * kPad + col, kg + row * a.kv_stride_t + col);
      cp_async16(vs + row * kPad + col, vg + row * a.kv_stride_t + col);
    } else {
      *reinterpret_cast<uint4*>(ks + row * kPad + col) = make_uint4(0, 0, 0, 0);
      *reinterpret_cast<uint4*>(vs + row * kPad + col) = make_uint4(0, 0, 0, 0);
    }
  }
  asm volatile("cp.async.commit_group;\n" ::);

  // Q fragments of rows r and r + 8 (heads g * G + row; rows >= G are zero), all 128 dims, while K and V land.
  const auto* qg = static_cast<const __nv_bfloat16*>(a.q) + t * a.q_stride_t + static_cast<std::int64_t>(g) * G * a.q_stride_h;
  std::uint32_t qa[kDim / 16][4];
#pragma unroll
  for (int kk = 0; kk < kDim / 16; ++kk) {
    const int col = kk * 16 + 2 * c;
    const __nv_bfloat16* row0 = qg + r * a.q_stride_h;
    const __nv_bfloat16* row1 = qg + (r + 8) * a.q_stride_h;
    qa[kk][0] = r < G ? *reinterpret_cast<const std::uint32_t*>(row0 + col) : 0u;
    qa[kk][1] = r + 8 < G ? *reinterpret_cast<const std::uint32_t*>(row1 + col) : 0u;
    qa[kk][2] = r < G ? *reinterpret_cast<const std::uint32_t*>(row0 + col + 8) : 0u;
    qa[kk][3] = r + 8 < G ? *reinterpret_cast<const std::uint32_t*>(row1 + col + 8) : 0u;
  }
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
  __syncwarp();

  // S = Q K^T: 16 tiles of 8 keys; thread holds keys 8 nt + 2c (+1) of rows r and r + 8.
  float sc[kKeys / 8][4];
#pragma unroll
  for (int nt = 0; nt < kKeys / 8; ++nt) {
    sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kDim / 16; ++kk) {
      const __nv_bfloat16* krow = ks + (nt * 8 + r) * kPad + kk * 16 + 2 * c;
      mma_bf16(sc[nt], qa[kk], *reinterpret_cast<const std::uint32_t*>(krow),
               *reinterpret_cast<const std::uint32_t*>(krow + 8));
    }
  }
  // Scale to log2 units and mask keys past the request's length or after the query's position.
  const float scale = a.sm_scale * 1.4426950408889634f;
  const int key0 = block * kKeys;
  float m0 = -INFINITY, m1 = -INFINITY;
#pragma unroll
  for (int nt = 0; nt < kKeys / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int key = key0 + nt * 8 + 2 * c + (e & 1);
      const bool visible = key < L && key <= pos;
      sc[nt][e] = visible ? sc[nt][e] * scale : -INFINITY;
      if (e < 2) m0 = fmaxf(m0, sc[nt][e]); else m1 = fmaxf(m1, sc[nt][e]);
    }
#pragma unroll
  for (int o = 1; o <= 2; o <<= 1) {
    m0 = fmaxf(m0, __shfl_xor_sync(0xffffffffu, m0, o));
    m1 = fmaxf(m1, __shfl_xor_sync(0xffffffffu, m1, o));
  }
  // P = exp2(S - m); the row sums add the fp32 values (so the LSE is the exact softmax mass), the P V product uses
  // them rounded to bf16 (as the reference's round_p_to_bf16 option models).
  const float base0 = m0 == -INFINITY ? 0.f : m0, base1 = m1 == -INFINITY ? 0.f : m1;
  float l0 = 0.f, l1 = 0.f;
#pragma unroll
  for (int nt = 0; nt < kKeys / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float p = exp2f(sc[nt][e] - (e < 2 ? base0 : base1));
      sc[nt][e] = p;
      if (e < 2) l0 += p; else l1 += p;
    }
#pragma unroll
  for (int o = 1; o <= 2; o <<= 1) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, o);
    l1 += __shfl_xor_sync(0xffffffffu, l1, o);
  }

  // O = P V: P's accumulator layout is the A-fragment layout (keys 16 kk .. 16 kk + 15 = tiles 2 kk, 2 kk + 1);
  // B[key][dim] = V[key][dim] is gathered as bf16 pairs along the key axis.
  float out[kDim / 8][4];
#pragma unroll
  for (int nt = 0; nt < kDim / 8; ++nt) out[nt][0] = out[nt][1] = out[nt][2] = out[nt][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < kKeys / 16; ++kk) {
    const std::uint32_t pa[4] = {pack_bf16(sc[2 * kk][0], sc[2 * kk][1]), pack_bf16(sc[2 * kk][2], sc[2 * kk][3]),
                                 pack_bf16(sc[2 * kk + 1][0], sc[2 * kk + 1][1]),
                                 pack_bf16(sc[2 * kk + 1][2], sc[2 * kk + 1][3])};
    const __nv_bfloat16* v0 = vs + (kk * 16 + 2 * c) * kPad;
#pragma unroll
    for (int nt = 0; nt < kDim / 8; ++nt) {
      const int dim = nt * 8 + r;
      const std::uint32_t b0 = pack_halves(v0[dim], v0[kPad + dim]);
      const std::uint32_t b1 = pack_halves(v0[8 * kPad + dim], v0[9 * kPad + dim]);
      mma_bf16(out[nt], pa, b0, b1);
    }
  }

  // Slot s: O / l (bf16) and LSE = (m + log2 l) ln 2 for rows r and r + 8 that are real heads.
  const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
  auto* po = static_cast<__nv_bfloat16*>(a.partial_out);
  const std::int64_t slot_base = (static_cast<std::int64_t>(s) * a.total_q + t) * a.num_q_heads + static_cast<std::int64_t>(g) * G;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = r + 8 * half;
    if (row >= G) continue;
    const float inv = half ? inv1 : inv0;
    __nv_bfloat16* dst = po + (slot_base + row) * kDim;
#pragma unroll
    for (int nt = 0; nt < kDim / 8; ++nt)
      *reinterpret_cast<std::uint32_t*>(dst + nt * 8 + 2 * c) =
          pack_bf16(out[nt][2 * half] * inv, out[nt][2 * half + 1] * inv);
    if (c == 0) {
      const float m = half ? m1 : m0, l = half ? l1 : l0;
      a.partial_lse[slot_base + row] = l > 0.f ? (m + log2f(l)) * 0.6931471805599453f : -INFINITY;
    }
  }
}

std::size_t align256(std::size_t x) { return (x + 255) / 256 * 256; }

}  // namespace

std::size_t decode_partials_bytes(std::int64_t total_q, int num_q_heads, int num_kv_heads, int k) {
  const std::size_t rows = static_cast<std::size_t>(k) * static_cast<std::size_t>(total_q) * num_q_heads;
  return align256(rows * kDim * 2) + align256(rows * 4) + align256(static_cast<std::size_t>(total_q) * num_kv_heads * 4);
}

Status launch_decode_attention(const DecodeAttentionLaunch& a) {
  const int G = a.num_kv_heads > 0 ? a.num_q_heads / a.num_kv_heads : 0;
  if (G < 1 || G > 16 || (G & (G - 1)) != 0 || G * a.num_kv_heads != a.num_q_heads)
    return Status::NotImplemented("decode attention on CUDA: Hq / Hkv must be 1, 2, 4, 8 or 16");
  if (a.total_q == 0) return Status::Ok();
  cudaError_t e = cudaFuncSetAttribute(decode_attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(kSmemBytes));
  if (e == cudaSuccess) {
    const dim3 grid(static_cast<unsigned>(a.total_q * a.num_kv_heads), static_cast<unsigned>(a.k));
    decode_attention_kernel<<<grid, 32, kSmemBytes, static_cast<cudaStream_t>(a.stream)>>>(a);
    e = cudaGetLastError();
  }
  return e == cudaSuccess ? Status::Ok() : Status::CudaError(std::string("decode attention: ") + cudaGetErrorString(e));
}

}  // namespace kernels
}  // namespace msa
