// union_tiles.cuh — how the union-of-blocks schedule cuts a varlen batch into work: tiles of 8 query slots of one
// request (union_blocks.cu: 4 slots per consumer warpgroup) inside groups of 128 slots (token_groups.cu), and
// which query token sits in each slot.
//
// Tiles are numbered request by request, ceil(nq / 8) per request, then one per request of slack, so that the
// count depends on total_q and the request count only. Group gi of request b holds its slots 128 gi .. 128 gi + 127,
// i.e. tiles 16 gi .. 16 gi + 15 of the request. Without a grouping (tile_slots == nullptr) slot s holds query s of
// the request; with one, tile_slots[(g * tiles + tile) * 8 + i] names, for KV head g, the query (as an offset in the
// tile's group) that sits in slot i of the tile: a permutation of each group's queries.
#ifndef MSA_KERNELS_SM90_ATTENTION_UNION_TILES_CUH_
#define MSA_KERNELS_SM90_ATTENTION_UNION_TILES_CUH_

#include <cstdint>
#include <string>

#include "kernels/sm90/attention/launch.h"

namespace msa {
namespace kernels {

constexpr int kTileTokens = 8, kGroupTokens = 128;
constexpr int kMaxK = 16;  // widest selection the union schedule takes (a tile's 8 lists: at most 128 ids)
constexpr int kUnionGroup = 16;  // G = Hq / Hkv of the union schedule (4 tokens x 16 heads per 64-row warpgroup)

// The shapes every union launch (token groups, mask, list, kernel) takes; `what` names the launch in the message.
inline Status check_union_shapes(const UnionLaunch& a, const char* what) {
  if (a.num_kv_heads < 1 || a.num_q_heads != kUnionGroup * a.num_kv_heads)
    return Status::NotImplemented(std::string(what) + ": Hq / Hkv must be 16 in this version");
  if (a.k < 1 || a.k > kMaxK)
    return Status::NotImplemented(std::string(what) + ": k must be in [1, 16], got " + std::to_string(a.k));
  return Status::Ok();
}

__host__ __device__ __forceinline__ std::int64_t tile_count(const UnionLaunch& a) {
  return (a.total_q + kTileTokens - 1) / kTileTokens + a.num_requests;
}
// Groups of the launch (an upper bound like tile_count's): T / 128 + B.
__host__ __device__ __forceinline__ std::int64_t group_count(const UnionLaunch& a) {
  return (a.total_q + kGroupTokens - 1) / kGroupTokens + a.num_requests;
}

// A tile: slots [i0, i0 + ntok) of request b (queries q0 .. q0 + nq - 1 of the launch); `index` is its number.
struct Tile {
  int b, i0, ntok, q0, nq, index;
};
__device__ __forceinline__ bool find_tile(const UnionLaunch& a, int tile, Tile* t) {
  const int index = tile;
  for (int b = 0; b < a.num_requests; ++b) {
    const int q0 = a.cu_seqlens_q[b * a.cu_stride], nq = a.cu_seqlens_q[(b + 1) * a.cu_stride] - q0;
    const int tiles = (nq + kTileTokens - 1) / kTileTokens;
    if (tile < tiles) {
      *t = Tile{b, tile * kTileTokens, min(kTileTokens, nq - tile * kTileTokens), q0, nq, index};
      return true;
    }
    tile -= tiles;
  }
  return false;
}

// kAuto's rule for a tile of ntok slots whose two warpgroups list u0 and u1 distinct blocks: the union schedule
// when together they compute at most union_budget blocks per warpgroup with tokens (the same inputs give the same
// answer in the mask launch and in the union kernel).
__device__ __forceinline__ bool takes_union(const UnionLaunch& a, int ntok, int u0, int u1) {
  return u0 + u1 <= a.union_budget * ((ntok + 3) / 4);
}

// The query (request-relative) in slot i of tile t for KV head g.
__device__ __forceinline__ int slot_query(const UnionLaunch& a, const Tile& t, int g, int i) {
  if (a.tile_slots == nullptr) return t.i0 + i;
  return (t.i0 & ~(kGroupTokens - 1)) + a.tile_slots[(static_cast<std::int64_t>(g) * tile_count(a) + t.index) * kTileTokens + i];
}

// A group: slots [s0, s0 + n) of request b, whose first tile is number tile0. Past the last group, find_group
// returns false with tile0 = the launch's real tiles (those of its requests, without tile_count's slack).
struct Group {
  int b, s0, n, q0, tile0;
};
__device__ __forceinline__ bool find_group(const UnionLaunch& a, int group, Group* gr) {
  int tile0 = 0;
  for (int b = 0; b < a.num_requests; ++b) {
    const int q0 = a.cu_seqlens_q[b * a.cu_stride], nq = a.cu_seqlens_q[(b + 1) * a.cu_stride] - q0;
    const int groups = (nq + kGroupTokens - 1) / kGroupTokens;
    if (group < groups) {
      const int s0 = group * kGroupTokens;
      *gr = Group{b, s0, min(kGroupTokens, nq - s0), q0, tile0 + s0 / kTileTokens};
      return true;
    }
    group -= groups;
    tile0 += (nq + kTileTokens - 1) / kTileTokens;
  }
  gr->tile0 = tile0;
  return false;
}

}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_SM90_ATTENTION_UNION_TILES_CUH_
