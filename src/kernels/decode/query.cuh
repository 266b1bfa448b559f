// query.cuh — where a packed query token of a DecodeAttentionLaunch sits: its request, its KV length and its
// bottom-right aligned position. Shared by the split (decode_attention.cu) and rows (decode_rows.cu) kernels.
#ifndef MSA_KERNELS_DECODE_QUERY_CUH_
#define MSA_KERNELS_DECODE_QUERY_CUH_

#include <cstdint>

#include "kernels/common/search.cuh"
#include "kernels/decode/launch.h"

namespace msa {
namespace kernels {

struct QueryPlace {
  int request, kv_len, position;
};

// Token t: request b of Q queries each (cu_seqlens_q == nullptr) or of the varlen batch cu_seqlens_q.
__device__ __forceinline__ QueryPlace locate_query(const DecodeAttentionLaunch& a, std::int64_t t) {
  int b, i, nq;  // request, query index in it, its query count
  if (a.cu_seqlens_q == nullptr) {
    b = static_cast<int>(t / a.queries_per_request);
    i = static_cast<int>(t % a.queries_per_request);
    nq = a.queries_per_request;
  } else {
    b = last_at_most(a.cu_seqlens_q, a.cu_stride, a.num_requests, t);
    i = static_cast<int>(t - a.cu_seqlens_q[b * a.cu_stride]);
    nq = a.cu_seqlens_q[(b + 1) * a.cu_stride] - a.cu_seqlens_q[b * a.cu_stride];
  }
  const int L = a.seq_lens_k[b * a.seq_stride];
  return {b, L, L - nq + i};
}

}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_DECODE_QUERY_CUH_
