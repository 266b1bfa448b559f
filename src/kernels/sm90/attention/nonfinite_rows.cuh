// nonfinite_rows.cuh — the exact path for O rows that came out non-finite, shared by the KV-outer and union-of-blocks
// kernels. Both multiply P = 0 into V for keys a row does not see: keys after its token's position in its own block,
// and under the union schedule every key of a block that a warpgroup neighbour listed and its token did not. A NaN
// or infinity in V there would reach the row (0 · NaN = NaN, 0 · inf = NaN) where the reference (design.md §5)
// keeps it finite. The kernels therefore test a row's O once (per tile, only where such keys exist) and, for a row
// with a non-finite entry, recompute exactly those entries from global memory in fp32 over the keys the row sees.
//
// Why this is exact: a non-finite term never turns finite again (NaN and ±inf stay non-finite through sums and
// through the rescales by finite factors), so an entry that is finite saw only finite products and is left as it
// is. A recomputed entry is 2^(q·k · scale − base) · V summed over the row's visible keys with the kernel's own
// base, so it sits beside the kernel's row sum l like the tensor-core entries (in fp32 P rather than bf16 P: closer
// to the reference, not further). Cost: the test is one sum over a thread's 32 entries of a row; the recompute
// (only with non-finite V) reads each visible key's K row and the thread's V columns, ~0.1 ms per block and warp.
//
// Fragment layout (tile_softmax.cuh): row R = 0 (r0) holds o[4 n + e], row R = 1 (r0 + 8) o[4 n + 2 + e], at column
// 8 n + 2 c + e (c = lane % 4, n < 16, e < 2).
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

// The non-finite entries of row R as bits 2 n + e, each set to 0 for add_visible_keys to sum into.
template <int R>
__device__ __forceinline__ std::uint32_t take_nonfinite(float (&o)[64]) {
  std::uint32_t bits = 0;
#pragma unroll
  for (int n = 0; n < 16; ++n)
#pragma unroll
    for (int e = 0; e < 2; ++e)
      if (!isfinite(o[4 * n + 2 * R + e])) {
        bits |= 1u << (2 * n + e);
        o[4 * n + 2 * R + e] = 0.f;
      }
  return bits;
}

// Adds to row R's entries named by `bits`: the sum over keys 0 .. n_keys - 1 of page `page` (KV head g) of
// 2^(q_row · k_t · scale − base) · V[t, column], in fp32 (the dot product over the 128 dims in order). Keys of the
// page at or past n_keys are never read.
template <int R>
__device__ void add_visible_keys(float (&o)[64], std::uint32_t bits, const PagedPrefillInputs& a,
                                 const __nv_bfloat16* q_row, int g, int page, int n_keys, float scale, float base,
                                 int c) {
  if (bits == 0) return;
  const std::int64_t off = static_cast<std::int64_t>(page) * a.kv_stride_page + static_cast<std::int64_t>(g) * a.kv_stride_h;
  const auto* kb = static_cast<const __nv_bfloat16*>(a.k_cache) + off;
  const auto* vb = static_cast<const __nv_bfloat16*>(a.v_cache) + off;
  for (int t = 0; t < n_keys; ++t) {
    const auto* kr = reinterpret_cast<const __nv_bfloat162*>(kb + t * a.kv_stride_t);
    const auto* qr = reinterpret_cast<const __nv_bfloat162*>(q_row);
    float s = 0.f;
    for (int d = 0; d < 64; ++d) {
      const float2 qq = __bfloat1622float2(qr[d]), kk = __bfloat1622float2(kr[d]);
      s = fmaf(qq.x, kk.x, s);
      s = fmaf(qq.y, kk.y, s);
    }
    const float p = exp2f(fmaf(s, scale, -base));
    const __nv_bfloat16* vr = vb + t * a.kv_stride_t + 2 * c;
#pragma unroll
    for (int n = 0; n < 16; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e)
        if ((bits >> (2 * n + e)) & 1u)
          o[4 * n + 2 * R + e] = fmaf(p, __bfloat162float(vr[8 * n + e]), o[4 * n + 2 * R + e]);
  }
}

// One block (KV-outer): row R sees keys 0 .. n_keys - 1 of it. With n_keys < 128 and a non-finite entry, those
// entries are recomputed over the keys it sees; rows that see the whole block are not even tested.
template <int R>
__device__ __forceinline__ void redo_row_if_nonfinite(float (&o)[64], int n_keys, const PagedPrefillInputs& a,
                                                      const __nv_bfloat16* q_row, int g, int page, float scale,
                                                      float base, int c) {
  if (n_keys < 128 && !row_finite<R>(o))
    add_visible_keys<R>(o, take_nonfinite<R>(o), a, q_row, g, page, n_keys, scale, base, c);
}

}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_SM90_ATTENTION_NONFINITE_ROWS_CUH_
