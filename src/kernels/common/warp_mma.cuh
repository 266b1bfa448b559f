// warp_mma.cuh — warp-level building blocks shared by the mma.sync kernels (decode attention, split and rows
// variants) and the combine: 16-byte cp.async (with or without an L2 policy), the m16n8k16 bf16 MMA, transposed
// ldmatrix, bf16 packing.
// Packing goes through the bf16 bit patterns, never through the address of a local, so values stay in registers.
#ifndef MSA_KERNELS_COMMON_WARP_MMA_CUH_
#define MSA_KERNELS_COMMON_WARP_MMA_CUH_

#include <cuda_bf16.h>

#include <cstdint>

namespace msa {
namespace kernels {

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(static_cast<unsigned>(__cvta_generic_to_shared(smem))),
               "l"(gmem));
}
// The same with an L2 cache policy (createpolicy; sm90::l2_evict_first_policy for data read once).
__device__ __forceinline__ void cp_async16_hint(void* smem, const void* gmem, std::uint64_t policy) {
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;\n"
               ::"r"(static_cast<unsigned>(__cvta_generic_to_shared(smem))), "l"(gmem), "l"(policy));
}

// D[16 x 8] += A[16 x 16] B[16 x 8], bf16 in, fp32 accumulate (the PTX fragment layouts).
__device__ __forceinline__ void mma_bf16(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8x8 bf16 matrices, transposed: register i holds, for this lane, column lane / 4 and rows 2 (lane % 4) and
// 2 (lane % 4) + 1 of matrix i, whose row addresses come from lanes 8 i .. 8 i + 7.
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(static_cast<unsigned>(__cvta_generic_to_shared(row))));
}

// Two floats as a bf16 pair (round to nearest even), `lo` in the low half.
__device__ __forceinline__ std::uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 p = __floats2bfloat162_rn(lo, hi);
  return static_cast<std::uint32_t>(__bfloat16_as_ushort(p.x)) | (static_cast<std::uint32_t>(__bfloat16_as_ushort(p.y)) << 16);
}

// v * scale as four bf16 at dst (8-byte aligned).
__device__ __forceinline__ void store_bf16x4(__nv_bfloat16* dst, float4 v, float scale) {
  uint2 packed;
  packed.x = pack_bf16(v.x * scale, v.y * scale);
  packed.y = pack_bf16(v.z * scale, v.w * scale);
  *reinterpret_cast<uint2*>(dst) = packed;
}

}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_COMMON_WARP_MMA_CUH_
