// tma.h — host side of TMA: encodes tensor maps for msa's bf16 (and fp8 index) operands (no launch, no sync; safe
// during graph capture).
#ifndef MSA_KERNELS_SM90_COMMON_TMA_H_
#define MSA_KERNELS_SM90_COMMON_TMA_H_

#include <cuda.h>

#include <cstdint>

#include "msa/status.h"

namespace msa {
namespace kernels {
namespace sm90 {

// A 3-D tensor of bf16 (or, with fp8 set, 1-byte e4m3) elements: dim 0 contiguous, dims 1 and 2 with strides in
// elements. Size-1 dims may carry any stride. The map loads boxes of box[0] x box[1] x box[2] elements with 128-byte
// swizzle, so box[0] elements must span at most 128 bytes; `what` names the tensor in error messages.
struct TmaTensor3d {
  const void* base;
  std::uint64_t dims[3];
  std::int64_t strides[2];  // of dims 1 and 2
  std::uint32_t box[3];
  bool fp8 = false;  // e4m3 elements, loaded as raw bytes
};
Status encode_tma_sw128(const TmaTensor3d& t, const char* what, CUtensorMap* map);

// The same for a 4-D tensor (dims 1..3 strided), e.g. a paged cache [pages, heads, tokens, 128].
struct TmaTensor4d {
  const void* base;
  std::uint64_t dims[4];
  std::int64_t strides[3];  // of dims 1, 2 and 3
  std::uint32_t box[4];
  bool fp8 = false;
};
Status encode_tma_sw128(const TmaTensor4d& t, const char* what, CUtensorMap* map);

}  // namespace sm90
}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_SM90_COMMON_TMA_H_
