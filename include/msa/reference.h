// msa/reference.h — CPU reference pieces that the GPU kernels are tested against, exposed for users' own tests.
//
// Everything here runs on the host, on CPU descriptors only, and shares no code with the kernels. Arithmetic is
// fp32 on the inputs' values (fp64 on request), summed in a fixed order, so results are deterministic.
#ifndef MSA_REFERENCE_H_
#define MSA_REFERENCE_H_

#include <cstdint>
#include <vector>

#include "msa/status.h"
#include "msa/types.h"

namespace msa {
namespace reference {

struct AttentionOptions {
  double sm_scale = 0.0;       // 0 selects 1/sqrt(128)
  bool fp64 = false;           // accumulate logits, softmax and P.V in double
  bool round_p_to_bf16 = false;  // round the unnormalised probabilities to bf16 before P.V, as a kernel does
};

// Dense causal GQA attention over all visible keys t <= p (< L_b), bottom-right positions. out may be bf16, fp16
// or fp32 ([T, Hq, 128]); lse [T, Hq] fp32 is optional.
Status dense_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& page_table,
                       const Tensor& cu_seqlens_q, const Tensor& seq_lens_k, const Tensor& out, const Tensor& lse,
                       const AttentionOptions& options = {});

// Sparse attention with explicit options (the public op uses the defaults). out may be bf16, fp16 or fp32.
Status sparse_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& topk,
                        const Tensor& page_table, const Tensor& cu_seqlens_q, const Tensor& seq_lens_k,
                        const Tensor& out, const Tensor& lse, const AttentionOptions& options = {});

// The KV-outer partials: for every (token, KV head) and each valid block id, the normalised attention of the
// group's heads over that block alone, written to slot = rank of the id among the row's valid ids in ascending
// order. partial_out [k, T, Hq, 128] (bf16 or fp32), partial_lse [k, T, Hq] fp32, split_counts [T, Hkv] int32.
// Slots at or beyond split_counts are not written. combine() of these equals sparse_attention().
Status sparse_attention_partials(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& topk,
                                 const Tensor& page_table, const Tensor& cu_seqlens_q, const Tensor& seq_lens_k,
                                 const Tensor& partial_out, const Tensor& partial_lse, const Tensor& split_counts,
                                 const AttentionOptions& options = {});

// Exact (fp64) block scores of one index row (bf16 or fp8 e4m3 index tensors): scores[j] = max over visible tokens
// of block j of dot(index_q[token, head], index_k[t]) for j < n_vis - 1 (history blocks), NaN mapped to -inf.
Status index_block_scores(const Tensor& index_q, const Tensor& index_k_cache, const Tensor& page_table,
                          const Tensor& cu_seqlens_q, const Tensor& seq_lens_k, std::int64_t token, int head,
                          std::vector<double>* scores);

// Reverse ("k2q") CSR of a topk selection, the input format of the KV-outer prefill kernel.
// Rows are (request, KV block) pairs numbered level-major: block 0 of every request that has it (in request order),
// then block 1, and so on; total_rows = sum_b ceil(L_b / 128).
struct K2qCsr {
  int num_kv_heads = 0;
  int topk = 0;
  std::int64_t total_q = 0;
  std::int64_t total_rows = 0;
  std::vector<std::int32_t> row_batch;       // [total_rows] request of each row
  std::vector<std::int32_t> row_block;       // [total_rows] logical KV block of each row
  std::vector<std::int32_t> row_ptr;         // [Hkv, total_rows + 1] exclusive prefix of row sizes
  std::vector<std::int32_t> q_indices;       // [Hkv, total_q * topk] request-local query index, ascending per row; -1 pad
  std::vector<std::int32_t> qsplit_indices;  // [Hkv, total_q * topk] q_local | (split_slot << 24); -1 pad
  std::vector<std::int32_t> split_counts;    // [total_q, Hkv] valid ids of each topk row
};

// Builds the CSR. split_slot of (query, block) = the block's rank among the query's valid ids, ascending by id.
// Requires valid topk rows (see attention.h) and request lengths below 2^24.
Status build_k2q_csr(const Tensor& topk, const Tensor& cu_seqlens_q, const Tensor& seq_lens_k, K2qCsr* csr);

// One KV-outer work item: queries [q_begin, q_begin + q_count) of CSR row `row` for KV head `head_kv`.
struct K2qWorkItem {
  std::int32_t head_kv;
  std::int32_t row;
  std::int32_t q_begin;  // offset into the row's entries (relative to row_ptr)
  std::int32_t q_count;
  std::int32_t batch;
  std::int32_t kv_block;
};

// Splits every non-empty row into chunks of at most max_q_per_item queries and orders the items head-major, largest
// first within a head (head_kv ascending, then q_count descending; ties by row, q_begin ascending). Head-major keeps
// the Q rows that the KV-outer kernel's CTAs gather at one time to one KV head's, so they are read again from L2.
std::vector<K2qWorkItem> build_k2q_schedule(const K2qCsr& csr, int max_q_per_item);

}  // namespace reference
}  // namespace msa

#endif  // MSA_REFERENCE_H_
