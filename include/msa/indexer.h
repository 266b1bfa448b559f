// msa/indexer.h — the index branch: block selection for prefill and decode.
//
// For query token i of request b (position p = L_b - nq_b + i, local block l = p / 128, n_vis = l + 1) and index
// head g, the block score is S[j] = max over tokens t of block j, t <= p, of dot(index_q[i, g], index_k[t]).
// topk[g, i] receives: all visible blocks 0..n_vis-1 when n_vis <= k; otherwise the k-1 best history blocks
// (score descending, ties to the smaller id, NaN counted as -inf, never a -inf block) followed by the local
// block; -1 fills the rest. Ids are logical block ids of the request (page_table maps them to pages).
//
// index_q and index_k_cache are both bf16 or both fp8 e4m3 (OCP "e4m3fn", unscaled, as engines store an fp8 index
// cache). With fp8 the CPU path computes the same contract on the e4m3 values; the GPU scores them on the fp8
// tensor cores, which add products at reduced precision, so near-ties may rank differently there (docs/indexer.md).
#ifndef MSA_INDEXER_H_
#define MSA_INDEXER_H_

#include <cstddef>

#include "msa/status.h"
#include "msa/types.h"

namespace msa {

struct IndexPrefillArgs {
  Tensor index_q;        // [T, H_idx, 128] bf16 or fp8 e4m3, packed query tokens of all requests
  Tensor index_k_cache;  // [num_pages, 128, 128], index_q's dtype, one index key per token
  Tensor page_table;     // [B, max_pages] int32, logical block -> physical page
  Tensor cu_seqlens_q;   // [B + 1] int32, query token offsets (0, ..., T)
  Tensor seq_lens_k;     // [B] int32, KV length L_b including the new tokens (L_b >= nq_b)
  Tensor topk;           // [H_idx, T, k] int32 output, 1 <= k <= 16
};

// Decode: every request has the same number of query tokens Q (1 <= Q <= 16), packed request-major.
struct IndexDecodeArgs {
  Tensor index_q;        // [B * Q, H_idx, 128] bf16 or fp8 e4m3
  Tensor index_k_cache;  // [num_pages, 128, 128], index_q's dtype
  Tensor page_table;     // [B, max_pages] int32
  Tensor seq_lens_k;     // [B] int32, L_b >= Q
  int queries_per_request = 1;
  Tensor topk;           // [H_idx, B * Q, k] int32 output
};

// Scratch memory the call needs (0 on the CPU). Validates shapes, dtypes and devices. The workspace (16-byte aligned)
// needs no initialisation and may hold anything between calls; two calls that may run at the same time (on
// different streams) must not share one.
Status index_select_prefill_workspace_size(const IndexPrefillArgs& args, std::size_t* bytes);
Status index_select_decode_workspace_size(const IndexDecodeArgs& args, std::size_t* bytes);

// Computes topk. Every argument is validated before anything runs; on error nothing is written.
Status index_select_prefill(const IndexPrefillArgs& args, void* workspace = nullptr, std::size_t workspace_bytes = 0);
Status index_select_decode(const IndexDecodeArgs& args, void* workspace = nullptr, std::size_t workspace_bytes = 0);

}  // namespace msa

#endif  // MSA_INDEXER_H_
