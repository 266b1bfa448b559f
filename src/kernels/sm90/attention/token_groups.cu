// token_groups.cu — which queries share a warpgroup in the union-of-blocks schedule (union_tiles.cuh).
//
// A consumer warpgroup of union_blocks.cu computes every block that any of its 4 queries listed for all 4 of them,
// so its cost is |U_w|, the size of the union of their lists, where each query needs k. Consecutive queries that
// draw their blocks from a shared pool (24 blocks, k - 1 = 15 drawn each: the benchmark's clustered selections)
// have |U_w| ≈ 23.5 + the local block. Putting queries with similar lists together shrinks it: per (group of 128
// consecutive queries of one request, KV head), one CTA numbers the group's distinct block ids, gives each query a
// bit mask of its ids, and forms groups of 4 greedily (the lowest query not yet placed, then three times the query
// whose mask adds the fewest bits to the group's), which brings the clustered unions to ≈ 20.5 + 1
// (scripts/token_groups_sim.py: consecutive 23.5, greedy 20.5, greedy + pairwise swaps 20.3). Group j of 4 fills
// slots 4 j .. 4 j + 3, so tile t's warpgroups get groups 2 t and 2 t + 1. A group whose queries list more than 64
// distinct blocks (random selections: no shared pool to exploit) keeps the identity order.
//
// Each query's result does not depend on the queries it shares a warpgroup with (a warp whose query did not list a
// block adds exactly P = 0 for it and never moves its running max), so the grouping changes no output bit of the
// union kernel; under kAuto it changes which tiles take the union schedule.
//
// Invariants: deterministic (ties go to the lower query); every slot of every tile of the group is written, slots
// past the group's queries with themselves (never read as queries: they lie past the tile's ntok).
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <string>

#include "kernels/common/pdl.cuh"
#include "kernels/sm90/attention/launch.h"
#include "kernels/sm90/attention/union_tiles.cuh"

