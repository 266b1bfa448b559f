// k2q.cu — device builder of the reverse (KV block -> queries) CSR, byte-identical to reference::build_k2q_csr.
//
// Every (head g, token t, slot s) of topk becomes one (key, value) pair, written in ascending (g, t, s) order:
// key = g * (R_cap + 1) + row of the selected block (rows numbered level-major: block 0 of every request, then
// block 1, ...), value = request-local query index | (split slot << 24), the split slot being the block's rank among
// the row's valid ids in ascending id order. Invalid slots (-1) get the key g * (R_cap + 1) + R_cap, past every row
// of the head. A stable LSD radix sort (CUB) on the keys then leaves, for each head, exactly T * k entries: its rows
// in order, queries ascending inside each row (stability keeps the token order), the padding last. One more pass
// writes q_indices / qsplit_indices and the row pointers from the row boundaries. No atomics: the result is
// deterministic, and every launch and workspace size depends on capacities only (graph-safe).
//
// The work schedule (optional) splits each row into items of at most max_q queries: per-row item counts, an
// exclusive scan, one thread per item (binary search for its row), then a stable radix sort on (head, max_q - q_count)
// (items were generated in (head, row, q_begin) order, so ties keep it), as reference::build_k2q_schedule.
//
// Invariants: k <= 16; T < 2^24 (24-bit query indices, checked with the other size limits); rows are a function of
// seq_lens_k only; a selected id at or past the request's block count (a broken topk contract) is treated as padding,
// never read out of bounds.
#include <cuda_runtime.h>

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>
#include <algorithm>
#include <cstdint>
#include <string>

#include "kernels/common/search.cuh"
#include "kernels/k2q/launch.h"

