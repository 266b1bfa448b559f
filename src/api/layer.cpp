// layer.cpp — layer-level ops (msa/layer.h): index selection then sparse attention in one plan/run pair. Every
// run argument is validated before anything is written (the selection is only computed once the attention's
// inputs and outputs are known to be valid), so a bad input leaves the outputs untouched.
#include "msa/layer.h"

#include <string>

#include "api/device.h"
#include "api/op_checks.h"
#include "msa/attention.h"
#include "msa/indexer.h"

namespace msa {
namespace {

Status check_common(int num_q_heads, int num_kv_heads, int topk, double sm_scale) {
  MSA_RETURN_IF_ERROR(detail::check_heads(num_q_heads, num_kv_heads));
  MSA_RETURN_IF_ERROR(detail::check_sm_scale(sm_scale));
  if (topk < 1 || topk > kMaxTopK)
    return Status::InvalidArgument("topk: must be in [1, " + std::to_string(kMaxTopK) + "], got " + std::to_string(topk));
  return Status::Ok();
}

Status cuda_not_yet(const char* op) {
  return Status::NotImplemented(std::string(op) +
                                " on CUDA: the sparse attention kernels are not verified yet; pass CPU descriptors");
}

// The selection tensor of a run: the caller's, or one carved from the workspace.
Status topk_of(const Tensor& given, int heads, std::int64_t T, int k, const Device& device, void* ws, std::size_t bytes,
               Tensor* topk) {
  if (given.present()) {
    *topk = given;
    return Status::Ok();
  }
  const std::size_t need = static_cast<std::size_t>(heads) * static_cast<std::size_t>(T) * k * sizeof(std::int32_t);
  if (need > 0 && (ws == nullptr || bytes < need))
    return Status::InvalidArgument("workspace: needs " + std::to_string(need) +
                                   " bytes for the selection when no topk output is given, got " +
                                   std::to_string(ws == nullptr ? 0 : bytes));
  *topk = make_tensor(ws, DType::kInt32, {heads, T, k}, device);
  return Status::Ok();
}

}  // namespace

// ------------------------------------------------------------------------------------------------------ prefill
struct MsaPrefill::Impl {
  bool planned = false;
  MsaPrefillPlanArgs plan;
};

MsaPrefill::MsaPrefill() : impl_(new Impl) {}
MsaPrefill::~MsaPrefill() = default;
MsaPrefill::MsaPrefill(MsaPrefill&&) noexcept = default;
MsaPrefill& MsaPrefill::operator=(MsaPrefill&&) noexcept = default;

Status MsaPrefill::plan(const MsaPrefillPlanArgs& a) {
  impl_->planned = false;
  MSA_RETURN_IF_ERROR(check_common(a.num_q_heads, a.num_kv_heads, a.topk, a.sm_scale));
  if (a.total_q < 0) return Status::InvalidArgument("total_q: must be >= 0, got " + std::to_string(a.total_q));
  MSA_RETURN_IF_ERROR(detail::check_batch_tensors(&a.cu_seqlens_q, a.seq_lens_k, a.page_table));
  MSA_RETURN_IF_ERROR(detail::check_same_device(
      {{"cu_seqlens_q", &a.cu_seqlens_q}, {"seq_lens_k", &a.seq_lens_k}, {"page_table", &a.page_table}}));
  if (a.cu_seqlens_q.device.is_cuda()) return cuda_not_yet("MsaPrefill::plan");
  detail::BatchInfo batch;
  MSA_RETURN_IF_ERROR(detail::read_batch(&a.cu_seqlens_q, 0, a.seq_lens_k, a.total_q, &batch));
  impl_->plan = a;
  impl_->planned = true;
  return Status::Ok();
}

std::size_t MsaPrefill::workspace_bytes() const {
  const MsaPrefillPlanArgs& p = impl_->plan;
  return impl_->planned ? static_cast<std::size_t>(p.num_kv_heads) * static_cast<std::size_t>(p.total_q) * p.topk * 4 : 0;
}

Status MsaPrefill::run(const MsaPrefillRunArgs& a, void* workspace, std::size_t workspace_bytes) {
  if (!impl_->planned) return Status::InvalidArgument("run: no successful plan() before run()");
  const MsaPrefillPlanArgs& p = impl_->plan;
  // Validate the attention side first: nothing may be written if any argument is bad.
  detail::BatchInfo batch;
  MSA_RETURN_IF_ERROR(detail::check_attention(a.q, a.k_cache, a.v_cache, Tensor{}, p.page_table, &p.cu_seqlens_q, 0,
                                              p.seq_lens_k, &batch));
  MSA_RETURN_IF_ERROR(detail::check_dim(a.q, "q", 0, p.total_q, "the planned total_q"));
  MSA_RETURN_IF_ERROR(detail::check_dim(a.q, "q", 1, p.num_q_heads, "the planned num_q_heads"));
  MSA_RETURN_IF_ERROR(detail::check_dim(a.k_cache, "k_cache", 1, p.num_kv_heads, "the planned num_kv_heads"));
  MSA_RETURN_IF_ERROR(detail::check_attention_outputs(a.out, a.lse, p.total_q, p.num_q_heads, false));
  Tensor topk;
  MSA_RETURN_IF_ERROR(topk_of(a.topk, p.num_kv_heads, p.total_q, p.topk, a.q.device, workspace, workspace_bytes, &topk));
  MSA_RETURN_IF_ERROR(detail::check_dim(topk, "topk", 2, p.topk, "the planned topk"));

  IndexPrefillArgs sel{a.index_q, a.index_k_cache, p.page_table, p.cu_seqlens_q, p.seq_lens_k, topk};
  MSA_RETURN_IF_ERROR(index_select_prefill(sel));
  SparsePrefillAttention attn;
  MSA_RETURN_IF_ERROR(attn.plan({topk, p.cu_seqlens_q, p.seq_lens_k, p.page_table, p.num_q_heads, p.num_kv_heads,
                                 p.sm_scale}));
  return attn.run({a.q, a.k_cache, a.v_cache, a.out, a.lse});
}

// ------------------------------------------------------------------------------------------------------- decode
struct MsaDecode::Impl {
  bool planned = false;
  MsaDecodePlanArgs plan;
  SparseDecodeAttention attn;  // planned once from the same capacities; run() only runs it
};

MsaDecode::MsaDecode() : impl_(new Impl) {}
MsaDecode::~MsaDecode() = default;
MsaDecode::MsaDecode(MsaDecode&&) noexcept = default;
MsaDecode& MsaDecode::operator=(MsaDecode&&) noexcept = default;

Status MsaDecode::plan(const MsaDecodePlanArgs& a) {
  impl_->planned = false;
  const Status st = impl_->attn.plan(a);  // validates every field before it looks at the device
  if (st.code() == StatusCode::kNotImplemented && a.device.is_cuda()) return cuda_not_yet("MsaDecode::plan");
  MSA_RETURN_IF_ERROR(st);
  impl_->plan = a;
  impl_->planned = true;
  return Status::Ok();
}

std::size_t MsaDecode::workspace_bytes() const {
  const MsaDecodePlanArgs& p = impl_->plan;
  return impl_->planned ? static_cast<std::size_t>(p.num_kv_heads) * p.batch_size * p.queries_per_request * p.topk * 4
                        : 0;
}

Status MsaDecode::run(const MsaDecodeRunArgs& a, void* workspace, std::size_t workspace_bytes) {
  if (!impl_->planned) return Status::InvalidArgument("run: no successful plan() before run()");
  const MsaDecodePlanArgs& p = impl_->plan;
  if (a.seq_lens_k.present() && a.seq_lens_k.ndim == 1 && a.seq_lens_k.shape[0] > p.batch_size)
    return Status::InvalidArgument("seq_lens_k: batch " + std::to_string(a.seq_lens_k.shape[0]) +
                                   " exceeds the planned batch_size " + std::to_string(p.batch_size));
  detail::BatchInfo batch;
  MSA_RETURN_IF_ERROR(detail::check_attention(a.q, a.k_cache, a.v_cache, Tensor{}, a.page_table, nullptr,
                                              p.queries_per_request, a.seq_lens_k, &batch));
  MSA_RETURN_IF_ERROR(detail::check_dim(a.q, "q", 1, p.num_q_heads, "the planned num_q_heads"));
  MSA_RETURN_IF_ERROR(detail::check_dim(a.k_cache, "k_cache", 1, p.num_kv_heads, "the planned num_kv_heads"));
  MSA_RETURN_IF_ERROR(detail::check_attention_outputs(a.out, a.lse, a.q.shape[0], p.num_q_heads, false));
  if (a.q.device.type != p.device.type) return Status::InvalidArgument("q: on a different device type than the plan's");
  Tensor topk;
  MSA_RETURN_IF_ERROR(topk_of(a.topk, p.num_kv_heads, a.q.shape[0], p.topk, a.q.device, workspace, workspace_bytes, &topk));
  MSA_RETURN_IF_ERROR(detail::check_dim(topk, "topk", 2, p.topk, "the planned topk"));

  IndexDecodeArgs sel{a.index_q, a.index_k_cache, a.page_table, a.seq_lens_k, p.queries_per_request, topk};
  MSA_RETURN_IF_ERROR(index_select_decode(sel));
  return impl_->attn.run({a.q, a.k_cache, a.v_cache, topk, a.page_table, a.seq_lens_k, a.out, a.lse});
}

}  // namespace msa
