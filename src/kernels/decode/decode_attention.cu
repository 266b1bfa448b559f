// decode_attention.cu — split sparse attention: one CTA of 4 warps per (query token t, KV head g, slot s of t's topk
// list), for decode batches (Q queries per request) and, as the query-outer path for G != 16, varlen prefill batches.
// The CTA loads the K and V block of that slot once into shared memory (cp.async, K and V as separate groups so
// S = Q·Kᵀ starts while V lands); warp w takes keys 32 w .. 32 w + 31 for S of the G query heads of group g (one
// m16 row tile of mma.sync m16n8k16, rows past G zero), the block's row max and row sum through shared memory
// (keys past the request's length or after the query are -inf), then dims 32 w .. 32 w + 31 for O = P·V over all
// 128 keys (P rounded to bf16 and exchanged as A fragments through shared memory, V fragments by ldmatrix.trans),
// so each warp holds its dims' final O and no cross-warp sum is needed; O / rowsum (fp32) plus the natural-log LSE
// go to slot s; the combine kernel merges the slots. (Merging in the last CTA of each (t, g), counted by an atomic
// counter, measured slower on H100 — 19.0 µs against 12.8 µs at 1 × 1M × 1, 148 against 132 µs at 64 × 32K: the
// memset of the counters and every CTA's fence before counting cost more than the combine launch.)
// Fused variant (SparseDecodeAttention's smallest batches, decode_prefers_fused in launch.h): the k CTAs of a
// (t, g) form one thread-block cluster; each CTA pushes its partial of every row (unnormalised O, row max, row sum)
// into the shared memory of the CTA owning the row, and after one cluster barrier the owners merge and write out /
// LSE themselves: no partials in device memory, no combine kernel. Behind msa's own selection (inputs_before_wait)
// a CTA reads its token's place and Q fragments before the grid's wait, and the fused variant also pulls the
// request's page-table row into L2 then: the critical path after the wait is topk row -> page -> K/V block. With a
// handoff (MsaDecode behind a merging selection) the fused CTAs skip the wait: each polls the (id, page) entry the
// merge stores for its slot (kernels/common/handoff.cuh), so the path is merge store -> entry -> K/V block.
// Grid = T x Hkv x k CTAs: fixed by shapes, so a run can be captured in a graph. Persistent variants (one CTA per
// SM walking the items through a 3-stage cp.async ring, with and without a producer warp) measured 176 and 154 µs
// at 64 x 32K against 132 µs for this one (H100, see docs/performance.md).
//
// Invariants: G in {1, 2, 4, 8, 16}; slots at or past a row's valid count exit at once (never read by the combine;
// fused: they only contribute an empty partial, -inf max, to the cluster's merge);
// cache rows of keys after the token's position (keys >= L among them) are zeroed, never loaded; every lane of a
// warp takes part in every shuffle.
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "kernels/common/cluster_barrier.cuh"
#include "kernels/common/handoff.cuh"
#include "kernels/common/pdl.cuh"
#include "kernels/decode/decode_common.cuh"

