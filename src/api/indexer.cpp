// indexer.cpp — public index-selection ops: validate every argument, then dispatch by device.
#include "msa/indexer.h"

#include "api/device.h"
#include "api/op_checks.h"
#include "reference/reference_impl.h"

namespace msa {

Status index_select_prefill_workspace_size(const IndexPrefillArgs& a, std::size_t* bytes) {
  if (bytes == nullptr) return Status::InvalidArgument("bytes: output pointer is null");
  MSA_RETURN_IF_ERROR(detail::check_index_tensors(a.index_q, a.index_k_cache));
  MSA_RETURN_IF_ERROR(detail::check_batch_tensors(&a.cu_seqlens_q, a.seq_lens_k, a.page_table));
  MSA_RETURN_IF_ERROR(detail::check_topk_tensor(a.topk, a.index_q.shape[1], a.index_q.shape[0]));
  if (a.index_q.device.is_cuda()) return detail::cuda_path_missing("index_select_prefill");
  *bytes = 0;
  return Status::Ok();
}

Status index_select_decode_workspace_size(const IndexDecodeArgs& a, std::size_t* bytes) {
  if (bytes == nullptr) return Status::InvalidArgument("bytes: output pointer is null");
  MSA_RETURN_IF_ERROR(detail::check_index_tensors(a.index_q, a.index_k_cache));
  MSA_RETURN_IF_ERROR(detail::check_batch_tensors(nullptr, a.seq_lens_k, a.page_table));
  MSA_RETURN_IF_ERROR(detail::check_topk_tensor(a.topk, a.index_q.shape[1], a.index_q.shape[0]));
  if (a.index_q.device.is_cuda()) return detail::cuda_path_missing("index_select_decode");
  *bytes = 0;
  return Status::Ok();
}

Status index_select_prefill(const IndexPrefillArgs& a, void*, std::size_t) {
  detail::BatchInfo batch;
  MSA_RETURN_IF_ERROR(detail::check_index_select(a.index_q, a.index_k_cache, a.page_table, &a.cu_seqlens_q, 0,
                                                 a.seq_lens_k, a.topk, &batch));
  if (a.index_q.device.is_cuda()) return detail::cuda_path_missing("index_select_prefill");
  ref::select_blocks(a.index_q, a.index_k_cache, a.page_table, batch, a.topk);
  return Status::Ok();
}

Status index_select_decode(const IndexDecodeArgs& a, void*, std::size_t) {
  detail::BatchInfo batch;
  MSA_RETURN_IF_ERROR(detail::check_index_select(a.index_q, a.index_k_cache, a.page_table, nullptr,
                                                 a.queries_per_request, a.seq_lens_k, a.topk, &batch));
  if (a.index_q.device.is_cuda()) return detail::cuda_path_missing("index_select_decode");
  ref::select_blocks(a.index_q, a.index_k_cache, a.page_table, batch, a.topk);
  return Status::Ok();
}

}  // namespace msa
