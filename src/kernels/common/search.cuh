// search.cuh — device helpers over sorted metadata shared by msa's kernels.
#ifndef MSA_KERNELS_COMMON_SEARCH_CUH_
#define MSA_KERNELS_COMMON_SEARCH_CUH_

#include <cstdint>

namespace msa {
namespace kernels {

// The last index i in [0, n) with v[i * stride] <= key, for a non-decreasing v with v[0] <= key: for cu_seqlens and
// a packed token t, the request that owns t (zero-length requests, which share their start, are skipped).
template <class Index>
__device__ __forceinline__ Index last_at_most(const std::int32_t* v, std::int64_t stride, Index n, std::int64_t key) {
  Index lo = 0, hi = n;
  while (hi - lo > 1) {
    const Index mid = (lo + hi) / 2;
    if (v[mid * stride] <= key) lo = mid; else hi = mid;
  }
  return lo;
}

}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_COMMON_SEARCH_CUH_