namespace msa {
namespace kernels {
namespace {

constexpr int kWarps = 4, kThreads = kWarps * 32;  // warp w: S of keys 32 w .. 32 w + 31, O of dims 32 w .. 32 w + 31
constexpr int kDimTiles = kDim / kWarps / 8;       // 8-dim mma tiles of a warp's O
constexpr std::size_t kSmemBytes = 2 * kKeys * kPad * sizeof(__nv_bfloat16);
// After S, K's space holds P as bf16 A fragments ([16-key step][lane], 16 bytes each), later the owner's merge scratch.
static_assert(kKeys / 16 * 32 * 16 <= kKeys * kPad * sizeof(__nv_bfloat16), "P fragments fit K's space");

// A warp's O: rows r (elements 0, 1) and r + 8 (2, 3), dims 32 warp + 8 nt + 2 c (+1), summed over all 128 keys.
using WarpO = float[kDimTiles][4];

// Q fragments of token t's rows r and r + 8 (heads g * G + row; rows >= G are zero), all 128 dims, as mma.sync
// A operands.
__device__ __forceinline__ void load_q_fragments(const DecodeAttentionLaunch& a, std::int64_t t, int g, int G,
                                                 std::uint32_t (&qa)[kDim / 16][4]) {
  const int r = (threadIdx.x % 32) / 4, c = threadIdx.x % 4;
  const auto* qg = static_cast<const __nv_bfloat16*>(a.q) + t * a.q_stride_t + static_cast<std::int64_t>(g) * G * a.q_stride_h;
  const __nv_bfloat16* row0 = qg + r * a.q_stride_h;
  const __nv_bfloat16* row1 = qg + (r + 8) * a.q_stride_h;
#pragma unroll
  for (int kk = 0; kk < kDim / 16; ++kk) {
    const int col = kk * 16 + 2 * c;
    qa[kk][0] = r < G ? *reinterpret_cast<const std::uint32_t*>(row0 + col) : 0u;
    qa[kk][1] = r + 8 < G ? *reinterpret_cast<const std::uint32_t*>(row1 + col) : 0u;
    qa[kk][2] = r < G ? *reinterpret_cast<const std::uint32_t*>(row0 + col + 8) : 0u;
    qa[kk][3] = r + 8 < G ? *reinterpret_cast<const std::uint32_t*>(row1 + col + 8) : 0u;
  }
}

// The page-table row of the token's request into L2 (128-byte lines, 32 entries each). The selection just before
// has streamed far more than L2 holds through it, so without this the page lookup after the wait goes to DRAM:
// measured 0.4-0.5 us less per 1 x 1M x 1 decode (H100, msa bench, three alternating runs).
__device__ __forceinline__ void prefetch_page_row(const DecodeAttentionLaunch& a, const QueryPlace& place) {
  const std::int32_t* row = a.page_table + static_cast<std::int64_t>(place.request) * a.pt_stride_b;
  const int pages = (place.kv_len + kKeys - 1) / kKeys;
  for (int j = static_cast<int>(threadIdx.x) * 32; j < pages; j += kThreads * 32)
    asm volatile("prefetch.global.L2 [%0];\n" ::"l"(row + j * a.pt_stride_j));
}

// The fused variant's merge. Row `row` of a (t, g) cluster belongs to CTA row % k; every CTA pushes its partial of
// the row (O unnormalised and summed over the warps, row max m in log2 units, row sum l) into the owner's inbox
// entry (row / k) * k + s over distributed shared memory, and after one cluster barrier each owner merges its rows
// from its own shared memory. Pulling instead (each CTA reading all k partials of its rows from the other CTAs)
// took two remote round trips and a second cluster barrier, so that no CTA left while another still read its
// shared memory: 3.5 of the kernel's 6.3 us after its wait at 1 x 1M x 1 (clock64 per phase, H100). Pushing:
// bench_decode_attention 1 x 1M fused 7.5 -> 7.0 us, msa bench end to end 101.5-101.6 -> 100.9-101.4 us. The
// inbox (18 KB) leaves two CTAs per SM instead of three, which slows grids of several waves (4 x 32K x 1:
// 13.6 -> 16.2 us); decode_prefers_fused only picks grids of at most half the SMs.
constexpr int kInbox = 32;  // entries: ceil(G / k) * k <= G + k - 1 <= 31 for G, k <= 16
struct ClusterInbox {
  float o[kInbox][kDim];
  float m[kInbox], l[kInbox];
};
// The kernel's one inbox: push_partial and merge_inbox both address it here, so a push from another CTA lands at
// the offset its owner merges from.
__device__ __forceinline__ ClusterInbox& cluster_inbox() {
  __shared__ ClusterInbox inbox;
  return inbox;
}
// Inbox entry of CTA s's partial of `row` in the owner's inbox (row / k is the owner's local row).
__device__ __forceinline__ int inbox_entry(int row, int k, int s) { return (row / k) * k + s; }

// CTA s pushes its partial of every row to the row's owner, straight from each warp's O registers (o = null: no
// block, only m = -inf and l = 0 go out), then waits until every CTA's pushes are visible. Every thread of every
// CTA of the cluster must call it once, after cluster_arrive_relaxed: its first wait makes sure every CTA of the
// cluster runs (a CTA's shared memory exists only then) before anything is written there.
template <class RowStat>
__device__ __forceinline__ void push_partial(const DecodeAttentionLaunch& a, int G, int s, const WarpO* o,
                                             RowStat row_stat) {
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  ClusterInbox& inbox = cluster_inbox();
  cluster_wait();
  if (o != nullptr) {
    const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32, r = lane / 4;
    const int d = warp * 32 + 2 * (lane % 4);  // this thread's first dim of each 8-dim tile
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = r + 8 * half;
      if (row >= G) continue;
      float* dst = &cluster.map_shared_rank(&inbox, row % a.k)->o[inbox_entry(row, a.k, s)][d];
#pragma unroll
      for (int nt = 0; nt < kDimTiles; ++nt)
        *reinterpret_cast<float2*>(dst + nt * 8) = make_float2((*o)[nt][2 * half], (*o)[nt][2 * half + 1]);
    }
  }
  for (int row = static_cast<int>(threadIdx.x); row < G; row += kThreads) {
    ClusterInbox* dst = cluster.map_shared_rank(&inbox, row % a.k);
    float m = -INFINITY, l = 0.f;
    if (o != nullptr) row_stat(row, &m, &l);
    dst->m[inbox_entry(row, a.k, s)] = m;
    dst->l[inbox_entry(row, a.k, s)] = l;
  }
  cluster_arrive_release();
  cluster_wait();
}

// CTA s merges the k partials of each row it owns (s, s + k, ... < G) from its inbox and writes out / LSE. Warp w
// sums the entries q = w, w + 4, ... of a row (lane: 4 dims) and warp 0 adds the four sums (scratch: 4 x 32 float4
// and 4 floats of free shared memory): a chain of at most 4 entries per thread instead of k. With one warp summing
// all k the merge took ~2,300 cycles of the 1 x 1M kernel (clock64, H100). Every thread of the CTA must call it.
__device__ __forceinline__ void merge_inbox(const DecodeAttentionLaunch& a, const DecodeOut& o, std::int64_t t, int g,
                                            int G, int s, float* scratch) {
  const ClusterInbox& inbox = cluster_inbox();
  const int owned = s < G ? (G - 1 - s) / a.k + 1 : 0;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32, d = lane * 4;
  auto* sums = reinterpret_cast<float4*>(scratch);  // [kWarps][32]
  float* sum_l = scratch + kWarps * 32 * 4;         // [kWarps]
  for (int own = 0; own < owned; ++own) {  // uniform over the CTA
    const int e0 = own * a.k, row = s + own * a.k;
    float m = -INFINITY;
#pragma unroll
    for (int q = 0; q < 16; ++q)
      if (q < a.k) m = fmaxf(m, inbox.m[e0 + q]);
    float l = 0.f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    if (m != -INFINITY) {
#pragma unroll
      for (int i = 0; i < 16 / kWarps; ++i) {  // a partial with no visible key (m = -inf) carries no weight, and no O
        const int q = warp + kWarps * i;
        const float mq = q < a.k ? inbox.m[e0 + q] : -INFINITY;
        if (mq == -INFINITY) continue;
        const float w = exp2f(mq - m);
        const float4 v = *reinterpret_cast<const float4*>(&inbox.o[e0 + q][d]);
        l += w * inbox.l[e0 + q];
        acc.x += w * v.x;
        acc.y += w * v.y;
        acc.z += w * v.z;
        acc.w += w * v.w;
      }
    }
    sums[warp * 32 + lane] = acc;
    if (lane == 0) sum_l[warp] = l;
    __syncthreads();
    if (warp == 0) {
      l = sum_l[0];
#pragma unroll
      for (int w = 1; w < kWarps; ++w) {
        l += sum_l[w];
        const float4 u = sums[w * 32 + lane];
        acc.x += u.x;
        acc.y += u.y;
        acc.z += u.z;
        acc.w += u.w;
      }
      const int h = g * G + row;
      store_bf16x4(static_cast<__nv_bfloat16*>(o.out) + t * o.out_stride_t + h * o.out_stride_h + d, acc,
                   l > 0.f ? 1.f / l : 0.f);
      if (o.lse != nullptr && lane == 0)
        o.lse[t * o.lse_stride_t + h * o.lse_stride_h] = natural_lse(m, l);
    }
    __syncthreads();  // the scratch is reused by the next row
  }
}

template <bool kFused>
__global__ void __launch_bounds__(kThreads) decode_attention_kernel(const DecodeAttentionLaunch a, const DecodeOut o) {
  extern __shared__ __align__(16) unsigned char smem[];
  auto* ks = reinterpret_cast<__nv_bfloat16*>(smem);
  auto* vs = ks + kKeys * kPad;
  __shared__ float row_max[kWarps][16], row_sum[kWarps][16];
  // The block's row max (log2 units) and row sum from the four warps' shares.
  auto block_max = [&](int row) {
    return fmaxf(fmaxf(row_max[0][row], row_max[1][row]), fmaxf(row_max[2][row], row_max[3][row]));
  };
  auto block_sum = [&](int row) { return row_sum[0][row] + row_sum[1][row] + row_sum[2][row] + row_sum[3][row]; };
  if constexpr (kFused) cluster_arrive_relaxed();  // this CTA runs (see push_partial)
  const std::int64_t t = blockIdx.x / a.num_kv_heads;
  const int g = static_cast<int>(blockIdx.x % a.num_kv_heads), s = static_cast<int>(blockIdx.y);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, r = lane / 4, c = lane % 4;
  const int G = a.num_q_heads / a.num_kv_heads;
  // The token's place and Q fragments: before the wait when the predecessor allows it (inputs_before_wait).
  QueryPlace place;
  std::uint32_t qa[kDim / 16][4];
  auto read_inputs = [&] {
    place = locate_query(a, t);
    load_q_fragments(a, t, g, G, qa);
  };
  if (a.inputs_before_wait) {
    read_inputs();
    if constexpr (kFused) prefetch_page_row(a, place);
  }
  // This slot's block (-1: none) and its page.
  int block = -1, page = 0;
  const bool handoff = kFused && a.handoff != nullptr;
  if (handoff) {  // the merge hands over (id, page) per slot (handoff.cuh); the grid's wait comes at the end
    const unsigned long long e = handoff_wait(a.handoff + (t * a.num_kv_heads + g) * a.k + s);
    block = handoff_id(e);
    page = handoff_page(e);
  } else {
    pdl_wait();  // topk (the selection) and the caches come from earlier kernels of the run
    if (!a.inputs_before_wait) read_inputs();
    const std::int32_t* list = a.topk + g * a.topk_stride_h + t * a.topk_stride_t;
    // Valid ids are a prefix of the row: each warp counts them with one load per lane and a ballot.
    const int count = __popc(__ballot_sync(0xffffffffu, lane < a.k && list[lane * a.topk_stride_s] >= 0));
    if (!kFused && s == 0 && tid == 0) a.split_counts[t * a.num_kv_heads + g] = count;
    if (s < count) {
      block = list[s * a.topk_stride_s];
      page = a.page_table[static_cast<std::int64_t>(place.request) * a.pt_stride_b + block * a.pt_stride_j];
    }
  }
  auto* scratch = reinterpret_cast<float*>(smem);  // K's space, free again by the owner's merge
  if (block < 0) {  // uniform over the CTA
    if constexpr (kFused) {  // no block: an empty partial, but the CTA still takes part in the cluster's merge
      push_partial(a, G, s, nullptr, [](int, float*, float*) {});
      merge_inbox(a, o, t, g, G, s, scratch);
      if (handoff) pdl_wait();  // the merge grid has completed before this grid does (stream order)
    }
    return;
  }

  const int L = place.kv_len, pos = place.position;

  // K, then V, of the block as two commit groups: 2048 chunks of 16 bytes each, 16 per thread; rows of keys after the
  // token's position zeroed (keys >= L among them): every row of the CTA is that token's, so it sees none of them,
  // and P = 0 times a NaN or inf there would still poison O.
  const auto* kg = static_cast<const __nv_bfloat16*>(a.k_cache) + page * a.kv_stride_page + g * a.kv_stride_h;
  const auto* vg = static_cast<const __nv_bfloat16*>(a.v_cache) + page * a.kv_stride_page + g * a.kv_stride_h;
  const int rows_valid = min(kKeys, pos + 1 - block * kKeys);  // pos < L
  load_block_rows<kThreads>(ks, kg, a.kv_stride_t, rows_valid);
  asm volatile("cp.async.commit_group;\n" ::);
  load_block_rows<kThreads>(vs, vg, a.kv_stride_t, rows_valid);
  asm volatile("cp.async.commit_group;\n" ::);

  asm volatile("cp.async.wait_group 1;\n" ::: "memory");  // this thread's K chunks
  __syncthreads();                                         // everyone's

  // S = Q K^T over this warp's 32 keys: 4 tiles of 8; thread holds keys 8 nt + 2c (+1) of rows r and r + 8.
  const int key_base = warp * 32;
  float sc[4][4];
#pragma unroll
  for (int nt = 0; nt < 4; ++nt) {
    sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kDim / 16; ++kk) {
      const __nv_bfloat16* krow = ks + (key_base + nt * 8 + r) * kPad + kk * 16 + 2 * c;
      mma_bf16(sc[nt], qa[kk], *reinterpret_cast<const std::uint32_t*>(krow),
               *reinterpret_cast<const std::uint32_t*>(krow + 8));
    }
  }
  // Scale to log2 units, mask keys past the request's length or after the query's position, block row max.
  float m0, m1;
  mask_scale_rowmax(sc, block * kKeys + key_base, L, pos, a.sm_scale * 1.4426950408889634f, &m0, &m1);
  if (c == 0) {
    row_max[warp][r] = m0;
    row_max[warp][r + 8] = m1;
  }
  __syncthreads();
  m0 = block_max(r);
  m1 = block_max(r + 8);

