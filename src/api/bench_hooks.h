// bench_hooks.h — internal entry points for msa's own benchmarks (not installed, not part of the public API).
#ifndef MSA_API_BENCH_HOOKS_H_
#define MSA_API_BENCH_HOOKS_H_

#include <cstddef>

#include "msa/indexer.h"

namespace msa {
namespace detail {

// The CUDA index selection with ranking switched off: every block is scored and its row maxima reduced, but none
// enters a list, so rows get only their local block. Timed against the real op, it gives the top-k share.
Status index_select_prefill_scores_only(const IndexPrefillArgs& args);
Status index_select_decode_scores_only(const IndexDecodeArgs& args, void* workspace, std::size_t workspace_bytes);

}  // namespace detail
}  // namespace msa

#endif  // MSA_API_BENCH_HOOKS_H_
