// sm90.cuh — Hopper device primitives shared by msa's sm90 kernels: mbarriers, TMA tensor loads, and wgmma on
// 128-byte-swizzled, K-major shared-memory tiles.
//
// Tile layout contract (what TMA writes with CU_TENSOR_MAP_SWIZZLE_128B and what the descriptors below describe):
// a tile is R rows x 64 bf16 (128 bytes per row), 1024-byte aligned, the 16-byte chunks of row r XOR-permuted by
// r % 8. A 128-dim operand is two such tiles (dims 0-63, then 64-127). wgmma reads k-slices of 16 dims by moving the
// descriptor's start address 32 bytes along the row; 8-row groups are 1024 bytes apart (the stride byte offset).
#ifndef MSA_KERNELS_SM90_COMMON_SM90_CUH_
#define MSA_KERNELS_SM90_COMMON_SM90_CUH_

#include <cuda.h>
#include <cstdint>

namespace msa {
namespace kernels {
namespace sm90 {

__device__ __forceinline__ std::uint32_t smem_u32(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

// ---- mbarrier ----
__device__ __forceinline__ void mbar_init(std::uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count));
}
// Makes initialised barriers visible to the async proxy (TMA) before the CTA-wide barrier that follows.
__device__ __forceinline__ void mbar_fence_init() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
__device__ __forceinline__ void mbar_arrive_expect_tx(std::uint64_t* bar, std::uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(std::uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}
// Arrives on the barrier once every cp.async this thread issued before it has landed (counted in the barrier's
// expected arrivals: the .noinc form does not add one of its own).
__device__ __forceinline__ void mbar_arrive_cp_async(std::uint64_t* bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}
// Waits until the phase of parity `parity` has completed. A fresh barrier counts its (virtual) previous phase,
// parity 1, as complete, so producers start waiting on "empty" barriers with parity 1.
__device__ __forceinline__ void mbar_wait(std::uint64_t* bar, std::uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n"
      "}\n" ::"r"(smem_u32(bar)),
      "r"(parity)
      : "memory");
}

// ---- TMA ----
__device__ __forceinline__ void tma_prefetch_map(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<std::uint64_t>(map)) : "memory");
}
// 3-D tiled load of one box into shared memory; completion is counted in bytes on `bar`. Out-of-range elements
// are written as zeros (and still counted).
__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap* map, std::uint64_t* bar, int c0, int c1,
                                            int c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5}], "
      "[%2];\n" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2)
      : "memory");
}

// The same load with an L2 eviction-priority hint (a policy from l2_evict_first_policy()).
__device__ __forceinline__ void tma_load_3d_hint(void* dst, const CUtensorMap* map, std::uint64_t* bar, int c0, int c1,
                                                 int c2, std::uint64_t policy) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.L2::cache_hint [%0], "
      "[%1, {%3, %4, %5}], [%2], %6;\n" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2), "l"(policy)
      : "memory");
}
// An L2 policy that evicts the lines it covers first: for data read once, so that it does not push out what later
// kernels need (their code, metadata and inputs).
__device__ __forceinline__ std::uint64_t l2_evict_first_policy() {
  std::uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
  return policy;
}

// An L2 policy that keeps the lines it covers past evict-normal and evict-first lines: for data read again soon.
__device__ __forceinline__ std::uint64_t l2_evict_last_policy() {
  std::uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;\n" : "=l"(policy));
  return policy;
}

__device__ __forceinline__ void tma_load_4d_hint(void* dst, const CUtensorMap* map, std::uint64_t* bar, int c0, int c1,
                                                 int c2, int c3, std::uint64_t policy) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.L2::cache_hint [%0], "
      "[%1, {%3, %4, %5, %6}], [%2], %7;\n" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "l"(policy)
      : "memory");
}

__device__ __forceinline__ void tma_load_4d(void* dst, const CUtensorMap* map, std::uint64_t* bar, int c0, int c1,
                                            int c2, int c3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5, %6}], "
      "[%2];\n" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
      : "memory");
}

