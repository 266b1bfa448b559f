// validate.h — argument checks shared by every operation (public ops and the reference entry points).
//
// Structural checks (ndim, shape, dtype, strides, alignment, devices) read no tensor data. Content checks read
// int32 metadata (cu_seqlens_q, seq_lens_k, page_table, topk) and therefore need host-readable descriptors. Every
// message starts with the argument's name and states the rule it broke.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "msa/attention.h"
#include "msa/status.h"
#include "msa/types.h"

namespace msa {
namespace detail {

// Host copy of a batch's metadata, produced by read_batch() after its checks passed.
struct BatchInfo {
  std::vector<std::int64_t> q_start;  // [B + 1] first query token of each request, q_start[B] = T
  std::vector<std::int64_t> kv_len;   // [B] L_b
  std::int64_t num_requests() const { return static_cast<std::int64_t>(kv_len.size()); }
  std::int64_t num_q() const { return q_start.empty() ? 0 : q_start.back(); }
  std::int64_t nq(std::int64_t b) const { return q_start[b + 1] - q_start[b]; }
  // Position of the request's query i (bottom-right alignment) and its number of visible blocks.
  std::int64_t position(std::int64_t b, std::int64_t i) const { return kv_len[b] - nq(b) + i; }
};

std::string shape_str(const Tensor& t);
std::int32_t i32_at(const Tensor& t, std::int64_t i0, std::int64_t i1 = 0, std::int64_t i2 = 0);
inline std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

// ndim, dtype, non-negative shape and strides, non-null data when non-empty, natural alignment.
// `layout` names the dimensions for messages, e.g. "[T, Hq, 128]". An absent optional tensor passes.
Status check_tensor(const Tensor& t, const char* name, const char* layout, int ndim,
                    std::initializer_list<DType> dtypes, bool optional = false);
Status check_dim(const Tensor& t, const char* name, int dim, std::int64_t expected, const char* meaning);
// A tensor a TMA or bulk copy will read: unit innermost stride, 16-byte aligned base and outer strides.
Status check_bulk_operand(const Tensor& t, const char* name);
// All present tensors on one device (same type, same CUDA ordinal).
Status check_same_device(std::initializer_list<std::pair<const char*, const Tensor*>> tensors);
Status check_heads(std::int64_t num_q_heads, std::int64_t num_kv_heads);
Status check_sm_scale(double sm_scale);
Status check_prefill_schedule(PrefillSchedule schedule);

// Content checks (host-readable data).
// cu_seqlens_q == nullptr means a uniform `queries_per_request` per request (decode).
Status read_batch(const Tensor* cu_seqlens_q, std::int64_t queries_per_request, const Tensor& seq_lens_k,
                  std::int64_t total_q, BatchInfo* batch);
Status check_page_table(const Tensor& page_table, const BatchInfo& batch, std::int64_t num_pages);
// Valid attention input: each row is a prefix of unique ids < n_vis containing the local block, then -1s;
// or a row of only -1 (padding row).
Status check_topk_rows(const Tensor& topk, const BatchInfo& batch);

}  // namespace detail
}  // namespace msa
