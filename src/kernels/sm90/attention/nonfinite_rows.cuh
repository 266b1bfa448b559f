// nonfinite_rows.cuh — the exact path for output rows that came out non-finite, shared by the KV-outer and
// union-of-blocks kernels. Both multiply P = 0 into V for keys a row does not see: keys after its token's position
// in its own block, and under the union schedule every key of a block that a warpgroup neighbour listed and its
// token did not. A NaN or infinity in V there would reach the row (0 · NaN = NaN, 0 · inf = NaN) where the
// reference (design.md §5) keeps it finite. The kernels therefore test a row once per tile (only where such keys
// exist) and, for a row with a non-finite entry, recompute exactly those entries from global memory
// in fp32 over the keys the row sees, after the fast path has written the row.
//
// Why this is exact: a non-finite term never turns finite again (NaN and ±inf stay non-finite through sums and
// rescales by finite factors), so an entry that came out finite saw only finite products and is left as it is. A
// recomputed entry is the sum over the row's visible keys of 2^(q·k · scale − base) · V with the kernel's own base,
// times the kernel's own 1 / l, so it sits beside the fast path's entries (with fp32 P rather than bf16 P: closer to
// the reference, not further).
//
// Cost: on finite inputs only the test, ~32 FADDs per row where it applies (union kernel: every row per tile;
// KV-outer: rows that mask keys of their own block, tested on their staged bf16 words). The exact path keeps its
// loops rolled and its sums in local memory, and is out of line (redo_nonfinite_row; KV-outer's test as well,
// redo_masked_rows in kv_outer.cu): inline, the KV-outer tile loop's code grew from 916 to 1257 instructions (G = 16)
// and its attention phase measured 3.3-3.6 % slower at 128K (H200), though it executed no more instructions on finite
// inputs; out of line the loop holds 944 (cuobjdump at 6537a04) and the phase measured within 0.3 % (random) and
// 1.2 % (clustered) of the kernel without the exact path (performance.md, "Non-finite V: exact rows"). Unrolled, it
// had grown the cubin by 60 % and cost 10 %. With non-finite V it costs a dot product per visible key and a load per
// recomputed entry and key.
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

// Where a thread's entries of a written output row (bf16 O / l) are: entry i, n = i / 2, at byte
// base + (n / 8) · half_stride + ((n % 8) ^ swizzle) · 16 + 4 c + 2 (i % 2). A plain row in global memory is
// half_stride 128, swizzle 0; a 128B-swizzled staging row r of two 64-dim halves is half_stride = the halves'
// distance, swizzle r % 8.
struct RowEntries {
  unsigned char* base;
  int half_stride, swizzle;
};

// The blocks a row sees, keys 0 .. min(pos − 128 j, 127) of each block j: the row's topk list (count entries,
// −1 skipped) through its request's page-table row, or with list == nullptr one block at page `page`.
struct RowBlocks {
  const std::int32_t* list;
  std::int64_t list_stride;
  int count;
  const std::int32_t* pages;
  std::int64_t page_stride;
  int pos, page, block;
};

// Recomputes the thread's non-finite entries of one written output row over the keys it sees (the file comment).
// base: the row's max in log2 units (the exponent base of the fast path); inv_l: the 1 / l the fast path scaled by.
// Out of line so that its code stays out of the kernels' tile loops (the cost note above).
static __device__ __noinline__ void redo_nonfinite_row(RowEntries e, RowBlocks b, HeadCache hc,
                                                       const __nv_bfloat16* q_row, float scale, float base, float inv_l,
                                                       int c) {
  const auto entry = [&](int i) -> __nv_bfloat16& {
    const int n = i / 2;
    return *reinterpret_cast<__nv_bfloat16*>(e.base + (n / 8) * e.half_stride + (((n % 8) ^ e.swizzle) * 16) + 4 * c +
                                             2 * (i & 1));
  };
  std::uint32_t bits = 0;
  float sum[32];
#pragma unroll 1
  for (int i = 0; i < 32; ++i) {
    sum[i] = 0.f;
    if (!isfinite(__bfloat162float(entry(i)))) bits |= 1u << i;
  }
  if (bits == 0) return;
  const auto* qr = reinterpret_cast<const __nv_bfloat162*>(q_row);
#pragma unroll 1
  for (int u = 0; u < (b.list != nullptr ? b.count : 1); ++u) {
    const int j = b.list != nullptr ? b.list[u * b.list_stride] : b.block;
    if (j < 0) continue;
    const int page = b.list != nullptr ? b.pages[j * b.page_stride] : b.page, n_keys = min(b.pos - 128 * j + 1, 128);
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
  }
#pragma unroll 1
  for (int i = 0; i < 32; ++i)
    if ((bits >> i) & 1u) entry(i) = __float2bfloat16_rn(sum[i] * inv_l);
}

}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_SM90_ATTENTION_NONFINITE_ROWS_CUH_
