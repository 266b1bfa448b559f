// test_sm90_wgmma.cu — the layout contracts of kernels/sm90/common/sm90.cuh that the attention kernels build on,
// checked on the GPU against a host product: D = A·B with B N-major (a [K][N] tile stored as 128-byte-swizzled
// 64-column halves, like V [keys][dims]) and A either K-major in shared memory or in registers in the
// accumulator layout. One warpgroup, K = 64 (four k-slices).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/sm90/common/sm90.cuh"

namespace msa {
namespace test {
namespace {

using kernels::sm90::smem_u32;
constexpr int M = 64, N = 128, K = 64;

// Byte offset of element (row, col) in a 128-byte-swizzled tile of 128-byte rows (64 bf16), 1024-byte aligned.
__device__ __forceinline__ int sw128(int row, int col) {
  return row * 128 + ((((col * 2) / 16) ^ (row % 8)) * 16) + (col * 2) % 16;
}

// a: [M][K] row-major, b: [K][N] row-major, d: [M][N]; from_registers selects the RS form.
__global__ void wgmma_nmajor_kernel(const __nv_bfloat16* a, const __nv_bfloat16* b, float* d, bool from_registers) {
  extern __shared__ unsigned char raw[];
  unsigned char* smem = reinterpret_cast<unsigned char*>((reinterpret_cast<std::uintptr_t>(raw) + 1023) & ~std::uintptr_t{1023});
  unsigned char* sa = smem;                 // A: 64 rows x 64 cols, one K-major atom column (8 KiB)
  unsigned char* sb = smem + M * 128;       // B: two halves of [64 K-rows][64 cols] (8 KiB each)
  const int half_bytes = K * 128;
  for (int i = threadIdx.x; i < M * K; i += blockDim.x) {
    const int r = i / K, c = i % K;
    *reinterpret_cast<__nv_bfloat16*>(sa + sw128(r, c)) = a[i];
  }
  for (int i = threadIdx.x; i < K * N; i += blockDim.x) {
    const int r = i / N, c = i % N;
    *reinterpret_cast<__nv_bfloat16*>(sb + (c / 64) * half_bytes + sw128(r, c % 64)) = b[i];
  }
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // generic-proxy stores, async-proxy reads
  __syncthreads();

  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.f;
  const int t = threadIdx.x, r = 16 * (t / 32) + (t % 32) / 4, c = t % 4;
  // Register A fragments are written before the fence: wgmma may not read registers written after it.
  auto pair = [&](int row, int col) {
    const __nv_bfloat162 v = __halves2bfloat162(a[row * K + col], a[row * K + col + 1]);
    return *reinterpret_cast<const std::uint32_t*>(&v);
  };
  std::uint32_t frag[K / 16][4];
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
    frag[kk][0] = pair(r, kk * 16 + 2 * c);
    frag[kk][1] = pair(r + 8, kk * 16 + 2 * c);
    frag[kk][2] = pair(r, kk * 16 + 2 * c + 8);
    frag[kk][3] = pair(r + 8, kk * 16 + 2 * c + 8);
  }
  kernels::sm90::wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
    const std::uint64_t desc_b = kernels::sm90::wgmma_desc_sw128_nmajor(sb + kk * 2048, half_bytes);
    if (from_registers) {
      kernels::sm90::wgmma_m64n128k16_bf16_rs_tb(acc, frag[kk], desc_b);
    } else {
      const std::uint64_t desc_a = kernels::sm90::wgmma_desc_advance(kernels::sm90::wgmma_desc_sw128(sa), kk);
      kernels::sm90::wgmma_m64n128k16_bf16_ss_tb(acc, desc_a, desc_b);
    }
  }
  kernels::sm90::wgmma_commit();
  kernels::sm90::wgmma_wait<0>();
  kernels::sm90::wgmma_fence_regs(acc);
#pragma unroll
  for (int j = 0; j < 16; ++j) {
    d[r * N + 8 * j + 2 * c] = acc[4 * j];
    d[r * N + 8 * j + 2 * c + 1] = acc[4 * j + 1];
    d[(r + 8) * N + 8 * j + 2 * c] = acc[4 * j + 2];
    d[(r + 8) * N + 8 * j + 2 * c + 1] = acc[4 * j + 3];
  }
}

void check_nmajor_product(bool from_registers) {
  const std::uint64_t seed = random_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937 rng(static_cast<std::uint32_t>(seed));
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<__nv_bfloat16> a(M * K), b(K * N);
  for (auto& x : a) x = __float2bfloat16(u(rng));
  for (auto& x : b) x = __float2bfloat16(u(rng));
  DeviceBuffer<__nv_bfloat16> da(a), db(b);
  DeviceBuffer<float> dd(std::vector<float>(M * N, NAN));
  const int smem = 1024 + M * 128 + 2 * K * 128;
  ASSERT_EQ(cudaFuncSetAttribute(wgmma_nmajor_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem), cudaSuccess);
  wgmma_nmajor_kernel<<<1, 128, smem>>>(da.ptr, db.ptr, dd.ptr, from_registers);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<float> d(M * N);
  dd.download(&d);
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double want = 0;
      for (int k = 0; k < K; ++k)
        want += static_cast<double>(__bfloat162float(a[i * K + k])) * __bfloat162float(b[k * N + j]);
      ASSERT_NEAR(d[i * N + j], want, 1e-3) << "row " << i << " col " << j;
    }
}

TEST(SM90_Wgmma, NMajorBFromSharedA) {
  MSA_REQUIRE_SM90();
  check_nmajor_product(false);
}

TEST(SM90_Wgmma, NMajorBFromRegisterA) {
  MSA_REQUIRE_SM90();
  check_nmajor_product(true);
}

}  // namespace
}  // namespace test
}  // namespace msa