  // P = exp2(S - m): row sums of the fp32 values (the LSE is the exact softmax mass), P V on their bf16 rounding.
  const float base0 = m0 == -INFINITY ? 0.f : m0, base1 = m1 == -INFINITY ? 0.f : m1;
  float l0, l1;
  exp2_rowsum(sc, base0, base1, &l0, &l1);
  if (c == 0) {
    row_sum[warp][r] = l0;
    row_sum[warp][r + 8] = l1;
  }
  // P rounded to bf16, as the A fragments of this warp's two 16-key steps (the accumulator layout of S is the
  // A-fragment layout), into K's space: every warp's S was complete before the row-max barrier.
  auto* pfrag = reinterpret_cast<uint4*>(smem);  // [16-key step][lane]
#pragma unroll
  for (int kk2 = 0; kk2 < 2; ++kk2) pfrag[(2 * warp + kk2) * 32 + lane] = p_fragment(sc[2 * kk2], sc[2 * kk2 + 1]);
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");  // this thread's V chunks
  __syncthreads();  // everyone's V, P and row sums

  // O = P V for the warp's 32 dims over all 128 keys, a 16-key step at a time. Against warps splitting the keys for
  // P V as well (four O partials summed in shared memory before the writes or pushes), H100, bench_decode_attention:
  // split kernel + combine 0.4-1.5 us faster over the whole B x 32K sweep (1 x 1M 8.7 -> 8.2 us), the fused kernel
  // at 1 x 1M unchanged (6.5 / 6.6 us); see docs/performance.md.
  WarpO out;
#pragma unroll
  for (int nt = 0; nt < kDimTiles; ++nt) out[nt][0] = out[nt][1] = out[nt][2] = out[nt][3] = 0.f;
#pragma unroll
  for (int ks = 0; ks < kKeys / 16; ++ks) pv_16keys(out, pfrag[ks * 32 + lane], vs, ks * 16, warp * 32);

