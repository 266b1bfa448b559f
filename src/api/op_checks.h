// op_checks.h — the argument groups the operations share, each checked as a unit.
//
// Every operation validates all of its arguments (structure first, then content for host descriptors) before it
// writes anything. These helpers keep the rule for one argument group in one place.
#pragma once

#include <cstdint>

#include "api/validate.h"
#include "msa/status.h"
#include "msa/types.h"

namespace msa {
namespace detail {

// cu_seqlens_q [B + 1] (nullptr in decode), seq_lens_k [B], page_table [B, max_pages]: int32, one batch size.
Status check_batch_tensors(const Tensor* cu_seqlens_q, const Tensor& seq_lens_k, const Tensor& page_table);
// topk [H, T, k] int32 with 1 <= k <= 16; H and T checked when >= 0.
Status check_topk_tensor(const Tensor& topk, std::int64_t num_heads, std::int64_t total_q);
// index_q [T, H_idx, 128] and index_k_cache [num_pages, 128, 128], bf16, bulk-readable.
Status check_index_tensors(const Tensor& index_q, const Tensor& index_k_cache);
// q [T, Hq, 128], k_cache and v_cache [num_pages, Hkv, 128, 128] of one shape, bf16, bulk-readable, Hq % Hkv == 0.
Status check_qkv_tensors(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache);
// out [T, Hq, 128] (bf16, or also fp16/fp32 when any_float_out) and optional lse [T, Hq] fp32.
Status check_attention_outputs(const Tensor& out, const Tensor& lse, std::int64_t total_q, std::int64_t num_q_heads,
                               bool any_float_out);

// Full checks of the index-selection arguments; fills `batch` when the descriptors are host-readable. With batch =
// nullptr only shapes, dtypes, devices and the uniform-batch rule are checked (the workspace-size queries).
Status check_index_select(const Tensor& index_q, const Tensor& index_k_cache, const Tensor& page_table,
                          const Tensor* cu_seqlens_q, std::int64_t queries_per_request, const Tensor& seq_lens_k,
                          const Tensor& topk, BatchInfo* batch);

// Full checks of an attention call (dense when topk is absent); fills `batch` for host descriptors.
Status check_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& topk,
                       const Tensor& page_table, const Tensor* cu_seqlens_q, std::int64_t queries_per_request,
                       const Tensor& seq_lens_k, BatchInfo* batch);

}  // namespace detail
}  // namespace msa
