// device.h — what the library knows about CUDA at run time (implemented in a .cu file, or a stub without CUDA).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "msa/status.h"

namespace msa {
namespace detail {

bool cuda_built();
// Compute capability major of device `index`, or -1 when no device / no CUDA.
int cuda_device_major(int index);
// Number of SMs of device `index` (0 when it cannot be queried). A host-side attribute query: no stream work, so
// run() may call it, also while a stream is being captured.
int cuda_sm_count(int index);
// Runs a probe kernel on device `index` and returns the __CUDA_ARCH__ it was compiled for (e.g. 900).
Status cuda_probe_arch(int index, int* arch);
// The Status of an op whose CUDA path does not exist in this build.
Status cuda_path_missing(const std::string& op);

// Ok when device `index` exists and is an sm_90 (Hopper) GPU; otherwise NotImplemented naming `op`.
Status require_sm90(int index, const std::string& op);

// Plan-time memory helpers (plan() may allocate and synchronise; run() never calls these).
// Copies `bytes` from device memory of device `index` to the host (synchronous).
Status cuda_copy_to_host(void* host, const void* device_ptr, std::size_t bytes, int index);
// Device memory owned by a plan: allocated and filled from `host` on device `index` (synchronous), freed on reset.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  Status upload(const void* host, std::size_t bytes, int index);
  void reset();
  void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
  int index_ = 0;
};

// A second stream owned by a plan, with a few events: run() forks work off the caller's stream onto it and joins it
// back through events only (no synchronisation), which a CUDA graph capture of the caller's stream also records.
class SideStream {
 public:
  SideStream() = default;
  ~SideStream() { reset(); }
  SideStream(const SideStream&) = delete;
  SideStream& operator=(const SideStream&) = delete;
  // Plan time: a non-blocking stream and `events` timing-free events on device `index`.
  Status create(int index, int events);
  void reset();
  void* stream() const { return stream_; }
  // Run time: event e recorded on `stream` (the caller's or stream()); `stream` waits for e's latest record.
  Status record(int e, void* stream) const;
  Status wait(void* stream, int e) const;

 private:
  void* stream_ = nullptr;
  std::vector<void*> events_;
  int index_ = 0;
};

}  // namespace detail
}  // namespace msa
