// op_checks.cpp — see op_checks.h.
#include "api/op_checks.h"

#include <string>

#include "msa/params.h"

namespace msa {
namespace detail {

namespace {

// Decode batches carry no cu_seqlens_q: T must be B * Q.
Status check_uniform_batch(const Tensor* cu_seqlens_q, std::int64_t queries_per_request, const Tensor& seq_lens_k,
                           std::int64_t total_q, const char* tensor_name) {
  if (cu_seqlens_q != nullptr) return Status::Ok();
  if (queries_per_request < 1 || queries_per_request > kMaxDecodeQueries)
    return Status::InvalidArgument("queries_per_request: must be in [1, " + std::to_string(kMaxDecodeQueries) +
                                   "], got " + std::to_string(queries_per_request));
  if (total_q != seq_lens_k.shape[0] * queries_per_request)
    return Status::InvalidArgument(std::string(tensor_name) + ": dimension 0 must be B * Q = " +
                                   std::to_string(seq_lens_k.shape[0] * queries_per_request) + ", got " +
                                   std::to_string(total_q));
  return Status::Ok();
}

}  // namespace

Status check_batch_tensors(const Tensor* cu_seqlens_q, const Tensor& seq_lens_k, const Tensor& page_table) {
  MSA_RETURN_IF_ERROR(check_tensor(seq_lens_k, "seq_lens_k", "[B]", 1, {DType::kInt32}));
  MSA_RETURN_IF_ERROR(check_tensor(page_table, "page_table", "[B, max_pages]", 2, {DType::kInt32}));
  const std::int64_t B = seq_lens_k.shape[0];
  MSA_RETURN_IF_ERROR(check_dim(page_table, "page_table", 0, B, "the batch size B of seq_lens_k"));
  if (cu_seqlens_q != nullptr) {
    MSA_RETURN_IF_ERROR(check_tensor(*cu_seqlens_q, "cu_seqlens_q", "[B + 1]", 1, {DType::kInt32}));
    MSA_RETURN_IF_ERROR(check_dim(*cu_seqlens_q, "cu_seqlens_q", 0, B + 1, "B + 1"));
  }
  return Status::Ok();
}

Status check_topk_tensor(const Tensor& topk, std::int64_t num_heads, std::int64_t total_q) {
  MSA_RETURN_IF_ERROR(check_tensor(topk, "topk", "[Hkv, T, k]", 3, {DType::kInt32}));
  if (num_heads >= 0) MSA_RETURN_IF_ERROR(check_dim(topk, "topk", 0, num_heads, "the number of KV (index) heads"));
  if (total_q >= 0) MSA_RETURN_IF_ERROR(check_dim(topk, "topk", 1, total_q, "the number of query tokens T"));
  if (topk.shape[2] < 1 || topk.shape[2] > kMaxTopK)
    return Status::InvalidArgument("topk: k (dimension 2) must be in [1, " + std::to_string(kMaxTopK) + "], got " +
                                   std::to_string(topk.shape[2]));
  return Status::Ok();
}

Status check_index_tensors(const Tensor& index_q, const Tensor& index_k_cache) {
  MSA_RETURN_IF_ERROR(check_tensor(index_q, "index_q", "[T, H_idx, 128]", 3, {DType::kBF16, DType::kFP8E4M3}));
  MSA_RETURN_IF_ERROR(check_dim(index_q, "index_q", 2, kHeadDim, "the index head dim"));
  if (index_q.shape[1] < 1) return Status::InvalidArgument("index_q: needs at least one index head (H_idx >= 1)");
  MSA_RETURN_IF_ERROR(check_bulk_operand(index_q, "index_q"));
  MSA_RETURN_IF_ERROR(
      check_tensor(index_k_cache, "index_k_cache", "[num_pages, 128, 128]", 3, {DType::kBF16, DType::kFP8E4M3}));
  // One dtype for both: the scores are products of index_q and index_k elements of the same kind (bf16 x bf16, or
  // fp8 x fp8 on the fp8 tensor cores).
  if (index_k_cache.dtype != index_q.dtype)
    return Status::InvalidArgument(std::string("index_k_cache: dtype must match index_q's (") +
                                   dtype_name(index_q.dtype) + "), got " + dtype_name(index_k_cache.dtype));
  MSA_RETURN_IF_ERROR(check_dim(index_k_cache, "index_k_cache", 1, kPageSize, "the page size"));
  MSA_RETURN_IF_ERROR(check_dim(index_k_cache, "index_k_cache", 2, kHeadDim, "the index head dim"));
  return check_bulk_operand(index_k_cache, "index_k_cache");
}

Status check_qkv_tensors(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache) {
  MSA_RETURN_IF_ERROR(check_tensor(q, "q", "[T, Hq, 128]", 3, {DType::kBF16}));
  MSA_RETURN_IF_ERROR(check_dim(q, "q", 2, kHeadDim, "the head dim"));
  MSA_RETURN_IF_ERROR(check_bulk_operand(q, "q"));
  const char* layout = "[num_pages, Hkv, 128, 128]";
  MSA_RETURN_IF_ERROR(check_tensor(k_cache, "k_cache", layout, 4, {DType::kBF16}));
  MSA_RETURN_IF_ERROR(check_tensor(v_cache, "v_cache", layout, 4, {DType::kBF16}));
  MSA_RETURN_IF_ERROR(check_dim(k_cache, "k_cache", 2, kPageSize, "the page size"));
  MSA_RETURN_IF_ERROR(check_dim(k_cache, "k_cache", 3, kHeadDim, "the head dim"));
  for (int d = 0; d < 4; ++d)
    if (v_cache.shape[d] != k_cache.shape[d])
      return Status::InvalidArgument("v_cache: shape " + shape_str(v_cache) + " must equal k_cache's " +
                                     shape_str(k_cache));
  MSA_RETURN_IF_ERROR(check_bulk_operand(k_cache, "k_cache"));
  MSA_RETURN_IF_ERROR(check_bulk_operand(v_cache, "v_cache"));
  return check_heads(q.shape[1], k_cache.shape[1]);
}

Status check_attention_outputs(const Tensor& out, const Tensor& lse, std::int64_t total_q, std::int64_t num_q_heads,
                               bool any_float_out) {
  if (any_float_out)
    MSA_RETURN_IF_ERROR(
        check_tensor(out, "out", "[T, Hq, 128]", 3, {DType::kBF16, DType::kFP16, DType::kFP32}));
  else
    MSA_RETURN_IF_ERROR(check_tensor(out, "out", "[T, Hq, 128]", 3, {DType::kBF16}));
  MSA_RETURN_IF_ERROR(check_dim(out, "out", 0, total_q, "the number of query tokens T"));
  MSA_RETURN_IF_ERROR(check_dim(out, "out", 1, num_q_heads, "the number of query heads Hq"));
  MSA_RETURN_IF_ERROR(check_dim(out, "out", 2, kHeadDim, "the head dim"));
  MSA_RETURN_IF_ERROR(check_bulk_operand(out, "out"));
  MSA_RETURN_IF_ERROR(check_tensor(lse, "lse", "[T, Hq]", 2, {DType::kFP32}, /*optional=*/true));
  if (lse.present()) {
    MSA_RETURN_IF_ERROR(check_dim(lse, "lse", 0, total_q, "the number of query tokens T"));
    MSA_RETURN_IF_ERROR(check_dim(lse, "lse", 1, num_q_heads, "the number of query heads Hq"));
  }
  return Status::Ok();
}

Status check_index_select(const Tensor& index_q, const Tensor& index_k_cache, const Tensor& page_table,
                          const Tensor* cu_seqlens_q, std::int64_t queries_per_request, const Tensor& seq_lens_k,
                          const Tensor& topk, BatchInfo* batch) {
  MSA_RETURN_IF_ERROR(check_index_tensors(index_q, index_k_cache));
  MSA_RETURN_IF_ERROR(check_batch_tensors(cu_seqlens_q, seq_lens_k, page_table));
  MSA_RETURN_IF_ERROR(check_topk_tensor(topk, index_q.shape[1], index_q.shape[0]));
  MSA_RETURN_IF_ERROR(check_uniform_batch(cu_seqlens_q, queries_per_request, seq_lens_k, index_q.shape[0], "index_q"));
  const Tensor none;
  MSA_RETURN_IF_ERROR(check_same_device({{"index_q", &index_q},
                                         {"index_k_cache", &index_k_cache},
                                         {"page_table", &page_table},
                                         {"cu_seqlens_q", cu_seqlens_q ? cu_seqlens_q : &none},
                                         {"seq_lens_k", &seq_lens_k},
                                         {"topk", &topk}}));
  // Content: checked where the data is read (CUDA), or not at all (a workspace-size query).
  if (index_q.device.is_cuda() || batch == nullptr) return Status::Ok();
  MSA_RETURN_IF_ERROR(read_batch(cu_seqlens_q, queries_per_request, seq_lens_k, index_q.shape[0], batch));
  return check_page_table(page_table, *batch, index_k_cache.shape[0]);
}

Status check_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& topk,
                       const Tensor& page_table, const Tensor* cu_seqlens_q, std::int64_t queries_per_request,
                       const Tensor& seq_lens_k, BatchInfo* batch) {
  MSA_RETURN_IF_ERROR(check_qkv_tensors(q, k_cache, v_cache));
  MSA_RETURN_IF_ERROR(check_batch_tensors(cu_seqlens_q, seq_lens_k, page_table));
  if (topk.present() || topk.ndim < 0) MSA_RETURN_IF_ERROR(check_topk_tensor(topk, k_cache.shape[1], q.shape[0]));
  MSA_RETURN_IF_ERROR(check_uniform_batch(cu_seqlens_q, queries_per_request, seq_lens_k, q.shape[0], "q"));
  const Tensor none;
  MSA_RETURN_IF_ERROR(check_same_device({{"q", &q},
                                         {"k_cache", &k_cache},
                                         {"v_cache", &v_cache},
                                         {"topk", &topk},
                                         {"page_table", &page_table},
                                         {"cu_seqlens_q", cu_seqlens_q ? cu_seqlens_q : &none},
                                         {"seq_lens_k", &seq_lens_k}}));
  if (q.device.is_cuda()) return Status::Ok();
  MSA_RETURN_IF_ERROR(read_batch(cu_seqlens_q, queries_per_request, seq_lens_k, q.shape[0], batch));
  MSA_RETURN_IF_ERROR(check_page_table(page_table, *batch, k_cache.shape[0]));
  if (topk.present()) MSA_RETURN_IF_ERROR(check_topk_rows(topk, *batch));
  return Status::Ok();
}

}  // namespace detail
}  // namespace msa
