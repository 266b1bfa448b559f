// tma.h — host side of TMA: encodes tensor maps for msa's bf16 operands (no launch, no sync; safe during graph capture).
#ifndef MSA_KERNELS_SM90_COMMON_TMA_H_
#define MSA_KERNELS_SM90_COMMON_TMA_H_

#include <cuda.h>

#include <cstdint>

#include "msa/status.h"

namespace msa {
namespace kernels {
namespace sm90 {

// A 3-D bf16 tensor: dim 0 contiguous (elements), dims 1 and 2 with strides in elements. Size-1 dims may carry any
// stride. The map loads boxes of box[0] x box[1] x box[2] elements with 128-byte swizzle, so box[0] * 2 must be
// at most 128 bytes; `what` names the tensor in error messages.
struct Bf16Tensor3d {
  const void* base;
  std::uint64_t dims[3];
  std::int64_t strides[2];  // of dims 1 and 2
  std::uint32_t box[3];
};
Status encode_tma_bf16_sw128(const Bf16Tensor3d& t, const char* what, CUtensorMap* map);

// The same for a 4-D tensor (dims 1..3 strided), e.g. a paged cache [pages, heads, tokens, 128].
struct Bf16Tensor4d {
  const void* base;
  std::uint64_t dims[4];
  std::int64_t strides[3];  // of dims 1, 2 and 3
  std::uint32_t box[4];
};
Status encode_tma_bf16_sw128(const Bf16Tensor4d& t, const char* what, CUtensorMap* map);

}  // namespace sm90
}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_SM90_COMMON_TMA_H_
