// decode_attention.cu — split sparse attention over the listed blocks, for decode batches (Q queries per request)
// and, as the query-outer path for G != 16, varlen prefill batches. A work item is (query token t, KV head g, slot s
// of t's topk list); its partial — O / rowsum (bf16) and the natural-log LSE of the G query heads of group g over
// that one block — goes to slot s, and the combine kernel merges the slots.
//
// Persistent CTAs (one per SM): a producer warp walks the CTA's items round-robin — reads each one's topk row,
// request and page (dependent loads whose latency must not stall the math) — and fills a 3-stage shared-memory
// ring with its K, V and Q rows by cp.async, completion signalled on the stage's mbarrier; eight consumer warps
// take the stages in order. (Without the producer warp, with every warp loading its own next item, the metadata
// chain stalled all warps once per item: 176 µs at 64 x 32K, against 128 µs for one non-persistent CTA per item.)
// Consumer warp w takes keys 16 w .. 16 w + 15: S with mma.sync m16n8k16 (the G heads as one 16-row tile, rows
// past G zero), the row max and row sum through shared memory (keys past the request's length or after the query
// are -inf), O_w = P·V with P rounded to bf16 (V fragments by ldmatrix.trans); the eight O_w are summed in the
// stage's K/V space. The grid is fixed by the device, so a run can be captured in a graph.
//
// Invariants: G in {1, 2, 4, 8, 16}; k <= 16; slots at or past a row's valid count are skipped (never read by the
// combine); cache rows of keys >= L are zeroed, never loaded; every lane of a warp takes part in every shuffle.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "kernels/common/search.cuh"
#include "kernels/sm90/common/sm90.cuh"
#include "kernels/decode/launch.h"

namespace msa {
namespace kernels {
namespace {

constexpr int kKeys = 128, kDim = 128, kPad = 136;  // padded smem rows (272 B): conflict-free fragment loads
constexpr int kWarps = 8, kThreads = kWarps * 32;      // consumer warp w: keys 16 w .. 16 w + 15
constexpr int kBlockThreads = kThreads + 32;           // + the producer warp (warp 8)
constexpr int kStages = 3;
constexpr int kOPad = 132;  // fp32 row stride of the cross-warp O sum
constexpr int kKvBytes = kKeys * kPad * 2, kQBytes = 16 * kPad * 2;
constexpr int kStageBytes = 2 * kKvBytes + kQBytes;  // K, V, Q rows
constexpr std::size_t kSmemBytes = static_cast<std::size_t>(kStages) * kStageBytes;
static_assert(kWarps * 16 * kOPad * sizeof(float) <= 2 * kKvBytes, "the O sum fits the stage's K and V space");

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

// Four 8x8 bf16 matrices, transposed: register i holds, for this lane, column lane / 4 and rows 2 (lane % 4) and
// 2 (lane % 4) + 1 of matrix i, whose row addresses come from lanes 8 i .. 8 i + 7.
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(static_cast<unsigned>(__cvta_generic_to_shared(row))));
}

__device__ __forceinline__ std::uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const std::uint32_t*>(&v);
}

__device__ __forceinline__ void store_bf16x4(__nv_bfloat16* dst, float4 v, float scale) {
  uint2 packed;
  packed.x = pack_bf16(v.x * scale, v.y * scale);
  packed.y = pack_bf16(v.z * scale, v.w * scale);
  *reinterpret_cast<uint2*>(dst) = packed;
}

// One work item, as every thread of the CTA sees it (computed redundantly, so it is uniform).
struct Item {
  bool valid;
  std::int64_t t;
  int g, s, L, pos, block, page;
};

