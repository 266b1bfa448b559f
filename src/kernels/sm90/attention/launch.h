// launch.h — host-side entry of the KV-outer sparse prefill attention kernel (plain pointers, strides in elements).
// SparsePrefillAttention's CUDA path uses it for Hq / Hkv = 16 (api/attention_cuda.cpp).
#ifndef MSA_KERNELS_SM90_ATTENTION_LAUNCH_H_
#define MSA_KERNELS_SM90_ATTENTION_LAUNCH_H_

#include <cstdint>

#include "msa/status.h"

namespace msa {
namespace kernels {

struct KvOuterLaunch {
  const void* q;  // [T, Hq, 128] bf16
  std::int64_t q_stride_t, q_stride_h;
  const void* k_cache;  // [pages, Hkv, 128, 128] bf16
  const void* v_cache;
  std::int64_t kv_stride_page, kv_stride_h, kv_stride_t;
  std::int64_t num_pages;
  const std::int32_t* page_table;  // [B, max_pages]
  std::int64_t pt_stride_b, pt_stride_j;
  const std::int32_t* cu_seqlens_q;  // [B + 1]
  std::int64_t cu_stride;
  const std::int32_t* seq_lens_k;  // [B]
  std::int64_t seq_stride;
  // The device k2q build (kernels/k2q/launch.h): row pointers [Hkv, R_cap + 1], handles [Hkv, T * k], items.
  const std::int32_t* row_ptr;
  const std::int32_t* qsplit_indices;
  const std::int32_t* items;  // [item_capacity, 6]
  const std::int32_t* num_items;
  std::int64_t row_capacity, item_capacity;
  std::int64_t total_q;
  int num_q_heads, num_kv_heads, k;
  float sm_scale;
  void* partial_out;   // [k, T, Hq, 128] bf16 (slot = the block's split slot)
  float* partial_lse;  // [k, T, Hq]
  int device;
  void* stream;
};

// G = Hq / Hkv must be 16 (4 tokens x 16 heads per 64-row tile).
Status launch_kv_outer_attention(const KvOuterLaunch& args);

}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_SM90_ATTENTION_LAUNCH_H_
