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
// kAuto's front (launch_union_mask) is the same kernel with the decision added: from the group's rows, already in
// shared memory, one warp per tile counts the distinct ids of each warpgroup's 4 slots (cheap lower bounds first,
// which decide most random tiles), applies takes_union, writes the flag (tile_flags) and then the group's rows of
// masked_topk (a union tile's queries: kRowElsewhere, -1, ...; the others copied), so the selection is read once
// and written once, both coalesced. (A separate mask launch of one warp per tile, reading through the slots, took
// 0.67 ms after 0.29 ms of groups at 1M tokens, H100.)
//
// Invariants: deterministic (ties go to the lower query); every slot of every tile of the group is written, slots
// past the group's queries with themselves (never read as queries: they lie past the tile's ntok); under kAuto
// every flag of the launch is written (the tiles past the real ones, tile_count's slack, 0 by the last CTA, which
// group_count's slack leaves without a group).
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <string>

#include "kernels/common/pdl.cuh"
#include "kernels/k2q/launch.h"
#include "kernels/sm90/attention/launch.h"
#include "kernels/sm90/attention/union_tiles.cuh"

namespace msa {
namespace kernels {
namespace {

constexpr int kThreads = kGroupTokens;  // one thread per query of the group
constexpr int kMaxIds = 64;             // distinct ids a group may list and still be grouped (one 64-bit mask)
constexpr int kTable = 256;             // open-addressing table of the ids; never more than 64 + 128 entries used

__device__ __forceinline__ int table_home(int id) { return static_cast<int>((static_cast<unsigned>(id) * 2654435761u) >> 24); }

// Whether v (>= 0) is the first of its value among the 32 entries v held by the lanes of a warp, in lane order.
// Called by all 32 lanes (never under a condition: a lane left out of a full-mask match is undefined).
__device__ __forceinline__ bool warp_first(int v) {
  const unsigned below = (1u << (threadIdx.x % 32)) - 1u;
  const unsigned same = __match_any_sync(0xffffffffu, v);  // before the test of v: every lane matches
  return v >= 0 && (same & below) == 0;
}

// How many lanes of the warp hold a flag.
__device__ __forceinline__ int warp_count(bool flag) { return __popc(__ballot_sync(0xffffffffu, flag)); }

// Whether the entry b of this lane equals an entry a of any lane of the warp.
__device__ __forceinline__ bool warp_contains(int a, int b) {
  bool found = false;
#pragma unroll
  for (int j = 0; j < 32; ++j) found |= __shfl_sync(0xffffffffu, a, j) == b;
  return found;
}

// One CTA per (group, KV head). kMask (kAuto's front, launch_union_mask): also the per-tile decision and the masked
// selection, from the rows already in shared memory.
template <bool kMask>
__global__ void __launch_bounds__(kThreads) token_groups_kernel(const UnionLaunch a) {
  __shared__ int keys[kTable], bits[kTable];
  __shared__ unsigned long long masks[kThreads];
  __shared__ unsigned char order[kThreads], slot_of[kThreads], tile_drop[kThreads / kTileTokens];
  __shared__ int rows[kThreads][kMaxK + 1];  // the group's topk rows as read (+1: no bank conflict per thread)
  __shared__ int n_ids;
  const int i = static_cast<int>(threadIdx.x), lane = i % 32, warp = i / 32, g = static_cast<int>(blockIdx.y);
  const int k = a.k;
  for (int e = i; e < kTable; e += kThreads) keys[e] = -1;
  if (i == 0) n_ids = 0;
  pdl_wait();  // topk comes from the selection
  const std::int64_t tiles = tile_count(a);
  Group gr;
  if (!find_group(a, static_cast<int>(blockIdx.x), &gr)) {  // uniform over the CTA
    // The last CTA never has a group (group_count's slack); under kMask it zeroes the flags of the tiles past
    // the real ones (tile_count's slack), which union_list_kernel reads too.
    if (kMask && blockIdx.x + 1 == gridDim.x)
      for (std::int64_t t = gr.tile0 + i; t < tiles; t += kThreads) a.tile_flags[g * tiles + t] = 0;
    return;
  }
  // The rows, coalesced (entry e of the group: query e / k, list position e % k).
  const std::int32_t* const first = a.topk + g * a.topk_stride_h + static_cast<std::int64_t>(gr.q0 + gr.s0) * a.topk_stride_t;
  for (int e = i; e < gr.n * k; e += kThreads) rows[e / k][e % k] = first[(e / k) * a.topk_stride_t + (e % k) * a.topk_stride_s];
  __syncthreads();  // also publishes keys / n_ids
  int ids[kMaxK];
  const bool valid = i < gr.n;
#pragma unroll
  for (int s = 0; s < kMaxK; ++s) ids[s] = valid && s < k ? rows[i][s] : -1;
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
  // Too many distinct blocks to gain anything (random selections), or no grouping asked for: identity.
  const bool grouped = a.tile_slots != nullptr && n_ids <= kMaxIds;  // uniform
  order[i] = static_cast<unsigned char>(i);
  if (grouped) {
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
  }
  __syncthreads();
  if (a.tile_slots != nullptr) {
    std::uint8_t* const slots = a.tile_slots + (static_cast<std::int64_t>(g) * tiles + gr.tile0) * kTileTokens;
    if (i < (gr.n + kTileTokens - 1) / kTileTokens * kTileTokens) slots[i] = i < gr.n ? order[i] : static_cast<std::uint8_t>(i);
  }
  if constexpr (kMask) {
    // The rule needs only |U_w|, the number of distinct ids each warpgroup's 4 slots list (no union built): a warp
    // per tile, lane l holding entries l and l + 32 of each half of it, i.e. slots 4 w + l / 16 and 4 w + 2 + l / 16,
    // list position l % 16.
    if (i < gr.n) slot_of[order[i]] = static_cast<unsigned char>(i);
    const int s = lane % kMaxK;
    for (int j = warp; j * kTileTokens < gr.n; j += kThreads / 32) {  // uniform over the warp
      const int ntok = min(kTileTokens, gr.n - j * kTileTokens);
      int id[4];  // entry jj: slot 2 jj + lane / 16 (jj = 0, 1: warpgroup 0; 2, 3: warpgroup 1)
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {
        const int slot = 2 * jj + lane / kMaxK;
        id[jj] = slot < ntok && s < k ? rows[order[j * kTileTokens + slot]][s] : -1;  // negatives: never first
      }
      // Lower bounds first: a warpgroup's union holds at least the distinct ids of two of its slots (one match_any
      // each). Where they already exceed the budget (random selections past the first blocks) the tile is
      // KV-outer's and the exact count (32 shuffles per warpgroup: the kernel is bound by them at 1M random, ncu)
      // is skipped; the decision is the rule's either way (takes_union is monotone in the counts). Uniform over the
      // warp. H200, random 1M with 64K chunks: kAuto's fronts 5.82-5.83 -> 5.77-5.78 ms.
      // The exact count of a warpgroup's 64 entries (pair a, pair b) reuses the pairs' first occurrences: the
      // distinct ids of a plus b's first occurrences that a does not hold (4 match_any per tile instead of 8, 40
      // registers instead of 48; H200, clustered 128K: fronts 1.07 -> 1.035 ms).
      bool first[4];
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) first[jj] = warp_first(id[jj]);
      const int d0 = warp_count(first[0]), d2 = warp_count(first[2]);
      const bool drop =
          takes_union(a, ntok, max(d0, warp_count(first[1])), max(d2, warp_count(first[3]))) &&
          takes_union(a, ntok, d0 + warp_count(!warp_contains(id[0], id[1]) && first[1]),
                      d2 + warp_count(!warp_contains(id[2], id[3]) && first[3]));  // shuffles on every lane
      if (lane == 0) {
        a.tile_flags[g * tiles + gr.tile0 + j] = drop;
        tile_drop[j] = drop;
      }
    }
    __syncthreads();
    // The masked rows, coalesced: a union tile's queries list nothing for the KV-outer chain.
    std::int32_t* const out = a.masked_topk + (g * a.total_q + gr.q0 + gr.s0) * k;
    for (int e = i; e < gr.n * k; e += kThreads) {
      const int q = e / k, pos = e % k;
      out[e] = tile_drop[slot_of[q] / kTileTokens] ? (pos == 0 ? kRowElsewhere : -1) : rows[q][pos];
    }
  }
}

Status launch_groups(const UnionLaunch& a, bool mask, const char* what) {
  MSA_RETURN_IF_ERROR(check_union_shapes(a, what));
  if (a.total_q == 0 || a.num_requests == 0) return Status::Ok();
  const dim3 grid(static_cast<unsigned>(group_count(a)), static_cast<unsigned>(a.num_kv_heads));
  cudaError_t e = mask ? launch_pdl(token_groups_kernel<true>, grid, dim3(kThreads), 0, static_cast<cudaStream_t>(a.stream), a)
                       : launch_pdl(token_groups_kernel<false>, grid, dim3(kThreads), 0, static_cast<cudaStream_t>(a.stream), a);
  if (e == cudaSuccess) e = cudaGetLastError();
  return e == cudaSuccess ? Status::Ok() : Status::CudaError(std::string(what) + ": " + cudaGetErrorString(e));
}

}  // namespace

Status launch_token_groups(const UnionLaunch& a) {
  if (a.tile_slots == nullptr) return Status::Ok();
  return launch_groups(a, false, "union-of-blocks token groups");
}

Status launch_union_mask(const UnionLaunch& a) {
  if (a.tile_flags == nullptr || a.masked_topk == nullptr)
    return Status::InvalidArgument("union-of-blocks mask: needs tile_flags and masked_topk");
  return launch_groups(a, true, "union-of-blocks mask");
}

}  // namespace kernels
}  // namespace msa
