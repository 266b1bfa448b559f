// device_stub.cpp — device.h for builds without a CUDA toolkit (MSA_ENABLE_CUDA=OFF).
#include "api/device.h"
#include "kernels/combine/launch.h"
#include "kernels/sm90/indexer/launch.h"

namespace msa {
namespace detail {

bool cuda_built() { return false; }
int cuda_device_major(int) { return -1; }
Status cuda_probe_arch(int, int*) { return Status::NotImplemented("msa was built without CUDA"); }
Status cuda_path_missing(const std::string& op) {
  return Status::NotImplemented(op + ": msa was built without CUDA; pass CPU descriptors");
}

}  // namespace detail

namespace kernels {
Status index_select_workspace_bytes_sm90(const IndexSelectLaunch&, std::size_t* bytes) {
  *bytes = 0;
  return Status::NotImplemented("index selection: msa was built without CUDA; pass CPU descriptors");
}
Status launch_index_select_sm90(const IndexSelectLaunch&) {
  return Status::NotImplemented("index selection: msa was built without CUDA; pass CPU descriptors");
}
Status launch_combine(const CombineLaunch&) {
  return Status::NotImplemented("combine: msa was built without CUDA; pass CPU descriptors");
}
}  // namespace kernels
}  // namespace msa
