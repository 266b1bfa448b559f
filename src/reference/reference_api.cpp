// reference_api.cpp — the public entry points of msa/reference.h: validate, then run the CPU implementation.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "api/op_checks.h"
#include "msa/params.h"
#include "msa/reference.h"
#include "reference/numeric.h"
#include "reference/reference_impl.h"

namespace msa {
namespace reference {
namespace {

Status host_only(const Tensor& t, const char* name) {
  if (t.present() && t.device.is_cuda())
    return Status::InvalidArgument(std::string(name) + ": the reference runs on the host and needs CPU descriptors");
  return Status::Ok();
}

Status check_reference_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& topk,
                                 const Tensor& page_table, const Tensor& cu_seqlens_q, const Tensor& seq_lens_k,
                                 const AttentionOptions& options, detail::BatchInfo* batch) {
  MSA_RETURN_IF_ERROR(detail::check_sm_scale(options.sm_scale));
  MSA_RETURN_IF_ERROR(host_only(q, "q"));
  return detail::check_attention(q, k_cache, v_cache, topk, page_table, &cu_seqlens_q, 0, seq_lens_k, batch);
}

// Dense (topk absent) or sparse attention into out / lse.
Status attention_to_outputs(ref::AttnMode mode, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                            const Tensor& topk, const Tensor& page_table, const Tensor& cu_seqlens_q,
                            const Tensor& seq_lens_k, const Tensor& out, const Tensor& lse,
                            const AttentionOptions& options) {
  detail::BatchInfo batch;
  MSA_RETURN_IF_ERROR(
      check_reference_attention(q, k_cache, v_cache, topk, page_table, cu_seqlens_q, seq_lens_k, options, &batch));
  MSA_RETURN_IF_ERROR(detail::check_attention_outputs(out, lse, q.shape[0], q.shape[1], /*any_float_out=*/true));
  MSA_RETURN_IF_ERROR(detail::check_same_device({{"q", &q}, {"out", &out}, {"lse", &lse}}));
  ref::AttnOutputs io;
  io.out = out;
  io.lse = lse;
  ref::attention(mode, q, k_cache, v_cache, topk, page_table, batch, io, options);
  return Status::Ok();
}

}  // namespace

Status dense_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& page_table,
                       const Tensor& cu_seqlens_q, const Tensor& seq_lens_k, const Tensor& out, const Tensor& lse,
                       const AttentionOptions& options) {
  return attention_to_outputs(ref::AttnMode::kDense, q, k_cache, v_cache, Tensor{}, page_table, cu_seqlens_q,
                              seq_lens_k, out, lse, options);
}

Status sparse_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& topk,
                        const Tensor& page_table, const Tensor& cu_seqlens_q, const Tensor& seq_lens_k,
                        const Tensor& out, const Tensor& lse, const AttentionOptions& options) {
  if (!topk.present()) return Status::InvalidArgument("topk: required tensor is missing (expected [Hkv, T, k])");
  return attention_to_outputs(ref::AttnMode::kSparse, q, k_cache, v_cache, topk, page_table, cu_seqlens_q,
                              seq_lens_k, out, lse, options);
}

