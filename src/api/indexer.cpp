// indexer.cpp — public index-selection ops: validate every argument, then dispatch by device.
#include "msa/indexer.h"

#include <cstdint>
#include <string>

#include "api/bench_hooks.h"
#include "api/decode_handoff.h"
#include "api/device.h"
#include "api/op_checks.h"
#include "kernels/sm90/indexer/launch.h"
#include "reference/reference_impl.h"

namespace msa {
namespace {

// Decode (cu_seqlens_q == nullptr) splits each request's pages over CTAs and needs a workspace.
kernels::IndexSelectLaunch make_launch(const Tensor& index_q, const Tensor& index_k_cache, const Tensor& page_table,
                                       const Tensor* cu_seqlens_q, int queries_per_request, const Tensor& seq_lens_k,
                                       const Tensor& topk) {
  kernels::IndexSelectLaunch l{};
  l.index_q = index_q.data;
  l.fp8 = index_q.dtype == DType::kFP8E4M3;  // validated: index_k_cache has the same dtype
  l.q_stride_t = index_q.stride[0];
  l.q_stride_h = index_q.stride[1];
  l.index_k = index_k_cache.data;
  l.k_stride_page = index_k_cache.stride[0];
  l.k_stride_t = index_k_cache.stride[1];
  l.k_pages = index_k_cache.shape[0];
  l.page_table = static_cast<const std::int32_t*>(page_table.data);
  l.pt_stride_b = page_table.stride[0];
  l.pt_stride_j = page_table.stride[1];
  l.cu_seqlens_q = cu_seqlens_q ? static_cast<const std::int32_t*>(cu_seqlens_q->data) : nullptr;
  l.cu_stride = cu_seqlens_q ? cu_seqlens_q->stride[0] : 0;
  l.queries_per_request = queries_per_request;
  l.seq_lens_k = static_cast<const std::int32_t*>(seq_lens_k.data);
  l.seq_stride = seq_lens_k.stride[0];
  l.topk = static_cast<std::int32_t*>(topk.data);
  l.topk_stride_h = topk.stride[0];
  l.topk_stride_t = topk.stride[1];
  l.topk_stride_s = topk.stride[2];
  l.total_q = index_q.shape[0];
  l.num_requests = static_cast<int>(seq_lens_k.shape[0]);
  l.num_heads = static_cast<int>(index_q.shape[1]);
  l.k = static_cast<int>(topk.shape[2]);
  l.max_pages = static_cast<int>(page_table.shape[1]);
  l.split_pages = cu_seqlens_q == nullptr ? 1 : 0;
  l.device = index_q.device.index;
  l.stream = index_q.device.stream;
  return l;
}

Status launch_cuda(kernels::IndexSelectLaunch l, void* workspace, std::size_t workspace_bytes,
                   bool scores_only = false, void* handoff = nullptr) {
  l.scores_only = scores_only;
  l.handoff = static_cast<unsigned long long*>(handoff);
  std::size_t need = 0;
  MSA_RETURN_IF_ERROR(kernels::index_select_workspace_bytes_sm90(l, &need));
  if (workspace_bytes < need)
    return Status::InvalidArgument("workspace: needs " + std::to_string(need) + " bytes (see the workspace-size query), got " +
                                   std::to_string(workspace_bytes));
  if (need > 0 && (workspace == nullptr || reinterpret_cast<std::uintptr_t>(workspace) % 16 != 0))
    return Status::InvalidArgument("workspace: must be a non-null, 16-byte aligned device pointer");
  l.workspace = workspace;
  return kernels::launch_index_select_sm90(l);
}

}  // namespace

Status index_select_prefill_workspace_size(const IndexPrefillArgs& a, std::size_t* bytes) {
  if (bytes == nullptr) return Status::InvalidArgument("bytes: output pointer is null");
  MSA_RETURN_IF_ERROR(detail::check_index_select(a.index_q, a.index_k_cache, a.page_table, &a.cu_seqlens_q, 0,
                                                 a.seq_lens_k, a.topk, nullptr));
  *bytes = 0;
  return Status::Ok();
}

Status index_select_decode_workspace_size(const IndexDecodeArgs& a, std::size_t* bytes) {
  if (bytes == nullptr) return Status::InvalidArgument("bytes: output pointer is null");
  MSA_RETURN_IF_ERROR(detail::check_index_select(a.index_q, a.index_k_cache, a.page_table, nullptr,
                                                 a.queries_per_request, a.seq_lens_k, a.topk, nullptr));
  *bytes = 0;
  if (a.index_q.device.is_cuda())
    return kernels::index_select_workspace_bytes_sm90(make_launch(a.index_q, a.index_k_cache, a.page_table, nullptr,
                                                                  a.queries_per_request, a.seq_lens_k, a.topk),
                                                      bytes);
  return Status::Ok();
}

namespace {

Status prefill_impl(const IndexPrefillArgs& a, void* workspace, std::size_t workspace_bytes, bool scores_only) {
  detail::BatchInfo batch;
  MSA_RETURN_IF_ERROR(detail::check_index_select(a.index_q, a.index_k_cache, a.page_table, &a.cu_seqlens_q, 0,
                                                 a.seq_lens_k, a.topk, &batch));
  if (a.index_q.device.is_cuda())
    return launch_cuda(make_launch(a.index_q, a.index_k_cache, a.page_table, &a.cu_seqlens_q, 0, a.seq_lens_k, a.topk),
                       workspace, workspace_bytes, scores_only);
  if (scores_only) return Status::NotImplemented("the scores-only benchmark mode exists for CUDA tensors only");
  ref::select_blocks(a.index_q, a.index_k_cache, a.page_table, batch, a.topk);
  return Status::Ok();
}

Status decode_impl(const IndexDecodeArgs& a, void* workspace, std::size_t workspace_bytes, bool scores_only,
                   void* handoff = nullptr) {
  detail::BatchInfo batch;
  MSA_RETURN_IF_ERROR(detail::check_index_select(a.index_q, a.index_k_cache, a.page_table, nullptr,
                                                 a.queries_per_request, a.seq_lens_k, a.topk, &batch));
  if (a.index_q.device.is_cuda())
    return launch_cuda(make_launch(a.index_q, a.index_k_cache, a.page_table, nullptr, a.queries_per_request,
                                   a.seq_lens_k, a.topk),
                       workspace, workspace_bytes, scores_only, handoff);
  if (scores_only) return Status::NotImplemented("the scores-only benchmark mode exists for CUDA tensors only");
  ref::select_blocks(a.index_q, a.index_k_cache, a.page_table, batch, a.topk);
  return Status::Ok();
}

}  // namespace

Status index_select_prefill(const IndexPrefillArgs& a, void* workspace, std::size_t workspace_bytes) {
  return prefill_impl(a, workspace, workspace_bytes, false);
}

Status index_select_decode(const IndexDecodeArgs& a, void* workspace, std::size_t workspace_bytes) {
  return decode_impl(a, workspace, workspace_bytes, false);
}

namespace detail {

Status index_select_prefill_scores_only(const IndexPrefillArgs& a) { return prefill_impl(a, nullptr, 0, true); }

Status index_select_decode_scores_only(const IndexDecodeArgs& a, void* workspace, std::size_t workspace_bytes) {
  return decode_impl(a, workspace, workspace_bytes, true);
}

bool index_select_decode_merges(const IndexDecodeArgs& a) {
  return a.index_q.device.is_cuda() &&
         kernels::index_select_decode_merges(make_launch(a.index_q, a.index_k_cache, a.page_table, nullptr,
                                                         a.queries_per_request, a.seq_lens_k, a.topk));
}

Status index_select_decode_handoff(const IndexDecodeArgs& a, void* workspace, std::size_t workspace_bytes,
                                   void* handoff) {
  if (handoff == nullptr || reinterpret_cast<std::uintptr_t>(handoff) % 256 != 0)
    return Status::InvalidArgument("handoff: must be a non-null, 256-byte aligned device pointer");
  return decode_impl(a, workspace, workspace_bytes, false, handoff);
}

}  // namespace detail

}  // namespace msa