namespace msa {
namespace kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxK = 16;
constexpr int kBlock = 128;

__device__ __forceinline__ int request_blocks(const K2qBuildArgs& a, int b) {
  const int L = a.seq_lens_k[b * a.seq_stride];
  return min((max(L, 0) + kBlock - 1) / kBlock, a.max_blocks);
}

// One thread per (request b, block j) of the capacity grid: the level-major row of (b, j), and the row tables.
__global__ void rows_kernel(const K2qBuildArgs a, const K2qBuildOutputs o, std::int32_t* row_of) {
  const std::int64_t f = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const std::int64_t r_cap = static_cast<std::int64_t>(a.num_requests) * a.max_blocks;
  if (f >= r_cap) return;
  const int b = static_cast<int>(f / a.max_blocks), j = static_cast<int>(f % a.max_blocks);
  std::int64_t rows = 0, row = 0;  // R, and the rows before (b, j): min(j, n_b') per request, + earlier requests at level j
  for (int q = 0; q < a.num_requests; ++q) {
    const int n = request_blocks(a, q);
    rows += n;
    row += min(j, n) + (q < b && n > j ? 1 : 0);
  }
  const bool valid = j < request_blocks(a, b);
  row_of[f] = valid ? static_cast<std::int32_t>(row) : -1;
  if (valid) {
    o.row_batch[row] = b;
    o.row_block[row] = j;
  }
  if (f >= rows) {  // rows past R are empty (disjoint from the valid rows written above)
    o.row_batch[f] = -1;
    o.row_block[f] = -1;
  }
  if (f == 0) *o.total_rows = static_cast<std::int32_t>(rows);
}

// One thread per (head g, token t): split count, and the (key, value) pair of each of the row's k slots.
__global__ void pairs_kernel(const K2qBuildArgs a, const K2qBuildOutputs o, const std::int32_t* row_of,
                             std::uint32_t* keys, std::int32_t* values) {
  const std::int64_t p = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const std::int64_t T = a.total_q;
  if (p >= a.num_heads * T) return;
  const int g = static_cast<int>(p / T);
  const std::int64_t t = p % T;
  const int b = last_at_most(a.cu_seqlens_q, a.cu_stride, a.num_requests, t);  // the request of token t
  const int i = static_cast<int>(t - a.cu_seqlens_q[b * a.cu_stride]);
  const int n = request_blocks(a, b);
  int ids[kMaxK];
  int count = 0;
  const std::int32_t* row = a.topk + g * a.topk_stride_h + t * a.topk_stride_t;
#pragma unroll
  for (int s = 0; s < kMaxK; ++s) {
    ids[s] = s < a.k ? row[s * a.topk_stride_s] : -1;
    if (s == count && ids[s] >= 0) ++count;  // valid ids form a prefix
  }
  // A row the union-of-blocks kernel computes (its first id is kRowElsewhere, from launch_union_mask) gets count -1,
  // which tells the combine to leave its output alone.
  o.split_counts[t * a.num_heads + g] = ids[0] == kRowElsewhere ? -1 : count;
  const std::int64_t r_cap = static_cast<std::int64_t>(a.num_requests) * a.max_blocks;
  const std::uint32_t head_base = static_cast<std::uint32_t>(g * (r_cap + 1));
#pragma unroll
  for (int s = 0; s < kMaxK; ++s) {
    if (s >= a.k) break;
    const std::int64_t pos = p * a.k + s;  // (g * T + t) * k + s: ascending token order for the stable sort
    const int id = ids[s];
    if (s < count && id < n) {
      int slot = 0;
#pragma unroll
      for (int u = 0; u < kMaxK; ++u) slot += u < count && ids[u] < id ? 1 : 0;
      keys[pos] = head_base + static_cast<std::uint32_t>(row_of[static_cast<std::int64_t>(b) * a.max_blocks + id]);
      values[pos] = i | (slot << 24);
    } else {
      keys[pos] = head_base + static_cast<std::uint32_t>(r_cap);
      values[pos] = -1;
    }
  }
}

// One thread per sorted entry: the query lists, and the row pointers of the rows that start at this entry.
__global__ void scatter_kernel(const K2qBuildArgs a, const K2qBuildOutputs o, const std::uint32_t* keys,
                               const std::int32_t* values) {
  const std::int64_t p = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const std::int64_t seg = a.total_q * a.k;  // entries per head, padding included
  if (p >= a.num_heads * seg) return;
  const std::int64_t r_cap = static_cast<std::int64_t>(a.num_requests) * a.max_blocks;
  const std::int64_t g = p / seg, pl = p % seg;
  const std::int64_t head_base = g * (r_cap + 1);
  const std::int64_t row = keys[p] - head_base;
  const bool pad = row == r_cap;
  o.q_indices[p] = pad ? -1 : (values[p] & 0xFFFFFF);
  o.qsplit_indices[p] = pad ? -1 : values[p];
  std::int32_t* row_ptr = o.row_ptr + head_base;
  const std::int64_t prev = pl == 0 ? -1 : static_cast<std::int64_t>(keys[p - 1]) - head_base;
  for (std::int64_t r = prev + 1; r <= row; ++r) row_ptr[r] = static_cast<std::int32_t>(pl);
  if (pl == seg - 1)
    for (std::int64_t r = row + 1; r <= r_cap; ++r) row_ptr[r] = static_cast<std::int32_t>(seg);
}

// T = 0: no entries, every row pointer is 0.
__global__ void empty_rows_kernel(const K2qBuildArgs a, const K2qBuildOutputs o) {
  const std::int64_t p = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const std::int64_t r_cap = static_cast<std::int64_t>(a.num_requests) * a.max_blocks;
  if (p < a.num_heads * (r_cap + 1)) o.row_ptr[p] = 0;
}

// ---- work schedule ----
constexpr int kItemInts = 6;  // head_kv, row, q_begin, q_count, batch, kv_block

// One thread per (head g, row r) of the capacity grid: the row's number of items.
__global__ void item_counts_kernel(const K2qBuildArgs a, const K2qBuildOutputs o, std::int32_t* n_items) {
  const std::int64_t f = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const std::int64_t r_cap = static_cast<std::int64_t>(a.num_requests) * a.max_blocks;
  if (f >= a.num_heads * r_cap) return;
  const std::int32_t* row_ptr = o.row_ptr + (f / r_cap) * (r_cap + 1) + f % r_cap;
  n_items[f] = (row_ptr[1] - row_ptr[0] + a.max_q_per_item - 1) / a.max_q_per_item;
}

__global__ void item_total_kernel(const K2qBuildArgs a, const K2qBuildOutputs o, const std::int32_t* n_items,
                                  const std::int32_t* offsets) {
  const std::int64_t last = a.num_heads * static_cast<std::int64_t>(a.num_requests) * a.max_blocks - 1;
  *o.num_items = last < 0 ? 0 : offsets[last] + n_items[last];
}

// An item's sort key: head-major, largest first within each head (the order of reference::build_k2q_schedule);
// item_key(num_heads, max_q) = num_heads * (max_q + 1) is past every item, for the slots past the total (and
// fits the sort's item_key_bits).
__device__ __forceinline__ std::uint32_t item_key(const K2qBuildArgs& a, std::int64_t g, int q_count) {
  return static_cast<std::uint32_t>(g * (a.max_q_per_item + 1) + (a.max_q_per_item - q_count));
}

// One thread per item slot: the item (its row by binary search on the offsets) and its sort key (item_key).
__global__ void items_kernel(const K2qBuildArgs a, const K2qBuildOutputs o, const std::int32_t* offsets,
                             std::int32_t* items, std::uint32_t* keys, std::int32_t* values, std::int64_t capacity) {
  const std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= capacity) return;
  values[idx] = static_cast<std::int32_t>(idx);
  if (idx >= *o.num_items) {
    keys[idx] = item_key(a, a.num_heads, a.max_q_per_item);
    return;
  }
  const std::int64_t r_cap = static_cast<std::int64_t>(a.num_requests) * a.max_blocks;
  const std::int64_t lo = last_at_most(offsets, 1, a.num_heads * r_cap, idx);  // the (head, row) of item idx
  const std::int64_t g = lo / r_cap, r = lo % r_cap;
  const std::int32_t* row_ptr = o.row_ptr + g * (r_cap + 1) + r;
  const int q_begin = static_cast<int>(idx - offsets[lo]) * a.max_q_per_item;
  const int q_count = min(a.max_q_per_item, row_ptr[1] - row_ptr[0] - q_begin);
  std::int32_t* item = items + idx * kItemInts;
  item[0] = static_cast<std::int32_t>(g);
  item[1] = static_cast<std::int32_t>(r);
  item[2] = q_begin;
  item[3] = q_count;
  item[4] = o.row_batch[r];
  item[5] = o.row_block[r];
  keys[idx] = item_key(a, g, q_count);
}