  // Fused: the O registers, the row max and the row sum go to the rows' owners for the cluster's merge. Split:
  // O / l and the LSE of the G real rows to slot s.
  if constexpr (kFused) {
    push_partial(a, G, s, &out, [&](int row, float* m, float* l) { *m = block_max(row), *l = block_sum(row); });
    merge_inbox(a, o, t, g, G, s, scratch);  // every warp's P V was done before the cluster barrier
    if (handoff) pdl_wait();
    return;
  }
  const std::int64_t slot_base = (static_cast<std::int64_t>(s) * a.total_q + t) * a.num_q_heads + static_cast<std::int64_t>(g) * G;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = r + 8 * half;
    if (row >= G) continue;
    const float lrow = block_sum(row), inv = lrow > 0.f ? 1.f / lrow : 0.f;
    float* po = a.partial_out + (slot_base + row) * kDim + warp * 32 + 2 * c;
#pragma unroll
    for (int nt = 0; nt < kDimTiles; ++nt)
      *reinterpret_cast<float2*>(po + nt * 8) = make_float2(out[nt][2 * half] * inv, out[nt][2 * half + 1] * inv);
    if (warp == 0 && c == 0) a.partial_lse[slot_base + row] = natural_lse(block_max(row), lrow);
  }
}

Status check_decode_attention(const DecodeAttentionLaunch& a) {
  const int G = a.num_kv_heads > 0 ? a.num_q_heads / a.num_kv_heads : 0;
  if (G < 1 || G > 16 || (G & (G - 1)) != 0 || G * a.num_kv_heads != a.num_q_heads)
    return Status::NotImplemented("decode attention on CUDA: Hq / Hkv must be 1, 2, 4, 8 or 16");
  if (a.k < 1 || a.k > 16) return Status::InvalidArgument("decode attention: k must be in [1, 16]");
  return Status::Ok();
}

}  // namespace

