// decode_handoff.h — internal entry points through which MsaDecode (layer.cpp) lets its fused decode attention
// take the selection merge's output straight from the merge (kernels/common/handoff.cuh) instead of waiting for the
// merge grid and reading topk and the page table. Not installed, not part of the public API.
#ifndef MSA_API_DECODE_HANDOFF_H_
#define MSA_API_DECODE_HANDOFF_H_

#include <cstddef>

#include "msa/indexer.h"

namespace msa {
namespace detail {

// Whether the CUDA decode selection of these (valid) arguments merges split lists behind its stream: the only
// selection that can fill a handoff. Shapes and the device only.
bool index_select_decode_merges(const IndexDecodeArgs& args);

// index_select_decode, also filling `handoff` ([T, H_idx, k] entries of 8 bytes, 256-byte aligned); needs a
// selection that merges.
Status index_select_decode_handoff(const IndexDecodeArgs& args, void* workspace, std::size_t workspace_bytes,
                                   void* handoff);

}  // namespace detail
}  // namespace msa

#endif  // MSA_API_DECODE_HANDOFF_H_
