// device.h — what the library knows about CUDA at run time (implemented in a .cu file, or a stub without CUDA).
#pragma once

#include <string>

#include "msa/status.h"

namespace msa {
namespace detail {

bool cuda_built();
// Compute capability major of device `index`, or -1 when no device / no CUDA.
int cuda_device_major(int index);
// Runs a probe kernel on device `index` and returns the __CUDA_ARCH__ it was compiled for (e.g. 900).
Status cuda_probe_arch(int index, int* arch);
// The Status of an op whose CUDA path does not exist in this build.
Status cuda_path_missing(const std::string& op);

}  // namespace detail
}  // namespace msa
