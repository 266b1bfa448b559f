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

Status encode_tma_bf16_sw128(const Bf16Tensor3d& t, const char* what, CUtensorMap* map) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = encode_fn();
  if (encode == nullptr) return Status::CudaError("TMA: the driver does not provide cuTensorMapEncodeTiled");
  cuuint64_t dims[3], strides[2];
  cuuint32_t box[3], unit[3] = {1, 1, 1};
  for (int d = 0; d < 3; ++d) {
    dims[d] = t.dims[d];
    box[d] = t.box[d];
  }
  // A size-1 dim is never stepped along; give it a legal stride (the hardware still checks the field).
  strides[0] = static_cast<cuuint64_t>(t.dims[1] > 1 ? t.strides[0] : static_cast<std::int64_t>(t.dims[0])) * 2;
  strides[1] = static_cast<cuuint64_t>(t.dims[2] > 1 ? t.strides[1] : static_cast<std::int64_t>(t.dims[0] * t.dims[1])) * 2;
  const CUresult r = encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<void*>(t.base), dims, strides, box,
                            unit, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    return Status::InvalidArgument(std::string(what) + ": cannot be described to TMA (cuTensorMapEncodeTiled error " +
                                   std::to_string(static_cast<int>(r)) +
                                   "; strides must be multiples of 16 bytes below 2^40)");
  return Status::Ok();
}

}  // namespace sm90
}  // namespace kernels
}  // namespace msa
