// tma.cu — encodes TMA tensor maps through the driver's cuTensorMapEncodeTiled, reached via the runtime's
// entry-point query so the library does not link libcuda directly.
#include "kernels/sm90/common/tma.h"

#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <string>

namespace msa {
namespace kernels {
namespace sm90 {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      p = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

}  // namespace

namespace {

// Rank-generic encoder: dims[0] contiguous; strides[d - 1] of dims d >= 1 in elements.
Status encode(int rank, const void* base, const std::uint64_t* dims_in, const std::int64_t* strides_in,
              const std::uint32_t* box_in, bool fp8, const char* what, CUtensorMap* map) {
  const PFN_cuTensorMapEncodeTiled_v12000 fn = encode_fn();
  if (fn == nullptr) return Status::CudaError("TMA: the driver does not provide cuTensorMapEncodeTiled");
  cuuint64_t dims[4], strides[3];
  cuuint32_t box[4], unit[4] = {1, 1, 1, 1};
  std::int64_t dense = 1;  // the stride a dense layout would have: used for size-1 dims, never stepped along
  for (int d = 0; d < rank; ++d) {
    dims[d] = dims_in[d];
    box[d] = box_in[d];
    if (d > 0) strides[d - 1] = static_cast<cuuint64_t>(dims_in[d] > 1 ? strides_in[d - 1] : dense) * (fp8 ? 1 : 2);
    dense *= static_cast<std::int64_t>(dims_in[d]);
  }
  const CUresult r = fn(map, fp8 ? CU_TENSOR_MAP_DATA_TYPE_UINT8 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, static_cast<cuuint32_t>(rank), const_cast<void*>(base),
                        dims, strides, box, unit, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                        CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    return Status::InvalidArgument(std::string(what) + ": cannot be described to TMA (cuTensorMapEncodeTiled error " +
                                   std::to_string(static_cast<int>(r)) +
                                   "; strides must be multiples of 16 bytes below 2^40)");
  return Status::Ok();
}

}  // namespace

Status encode_tma_sw128(const TmaTensor3d& t, const char* what, CUtensorMap* map) {
  return encode(3, t.base, t.dims, t.strides, t.box, t.fp8, what, map);
}

Status encode_tma_sw128(const TmaTensor4d& t, const char* what, CUtensorMap* map) {
  return encode(4, t.base, t.dims, t.strides, t.box, t.fp8, what, map);
}

}  // namespace sm90
}  // namespace kernels
}  // namespace msa
