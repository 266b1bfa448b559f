// layer.cpp — layer-level ops (msa/layer.h): index selection then sparse attention in one plan/run pair. Every
// run argument is validated before anything is written (the selection is only computed once the attention's
// inputs and outputs are known to be valid), so a bad input leaves the outputs untouched.
#include "msa/layer.h"

#include <algorithm>
#include <string>

#include "api/attention_cuda.h"
#include "api/decode_handoff.h"
#include "api/device.h"
#include "api/op_checks.h"
#include "kernels/decode/launch.h"
#include "kernels/sm90/indexer/launch.h"
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

std::size_t align256(std::size_t x) { return (x + 255) / 256 * 256; }

// A layer's CUDA workspace: at least `need` bytes of device memory, non-null and 256-byte aligned.
Status check_layer_workspace(const void* workspace, std::size_t have, std::size_t need) {
  if (have < need || workspace == nullptr || reinterpret_cast<std::uintptr_t>(workspace) % 256 != 0)
    return Status::InvalidArgument("workspace: needs " + std::to_string(need) +
                                   " bytes of 256-byte aligned device memory (workspace_bytes() after plan), got " +
                                   std::to_string(workspace == nullptr ? 0 : have));
  return Status::Ok();
}

std::size_t topk_bytes(int heads, std::int64_t T, int k) {
  return static_cast<std::size_t>(heads) * static_cast<std::size_t>(T) * static_cast<std::size_t>(k) * 4;
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
  // CUDA: the attention plan (its topk descriptor is a placeholder of the selection's shape) and the workspace
  // layout [selection | attention].
  std::unique_ptr<detail::PrefillCudaPlan> cuda;
  std::size_t attn_offset = 0;
};

MsaPrefill::MsaPrefill() : impl_(new Impl) {}
MsaPrefill::~MsaPrefill() = default;
MsaPrefill::MsaPrefill(MsaPrefill&&) noexcept = default;
MsaPrefill& MsaPrefill::operator=(MsaPrefill&&) noexcept = default;

Status MsaPrefill::plan(const MsaPrefillPlanArgs& a) {
  impl_->planned = false;
  MSA_RETURN_IF_ERROR(check_common(a.num_q_heads, a.num_kv_heads, a.topk, a.sm_scale));
  if (a.total_q < 0) return Status::InvalidArgument("total_q: must be >= 0, got " + std::to_string(a.total_q));
  MSA_RETURN_IF_ERROR(detail::check_prefill_schedule(a.schedule));
  MSA_RETURN_IF_ERROR(detail::check_batch_tensors(&a.cu_seqlens_q, a.seq_lens_k, a.page_table));
  MSA_RETURN_IF_ERROR(detail::check_same_device(
      {{"cu_seqlens_q", &a.cu_seqlens_q}, {"seq_lens_k", &a.seq_lens_k}, {"page_table", &a.page_table}}));
  impl_->cuda.reset();
  if (a.cu_seqlens_q.device.is_cuda()) {
    if (!detail::cuda_built()) return detail::cuda_path_missing("MsaPrefill::plan");
    SparsePrefillPlanArgs pa;
    pa.topk = make_tensor(nullptr, DType::kInt32, {a.num_kv_heads, a.total_q, a.topk}, a.cu_seqlens_q.device);
    pa.cu_seqlens_q = a.cu_seqlens_q;
    pa.seq_lens_k = a.seq_lens_k;
    pa.page_table = a.page_table;
    pa.num_q_heads = a.num_q_heads;
    pa.num_kv_heads = a.num_kv_heads;
    pa.sm_scale = a.sm_scale;
    pa.schedule = a.schedule;
    auto cuda = std::make_unique<detail::PrefillCudaPlan>();
    MSA_RETURN_IF_ERROR(detail::plan_prefill_cuda(pa, a.max_chunk_tokens, cuda.get()));
    impl_->attn_offset = align256(topk_bytes(a.num_kv_heads, a.total_q, a.topk));
    impl_->cuda = std::move(cuda);
  } else {
    detail::BatchInfo batch;
    MSA_RETURN_IF_ERROR(detail::read_batch(&a.cu_seqlens_q, 0, a.seq_lens_k, a.total_q, &batch));
  }
  impl_->plan = a;
  impl_->planned = true;
  return Status::Ok();
}

