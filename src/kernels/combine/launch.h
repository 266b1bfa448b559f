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
  const std::int32_t* split_counts;  // [T, Hkv]; each count is clamped to [0, S] on the device
  std::int64_t sc_stride_t, sc_stride_g;
  void* out;  // [T, Hq, 128] bf16
  std::int64_t out_stride_t, out_stride_h;
  float* lse;  // [T, Hq] or nullptr
  std::int64_t lse_stride_t, lse_stride_h;
  std::int64_t total_q;
  int num_q_heads, group;  // Hq, Hq / Hkv
  int num_splits;          // S
  int device;
  void* stream;  // cudaStream_t
};

// Enqueues the merge on `stream`; never synchronises or allocates.
Status launch_combine(const CombineLaunch& args);

}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_COMBINE_LAUNCH_H_
