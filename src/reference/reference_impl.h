// reference_impl.h — the CPU implementation of every MSA op, on arguments that already passed validation.
//
// These functions assume host-readable, validated descriptors (see src/api/op_checks.h) and never fail. They share
// no code with the GPU kernels; they are the semantics the kernels are tested against.
#pragma once

#include "api/validate.h"
#include "msa/attention.h"
#include "msa/reference.h"
#include "msa/types.h"

namespace msa {
namespace ref {

using detail::BatchInfo;

// Element loads and stores of one 128-wide row at element offset `off` (bf16, fp16 or fp32 tensors; loads also
// fp8 e4m3, the index tensors' other dtype).
void load_row(const Tensor& t, std::int64_t off, float* dst);
void store_row(const Tensor& t, std::int64_t off, const float* src);

// Writes topk [H_idx, T, k] for every query token (the selection contract of indexer.h).
void select_blocks(const Tensor& index_q, const Tensor& index_k_cache, const Tensor& page_table,
                   const BatchInfo& batch, const Tensor& topk);

enum class AttnMode { kDense, kSparse, kPartials };
struct AttnOutputs {
  Tensor out, lse;                               // kDense, kSparse
  Tensor partial_out, partial_lse, split_counts;  // kPartials
};
void attention(AttnMode mode, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& topk,
               const Tensor& page_table, const BatchInfo& batch, const AttnOutputs& io,
               const reference::AttentionOptions& options);

void combine(const CombineArgs& args);

}  // namespace ref
}  // namespace msa