__global__ void gather_items_kernel(const K2qBuildOutputs o, const std::int32_t* items, const std::int32_t* order,
                                    std::int64_t capacity) {
  const std::int64_t p = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (p >= capacity) return;
  const bool used = p < *o.num_items;
#pragma unroll
  for (int c = 0; c < kItemInts; ++c)
    o.items[p * kItemInts + c] = used ? items[static_cast<std::int64_t>(order[p]) * kItemInts + c] : -1;
}

struct Layout {  // workspace segments, each 256-byte aligned; one CUB scratch shared by the sorts and the scan
  std::size_t row_of, keys_in, keys_out, values_in, values_out;
  std::size_t n_items, offsets, items, item_keys_in, item_keys_out, item_values_in, item_values_out;
  std::size_t scratch, scratch_bytes, total;
};

std::size_t align256(std::size_t x) { return (x + 255) / 256 * 256; }


int bits_for(std::uint64_t max_value) {
  int bits = 1;
  while (bits < 32 && (std::uint64_t{1} << bits) <= max_value) ++bits;
  return bits;
}

int key_bits(const K2qBuildArgs& a) {
  return bits_for(static_cast<std::uint64_t>(a.num_heads) * (k2q_row_capacity(a) + 1) - 1);
}

int item_key_bits(const K2qBuildArgs& a) {
  return bits_for(static_cast<std::uint64_t>(a.num_heads) * (a.max_q_per_item + 1));
}

