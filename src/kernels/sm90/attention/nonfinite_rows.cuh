// nonfinite_rows.cuh — the exact path for output rows that came out non-finite, shared by the KV-outer and
// union-of-blocks kernels. Both multiply P = 0 into V for keys a row does not see: keys after its token's position
// in its own block, and under the union schedule every key of a block that a warpgroup neighbour listed and its
// token did not. A NaN or infinity in V there would reach the row (0 · NaN = NaN, 0 · inf = NaN) where the
// reference (design.md §5) keeps it finite. The kernels therefore test a row's O fragment once (per tile, only
// where such keys exist) and, for a row with a non-finite entry, recompute exactly those entries from global memory
// in fp32 over the keys the row sees, after the fast path has written the row.
//
// Why this is exact: a non-finite term never turns finite again (NaN and ±inf stay non-finite through sums and
// rescales by finite factors), so an entry that came out finite saw only finite products and is left as it is. A
// recomputed entry is the sum over the row's visible keys of 2^(q·k · scale − base) · V with the kernel's own base,
// times the kernel's own 1 / l, so it sits beside the fast path's entries (with fp32 P rather than bf16 P: closer to
// the reference, not further).
//
// Cost: on finite inputs only the test, ~32 FADDs per row where it applies (KV-outer: own-block tiles only). The
// exact path keeps its loops rolled and its sums in local memory: unrolled, it grew the KV-outer kernel's cubin by
// 60 % and slowed its attention phase by 10 % at 128K (H200). Rolled, the KV-outer attention phase still measured
// 3.3-3.6 % slower at 128K (H200, random and clustered, three alternating runs each against the kernel without it),
// though its tile loop executes no more instructions on finite inputs: the loop's code grew from 916 to 1257
// instructions (G = 16), which is the suspect. The union kernel and the decode paths measured unchanged. With
// non-finite V it costs a dot product per visible key and a load per recomputed entry and key.
//
// Fragment layout (tile_softmax.cuh): row R = 0 (r0) holds o[4 n + e], row R = 1 (r0 + 8) o[4 n + 2 + e], at column
// 8 n + 2 c + e (c = lane % 4, n < 16, e < 2); entry i < 32 of a row below is column 8 (i / 2) + 2 c + i % 2.
#ifndef MSA_KERNELS_SM90_ATTENTION_NONFINITE_ROWS_CUH_
#define MSA_KERNELS_SM90_ATTENTION_NONFINITE_ROWS_CUH_

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "kernels/sm90/attention/launch.h"

namespace msa {
namespace kernels {

// Whether row R of this thread's fragment is finite. A sum of finite entries can only overflow to infinity with
// entries near FLT_MAX; that sends a row down the exact path needlessly, never the other way.
template <int R>
__device__ __forceinline__ bool row_finite(const float (&o)[64]) {
  float s0 = 0.f, s1 = 0.f;
#pragma unroll
  for (int n = 0; n < 16; n += 2) {
    s0 += o[4 * n + 2 * R] + o[4 * n + 2 * R + 1];
    s1 += o[4 * n + 4 + 2 * R] + o[4 * n + 4 + 2 * R + 1];
  }
  return isfinite(s0 + s1);
}

__device__ __forceinline__ int entry_column(int i, int c) { return 8 * (i / 2) + 2 * c + (i & 1); }

// Where a row's keys come from: the KV head's K and V caches (pointers at head g of page 0) and their strides.
struct HeadCache {
  const __nv_bfloat16* k;
  const __nv_bfloat16* v;
  std::int64_t stride_page, stride_t;
};
__device__ __forceinline__ HeadCache head_cache(const PagedPrefillInputs& a, int g) {
  const std::int64_t off = static_cast<std::int64_t>(g) * a.kv_stride_h;
  return HeadCache{static_cast<const __nv_bfloat16*>(a.k_cache) + off,
                   static_cast<const __nv_bfloat16*>(a.v_cache) + off, a.kv_stride_page, a.kv_stride_t};
}

// Recomputes the thread's non-finite entries of one written output row. at(i) is entry i (a bf16 in shared or
// global memory holding O / l); blocks(add) calls add(page, n_keys) for every block of the row's selection, of which
// the row sees keys 0 .. n_keys - 1 (later keys are never read). base: the row's max in log2 units (the exponent
// base of the fast path); inv_l: the 1 / l the fast path scaled by.
template <class At, class Blocks>
__device__ void redo_nonfinite_entries(At at, Blocks blocks, const HeadCache& hc, const __nv_bfloat16* q_row,
                                       float scale, float base, float inv_l, int c) {
  std::uint32_t bits = 0;
  float sum[32];
#pragma unroll 1
  for (int i = 0; i < 32; ++i) {
    sum[i] = 0.f;
    if (!isfinite(__bfloat162float(at(i)))) bits |= 1u << i;
  }
  if (bits == 0) return;
  const auto* qr = reinterpret_cast<const __nv_bfloat162*>(q_row);
  blocks([&](int page, int n_keys) {
#pragma unroll 1
    for (int t = 0; t < n_keys; ++t) {
      const std::int64_t row = page * hc.stride_page + t * hc.stride_t;
      const auto* kr = reinterpret_cast<const __nv_bfloat162*>(hc.k + row);
      float s = 0.f;
#pragma unroll 4
      for (int d = 0; d < 64; ++d) {
        const float2 qq = __bfloat1622float2(qr[d]), kk = __bfloat1622float2(kr[d]);
        s = fmaf(qq.x, kk.x, s);
        s = fmaf(qq.y, kk.y, s);
      }
      const float p = exp2f(fmaf(s, scale, -base));
#pragma unroll 1
      for (int i = 0; i < 32; ++i)
        if ((bits >> i) & 1u) sum[i] = fmaf(p, __bfloat162float(hc.v[row + entry_column(i, c)]), sum[i]);
    }
  });
#pragma unroll 1
  for (int i = 0; i < 32; ++i)
    if ((bits >> i) & 1u) at(i) = __float2bfloat16_rn(sum[i] * inv_l);
}

}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_SM90_ATTENTION_NONFINITE_ROWS_CUH_