namespace msa {
namespace kernels {
namespace {

constexpr int kThreads = kGroupTokens;  // one thread per query of the group
constexpr int kMaxIds = 64;             // distinct ids a group may list and still be grouped (one 64-bit mask)
constexpr int kTable = 256;             // open-addressing table of the ids; never more than 64 + 128 entries used

__device__ __forceinline__ int table_home(int id) { return static_cast<int>((static_cast<unsigned>(id) * 2654435761u) >> 24); }

__global__ void __launch_bounds__(kThreads) token_groups_kernel(const UnionLaunch a) {
  __shared__ int keys[kTable], bits[kTable];
  __shared__ unsigned long long masks[kThreads];
  __shared__ unsigned char order[kThreads];
  __shared__ int n_ids;
  const int i = static_cast<int>(threadIdx.x), lane = i % 32, g = static_cast<int>(blockIdx.y);
  for (int e = i; e < kTable; e += kThreads) keys[e] = -1;
  if (i == 0) n_ids = 0;
  pdl_wait();  // topk comes from the selection
  Group gr;
  if (!find_group(a, static_cast<int>(blockIdx.x), &gr)) return;  // uniform over the CTA
  __syncthreads();
  int ids[kMaxK];
  const bool valid = i < gr.n;
  const std::int32_t* row = a.topk + g * a.topk_stride_h + static_cast<std::int64_t>(gr.q0 + gr.s0 + i) * a.topk_stride_t;
#pragma unroll
  for (int s = 0; s < kMaxK; ++s) ids[s] = valid && s < a.k ? row[s * a.topk_stride_s] : -1;
  // Number the distinct ids: the thread that installs an id in the table takes the next bit. Inserting stops once
  // more than kMaxIds are numbered; by then at most kMaxIds + kThreads keys are in the table, so every probe
  // sequence meets a free slot. A slot is read before any compare-and-swap: the queries of a clustered group list
  // the same few ids, and a warp's atomics on one address serialise.
  volatile int* const n_seen = &n_ids;
  volatile int* const table = keys;
#pragma unroll
  for (int s = 0; s < kMaxK; ++s) {
    const int id = ids[s];
    if (id < 0 || *n_seen > kMaxIds) continue;
    for (int h = table_home(id);; h = (h + 1) % kTable) {
      int cur = table[h];
      if (cur == -1) {
        cur = atomicCAS(&keys[h], -1, id);
        if (cur == -1) {
          bits[h] = atomicAdd(&n_ids, 1);
          break;
        }
      }
      if (cur == id) break;
    }
  }
  __syncthreads();
  const int n = n_ids;  // uniform from here on
  const std::int64_t tiles = tile_count(a);
  std::uint8_t* const slots = a.tile_slots + (static_cast<std::int64_t>(g) * tiles + gr.tile0) * kTileTokens;
  const int used_slots = (gr.n + kTileTokens - 1) / kTileTokens * kTileTokens;
  if (n > kMaxIds) {  // too many distinct blocks to gain anything: identity
    if (i < used_slots) slots[i] = static_cast<std::uint8_t>(i);
    return;
  }
  unsigned long long m = 0;
#pragma unroll
  for (int s = 0; s < kMaxK; ++s) {
    const int id = ids[s];
    if (id < 0) continue;
    int h = table_home(id);
    while (keys[h] != id) h = (h + 1) % kTable;
    m |= 1ull << bits[h];
  }
  masks[i] = m;
  __syncthreads();
  if (i < 32) {  // warp 0 forms the groups; lane l holds queries l, l + 32, l + 64, l + 96
    unsigned long long mk[4];
    bool avail[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      mk[j] = masks[lane + 32 * j];
      avail[j] = lane + 32 * j < gr.n;
    }
    auto take = [&](int q) {  // q leaves the pool
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (lane + 32 * j == q) avail[j] = false;
    };
    for (int pos = 0; pos < gr.n;) {
      unsigned lowest = UINT_MAX;
#pragma unroll
      for (int j = 3; j >= 0; --j)
        if (avail[j]) lowest = static_cast<unsigned>(lane + 32 * j);
      const int seed = static_cast<int>(__reduce_min_sync(0xffffffffu, lowest));
      take(seed);
      unsigned long long gm = masks[seed];
      if (lane == 0) order[pos] = static_cast<unsigned char>(seed);
      ++pos;
      for (int member = 1; member < 4 && pos < gr.n; ++member, ++pos) {
        unsigned best = UINT_MAX;  // (bits the query adds) << 8 | query: fewest first, then the lowest query
#pragma unroll
        for (int j = 0; j < 4; ++j)
          if (avail[j]) best = min(best, static_cast<unsigned>(__popcll(gm | mk[j]) << 8 | (lane + 32 * j)));
        const int q = static_cast<int>(__reduce_min_sync(0xffffffffu, best) & 0xFF);
        take(q);
        gm |= masks[q];
        if (lane == 0) order[pos] = static_cast<unsigned char>(q);
      }
    }
  }
  __syncthreads();
  if (i < used_slots) slots[i] = static_cast<std::uint8_t>(i < gr.n ? order[i] : i);
}

}  // namespace

Status launch_token_groups(const UnionLaunch& a) {
  if (a.tile_slots == nullptr || a.total_q == 0 || a.num_requests == 0) return Status::Ok();
  if (a.k < 1 || a.k > kMaxK)
    return Status::NotImplemented("union-of-blocks token groups: k must be in [1, 16], got " + std::to_string(a.k));
  cudaError_t e = launch_pdl(token_groups_kernel, dim3(static_cast<unsigned>(group_count(a)), static_cast<unsigned>(a.num_kv_heads)),
                             dim3(kThreads), 0, static_cast<cudaStream_t>(a.stream), a);
  if (e == cudaSuccess) e = cudaGetLastError();
  return e == cudaSuccess ? Status::Ok()
                          : Status::CudaError(std::string("union-of-blocks token groups: ") + cudaGetErrorString(e));
}

}  // namespace kernels
}  // namespace msa