Status layout(const K2qBuildArgs& a, Layout* l) {
  const std::int64_t n = a.num_heads * a.total_q * a.k;
  const std::int64_t rows = a.num_heads * k2q_row_capacity(a);
  const std::int64_t items = a.max_q_per_item > 0 ? k2q_item_capacity(a) : 0;
  std::size_t off = 0;
  auto take = [&](std::size_t* field, std::int64_t bytes) {
    *field = off;
    off += align256(static_cast<std::size_t>(bytes));
  };
  take(&l->row_of, k2q_row_capacity(a) * 4);
  take(&l->keys_in, n * 4);
  take(&l->keys_out, n * 4);
  take(&l->values_in, n * 4);
  take(&l->values_out, n * 4);
  take(&l->n_items, items > 0 ? rows * 4 : 0);
  take(&l->offsets, items > 0 ? rows * 4 : 0);
  take(&l->items, items * kItemInts * 4);
  take(&l->item_keys_in, items * 4);
  take(&l->item_keys_out, items * 4);
  take(&l->item_values_in, items * 4);
  take(&l->item_values_out, items * 4);
  l->scratch = off;
  l->scratch_bytes = 0;
  std::size_t need = 0;
  cudaError_t e = cudaSuccess;
  if (n > 0) {
    e = cub::DeviceRadixSort::SortPairs(nullptr, need, static_cast<const std::uint32_t*>(nullptr),
                                        static_cast<std::uint32_t*>(nullptr), static_cast<const std::int32_t*>(nullptr),
                                        static_cast<std::int32_t*>(nullptr), n, 0, key_bits(a));
    l->scratch_bytes = std::max(l->scratch_bytes, need);
  }
  if (e == cudaSuccess && items > 0) {
    e = cub::DeviceScan::ExclusiveSum(nullptr, need, static_cast<const std::int32_t*>(nullptr),
                                      static_cast<std::int32_t*>(nullptr), rows);
    l->scratch_bytes = std::max(l->scratch_bytes, need);
  }
  if (e == cudaSuccess && items > 0) {
    e = cub::DeviceRadixSort::SortPairs(nullptr, need, static_cast<const std::uint32_t*>(nullptr),
                                        static_cast<std::uint32_t*>(nullptr), static_cast<const std::int32_t*>(nullptr),
                                        static_cast<std::int32_t*>(nullptr), items, 0, item_key_bits(a));
    l->scratch_bytes = std::max(l->scratch_bytes, need);
  }
  if (e != cudaSuccess) return Status::CudaError(std::string("k2q: scratch size query: ") + cudaGetErrorString(e));
  l->total = off + align256(l->scratch_bytes);
  return Status::Ok();
}

