// msa/types.h — data types, devices and the tensor descriptor shared by every operation.
//
// A Tensor is a non-owning view: pointer, dtype, up to 4 dimensions with strides counted in elements, and the
// device it lives on. CUDA work runs on Device::stream (a cudaStream_t passed as void*, so this header needs no CUDA).
// An optional argument is passed as a default-constructed Tensor (ndim == 0), which `present()` reports as absent.
#ifndef MSA_TYPES_H_
#define MSA_TYPES_H_

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

namespace msa {

enum class DType : int {
  kBF16 = 0,
  kFP16 = 1,
  kFP32 = 2,
  kInt32 = 3,
  kFP8E4M3 = 4,  // OCP e4m3 ("e4m3fn", no scale): index_q and index_k_cache only, both of one dtype
};

inline std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::kBF16: return 2;
    case DType::kFP16: return 2;
    case DType::kFP32: return 4;
    case DType::kInt32: return 4;
    case DType::kFP8E4M3: return 1;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::kBF16: return "bf16";
    case DType::kFP16: return "fp16";
    case DType::kFP32: return "fp32";
    case DType::kInt32: return "int32";
    case DType::kFP8E4M3: return "fp8_e4m3";
  }
  return "unknown";
}

enum class DeviceType : int { kCPU = 0, kCUDA = 1 };

struct Device {
  DeviceType type = DeviceType::kCPU;
  int index = 0;           // CUDA device ordinal; 0 for the CPU
  void* stream = nullptr;  // cudaStream_t for CUDA work; nullptr = the legacy default stream

  static Device cpu() { return Device{}; }
  static Device cuda(int index = 0, void* stream = nullptr) { return Device{DeviceType::kCUDA, index, stream}; }
  bool is_cuda() const { return type == DeviceType::kCUDA; }
};

constexpr int kMaxTensorDims = 4;

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::kBF16;
  int ndim = 0;
  std::int64_t shape[kMaxTensorDims] = {0, 0, 0, 0};
  std::int64_t stride[kMaxTensorDims] = {0, 0, 0, 0};  // in elements, not bytes
  Device device{};

  bool present() const { return ndim > 0; }
  std::int64_t numel() const {
    if (ndim <= 0) return 0;
    std::int64_t n = 1;
    for (int d = 0; d < ndim; ++d) n *= shape[d];
    return n;
  }
  bool is_contiguous() const {
    std::int64_t expect = 1;
    for (int d = ndim - 1; d >= 0; --d) {
      if (shape[d] != 1 && stride[d] != expect) return false;
      expect *= shape[d];
    }
    return true;
  }
};

// A row-major (contiguous) descriptor over `data`.
inline Tensor make_tensor(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                          Device device = Device::cpu()) {
  Tensor t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  t.ndim = 0;
  for (std::int64_t s : shape) {
    if (t.ndim == kMaxTensorDims) break;
    t.shape[t.ndim++] = s;
  }
  std::int64_t st = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    t.stride[d] = st;
    st *= t.shape[d];
  }
  return t;
}

// A descriptor with explicit strides (in elements); shape and stride must have the same length.
inline Tensor make_strided_tensor(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                                  std::initializer_list<std::int64_t> stride, Device device = Device::cpu()) {
  Tensor t = make_tensor(data, dtype, shape, device);
  int d = 0;
  for (std::int64_t s : stride) {
    if (d == kMaxTensorDims) break;
    t.stride[d++] = s;
  }
  if (d != t.ndim) t.ndim = -1;  // rejected by every operation: "shape and stride lengths differ"
  return t;
}

}  // namespace msa

#endif  // MSA_TYPES_H_
