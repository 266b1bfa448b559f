// launch.h — host-side entry of the combine kernel: LSE-merge of per-split partial attention outputs (plain
// pointers and strides in elements, no CUDA types).
#ifndef MSA_KERNELS_COMBINE_LAUNCH_H_
#define MSA_KERNELS_COMBINE_LAUNCH_H_

#include <cstdint>

#include "msa/status.h"

namespace msa {
namespace kernels {

struct CombineLaunch {
  const void* partial_out;  // [S, T, Hq, 128] bf16 or fp32, normalised; rows 16-byte aligned, inner stride 1
  bool partial_fp32;
  std::int64_t po_stride_s, po_stride_t, po_stride_h;
  const float* partial_lse;  // [S, T, Hq]
  std::int64_t pl_stride_s, pl_stride_t, pl_stride_h;
  const std::int32_t* split_counts;  // [T, Hkv]; clamped to [0, S] on the device, except that a negative count
                                     // leaves the row's out / LSE untouched (another kernel writes them)
  std::int64_t sc_stride_t, sc_stride_g;
  void* out;  // [T, Hq, 128] bf16
  std::int64_t out_stride_t, out_stride_h;
  float* lse;  // [T, Hq] or nullptr
  std::int64_t lse_stride_t, lse_stride_h;
  std::int64_t total_q;
  int num_q_heads, group;  // Hq, Hq / Hkv
  int num_splits;          // S
  // bf16 partials: units of 16 rows per CTA (at most 16; 0 or less: 2). A CTA's rows whose count is negative cost
  // it next to nothing, but every CTA costs its start and one load, so where most rows may belong to another kernel
  // (kAuto's leftover KV-outer chain on clustered selections) fewer, longer CTAs win; where every row has work,
  // short CTAs do: longer ones leave the k2q of the next chunk, on the side stream, fewer chances to run beside
  // them. H100, bench_prefill_attention, one run per variant (2026-11-28), 2 / 8 / 16 units per CTA: clustered 128K
  // kAuto 25.66 / 25.21 / 24.95 ms (the old kernel, one count load per unit, 26.02), clustered 1M kAuto without its
  // union kernel 17.7 / 13.2 / 12.6 ms (19.4); random 1M combine phase 92.2 / 93.4 / 94.6 ms (91.9).
  int units_per_cta;
  int device;
  void* stream;  // cudaStream_t
};

// The launch for contiguous buffers: partials [S, T, Hq, 128] bf16 and [S, T, Hq], counts [T, Hkv], outputs
// [T, Hq, 128] bf16 and [T, Hq] (lse may be null), on device 0's default stream until the caller sets them.
inline CombineLaunch contiguous_combine_launch(void* partial_out, float* partial_lse, std::int32_t* split_counts,
                                               void* out, float* lse, std::int64_t T, int Hq, int Hkv, int S) {
  CombineLaunch c{};
  c.partial_out = partial_out;
  c.po_stride_s = T * Hq * 128;
  c.po_stride_t = static_cast<std::int64_t>(Hq) * 128;
  c.po_stride_h = 128;
  c.partial_lse = partial_lse;
  c.pl_stride_s = T * Hq;
  c.pl_stride_t = Hq;
  c.pl_stride_h = 1;
  c.split_counts = split_counts;
  c.sc_stride_t = Hkv;
  c.sc_stride_g = 1;
  c.out = out;
  c.out_stride_t = static_cast<std::int64_t>(Hq) * 128;
  c.out_stride_h = 128;
  c.lse = lse;
  c.lse_stride_t = lse != nullptr ? Hq : 0;
  c.lse_stride_h = lse != nullptr ? 1 : 0;
  c.total_q = T;
  c.num_q_heads = Hq;
  c.group = Hq / Hkv;
  c.num_splits = S;
  return c;
}

// Enqueues the merge on `stream`; never synchronises or allocates.
Status launch_combine(const CombineLaunch& args);

}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_COMBINE_LAUNCH_H_
