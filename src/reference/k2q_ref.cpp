// k2q_ref.cpp — host builder of the reverse (block -> queries) CSR and of the KV-outer work schedule.
//
// Rows are numbered level-major (block 0 of every request, then block 1, ...). Queries are appended to their rows
// while the requests' tokens are walked in ascending order, so every row lists its queries ascending. The split slot
// of (query, block) is the block's rank among the query's valid ids in ascending id order, independent of the
// order in which topk lists them. This is the byte-exact contract the device builder is tested against.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "api/op_checks.h"
#include "msa/params.h"
#include "msa/reference.h"

namespace msa {
namespace reference {

Status build_k2q_csr(const Tensor& topk, const Tensor& cu_seqlens_q, const Tensor& seq_lens_k, K2qCsr* csr) {
  if (csr == nullptr) return Status::InvalidArgument("csr: output pointer is null");
  MSA_RETURN_IF_ERROR(detail::check_topk_tensor(topk, -1, -1));
  MSA_RETURN_IF_ERROR(detail::check_tensor(seq_lens_k, "seq_lens_k", "[B]", 1, {DType::kInt32}));
  MSA_RETURN_IF_ERROR(detail::check_tensor(cu_seqlens_q, "cu_seqlens_q", "[B + 1]", 1, {DType::kInt32}));
  MSA_RETURN_IF_ERROR(detail::check_dim(cu_seqlens_q, "cu_seqlens_q", 0, seq_lens_k.shape[0] + 1, "B + 1"));
  MSA_RETURN_IF_ERROR(detail::check_same_device(
      {{"topk", &topk}, {"cu_seqlens_q", &cu_seqlens_q}, {"seq_lens_k", &seq_lens_k}}));
  if (topk.device.is_cuda()) return Status::InvalidArgument("topk: the host CSR builder needs CPU descriptors");
  detail::BatchInfo batch;
  MSA_RETURN_IF_ERROR(detail::read_batch(&cu_seqlens_q, 0, seq_lens_k, topk.shape[1], &batch));
  MSA_RETURN_IF_ERROR(detail::check_topk_rows(topk, batch));
  for (std::int64_t b = 0; b < batch.num_requests(); ++b)
    if (batch.kv_len[b] >= (1 << 24))
      return Status::InvalidArgument("seq_lens_k[" + std::to_string(b) + "]: must be < 2^24 for the packed handles");

  const std::int64_t H = topk.shape[0], T = topk.shape[1], k = topk.shape[2], B = batch.num_requests();
  K2qCsr out;
  out.num_kv_heads = static_cast<int>(H);
  out.topk = static_cast<int>(k);
  out.total_q = T;

  // Level-major row numbering.
  std::vector<std::int64_t> n_blocks(static_cast<std::size_t>(B)), row_base(static_cast<std::size_t>(B));
  std::int64_t max_blocks = 0;
  for (std::int64_t b = 0; b < B; ++b) {
    n_blocks[static_cast<std::size_t>(b)] = detail::ceil_div(batch.kv_len[b], kBlockSize);
    max_blocks = std::max(max_blocks, n_blocks[static_cast<std::size_t>(b)]);
  }
  std::vector<std::vector<std::int32_t>> row_of(static_cast<std::size_t>(B));
  for (std::int64_t b = 0; b < B; ++b) row_of[static_cast<std::size_t>(b)].assign(n_blocks[static_cast<std::size_t>(b)], -1);
  for (std::int64_t j = 0; j < max_blocks; ++j)
    for (std::int64_t b = 0; b < B; ++b)
      if (j < n_blocks[static_cast<std::size_t>(b)]) {
        row_of[static_cast<std::size_t>(b)][static_cast<std::size_t>(j)] = static_cast<std::int32_t>(out.row_batch.size());
        out.row_batch.push_back(static_cast<std::int32_t>(b));
        out.row_block.push_back(static_cast<std::int32_t>(j));
      }
  const std::int64_t R = static_cast<std::int64_t>(out.row_batch.size());
  out.total_rows = R;
  out.row_ptr.assign(static_cast<std::size_t>(H * (R + 1)), 0);
  out.q_indices.assign(static_cast<std::size_t>(H * T * k), -1);
  out.qsplit_indices.assign(static_cast<std::size_t>(H * T * k), -1);
  out.split_counts.assign(static_cast<std::size_t>(T * H), 0);

  for (std::int64_t g = 0; g < H; ++g) {
    std::vector<std::vector<std::int32_t>> rows(static_cast<std::size_t>(R));  // packed handles per row
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < batch.nq(b); ++i) {
        const std::int64_t t = batch.q_start[b] + i;
        std::vector<std::int32_t> ids;
        for (std::int64_t s = 0; s < k; ++s) {
          const std::int32_t id = detail::i32_at(topk, g, t, s);
          if (id < 0) break;  // valid ids form a prefix
          ids.push_back(id);
        }
        std::vector<std::int32_t> sorted = ids;
        std::sort(sorted.begin(), sorted.end());
        for (std::size_t slot = 0; slot < sorted.size(); ++slot) {
          const std::int32_t row = row_of[static_cast<std::size_t>(b)][static_cast<std::size_t>(sorted[slot])];
          rows[static_cast<std::size_t>(row)].push_back(static_cast<std::int32_t>(i | (static_cast<std::int64_t>(slot) << 24)));
        }
        out.split_counts[static_cast<std::size_t>(t * H + g)] = static_cast<std::int32_t>(ids.size());
      }
    std::int32_t* row_ptr = &out.row_ptr[static_cast<std::size_t>(g * (R + 1))];
    std::int64_t nnz = 0;
    for (std::int64_t r = 0; r < R; ++r) {
      row_ptr[r] = static_cast<std::int32_t>(nnz);
      for (std::int32_t handle : rows[static_cast<std::size_t>(r)]) {
        out.q_indices[static_cast<std::size_t>(g * T * k + nnz)] = handle & 0xFFFFFF;
        out.qsplit_indices[static_cast<std::size_t>(g * T * k + nnz)] = handle;
        ++nnz;
      }
    }
    row_ptr[R] = static_cast<std::int32_t>(nnz);
  }
  *csr = std::move(out);
  return Status::Ok();
}

std::vector<K2qWorkItem> build_k2q_schedule(const K2qCsr& csr, int max_q_per_item) {
  std::vector<K2qWorkItem> items;
  if (max_q_per_item < 1) return items;
  const std::int64_t R = csr.total_rows;
  for (std::int64_t g = 0; g < csr.num_kv_heads; ++g)
    for (std::int64_t r = 0; r < R; ++r) {
      const std::int32_t begin = csr.row_ptr[static_cast<std::size_t>(g * (R + 1) + r)];
      const std::int32_t end = csr.row_ptr[static_cast<std::size_t>(g * (R + 1) + r + 1)];
      for (std::int32_t q0 = begin; q0 < end; q0 += max_q_per_item)
        items.push_back({static_cast<std::int32_t>(g), static_cast<std::int32_t>(r), q0 - begin,
                         std::min(max_q_per_item, end - q0), csr.row_batch[static_cast<std::size_t>(r)],
                         csr.row_block[static_cast<std::size_t>(r)]});
    }
  std::stable_sort(items.begin(), items.end(),
                   [](const K2qWorkItem& a, const K2qWorkItem& b) {
                     return a.head_kv != b.head_kv ? a.head_kv < b.head_kv : a.q_count > b.q_count;
                   });
  return items;
}

}  // namespace reference
}  // namespace msa