// The next listed slot at or after *next in this CTA's round-robin sequence (items are t-major, then g, then s);
// slots past a row's count are skipped. Visiting slot 0 of a row records the row's count (by `recorder`).
__device__ Item next_item(const DecodeAttentionLaunch& a, std::int64_t* next, bool recorder) {
  const std::int64_t total = a.total_q * a.num_kv_heads * a.k;
  Item it{};
  while (*next < total) {
    const std::int64_t item = *next;
    *next += gridDim.x;
    it.t = item / (static_cast<std::int64_t>(a.num_kv_heads) * a.k);
    it.g = static_cast<int>(item / a.k % a.num_kv_heads);
    it.s = static_cast<int>(item % a.k);
    const std::int32_t* list = a.topk + it.g * a.topk_stride_h + it.t * a.topk_stride_t;
    int count = 0;  // valid ids are a prefix of the row: count them with independent loads
#pragma unroll
    for (int j = 0; j < 16; ++j) count += j < a.k && list[j * a.topk_stride_s] >= 0;
    if (it.s == 0 && recorder) a.split_counts[it.t * a.num_kv_heads + it.g] = count;
    if (it.s >= count) continue;
    int b, i, nq;  // request, query index in it, its query count
    if (a.cu_seqlens_q == nullptr) {
      b = static_cast<int>(it.t / a.queries_per_request);
      i = static_cast<int>(it.t % a.queries_per_request);
      nq = a.queries_per_request;
    } else {
      b = last_at_most(a.cu_seqlens_q, a.cu_stride, a.num_requests, it.t);
      i = static_cast<int>(it.t - a.cu_seqlens_q[b * a.cu_stride]);
      nq = a.cu_seqlens_q[(b + 1) * a.cu_stride] - a.cu_seqlens_q[b * a.cu_stride];
    }
    it.L = a.seq_lens_k[b * a.seq_stride];
    it.pos = it.L - nq + i;  // bottom-right aligned query position
    it.block = list[it.s * a.topk_stride_s];
    it.page = a.page_table[static_cast<std::int64_t>(b) * a.pt_stride_b + it.block * a.pt_stride_j];
    it.valid = true;
    return it;
  }
  it.valid = false;
  return it;
}

// The producer warp's part of one item: the cp.async loads of its K, V (rows of keys >= L zeroed instead: the tail
// of the last page may hold anything, NaN included, and P = 0 times NaN would still poison O) and its G query rows
// (rows >= G zeroed). Every lane then has the stage's mbarrier track its copies and arrives (releasing its zero
// stores and lane 0's metadata), so the phase completes when all 32 lanes' copies have landed.
__device__ void load_item(const DecodeAttentionLaunch& a, const Item& it, unsigned char* stage, int G,
                          std::uint64_t* full) {
  const int lane = threadIdx.x % 32;
  if (it.valid) {
    auto* ks = reinterpret_cast<__nv_bfloat16*>(stage);
    auto* vs = reinterpret_cast<__nv_bfloat16*>(stage + kKvBytes);
    auto* qs = reinterpret_cast<__nv_bfloat16*>(stage + 2 * kKvBytes);
    const auto* kg = static_cast<const __nv_bfloat16*>(a.k_cache) + it.page * a.kv_stride_page + it.g * a.kv_stride_h;
    const auto* vg = static_cast<const __nv_bfloat16*>(a.v_cache) + it.page * a.kv_stride_page + it.g * a.kv_stride_h;
    const int rows_valid = min(kKeys, it.L - it.block * kKeys);
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
    const auto* qg = static_cast<const __nv_bfloat16*>(a.q) + it.t * a.q_stride_t +
                     static_cast<std::int64_t>(it.g) * G * a.q_stride_h;
    for (int chunk = lane; chunk < 16 * kDim / 8; chunk += 32) {
      const int row = chunk / (kDim / 8), col = (chunk % (kDim / 8)) * 8;
      if (row < G)
        cp_async16(qs + row * kPad + col, qg + row * a.q_stride_h + col);
      else
        *reinterpret_cast<uint4*>(qs + row * kPad + col) = make_uint4(0, 0, 0, 0);
    }
  }
  asm volatile("cp.async.mbarrier.arrive.shared::cta.b64 [%0];\n" ::"r"(sm90::smem_u32(full)) : "memory");
  sm90::mbar_arrive(full);
}

// The consumer warps' part: the partial of one item whose loads have landed in `stage`. Ends with a barrier of the
// consumers: the stage is free afterwards.
__device__ void compute_item(const DecodeAttentionLaunch& a, const Item& it, unsigned char* stage, int G,
                             float (*row_max)[16], float (*row_sum)[16]) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, r = lane / 4, c = lane % 4;
  const auto* ks = reinterpret_cast<const __nv_bfloat16*>(stage);
  const auto* vs = reinterpret_cast<const __nv_bfloat16*>(stage + kKvBytes);
  const auto* qs = reinterpret_cast<const __nv_bfloat16*>(stage + 2 * kKvBytes);

  // S = Q K^T over this warp's 16 keys: 2 tiles of 8; thread holds keys 8 nt + 2c (+1) of rows r and r + 8.
  const int key_base = warp * 16;
  float sc[2][4] = {};
