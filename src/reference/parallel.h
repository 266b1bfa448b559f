// parallel.h — a minimal parallel-for over [0, n) on std::thread, for the CPU implementation.
//
// Work is handed out one index at a time from an atomic counter (indices are coarse: a tile or a query row), so the
// result never depends on the thread count. MSA_NUM_THREADS overrides the hardware thread count.
#pragma once

#include <cstdint>
#include <functional>

namespace msa {
namespace ref {

int num_threads();
void parallel_for(std::int64_t n, const std::function<void(std::int64_t)>& fn);

}  // namespace ref
}  // namespace msa