// 3-D tiled store of one box from shared memory (written through the generic proxy: fence_proxy_async_smem()
// first), with an L2 cache policy (e.g. l2_evict_first_policy()). Stores join the thread's bulk group:
// bulk_commit(), then bulk_wait_read<N>() before the buffer is rewritten, bulk_wait<N>() before the data must be
// globally complete.
__device__ __forceinline__ void tma_store_3d_hint(const CUtensorMap* map, const void* src, int c0, int c1, int c2,
                                                  std::uint64_t policy) {
  asm volatile(
      "cp.async.bulk.tensor.3d.global.shared::cta.tile.bulk_group.L2::cache_hint [%0, {%2, %3, %4}], [%1], %5;\n" ::"l"(
          reinterpret_cast<std::uint64_t>(map)),
      "r"(smem_u32(src)), "r"(c0), "r"(c1), "r"(c2), "l"(policy)
      : "memory");
}
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void bulk_wait_read() {
  asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory");
}
template <int N>
__device__ __forceinline__ void bulk_wait() {
  asm volatile("cp.async.bulk.wait_group %0;\n" ::"n"(N) : "memory");
}

// ---- setmaxnreg ----
// Whether a warp-specialised CTA's register moves fit its launch: ptxas gives each thread 65,536 / bound_threads
// registers rounded down to a multiple of 8 (__launch_bounds__(bound_threads, 1)); one producer warpgroup then
// drops to producer_regs and the other threads - 128 rise to consumer_regs. A rise waits for registers the CTA
// released, so both together must fit the CTA's share or the consumers never start.
__host__ __device__ constexpr bool setmaxnreg_fits(int threads, int bound_threads, int producer_regs,
                                                  int consumer_regs) {
  return 128 * producer_regs + (threads - 128) * consumer_regs <= threads * (65536 / bound_threads / 8 * 8);
}

// ---- wgmma ----
// Shared-memory matrix descriptor of a 128B-swizzled K-major tile starting at `p` (see the layout contract above).
__device__ __forceinline__ std::uint64_t wgmma_desc_sw128(const void* p) {
  const std::uint64_t addr = smem_u32(p);
  return ((addr & 0x3FFFF) >> 4) | (1ull << 16) /* leading byte offset: unused when swizzled */ |
         (static_cast<std::uint64_t>(1024 >> 4) << 32) /* stride byte offset */ | (1ull << 62) /* 128B swizzle */;
}
// The descriptor of the k-slice `kk` (16 dims) of a tile: +32 bytes per slice, encoded >> 4.
__device__ __forceinline__ std::uint64_t wgmma_desc_advance(std::uint64_t desc, int kk) {
  return desc + static_cast<std::uint64_t>(kk * 2);
}