std::size_t MsaPrefill::workspace_bytes() const {
  const MsaPrefillPlanArgs& p = impl_->plan;
  if (!impl_->planned) return 0;
  if (impl_->cuda) return impl_->attn_offset + impl_->cuda->workspace_bytes;
  return topk_bytes(p.num_kv_heads, p.total_q, p.topk);
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
  if (impl_->cuda) {
    const detail::PrefillCudaPlan& plan = *impl_->cuda;
    MSA_RETURN_IF_ERROR(detail::check_prefill_pages(plan, a.k_cache.shape[0]));
    MSA_RETURN_IF_ERROR(detail::check_same_device({{"q", &a.q}, {"index_q", &a.index_q}, {"cu_seqlens_q", &p.cu_seqlens_q}}));
    MSA_RETURN_IF_ERROR(check_layer_workspace(workspace, workspace_bytes, this->workspace_bytes()));
    MSA_RETURN_IF_ERROR(index_select_prefill(sel));
    auto* attn_ws = static_cast<unsigned char*>(workspace) + impl_->attn_offset;
    return detail::run_prefill_cuda(plan, topk, {a.q, a.k_cache, a.v_cache, a.out, a.lse}, attn_ws,
                                    workspace_bytes - impl_->attn_offset);
  }
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
  // CUDA workspace layout: [selection | split-selection lists | handoff | attention partials].
  std::size_t index_offset = 0, index_bytes = 0, handoff_offset = 0, attn_offset = 0, total_bytes = 0;
};

MsaDecode::MsaDecode() : impl_(new Impl) {}
MsaDecode::~MsaDecode() = default;
MsaDecode::MsaDecode(MsaDecode&&) noexcept = default;
MsaDecode& MsaDecode::operator=(MsaDecode&&) noexcept = default;

Status MsaDecode::plan(const MsaDecodePlanArgs& a) {
  impl_->planned = false;
  MSA_RETURN_IF_ERROR(impl_->attn.plan(a));  // validates every field before it looks at the device
  const std::int64_t T = static_cast<std::int64_t>(a.batch_size) * a.queries_per_request;
  impl_->total_bytes = topk_bytes(a.num_kv_heads, T, a.topk);
  if (a.device.is_cuda()) {
    // The split selection's lists, bounded over every page-table width (the split count saturates at the GPU's
    // size), so one plan serves any cache length, and over every batch up to the capacity: fewer requests take
    // more splits each, so a smaller batch can need more lists than the full one. Its split count only falls as
    // the batch grows, and a batch of one split needs no lists, so the walk stops there.
    kernels::IndexSelectLaunch l{};
    l.queries_per_request = a.queries_per_request;
    l.num_heads = a.num_kv_heads;
    l.k = a.topk;
    l.max_pages = 1 << 30;
    l.split_pages = 1;
    l.device = a.device.index;
    impl_->index_bytes = 0;
    for (int b = 1; b <= a.batch_size; ++b) {
      l.num_requests = b;
      l.total_q = static_cast<std::int64_t>(b) * a.queries_per_request;
      std::size_t bytes = 0;
      MSA_RETURN_IF_ERROR(kernels::index_select_workspace_bytes_sm90(l, &bytes));
      if (bytes == 0) break;
      impl_->index_bytes = std::max(impl_->index_bytes, bytes);
    }
    impl_->index_offset = align256(impl_->total_bytes);
    // The merge's handoff to the fused attention (kernels/common/handoff.cuh): one 8-byte entry per topk slot.
    impl_->handoff_offset = impl_->index_offset + align256(impl_->index_bytes);
    impl_->attn_offset = impl_->handoff_offset + align256(static_cast<std::size_t>(T) * a.num_kv_heads * a.topk * 8);
    impl_->total_bytes = impl_->attn_offset + impl_->attn.workspace_bytes();
  }
  impl_->plan = a;
  impl_->planned = true;
  return Status::Ok();
}

std::size_t MsaDecode::workspace_bytes() const { return impl_->planned ? impl_->total_bytes : 0; }

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
  const SparseDecodeRunArgs attn{a.q, a.k_cache, a.v_cache, topk, a.page_table, a.seq_lens_k, a.out, a.lse};
  if (p.device.is_cuda()) {
    MSA_RETURN_IF_ERROR(check_layer_workspace(workspace, workspace_bytes, impl_->total_bytes));
    auto* ws = static_cast<unsigned char*>(workspace);
    // A merging selection hands each slot's (id, page) to the fused attention directly. Only when that kernel runs:
    // the other kernels read topk after their wait, and the merge would read pages for nothing. The same rule as
    // SparseDecodeAttention's choice (shapes and the device only, so a captured graph stays valid).
    const bool fused = kernels::decode_kernel_for(a.q.shape[0] * p.num_kv_heads, p.topk,
                                                  detail::cuda_sm_count(p.device.index)) ==
                       kernels::DecodeKernel::kFusedCluster;
    void* handoff = fused && detail::index_select_decode_merges(sel) ? ws + impl_->handoff_offset : nullptr;
    MSA_RETURN_IF_ERROR(handoff != nullptr
                            ? detail::index_select_decode_handoff(sel, ws + impl_->index_offset, impl_->index_bytes, handoff)
                            : index_select_decode(sel, ws + impl_->index_offset, impl_->index_bytes));
    return impl_->attn.run_after_selection(attn, ws + impl_->attn_offset, workspace_bytes - impl_->attn_offset, handoff);
  }
  MSA_RETURN_IF_ERROR(index_select_decode(sel));
  return impl_->attn.run(attn);
}

}  // namespace msa