#pragma unroll
  for (int kk = 0; kk < kDim / 16; ++kk) {
    const __nv_bfloat16* q0 = qs + r * kPad + kk * 16 + 2 * c;
    const std::uint32_t qa[4] = {*reinterpret_cast<const std::uint32_t*>(q0),
                                 *reinterpret_cast<const std::uint32_t*>(q0 + 8 * kPad),
                                 *reinterpret_cast<const std::uint32_t*>(q0 + 8),
                                 *reinterpret_cast<const std::uint32_t*>(q0 + 8 * kPad + 8)};
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      const __nv_bfloat16* krow = ks + (key_base + nt * 8 + r) * kPad + kk * 16 + 2 * c;
      mma_bf16(sc[nt], qa, *reinterpret_cast<const std::uint32_t*>(krow), *reinterpret_cast<const std::uint32_t*>(krow + 8));
    }
  }
  // Scale to log2 units, mask keys past the request's length or after the query's position, block row max.
  const float scale = a.sm_scale * 1.4426950408889634f;
  const int key0 = it.block * kKeys + key_base;
  float m0 = -INFINITY, m1 = -INFINITY;
#pragma unroll
  for (int nt = 0; nt < 2; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int key = key0 + nt * 8 + 2 * c + (e & 1);
      const bool visible = key < it.L && key <= it.pos;
      sc[nt][e] = visible ? sc[nt][e] * scale : -INFINITY;
      if (e < 2) m0 = fmaxf(m0, sc[nt][e]); else m1 = fmaxf(m1, sc[nt][e]);
    }
#pragma unroll
  for (int o = 1; o <= 2; o <<= 1) {
    m0 = fmaxf(m0, __shfl_xor_sync(0xffffffffu, m0, o));
    m1 = fmaxf(m1, __shfl_xor_sync(0xffffffffu, m1, o));
  }
  if (c == 0) {
    row_max[warp][r] = m0;
    row_max[warp][r + 8] = m1;
  }
  sm90::named_barrier_sync(1, kThreads);  // consumers only: the producer warp runs ahead
  m0 = m1 = -INFINITY;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    m0 = fmaxf(m0, row_max[w][r]);
    m1 = fmaxf(m1, row_max[w][r + 8]);
  }

  // P = exp2(S - m): row sums of the fp32 values (the LSE is the exact softmax mass), P V on their bf16 rounding.
  const float base0 = m0 == -INFINITY ? 0.f : m0, base1 = m1 == -INFINITY ? 0.f : m1;
  float l0 = 0.f, l1 = 0.f;
#pragma unroll
  for (int nt = 0; nt < 2; ++nt)
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
  if (c == 0) {
    row_sum[warp][r] = l0;
    row_sum[warp][r + 8] = l1;
  }

  // O_w = P V over the warp's 16 keys: P's accumulator layout is the A-fragment layout; B[key][dim] = V[key][dim]
  // by transposed ldmatrix, two dim tiles per load.
  float out[kDim / 8][4];
#pragma unroll
  for (int nt = 0; nt < kDim / 8; ++nt) out[nt][0] = out[nt][1] = out[nt][2] = out[nt][3] = 0.f;
  const std::uint32_t pa[4] = {pack_bf16(sc[0][0], sc[0][1]), pack_bf16(sc[0][2], sc[0][3]), pack_bf16(sc[1][0], sc[1][1]),
                               pack_bf16(sc[1][2], sc[1][3])};
  const int mi = lane / 8;  // this lane addresses row lane % 8 of matrix mi: keys + 8 (mi % 2), dims + 8 (mi / 2)
  const __nv_bfloat16* vrow = vs + (key_base + (mi % 2) * 8 + lane % 8) * kPad + (mi / 2) * 8;
#pragma unroll
  for (int nt = 0; nt < kDim / 8; nt += 2) {
    std::uint32_t bv[4];
    ldmatrix_x4_trans(bv, vrow + nt * 8);
    mma_bf16(out[nt], pa, bv[0], bv[1]);
    mma_bf16(out[nt + 1], pa, bv[2], bv[3]);
  }
  sm90::named_barrier_sync(1, kThreads);  // every warp is done with K and V (their space takes the O sum); row sums in

  // Sum the warps' O, then O / l (bf16) and the LSE of the G real rows to slot s.
  auto* osum = reinterpret_cast<float*>(stage);