// Makes this thread's generic-proxy shared-memory writes visible to later async-proxy reads (wgmma, TMA store).
__device__ __forceinline__ void fence_proxy_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Barrier `id` (1..15; 0 is __syncthreads) over `threads` threads, a multiple of 32, e.g. the consumer warpgroups.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
// named_barrier_sync that also counts the threads whose pred holds (like __syncthreads_count).
__device__ __forceinline__ int named_barrier_count(int id, int threads, bool pred) {
  int n;
  asm volatile("{\n .reg .pred p;\n setp.ne.u32 p, %1, 0;\n bar.red.popc.u32 %0, %2, %3, p;\n}\n"
               : "=r"(n)
               : "r"(static_cast<int>(pred)), "r"(id), "r"(threads)
               : "memory");
  return n;
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accumulator reads or writes across an in-flight wgmma.
template <int N>
__device__ __forceinline__ void wgmma_fence_regs(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// The 64 accumulator operands %0 .. %63 of an m64n128 wgmma (the operands that follow are %64 on), and the
// instruction with them for the m64n128k16 bf16 variants below. MSA_WGMMA_ACC64(c) binds d[0..63] with constraint c
// ("+f" or "=f").
#define MSA_WGMMA_D64                                                                \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "         \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
#define MSA_WGMMA_M64N128K16_D "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " MSA_WGMMA_D64
#define MSA_WGMMA_ACC8(c, i)                                                                                \
  c(d[i]), c(d[i + 1]), c(d[i + 2]), c(d[i + 3]), c(d[i + 4]), c(d[i + 5]), c(d[i + 6]), c(d[i + 7])
#define MSA_WGMMA_ACC64(c)                                                                                  \
  MSA_WGMMA_ACC8(c, 0), MSA_WGMMA_ACC8(c, 8), MSA_WGMMA_ACC8(c, 16), MSA_WGMMA_ACC8(c, 24),                 \
      MSA_WGMMA_ACC8(c, 32), MSA_WGMMA_ACC8(c, 40), MSA_WGMMA_ACC8(c, 48), MSA_WGMMA_ACC8(c, 56)

// D[64 x 128] = A[64 x 16] * B[128 x 16]^T (the first k-slice: D is written, not read), bf16 in, fp32 out, both
// operands K-major in shared memory. D is an output only, so the compiler never carries the previous contents of
// the accumulators across loop iterations (copies of in-flight accumulators make it serialise every wgmma).
// Thread t of the warpgroup holds rows 16 * (t / 32) + (t % 32) / 4 (+ 8) and, for chunk c of 8 columns,
// columns 8c + 2 (t % 4) (+ 1): d[4c + 0, 1] on the first row, d[4c + 2, 3] on the second.
__device__ __forceinline__ void wgmma_m64n128k16_bf16_first(float (&d)[64], std::uint64_t desc_a, std::uint64_t desc_b) {
  asm volatile(
      MSA_WGMMA_M64N128K16_D
      "%64, %65, 0, 1, 1, 0, 0;\n"
      : MSA_WGMMA_ACC64("=f")
      : "l"(desc_a), "l"(desc_b));
}

// D[64 x 128] += A[64 x 16] * B[128 x 16]^T, the following k-slices.
__device__ __forceinline__ void wgmma_m64n128k16_bf16(float (&d)[64], std::uint64_t desc_a, std::uint64_t desc_b) {
  asm volatile(
      MSA_WGMMA_M64N128K16_D
      "%64, %65, 1, 1, 1, 0, 0;\n"
      : MSA_WGMMA_ACC64("+f")
      : "l"(desc_a), "l"(desc_b));
}

// D[64 x 128] = A[64 x 128] * B[128 x 128]^T over all 128 dims, both operands K-major tiles stored as two 64-dim
// 128-byte-swizzled halves (descriptors a0 / a1 and b0 / b1): fence, the 8 k-slices, and one commit group. The
// caller waits for the group (wgmma_wait) before it reads d.
__device__ __forceinline__ void wgmma_m64n128_k128_bf16(float (&d)[64], std::uint64_t a0, std::uint64_t a1,
                                                        std::uint64_t b0, std::uint64_t b1) {
  wgmma_fence();
  wgmma_m64n128k16_bf16_first(d, a0, b0);
#pragma unroll
  for (int kk = 1; kk < 4; ++kk) wgmma_m64n128k16_bf16(d, wgmma_desc_advance(a0, kk), wgmma_desc_advance(b0, kk));
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) wgmma_m64n128k16_bf16(d, wgmma_desc_advance(a1, kk), wgmma_desc_advance(b1, kk));
  wgmma_commit();
}

// fp8: D[64 x 128] = A[64 x 128] * B[128 x 128]^T over all 128 dims, e4m3 in, fp32 out. A row of 128 e4m3 dims is
// 128 bytes, one swizzle span, so each operand is a single 128-byte-swizzled K-major tile (descriptors a / b) and
// a k-slice of 32 dims is 32 bytes: the same descriptor step as a bf16 slice of 16. fp8 wgmma takes only K-major
// operands (no transpose immediates). The tensor cores add fp8 products at reduced precision, not in full fp32
// (see docs/indexer.md, fp8 index keys). Fence, the 4 k-slices, one commit group.
#define MSA_WGMMA_M64N128K32_E4M3_D "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 " MSA_WGMMA_D64
__device__ __forceinline__ void wgmma_m64n128_k128_e4m3(float (&d)[64], std::uint64_t a, std::uint64_t b) {
  wgmma_fence();
  asm volatile(MSA_WGMMA_M64N128K32_E4M3_D "%64, %65, 0, 1, 1;\n" : MSA_WGMMA_ACC64("=f") : "l"(a), "l"(b));
#pragma unroll
  for (int kk = 1; kk < 4; ++kk)
    asm volatile(MSA_WGMMA_M64N128K32_E4M3_D "%64, %65, 1, 1, 1;\n"
                 : MSA_WGMMA_ACC64("+f")
                 : "l"(wgmma_desc_advance(a, kk)), "l"(wgmma_desc_advance(b, kk)));
  wgmma_commit();
}

// ---- N-major (transposed) B operands: a [K rows][N] tile stored as 64-column halves, 128-byte swizzled, e.g. V
// [keys][dims] as TMA writes it. A swizzle atom is 8 K-rows x 64 N-columns (1024 bytes). The PTX ISA's canonical
// MN-major 128B-swizzle layout ((T,8,m),(8,k)) : ((1,T,LBO),(8T,SBO)), T = 8 bf16, gives the fields: leading byte
// offset = distance between 64-column chunks (here the two halves), stride byte offset = distance between groups
// of 8 K-rows (1024). The k-slice kk of 16 rows starts 2048 bytes further (checked on the GPU by
// tests/cpp/test_sm90_wgmma.cu).
__device__ __forceinline__ std::uint64_t wgmma_desc_sw128_nmajor(const void* p, std::uint32_t half_bytes) {
  const std::uint64_t addr = smem_u32(p);
  return ((addr & 0x3FFFF) >> 4) | (static_cast<std::uint64_t>((half_bytes & 0x3FFFF) >> 4) << 16) |
         (static_cast<std::uint64_t>(1024 >> 4) << 32) | (1ull << 62);
}

// D[64 x 128] += A[64 x 16] (K-major, shared memory) * B[16 x 128] (N-major, shared memory).
__device__ __forceinline__ void wgmma_m64n128k16_bf16_ss_tb(float (&d)[64], std::uint64_t desc_a, std::uint64_t desc_b) {
  asm volatile(
      MSA_WGMMA_M64N128K16_D
      "%64, %65, 1, 1, 1, 0, 1;\n"
      : MSA_WGMMA_ACC64("+f")
      : "l"(desc_a), "l"(desc_b));
}

// D[64 x 128] += A[64 x 16] (registers) * B[16 x 128] (N-major, shared memory). Thread t of the warpgroup holds
// a[0] = A[r][2c, 2c + 1], a[1] = A[r + 8][2c, 2c + 1], a[2] = A[r][2c + 8, 2c + 9], a[3] = A[r + 8][2c + 8, 2c + 9]
// (bf16 pairs), r = 16 (t / 32) + (t % 32) / 4, c = t % 4: the accumulator layout of a previous m64n128 product,
// so P = softmax(S) can feed P V without leaving registers.
__device__ __forceinline__ void wgmma_m64n128k16_bf16_rs_tb(float (&d)[64], const std::uint32_t (&a)[4], std::uint64_t desc_b) {
  asm volatile(
      MSA_WGMMA_M64N128K16_D
      "{%64, %65, %66, %67}, %68, 1, 1, 1, 1;\n"
      : MSA_WGMMA_ACC64("+f")
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
}
// The same with D = A * B (scale-d 0): the first k-slice of a product into an accumulator that needs no zeroing.
// ptxas turns "zeroed, then +=" into this itself only when it can prove the zeros: in the KV-outer kernel it stopped
// doing so once the non-finite rows' exact path was added, and zeroed the accumulator with 64 moves per tile.
__device__ __forceinline__ void wgmma_m64n128k16_bf16_rs_tb_first(float (&d)[64], const std::uint32_t (&a)[4],
                                                                  std::uint64_t desc_b) {
  asm volatile(
      MSA_WGMMA_M64N128K16_D
      "{%64, %65, %66, %67}, %68, 0, 1, 1, 1;\n"
      : MSA_WGMMA_ACC64("=f")
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b));
}

#undef MSA_WGMMA_ACC64
#undef MSA_WGMMA_ACC8
#undef MSA_WGMMA_M64N128K16_D

}  // namespace sm90
}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_SM90_COMMON_SM90_CUH_
