// msa.cpp — library-level queries.
#include "msa/msa.h"

#include "api/device.h"

namespace msa {

const char* version() { return "0.1.0"; }

bool sm90_device_available() { return detail::cuda_device_major(0) == 9; }

}  // namespace msa
