// device_stub.cpp — device.h for builds without a CUDA toolkit (MSA_ENABLE_CUDA=OFF).
#include "api/device.h"
#include "kernels/combine/launch.h"
#include "kernels/decode/launch.h"
#include "kernels/k2q/launch.h"
#include "kernels/sm90/attention/launch.h"
#include "kernels/sm90/indexer/launch.h"

namespace msa {
namespace detail {

bool cuda_built() { return false; }
int cuda_device_major(int) { return -1; }
int cuda_sm_count(int) { return 0; }
Status cuda_probe_arch(int, int*) { return Status::NotImplemented("msa was built without CUDA"); }
Status cuda_path_missing(const std::string& op) {
  return Status::NotImplemented(op + ": msa was built without CUDA; pass CPU descriptors");
}

Status require_sm90(int, const std::string& op) { return cuda_path_missing(op); }
Status cuda_copy_to_host(void*, const void*, std::size_t, int) { return cuda_path_missing("plan"); }
Status DeviceBuffer::upload(const void*, std::size_t, int) { return cuda_path_missing("plan"); }
void DeviceBuffer::reset() { ptr_ = nullptr; }
Status SideStream::create(int, int) { return cuda_path_missing("plan"); }
void SideStream::reset() { stream_ = nullptr; }
Status SideStream::record(int, void*) const { return cuda_path_missing("run"); }
Status SideStream::wait(void*, int) const { return cuda_path_missing("run"); }

}  // namespace detail

namespace kernels {
Status index_select_workspace_bytes_sm90(const IndexSelectLaunch&, std::size_t* bytes) {
  *bytes = 0;
  return Status::NotImplemented("index selection: msa was built without CUDA; pass CPU descriptors");
}
bool index_select_decode_merges(const IndexSelectLaunch&) { return false; }
Status launch_index_select_sm90(const IndexSelectLaunch&) {
  return Status::NotImplemented("index selection: msa was built without CUDA; pass CPU descriptors");
}
std::int64_t k2q_row_capacity(const K2qBuildArgs&) { return 0; }
std::int64_t k2q_item_capacity(const K2qBuildArgs&) { return 0; }
Status k2q_workspace_bytes(const K2qBuildArgs&, std::size_t* bytes) {
  *bytes = 0;
  return Status::NotImplemented("k2q: msa was built without CUDA");
}
Status launch_k2q_build(const K2qBuildArgs&, const K2qBuildOutputs&, void*, std::size_t) {
  return Status::NotImplemented("k2q: msa was built without CUDA");
}
Status launch_decode_attention(const DecodeAttentionLaunch&) {
  return Status::NotImplemented("sparse attention: msa was built without CUDA; pass CPU descriptors");
}
Status launch_decode_attention_rows(const DecodeAttentionLaunch&, void*, std::int64_t, std::int64_t, float*,
                                    std::int64_t, std::int64_t) {
  return Status::NotImplemented("sparse attention: msa was built without CUDA; pass CPU descriptors");
}
Status launch_decode_attention_fused(const DecodeAttentionLaunch&, void*, std::int64_t, std::int64_t, float*,
                                     std::int64_t, std::int64_t) {
  return Status::NotImplemented("sparse attention: msa was built without CUDA; pass CPU descriptors");
}
Status launch_kv_outer_attention(const KvOuterLaunch&) {
  return Status::NotImplemented("sparse attention: msa was built without CUDA; pass CPU descriptors");
}
Status launch_token_groups(const UnionLaunch&) {
  return Status::NotImplemented("sparse attention: msa was built without CUDA; pass CPU descriptors");
}
Status launch_union_mask(const UnionLaunch&) {
  return Status::NotImplemented("sparse attention: msa was built without CUDA; pass CPU descriptors");
}
Status launch_union_attention(const UnionLaunch&) {
  return Status::NotImplemented("sparse attention: msa was built without CUDA; pass CPU descriptors");
}
Status launch_union_list(const UnionLaunch&) {
  return Status::NotImplemented("sparse attention: msa was built without CUDA; pass CPU descriptors");
}
Status launch_union_kernel(const UnionLaunch&) {
  return Status::NotImplemented("sparse attention: msa was built without CUDA; pass CPU descriptors");
}
Status launch_combine(const CombineLaunch&) {
  return Status::NotImplemented("combine: msa was built without CUDA; pass CPU descriptors");
}
}  // namespace kernels
}  // namespace msa
