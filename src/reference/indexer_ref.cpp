// indexer_ref.cpp — CPU index branch: block-max scores and the exact top-k selection contract.
//
// Query tokens are processed in tiles of 16 consecutive tokens of one request, all index heads at once, so each
// index-K page is converted to float once per tile. Only history blocks (j < local block) are scored: they are
// always fully visible, and the local block is never ranked. Scores live in a per-wave buffer whose size is
// bounded (kWaveScoreBytes), never a T x n_blocks matrix.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "msa/params.h"
#include "reference/numeric.h"
#include "reference/parallel.h"
#include "reference/reference_impl.h"

namespace msa {
namespace ref {
namespace {

constexpr std::int64_t kTileTokens = 16;
constexpr std::int64_t kChunkBlocks = 32;                    // blocks per parallel work item
constexpr std::int64_t kWaveScoreBytes = 64ll << 20;         // bound on the score buffer of one wave

struct Tile {
  std::int64_t b, i0, n;  // request, first query index in the request, tokens in the tile
  std::int64_t n_hist;    // history blocks of the tile's last token (the most of any token in it)
  std::int64_t score_off; // offset of the tile's [n * H][n_hist] scores in the wave buffer
};

void write_row(const Tensor& topk, std::int64_t g, std::int64_t t, const std::vector<std::int32_t>& ids) {
  auto* base = static_cast<std::int32_t*>(topk.data) + g * topk.stride[0] + t * topk.stride[1];
  for (std::int64_t s = 0; s < topk.shape[2]; ++s)
    base[s * topk.stride[2]] = s < static_cast<std::int64_t>(ids.size()) ? ids[static_cast<std::size_t>(s)] : -1;
}

// score descending, ties to the smaller id; -inf candidates are never chosen.
void select_row(const float* scores, std::int64_t local, std::int64_t k,
                std::vector<std::int32_t>* ids) {
  ids->clear();
  if (local + 1 <= k) {
    for (std::int64_t j = 0; j <= local; ++j) ids->push_back(static_cast<std::int32_t>(j));
    return;
  }
  std::vector<std::int32_t> cand(static_cast<std::size_t>(local));
  for (std::int64_t j = 0; j < local; ++j) cand[static_cast<std::size_t>(j)] = static_cast<std::int32_t>(j);
  const std::int64_t want = std::min<std::int64_t>(k - 1, local);
  std::partial_sort(cand.begin(), cand.begin() + want, cand.end(), [&](std::int32_t a, std::int32_t b) {
    const float sa = scores[a], sb = scores[b];
    return sa != sb ? sa > sb : a < b;
  });
  for (std::int64_t r = 0; r < want; ++r) {
    const std::int32_t j = cand[static_cast<std::size_t>(r)];
    if (scores[j] == -std::numeric_limits<float>::infinity()) break;
    ids->push_back(j);
  }
  ids->push_back(static_cast<std::int32_t>(local));
}

}  // namespace

void select_blocks(const Tensor& index_q, const Tensor& index_k_cache, const Tensor& page_table,
                   const BatchInfo& batch, const Tensor& topk) {
  const std::int64_t H = index_q.shape[1], k = topk.shape[2];
  std::vector<Tile> tiles;
  for (std::int64_t b = 0; b < batch.num_requests(); ++b)
    for (std::int64_t i0 = 0; i0 < batch.nq(b); i0 += kTileTokens) {
      const std::int64_t n = std::min(kTileTokens, batch.nq(b) - i0);
      tiles.push_back({b, i0, n, batch.position(b, i0 + n - 1) / kBlockSize, 0});
    }

  std::size_t wave_begin = 0;
  while (wave_begin < tiles.size()) {
    // Form a wave of tiles whose scores fit the bound (at least one tile).
    std::size_t wave_end = wave_begin;
    std::int64_t floats = 0;
    while (wave_end < tiles.size()) {
      Tile& tile = tiles[wave_end];
      const std::int64_t need = tile.n * H * tile.n_hist;
      if (wave_end > wave_begin && (floats + need) * 4 > kWaveScoreBytes) break;
      tile.score_off = floats;
      floats += need;
      ++wave_end;
    }
    std::vector<float> scores(static_cast<std::size_t>(floats));

    // Phase 1: block-max scores, one work item per (tile, chunk of history blocks).
    struct Item { std::size_t tile; std::int64_t j0; };
    std::vector<Item> items;
    for (std::size_t ti = wave_begin; ti < wave_end; ++ti)
      for (std::int64_t j0 = 0; j0 < tiles[ti].n_hist; j0 += kChunkBlocks) items.push_back({ti, j0});
    parallel_for(static_cast<std::int64_t>(items.size()), [&](std::int64_t it) {
      const Tile& tile = tiles[items[static_cast<std::size_t>(it)].tile];
      const std::int64_t j0 = items[static_cast<std::size_t>(it)].j0;
      const std::int64_t j1 = std::min(j0 + kChunkBlocks, tile.n_hist);
      std::vector<float> qf(static_cast<std::size_t>(tile.n * H * kHeadDim));
      std::vector<float> kf(static_cast<std::size_t>(kPageSize * kHeadDim));
      for (std::int64_t r = 0; r < tile.n; ++r)
        for (std::int64_t h = 0; h < H; ++h)
          load_row(index_q, (batch.q_start[tile.b] + tile.i0 + r) * index_q.stride[0] + h * index_q.stride[1],
                   &qf[static_cast<std::size_t>((r * H + h) * kHeadDim)]);
      for (std::int64_t j = j0; j < j1; ++j) {
        const std::int64_t page = detail::i32_at(page_table, tile.b, j);
        for (std::int64_t t = 0; t < kPageSize; ++t)
          load_row(index_k_cache, page * index_k_cache.stride[0] + t * index_k_cache.stride[1],
                   &kf[static_cast<std::size_t>(t * kHeadDim)]);
        for (std::int64_t r = 0; r < tile.n; ++r) {
          if (j >= batch.position(tile.b, tile.i0 + r) / kBlockSize) continue;  // not a history block of this token
          for (std::int64_t h = 0; h < H; ++h) {
            const float* qrow = &qf[static_cast<std::size_t>((r * H + h) * kHeadDim)];
            float m = -std::numeric_limits<float>::infinity();  // NaN never wins: (NaN > m) is false
            for (std::int64_t t = 0; t < kPageSize; ++t) {
              const float s = dot128<float>(qrow, &kf[static_cast<std::size_t>(t * kHeadDim)]);
              if (s > m) m = s;
            }
            scores[static_cast<std::size_t>(tile.score_off + (r * H + h) * tile.n_hist + j)] = m;
          }
        }
      }
    });

    // Phase 2: selection per (tile token, head).
    std::vector<std::int64_t> row_tile;
    for (std::size_t ti = wave_begin; ti < wave_end; ++ti)
      for (std::int64_t r = 0; r < tiles[ti].n * H; ++r) row_tile.push_back(static_cast<std::int64_t>(ti));
    std::vector<std::int64_t> row_first(wave_end - wave_begin + 1, 0);
    for (std::size_t ti = wave_begin; ti < wave_end; ++ti)
      row_first[ti - wave_begin + 1] = row_first[ti - wave_begin] + tiles[ti].n * H;
    parallel_for(static_cast<std::int64_t>(row_tile.size()), [&](std::int64_t row) {
      const std::size_t ti = static_cast<std::size_t>(row_tile[static_cast<std::size_t>(row)]);
      const Tile& tile = tiles[ti];
      const std::int64_t rr = row - row_first[ti - wave_begin];
      const std::int64_t r = rr / H, h = rr % H;
      const std::int64_t local = batch.position(tile.b, tile.i0 + r) / kBlockSize;
      std::vector<std::int32_t> ids;
      select_row(&scores[static_cast<std::size_t>(tile.score_off + rr * tile.n_hist)], local, k, &ids);
      write_row(topk, h, batch.q_start[tile.b] + tile.i0 + r, ids);
    });
    wave_begin = wave_end;
  }
}

}  // namespace ref
}  // namespace msa
