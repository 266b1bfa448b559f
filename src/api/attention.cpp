// attention.cpp — public main-branch ops: sparse prefill and decode (plan/run) and combine.
//
// plan() validates and keeps the metadata; run() validates the tensors it is given against the plan and dispatches
// by device. On the CPU both run the reference implementation.
#include "msa/attention.h"

#include <string>

#include "api/attention_cuda.h"
#include "api/device.h"
#include "api/op_checks.h"
#include "kernels/combine/launch.h"
#include "reference/reference_impl.h"

namespace msa {

// ---------------------------------------------------------------------------------------------- sparse prefill
struct SparsePrefillAttention::Impl {
  bool planned = false;
  SparsePrefillPlanArgs plan;
  detail::BatchInfo batch;                        // CPU plans (a CUDA plan keeps its own copy)
  std::unique_ptr<detail::PrefillCudaPlan> cuda;  // CUDA descriptors only
};

SparsePrefillAttention::SparsePrefillAttention() : impl_(new Impl) {}
SparsePrefillAttention::~SparsePrefillAttention() = default;
SparsePrefillAttention::SparsePrefillAttention(SparsePrefillAttention&&) noexcept = default;
SparsePrefillAttention& SparsePrefillAttention::operator=(SparsePrefillAttention&&) noexcept = default;

Status SparsePrefillAttention::plan(const SparsePrefillPlanArgs& a) {
  impl_->planned = false;
  MSA_RETURN_IF_ERROR(detail::check_heads(a.num_q_heads, a.num_kv_heads));
  MSA_RETURN_IF_ERROR(detail::check_sm_scale(a.sm_scale));
  MSA_RETURN_IF_ERROR(detail::check_prefill_schedule(a.schedule));
  MSA_RETURN_IF_ERROR(detail::check_batch_tensors(&a.cu_seqlens_q, a.seq_lens_k, a.page_table));
  MSA_RETURN_IF_ERROR(detail::check_topk_tensor(a.topk, a.num_kv_heads, -1));
  MSA_RETURN_IF_ERROR(detail::check_same_device({{"topk", &a.topk},
                                                 {"cu_seqlens_q", &a.cu_seqlens_q},
                                                 {"seq_lens_k", &a.seq_lens_k},
                                                 {"page_table", &a.page_table}}));
  if (a.topk.device.is_cuda()) {
    if (!detail::cuda_built()) return detail::cuda_path_missing("SparsePrefillAttention::plan");
    auto cuda = std::make_unique<detail::PrefillCudaPlan>();
    MSA_RETURN_IF_ERROR(detail::plan_prefill_cuda(a, a.max_chunk_tokens, cuda.get()));
    impl_->plan = a;
    impl_->cuda = std::move(cuda);
    impl_->planned = true;
    return Status::Ok();
  }
  impl_->cuda.reset();
  detail::BatchInfo batch;
  MSA_RETURN_IF_ERROR(detail::read_batch(&a.cu_seqlens_q, 0, a.seq_lens_k, a.topk.shape[1], &batch));
  MSA_RETURN_IF_ERROR(detail::check_topk_rows(a.topk, batch));
  impl_->plan = a;
  impl_->batch = std::move(batch);
  impl_->planned = true;
  return Status::Ok();
}

std::size_t SparsePrefillAttention::workspace_bytes() const {
  return impl_->planned && impl_->cuda ? impl_->cuda->workspace_bytes : 0;
}

Status SparsePrefillAttention::run(const SparsePrefillRunArgs& a, void* workspace, std::size_t workspace_bytes) {
  if (!impl_->planned) return Status::InvalidArgument("run: no successful plan() before run()");
  const SparsePrefillPlanArgs& p = impl_->plan;
  MSA_RETURN_IF_ERROR(detail::check_qkv_tensors(a.q, a.k_cache, a.v_cache));
  MSA_RETURN_IF_ERROR(detail::check_dim(a.q, "q", 0, p.topk.shape[1], "the planned number of query tokens T"));
  MSA_RETURN_IF_ERROR(detail::check_dim(a.q, "q", 1, p.num_q_heads, "the planned num_q_heads"));
  MSA_RETURN_IF_ERROR(detail::check_dim(a.k_cache, "k_cache", 1, p.num_kv_heads, "the planned num_kv_heads"));
  MSA_RETURN_IF_ERROR(detail::check_attention_outputs(a.out, a.lse, p.topk.shape[1], p.num_q_heads, false));
  MSA_RETURN_IF_ERROR(detail::check_same_device({{"topk (planned)", &p.topk},
                                                 {"q", &a.q},
                                                 {"k_cache", &a.k_cache},
                                                 {"v_cache", &a.v_cache},
                                                 {"out", &a.out},
                                                 {"lse", &a.lse}}));
  if (impl_->cuda) {
    MSA_RETURN_IF_ERROR(detail::check_prefill_pages(*impl_->cuda, a.k_cache.shape[0]));
    return detail::run_prefill_cuda(*impl_->cuda, p.topk, a, workspace, workspace_bytes);
  }
  MSA_RETURN_IF_ERROR(detail::check_page_table(p.page_table, impl_->batch, a.k_cache.shape[0]));
  reference::AttentionOptions options;
  options.sm_scale = p.sm_scale;
  ref::AttnOutputs io;
  io.out = a.out;
  io.lse = a.lse;
  ref::attention(ref::AttnMode::kSparse, a.q, a.k_cache, a.v_cache, p.topk, p.page_table, impl_->batch, io, options);
  return Status::Ok();
}

// ----------------------------------------------------------------------------------------------- sparse decode
struct SparseDecodeAttention::Impl {
  bool planned = false;
  SparseDecodePlanArgs plan;
  std::size_t workspace_bytes = 0;  // CUDA plans
};

SparseDecodeAttention::SparseDecodeAttention() : impl_(new Impl) {}
SparseDecodeAttention::~SparseDecodeAttention() = default;
SparseDecodeAttention::SparseDecodeAttention(SparseDecodeAttention&&) noexcept = default;
SparseDecodeAttention& SparseDecodeAttention::operator=(SparseDecodeAttention&&) noexcept = default;

Status SparseDecodeAttention::plan(const SparseDecodePlanArgs& a) {
  impl_->planned = false;
  if (a.batch_size < 1) return Status::InvalidArgument("batch_size: must be >= 1, got " + std::to_string(a.batch_size));
  if (a.queries_per_request < 1 || a.queries_per_request > kMaxDecodeQueries)
    return Status::InvalidArgument("queries_per_request: must be in [1, " + std::to_string(kMaxDecodeQueries) +
                                   "], got " + std::to_string(a.queries_per_request));
  if (a.topk < 1 || a.topk > kMaxTopK)
    return Status::InvalidArgument("topk: must be in [1, " + std::to_string(kMaxTopK) + "], got " +
                                   std::to_string(a.topk));
  MSA_RETURN_IF_ERROR(detail::check_heads(a.num_q_heads, a.num_kv_heads));
  MSA_RETURN_IF_ERROR(detail::check_sm_scale(a.sm_scale));
  impl_->workspace_bytes = 0;
  if (a.device.is_cuda()) {
    if (!detail::cuda_built()) return detail::cuda_path_missing("SparseDecodeAttention::plan");
    MSA_RETURN_IF_ERROR(detail::plan_decode_cuda(a, &impl_->workspace_bytes));
  }
  impl_->plan = a;
  impl_->planned = true;
  return Status::Ok();
}

std::size_t SparseDecodeAttention::workspace_bytes() const { return impl_->planned ? impl_->workspace_bytes : 0; }

Status SparseDecodeAttention::run(const SparseDecodeRunArgs& a, void* workspace, std::size_t workspace_bytes) {
  return run_impl(a, workspace, workspace_bytes, false, nullptr);
}

Status SparseDecodeAttention::run_after_selection(const SparseDecodeRunArgs& a, void* workspace,
                                                  std::size_t workspace_bytes, const void* handoff) {
  return run_impl(a, workspace, workspace_bytes, true, handoff);
}

Status SparseDecodeAttention::run_impl(const SparseDecodeRunArgs& a, void* workspace, std::size_t workspace_bytes,
                                       bool after_selection, const void* handoff) {
  if (!impl_->planned) return Status::InvalidArgument("run: no successful plan() before run()");
  const SparseDecodePlanArgs& p = impl_->plan;
  detail::BatchInfo batch;
  if (a.seq_lens_k.present() && a.seq_lens_k.ndim == 1 && a.seq_lens_k.shape[0] > p.batch_size)
    return Status::InvalidArgument("seq_lens_k: batch " + std::to_string(a.seq_lens_k.shape[0]) +
                                   " exceeds the planned batch_size " + std::to_string(p.batch_size));
  if (!a.topk.present()) return Status::InvalidArgument("topk: required tensor is missing (expected [Hkv, B * Q, k])");
  MSA_RETURN_IF_ERROR(detail::check_attention(a.q, a.k_cache, a.v_cache, a.topk, a.page_table, nullptr,
                                              p.queries_per_request, a.seq_lens_k, &batch));
  MSA_RETURN_IF_ERROR(detail::check_dim(a.q, "q", 1, p.num_q_heads, "the planned num_q_heads"));
  MSA_RETURN_IF_ERROR(detail::check_dim(a.k_cache, "k_cache", 1, p.num_kv_heads, "the planned num_kv_heads"));
  MSA_RETURN_IF_ERROR(detail::check_dim(a.topk, "topk", 2, p.topk, "the planned topk"));
  MSA_RETURN_IF_ERROR(detail::check_attention_outputs(a.out, a.lse, a.q.shape[0], p.num_q_heads, false));
  MSA_RETURN_IF_ERROR(detail::check_same_device({{"q", &a.q}, {"out", &a.out}, {"lse", &a.lse}}));
  if (a.q.device.type != p.device.type || (p.device.is_cuda() && a.q.device.index != p.device.index))
    return Status::InvalidArgument("q: on a different device than the plan's device");
  if (p.device.is_cuda()) {
    if (a.q.shape[0] > static_cast<std::int64_t>(p.batch_size) * p.queries_per_request)
      return Status::InvalidArgument("q: " + std::to_string(a.q.shape[0]) + " query tokens exceed the planned " +
                                     "batch_size * queries_per_request");
    return detail::run_decode_cuda(p, a, workspace, workspace_bytes, after_selection, handoff);
  }
  reference::AttentionOptions options;
  options.sm_scale = p.sm_scale;
  ref::AttnOutputs io;
  io.out = a.out;
  io.lse = a.lse;
  ref::attention(ref::AttnMode::kSparse, a.q, a.k_cache, a.v_cache, a.topk, a.page_table, batch, io, options);
  return Status::Ok();
}

// ------------------------------------------------------------------------------------------------------ combine
Status combine(const CombineArgs& a) {
  MSA_RETURN_IF_ERROR(detail::check_tensor(a.partial_out, "partial_out", "[S, T, Hq, 128]", 4,
                                           {DType::kBF16, DType::kFP32}));
  MSA_RETURN_IF_ERROR(detail::check_dim(a.partial_out, "partial_out", 3, kHeadDim, "the head dim"));
  MSA_RETURN_IF_ERROR(detail::check_bulk_operand(a.partial_out, "partial_out"));
  const std::int64_t S = a.partial_out.shape[0], T = a.partial_out.shape[1], Hq = a.partial_out.shape[2];
  MSA_RETURN_IF_ERROR(detail::check_tensor(a.partial_lse, "partial_lse", "[S, T, Hq]", 3, {DType::kFP32}));
  const std::int64_t want[3] = {S, T, Hq};
  for (int d = 0; d < 3; ++d)
    MSA_RETURN_IF_ERROR(detail::check_dim(a.partial_lse, "partial_lse", d, want[d], "partial_out's [S, T, Hq]"));
  MSA_RETURN_IF_ERROR(detail::check_tensor(a.split_counts, "split_counts", "[T, Hkv]", 2, {DType::kInt32}));
  MSA_RETURN_IF_ERROR(detail::check_dim(a.split_counts, "split_counts", 0, T, "the number of query tokens T"));
  MSA_RETURN_IF_ERROR(detail::check_heads(Hq, a.split_counts.shape[1]));
  MSA_RETURN_IF_ERROR(detail::check_attention_outputs(a.out, a.lse, T, Hq, false));
  MSA_RETURN_IF_ERROR(detail::check_same_device({{"partial_out", &a.partial_out},
                                                 {"partial_lse", &a.partial_lse},
                                                 {"split_counts", &a.split_counts},
                                                 {"out", &a.out},
                                                 {"lse", &a.lse}}));
  if (a.out.device.is_cuda()) {
    kernels::CombineLaunch l{};
    l.partial_out = a.partial_out.data;
    l.partial_fp32 = a.partial_out.dtype == DType::kFP32;
    l.po_stride_s = a.partial_out.stride[0];
    l.po_stride_t = a.partial_out.stride[1];
    l.po_stride_h = a.partial_out.stride[2];
    l.partial_lse = static_cast<const float*>(a.partial_lse.data);
    l.pl_stride_s = a.partial_lse.stride[0];
    l.pl_stride_t = a.partial_lse.stride[1];
    l.pl_stride_h = a.partial_lse.stride[2];
    l.split_counts = static_cast<const std::int32_t*>(a.split_counts.data);
    l.sc_stride_t = a.split_counts.stride[0];
    l.sc_stride_g = a.split_counts.stride[1];
    l.out = a.out.data;
    l.out_stride_t = a.out.stride[0];
    l.out_stride_h = a.out.stride[1];
    l.lse = a.lse.present() ? static_cast<float*>(a.lse.data) : nullptr;
    l.lse_stride_t = a.lse.present() ? a.lse.stride[0] : 0;
    l.lse_stride_h = a.lse.present() ? a.lse.stride[1] : 0;
    l.total_q = T;
    l.num_q_heads = static_cast<int>(Hq);
    l.group = static_cast<int>(Hq / a.split_counts.shape[1]);
    l.num_splits = static_cast<int>(S);
    l.device = a.out.device.index;
    l.stream = a.out.device.stream;
    return kernels::launch_combine(l);  // split_counts contents are trusted on the device (clamped to [0, S])
  }
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t g = 0; g < a.split_counts.shape[1]; ++g) {
      const std::int64_t n = detail::i32_at(a.split_counts, t, g);
      if (n < 0 || n > S)
        return Status::InvalidArgument("split_counts[" + std::to_string(t) + ", " + std::to_string(g) + "]: " +
                                       std::to_string(n) + " is outside [0, S = " + std::to_string(S) + "]");
    }
  ref::combine(a);
  return Status::Ok();
}

}  // namespace msa
