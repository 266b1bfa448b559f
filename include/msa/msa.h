// msa/msa.h — umbrella header: MiniMax Sparse Attention for NVIDIA Hopper, with a CPU implementation.
#ifndef MSA_MSA_H_
#define MSA_MSA_H_

#include "msa/attention.h"
#include "msa/indexer.h"
#include "msa/layer.h"
#include "msa/params.h"
#include "msa/reference.h"
#include "msa/status.h"
#include "msa/types.h"

namespace msa {

// "0.1.0"
const char* version();

// True when this build has CUDA support and a device of compute capability 9.x is visible.
bool sm90_device_available();

}  // namespace msa

#endif  // MSA_MSA_H_