unsigned blocks_for(std::int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace

std::int64_t k2q_row_capacity(const K2qBuildArgs& a) { return static_cast<std::int64_t>(a.num_requests) * a.max_blocks; }

std::int64_t k2q_item_capacity(const K2qBuildArgs& a) {
  if (a.max_q_per_item < 1) return 0;
  return a.num_heads * (k2q_row_capacity(a) + (a.total_q * a.k + a.max_q_per_item - 1) / a.max_q_per_item);
}

static Status check_k2q_limits(const K2qBuildArgs& a) {
  if (a.k < 1 || a.k > kMaxK) return Status::InvalidArgument("topk: k must be in [1, 16], got " + std::to_string(a.k));
  if (a.max_q_per_item < 0) return Status::InvalidArgument("max_q_per_item: must be >= 0 (0: no schedule)");
  const std::uint64_t keys = static_cast<std::uint64_t>(a.num_heads) * (k2q_row_capacity(a) + 1);
  if (keys >= (std::uint64_t{1} << 32) || a.num_heads * a.total_q * a.k >= (std::int64_t{1} << 31))
    return Status::InvalidArgument("k2q: H * (B * max_blocks + 1) and H * T * k must stay below 2^32 and 2^31");
  if (a.total_q >= (std::int64_t{1} << 24))  // qsplit_indices: q_local | split slot << 24
    return Status::InvalidArgument("max_chunk_tokens: the KV-outer schedule takes chunks of fewer than 2^24 query "
                                   "tokens (k2q's 24-bit query indices), got a chunk of " + std::to_string(a.total_q));
  return Status::Ok();
}

Status k2q_workspace_bytes(const K2qBuildArgs& a, std::size_t* bytes) {
  MSA_RETURN_IF_ERROR(check_k2q_limits(a));  // at plan time: run() then never meets them
  Layout l;
  MSA_RETURN_IF_ERROR(layout(a, &l));
  *bytes = l.total;
  return Status::Ok();
}

Status launch_k2q_build(const K2qBuildArgs& a, const K2qBuildOutputs& o, void* workspace, std::size_t bytes) {
  MSA_RETURN_IF_ERROR(check_k2q_limits(a));
  Layout l;
  MSA_RETURN_IF_ERROR(layout(a, &l));
  if (bytes < l.total || workspace == nullptr)
    return Status::InvalidArgument("workspace: k2q needs " + std::to_string(l.total) + " bytes, got " +
                                   std::to_string(bytes));
  auto* base = static_cast<unsigned char*>(workspace);
  auto* row_of = reinterpret_cast<std::int32_t*>(base + l.row_of);
  auto* keys_in = reinterpret_cast<std::uint32_t*>(base + l.keys_in);
  auto* keys_out = reinterpret_cast<std::uint32_t*>(base + l.keys_out);
  auto* values_in = reinterpret_cast<std::int32_t*>(base + l.values_in);
  auto* values_out = reinterpret_cast<std::int32_t*>(base + l.values_out);
  const auto stream = static_cast<cudaStream_t>(a.stream);
  const std::int64_t r_cap = k2q_row_capacity(a), n = a.num_heads * a.total_q * a.k;
  if (r_cap > 0) rows_kernel<<<blocks_for(r_cap), kThreads, 0, stream>>>(a, o, row_of);
  if (n == 0) {
    empty_rows_kernel<<<blocks_for(a.num_heads * (r_cap + 1)), kThreads, 0, stream>>>(a, o);
  } else {
    pairs_kernel<<<blocks_for(a.num_heads * a.total_q), kThreads, 0, stream>>>(a, o, row_of, keys_in, values_in);
    std::size_t scratch = l.scratch_bytes;
    const cudaError_t e = cub::DeviceRadixSort::SortPairs(base + l.scratch, scratch, keys_in, keys_out, values_in,
                                                          values_out, n, 0, key_bits(a), stream);
    if (e != cudaSuccess) return Status::CudaError(std::string("k2q: sort: ") + cudaGetErrorString(e));
    scatter_kernel<<<blocks_for(n), kThreads, 0, stream>>>(a, o, keys_out, values_out);
  }
  const std::int64_t items = k2q_item_capacity(a), rows = a.num_heads * r_cap;
  if (items > 0) {
    auto* n_items = reinterpret_cast<std::int32_t*>(base + l.n_items);
    auto* offsets = reinterpret_cast<std::int32_t*>(base + l.offsets);
    auto* tmp = reinterpret_cast<std::int32_t*>(base + l.items);
    auto* item_keys_in = reinterpret_cast<std::uint32_t*>(base + l.item_keys_in);
    auto* item_keys_out = reinterpret_cast<std::uint32_t*>(base + l.item_keys_out);
    auto* order_in = reinterpret_cast<std::int32_t*>(base + l.item_values_in);
    auto* order_out = reinterpret_cast<std::int32_t*>(base + l.item_values_out);
    std::size_t scratch = l.scratch_bytes;
    cudaError_t e = cudaSuccess;
    if (rows > 0) {
      item_counts_kernel<<<blocks_for(rows), kThreads, 0, stream>>>(a, o, n_items);
      e = cub::DeviceScan::ExclusiveSum(base + l.scratch, scratch, n_items, offsets, rows, stream);
      if (e != cudaSuccess) return Status::CudaError(std::string("k2q: item scan: ") + cudaGetErrorString(e));
    }
    item_total_kernel<<<1, 1, 0, stream>>>(a, o, n_items, offsets);
    items_kernel<<<blocks_for(items), kThreads, 0, stream>>>(a, o, offsets, tmp, item_keys_in, order_in, items);
    scratch = l.scratch_bytes;
    e = cub::DeviceRadixSort::SortPairs(base + l.scratch, scratch, item_keys_in, item_keys_out, order_in, order_out,
                                        items, 0, item_key_bits(a), stream);
    if (e != cudaSuccess) return Status::CudaError(std::string("k2q: item sort: ") + cudaGetErrorString(e));
    gather_items_kernel<<<blocks_for(items), kThreads, 0, stream>>>(o, tmp, order_out, items);
  }
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? Status::Ok() : Status::CudaError(std::string("k2q: launch: ") + cudaGetErrorString(e));
}

}  // namespace kernels
}  // namespace msa
