// test_sm90_wgmma.cu — the layout contracts of kernels/sm90/common/sm90.cuh that the attention kernels build on,
// checked on the GPU: D = A·B against a host product with B N-major (a [K][N] tile stored as 128-byte-swizzled
// 64-column halves, like V [keys][dims]) and A either K-major in shared memory or in registers in the accumulator
// layout (one warpgroup, K = 64: four k-slices); and 128B-swizzled TMA boxes of fewer than 8 rows at their row's
// offset inside a 1 KiB atom (the swizzle follows the shared-memory address, so such boxes tile one atom, as the
// KV-outer kernel's partial stores of G < 8 heads per token do).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/sm90/common/sm90.cuh"
#include "kernels/sm90/common/tma.h"

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

// 64 rows x 64 bf16 loaded as boxes of `rows` rows, box i to the 1 KiB-aligned tile + i * rows * 128 bytes; every
// element read back at its 128B-swizzle position of the whole tile (`seen`), then the boxes stored back from the
// same offsets (through `out_map`).
__global__ void tma_row_boxes_kernel(const __grid_constant__ CUtensorMap in_map,
                                     const __grid_constant__ CUtensorMap out_map, __nv_bfloat16* seen, int rows) {
  extern __shared__ unsigned char raw[];
  unsigned char* tile = reinterpret_cast<unsigned char*>((reinterpret_cast<std::uintptr_t>(raw) + 1023) & ~std::uintptr_t{1023});
  auto* bar = reinterpret_cast<std::uint64_t*>(tile + 64 * 128);
  if (threadIdx.x == 0) {
    kernels::sm90::mbar_init(bar, 1);
    kernels::sm90::mbar_fence_init();
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    kernels::sm90::mbar_arrive_expect_tx(bar, 64 * 128);
    for (int i = 0; i < 64 / rows; ++i) kernels::sm90::tma_load_3d(tile + i * rows * 128, &in_map, bar, 0, i * rows, 0);
  }
  kernels::sm90::mbar_wait(bar, 0);
  for (int e = threadIdx.x; e < 64 * 64; e += blockDim.x)
    seen[e] = *reinterpret_cast<const __nv_bfloat16*>(tile + sw128(e / 64, e % 64));
  if (threadIdx.x == 0) {
    const std::uint64_t policy = kernels::sm90::l2_evict_first_policy();
    for (int i = 0; i < 64 / rows; ++i)
      kernels::sm90::tma_store_3d_hint(&out_map, tile + i * rows * 128, 0, i * rows, 0, policy);
    kernels::sm90::bulk_commit();
    kernels::sm90::bulk_wait<0>();
  }
}

TEST(SM90_Wgmma, SwizzledTmaBoxesOfFewRows) {
  MSA_REQUIRE_SM90();
  const std::uint64_t seed = random_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937 rng(static_cast<std::uint32_t>(seed));
  std::uniform_int_distribution<int> bits(0, 0xFFFF);
  std::vector<std::uint16_t> x(64 * 64);
  for (auto& v : x) v = static_cast<std::uint16_t>(bits(rng));
  DeviceBuffer<std::uint16_t> dx(x);
  const int smem = 1024 + 64 * 128 + 8;
  ASSERT_EQ(cudaFuncSetAttribute(tma_row_boxes_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem), cudaSuccess);
  for (int rows : {8, 4, 2, 1}) {
    SCOPED_TRACE("rows per box " + std::to_string(rows));
    DeviceBuffer<std::uint16_t> seen(std::vector<std::uint16_t>(64 * 64, 0)), out(std::vector<std::uint16_t>(64 * 64, 0));
    CUtensorMap in_map, out_map;
    const auto u = static_cast<std::uint32_t>(rows);
    const kernels::sm90::TmaTensor3d in{dx.ptr, {64, 64, 1}, {64, 64 * 64}, {64, u, 1}},
        stored{out.ptr, {64, 64, 1}, {64, 64 * 64}, {64, u, 1}};
    ASSERT_TRUE(kernels::sm90::encode_tma_sw128(in, "in", &in_map).ok());
    ASSERT_TRUE(kernels::sm90::encode_tma_sw128(stored, "out", &out_map).ok());
    tma_row_boxes_kernel<<<1, 128, smem>>>(in_map, out_map, reinterpret_cast<__nv_bfloat16*>(seen.ptr), rows);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<std::uint16_t> got_seen(64 * 64), got_out(64 * 64);
    seen.download(&got_seen);
    out.download(&got_out);
    for (int e = 0; e < 64 * 64; ++e) {
      ASSERT_EQ(got_seen[e], x[e]) << "loaded: row " << e / 64 << " col " << e % 64;
      ASSERT_EQ(got_out[e], x[e]) << "stored: row " << e / 64 << " col " << e % 64;
    }
  }
}

}  // namespace
}  // namespace test
}  // namespace msa