Status sparse_attention_partials(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& topk,
                                 const Tensor& page_table, const Tensor& cu_seqlens_q, const Tensor& seq_lens_k,
                                 const Tensor& partial_out, const Tensor& partial_lse, const Tensor& split_counts,
                                 const AttentionOptions& options) {
  if (!topk.present()) return Status::InvalidArgument("topk: required tensor is missing (expected [Hkv, T, k])");
  detail::BatchInfo batch;
  MSA_RETURN_IF_ERROR(
      check_reference_attention(q, k_cache, v_cache, topk, page_table, cu_seqlens_q, seq_lens_k, options, &batch));
  const std::int64_t T = q.shape[0], Hq = q.shape[1], k = topk.shape[2];
  MSA_RETURN_IF_ERROR(detail::check_tensor(partial_out, "partial_out", "[k, T, Hq, 128]", 4,
                                           {DType::kBF16, DType::kFP32}));
  MSA_RETURN_IF_ERROR(detail::check_tensor(partial_lse, "partial_lse", "[k, T, Hq]", 3, {DType::kFP32}));
  MSA_RETURN_IF_ERROR(detail::check_tensor(split_counts, "split_counts", "[T, Hkv]", 2, {DType::kInt32}));
  const std::int64_t want_po[4] = {k, T, Hq, kHeadDim}, want_pl[3] = {k, T, Hq};
  for (int d = 0; d < 4; ++d)
    MSA_RETURN_IF_ERROR(detail::check_dim(partial_out, "partial_out", d, want_po[d], "[k, T, Hq, 128]"));
  for (int d = 0; d < 3; ++d)
    MSA_RETURN_IF_ERROR(detail::check_dim(partial_lse, "partial_lse", d, want_pl[d], "[k, T, Hq]"));
  MSA_RETURN_IF_ERROR(detail::check_dim(split_counts, "split_counts", 0, T, "T"));
  MSA_RETURN_IF_ERROR(detail::check_dim(split_counts, "split_counts", 1, k_cache.shape[1], "Hkv"));
  MSA_RETURN_IF_ERROR(detail::check_bulk_operand(partial_out, "partial_out"));
  MSA_RETURN_IF_ERROR(detail::check_same_device(
      {{"q", &q}, {"partial_out", &partial_out}, {"partial_lse", &partial_lse}, {"split_counts", &split_counts}}));
  ref::AttnOutputs io;
  io.partial_out = partial_out;
  io.partial_lse = partial_lse;
  io.split_counts = split_counts;
  ref::attention(ref::AttnMode::kPartials, q, k_cache, v_cache, topk, page_table, batch, io, options);
  return Status::Ok();
}

Status index_block_scores(const Tensor& index_q, const Tensor& index_k_cache, const Tensor& page_table,
                          const Tensor& cu_seqlens_q, const Tensor& seq_lens_k, std::int64_t token, int head,
                          std::vector<double>* scores) {
  if (scores == nullptr) return Status::InvalidArgument("scores: output pointer is null");
  MSA_RETURN_IF_ERROR(host_only(index_q, "index_q"));
  MSA_RETURN_IF_ERROR(detail::check_index_tensors(index_q, index_k_cache));
  MSA_RETURN_IF_ERROR(detail::check_batch_tensors(&cu_seqlens_q, seq_lens_k, page_table));
  MSA_RETURN_IF_ERROR(detail::check_same_device({{"index_q", &index_q}, {"index_k_cache", &index_k_cache},
                                                 {"page_table", &page_table}, {"cu_seqlens_q", &cu_seqlens_q},
                                                 {"seq_lens_k", &seq_lens_k}}));
  detail::BatchInfo batch;
  MSA_RETURN_IF_ERROR(detail::read_batch(&cu_seqlens_q, 0, seq_lens_k, index_q.shape[0], &batch));
  MSA_RETURN_IF_ERROR(detail::check_page_table(page_table, batch, index_k_cache.shape[0]));
  if (token < 0 || token >= index_q.shape[0])
    return Status::InvalidArgument("token: " + std::to_string(token) + " is outside [0, T)");
  if (head < 0 || head >= index_q.shape[1])
    return Status::InvalidArgument("head: " + std::to_string(head) + " is outside [0, H_idx)");
  std::int64_t b = 0;
  while (batch.q_start[b + 1] <= token) ++b;
  const std::int64_t local = batch.position(b, token - batch.q_start[b]) / kBlockSize;
  std::vector<float> qf(kHeadDim), kf(kHeadDim);
  ref::load_row(index_q, token * index_q.stride[0] + head * index_q.stride[1], qf.data());
  scores->assign(static_cast<std::size_t>(local), -std::numeric_limits<double>::infinity());
  for (std::int64_t j = 0; j < local; ++j) {
    const std::int64_t page = detail::i32_at(page_table, b, j);
    double m = -std::numeric_limits<double>::infinity();
    for (std::int64_t t = 0; t < kPageSize; ++t) {
      ref::load_row(index_k_cache, page * index_k_cache.stride[0] + t * index_k_cache.stride[1], kf.data());
      const double s = ref::dot128<double>(qf.data(), kf.data());
      if (s > m) m = s;
    }
    (*scores)[static_cast<std::size_t>(j)] = m;
  }
  return Status::Ok();
}

}  // namespace reference
}  // namespace msa