#pragma unroll
  for (int nt = 0; nt < kDim / 8; ++nt) {
    *reinterpret_cast<float2*>(osum + (warp * 16 + r) * kOPad + nt * 8 + 2 * c) = make_float2(out[nt][0], out[nt][1]);
    *reinterpret_cast<float2*>(osum + (warp * 16 + r + 8) * kOPad + nt * 8 + 2 * c) = make_float2(out[nt][2], out[nt][3]);
  }
  sm90::named_barrier_sync(1, kThreads);
  auto* po = static_cast<__nv_bfloat16*>(a.partial_out);
  const std::int64_t slot_base =
      (static_cast<std::int64_t>(it.s) * a.total_q + it.t) * a.num_q_heads + static_cast<std::int64_t>(it.g) * G;
  for (int item = threadIdx.x; item < G * 32; item += kThreads) {
    const int row = item / 32, d = (item % 32) * 4;
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    float mrow = -INFINITY, lrow = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float4 u = *reinterpret_cast<const float4*>(osum + (w * 16 + row) * kOPad + d);
      v.x += u.x;
      v.y += u.y;
      v.z += u.z;
      v.w += u.w;
      mrow = fmaxf(mrow, row_max[w][row]);
      lrow += row_sum[w][row];
    }
    store_bf16x4(po + (slot_base + row) * kDim + d, v, lrow > 0.f ? 1.f / lrow : 0.f);
    if (d == 0) a.partial_lse[slot_base + row] = lrow > 0.f ? (mrow + log2f(lrow)) * 0.6931471805599453f : -INFINITY;
  }
  sm90::named_barrier_sync(1, kThreads);  // the O sum and the row statistics are consumed: stage and arrays free
}

__global__ void __launch_bounds__(kBlockThreads, 1) decode_attention_kernel(const DecodeAttentionLaunch a) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ float row_max[kWarps][16], row_sum[kWarps][16];
  __shared__ Item meta[kStages];
  __shared__ __align__(8) std::uint64_t full[kStages], empty[kStages];
  const int G = a.num_q_heads / a.num_kv_heads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (threadIdx.x == 0) {
    for (int st = 0; st < kStages; ++st) {
      sm90::mbar_init(&full[st], 32);       // the producer's 32 lanes (each also tracking its copies)
      sm90::mbar_init(&empty[st], kWarps);  // one arrive per consumer warp
    }
    sm90::mbar_fence_init();
  }
  __syncthreads();

  if (warp == kWarps) {  // ---- producer ----
    std::int64_t next = blockIdx.x;
    for (int n = 0;; ++n) {
      const int st = n % kStages;
      sm90::mbar_wait(&empty[st], ((n / kStages) & 1) ^ 1);  // passes at once on the first round
      const Item it = next_item(a, &next, lane == 0);
      if (lane == 0) meta[st] = it;
      load_item(a, it, smem + st * kStageBytes, G, &full[st]);
      if (!it.valid) break;  // the consumers stop at this stage
    }
    asm volatile("cp.async.wait_all;\n" ::: "memory");
    return;
  }
  // ---- consumers ----
  for (int n = 0;; ++n) {
    const int st = n % kStages;
    sm90::mbar_wait(&full[st], (n / kStages) & 1);
    const Item it = meta[st];
    if (!it.valid) break;
    compute_item(a, it, smem + st * kStageBytes, G, row_max, row_sum);
    if (lane == 0) sm90::mbar_arrive(&empty[st]);
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
  if (a.k < 1 || a.k > 16) return Status::InvalidArgument("decode attention: k must be in [1, 16]");
  if (a.total_q == 0) return Status::Ok();
  int sms = 0;
  cudaError_t e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, a.device);
  if (e == cudaSuccess)
    e = cudaFuncSetAttribute(decode_attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(kSmemBytes));
  if (e == cudaSuccess) {
    // One persistent CTA per SM (shared memory allows one), never more than there are items.
    const std::int64_t items = a.total_q * a.num_kv_heads * a.k;
    const unsigned grid = static_cast<unsigned>(std::min<std::int64_t>(items, sms));
    decode_attention_kernel<<<grid, kBlockThreads, kSmemBytes, static_cast<cudaStream_t>(a.stream)>>>(a);
    e = cudaGetLastError();
  }
  return e == cudaSuccess ? Status::Ok() : Status::CudaError(std::string("decode attention: ") + cudaGetErrorString(e));
}

}  // namespace kernels
}  // namespace msa
