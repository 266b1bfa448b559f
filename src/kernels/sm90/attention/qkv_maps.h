// qkv_maps.h — the TMA maps both sm90 prefill attention kernels read Q and the paged K/V caches through (host side,
// no CUDA launch): Q [T, Hq, 128] in boxes of one token's G heads x 64 dims, K and V [pages, Hkv, 128, 128] in
// boxes of one page's 128 keys x 64 dims of one KV head; all 128-byte swizzled.
#ifndef MSA_KERNELS_SM90_ATTENTION_QKV_MAPS_H_
#define MSA_KERNELS_SM90_ATTENTION_QKV_MAPS_H_

#include <cuda.h>

#include <cstdint>

#include "kernels/sm90/common/tma.h"
#include "msa/status.h"

namespace msa {
namespace kernels {
namespace sm90 {

// L: KvOuterLaunch or UnionLaunch (their PagedPrefillInputs and head counts).
template <class L>
Status encode_qkv_maps(const L& a, std::int64_t total_q, int group, CUtensorMap* q_map, CUtensorMap* k_map,
                       CUtensorMap* v_map) {
  const TmaTensor3d q{a.q,
                       {128, static_cast<std::uint64_t>(a.num_q_heads), static_cast<std::uint64_t>(total_q)},
                       {a.q_stride_h, a.q_stride_t},
                       {64, static_cast<std::uint32_t>(group), 1}};
  MSA_RETURN_IF_ERROR(encode_tma_sw128(q, "q", q_map));
  const TmaTensor4d k{a.k_cache,
                       {128, 128, static_cast<std::uint64_t>(a.num_kv_heads), static_cast<std::uint64_t>(a.num_pages)},
                       {a.kv_stride_t, a.kv_stride_h, a.kv_stride_page},
                       {64, 128, 1, 1}};
  TmaTensor4d v = k;
  v.base = a.v_cache;
  MSA_RETURN_IF_ERROR(encode_tma_sw128(k, "k_cache", k_map));
  return encode_tma_sw128(v, "v_cache", v_map);
}

}  // namespace sm90
}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_SM90_ATTENTION_QKV_MAPS_H_