Status launch_decode_attention(const DecodeAttentionLaunch& a) {
  MSA_RETURN_IF_ERROR(check_decode_attention(a));
  if (a.handoff != nullptr) return Status::InvalidArgument("decode attention: only the fused kernel takes a handoff");
  if (a.total_q == 0) return Status::Ok();
  const auto stream = static_cast<cudaStream_t>(a.stream);
  cudaError_t e = cudaFuncSetAttribute(decode_attention_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(kSmemBytes));
  if (e == cudaSuccess) {
    const dim3 grid(static_cast<unsigned>(a.total_q * a.num_kv_heads), static_cast<unsigned>(a.k));
    e = launch_pdl(decode_attention_kernel<false>, grid, dim3(kThreads), kSmemBytes, stream, a, DecodeOut{});
    if (e == cudaSuccess) e = cudaGetLastError();
  }
  return e == cudaSuccess ? Status::Ok() : Status::CudaError(std::string("decode attention: ") + cudaGetErrorString(e));
}

Status launch_decode_attention_fused(const DecodeAttentionLaunch& a, void* out, std::int64_t out_stride_t,
                                     std::int64_t out_stride_h, float* lse, std::int64_t lse_stride_t,
                                     std::int64_t lse_stride_h) {
  MSA_RETURN_IF_ERROR(check_decode_attention(a));
  if (a.handoff != nullptr && !a.inputs_before_wait)
    return Status::InvalidArgument("decode attention (fused): a handoff needs inputs_before_wait (MsaDecode only)");
  if (a.total_q == 0) return Status::Ok();
  auto* kernel = decode_attention_kernel<true>;
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmemBytes));
  if (e == cudaSuccess && a.k > 8)  // clusters of more than 8 CTAs are not portable; Hopper runs up to 16
    e = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  if (e == cudaSuccess) {
    const dim3 grid(static_cast<unsigned>(a.total_q * a.num_kv_heads), static_cast<unsigned>(a.k));
    const DecodeOut o{out, out_stride_t, out_stride_h, lse, lse_stride_t, lse_stride_h};
    e = launch_pdl_clusters(kernel, grid, dim3(kThreads), kSmemBytes, static_cast<cudaStream_t>(a.stream),
                            dim3(1, static_cast<unsigned>(a.k), 1), a, o);
    if (e == cudaSuccess) e = cudaGetLastError();
  }
  return e == cudaSuccess ? Status::Ok()
                          : Status::CudaError(std::string("decode attention (fused): ") + cudaGetErrorString(e));
}

}  // namespace kernels
}  // namespace msa
