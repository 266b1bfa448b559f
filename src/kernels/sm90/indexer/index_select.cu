// index_select.cu — sm90 index selection (prefill and decode): block-max scores on tensor cores with the top-(k-1)
// kept on chip while the index-K blocks stream by.
//
// One CTA owns one tile of 64 index rows = (64 / H) consecutive query tokens of one request x H index heads, so each
// index-K page is read once for all heads. It streams the history blocks 0 .. l_max - 1 of the tile (l_max = local
// block of its last token) through a 2-stage cp.async ring in shared memory; each of the 4 warps scores its 16 rows
// against the page's 128 keys with mma.sync m16n8k16 (bf16 in, fp32 accumulate), reduces each row's maximum in
// registers (fmaxf ignores NaN, so a NaN score counts as -inf), and the row's owner lane inserts the block into the
// row's sorted list in shared memory only when it beats the row's current (k-1)-th score, held in a register.
// Blocks arrive in ascending id order and insertion needs a strictly greater score, so ties keep the smaller id.
// The local block is never scored; it is appended at the end. No score ever reaches device memory.
//
// Invariants: H divides 64; rows whose token lies past the request's queries are computed on zeros and never
// written; a row only considers blocks j < its own local block.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "kernels/sm90/indexer/launch.h"

namespace msa {
namespace kernels {
namespace {

constexpr int kRows = 64;  // index rows per CTA
constexpr int kWarps = 4;  // 16 rows each (one m16 tile)
constexpr int kThreads = kWarps * 32;
constexpr int kKeys = 128;
constexpr int kDim = 128;
constexpr int kPad = 136;  // smem row stride in elements: 272-byte rows make the B-fragment loads bank-conflict free
constexpr int kStages = 2;
constexpr int kMaxList = 15;
constexpr int kMaxSplits = 64;  // decode splits per request; bounds the merge kernel's per-thread cursor array
constexpr int kStageElems = kKeys * kPad;
constexpr size_t kSmemBytes = kStages * kStageElems * 2 + kRows * kMaxList * (sizeof(float) + sizeof(int));

__device__ __forceinline__ int query_start(const IndexSelectLaunch& a, int b) {
  return a.cu_seqlens_q != nullptr ? a.cu_seqlens_q[b * a.cu_stride] : b * a.queries_per_request;
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void mma_bf16(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Copies index-K page `page` (128 x 128 bf16) into a padded stage buffer: 16 x 16-byte chunks per thread.
__device__ __forceinline__ void load_page(const IndexSelectLaunch& a, int page, __nv_bfloat16* stage) {
  const auto* src = static_cast<const __nv_bfloat16*>(a.index_k) + static_cast<std::int64_t>(page) * a.k_stride_page;
#pragma unroll
  for (int i = 0; i < (kKeys * kDim / 8) / kThreads; ++i) {
    const int c = threadIdx.x + i * kThreads, row = c / (kDim / 8), col = (c % (kDim / 8)) * 8;
    cp_async16(stage + row * kPad + col, src + row * a.k_stride_t + col);
  }
}

// Sorted (descending) insertion; a full list drops its last entry. Equal scores stay ahead (smaller ids first).
__device__ __forceinline__ void insert(float* sc, int* id, int& count, int cap, float m, int j) {
  int pos = count < cap ? count : cap - 1;
  while (pos > 0 && sc[pos - 1] < m) {
    sc[pos] = sc[pos - 1];
    id[pos] = id[pos - 1];
    --pos;
  }
  sc[pos] = m;
  id[pos] = j;
  if (count < cap) ++count;
}

// Writes one topk row: every visible block when n_vis = local + 1 <= k, else the `count` ranked ids, the local
// block, then -1 padding.
__device__ __forceinline__ void write_selection(const IndexSelectLaunch& a, std::int64_t token, int head, int local,
                                                const int* ids, int count) {
  std::int32_t* out = a.topk + head * a.topk_stride_h + token * a.topk_stride_t;
  int s = 0;
  if (local + 1 <= a.k) {
    for (; s <= local; ++s) out[s * a.topk_stride_s] = s;
  } else {
    for (; s < count; ++s) out[s * a.topk_stride_s] = ids[s];
    out[s++ * a.topk_stride_s] = local;
  }
  for (; s < a.k; ++s) out[s * a.topk_stride_s] = -1;
}

// Workspace of a split launch: kMaxList scores, then kMaxList ids, for each (index row, split); index row =
// token * H + head. Unused entries hold (-inf, -1).
struct PartialList {
  float* sc;
  int* id;
};
__device__ __forceinline__ PartialList partial_list(const IndexSelectLaunch& a, std::int64_t row, int splits,
                                                    int split) {
  auto* scores = static_cast<float*>(a.workspace);
  auto* ids = reinterpret_cast<int*>(scores + a.total_q * a.num_heads * splits * kMaxList);
  const std::int64_t off = (row * splits + split) * kMaxList;
  return {scores + off, ids + off};
}

__global__ void __launch_bounds__(kThreads) index_select_kernel(const IndexSelectLaunch a) {
  extern __shared__ __align__(16) unsigned char smem[];
  auto* stages = reinterpret_cast<__nv_bfloat16*>(smem);
  auto* list_sc = reinterpret_cast<float*>(smem + kStages * kStageElems * 2);
  auto* list_id = reinterpret_cast<int*>(list_sc + kRows * kMaxList);

  // Tile -> (request, first query). Later tiles of a request see more blocks: launch them first.
  const int H = a.num_heads, tpt = kRows / H;
  int tile = static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x);
  int b = 0, i0 = -1;
  for (; b < a.num_requests; ++b) {
    const int tiles = (query_start(a, b + 1) - query_start(a, b) + tpt - 1) / tpt;
    if (tile < tiles) {
      i0 = tile * tpt;
      break;
    }
    tile -= tiles;
  }
  if (i0 < 0) return;
  const int q0 = query_start(a, b), nq = query_start(a, b + 1) - q0;
  const int L = a.seq_lens_k[b * a.seq_stride];
  const int ntok = min(tpt, nq - i0);
  const int first_pos = L - nq + i0;
  const int n_hist = (first_pos + ntok - 1) / kKeys;  // history blocks of the tile's last token
  // Split s of gridDim.y streams blocks [j_begin, j_end) and leaves a partial list for the merge kernel.
  const int splits = static_cast<int>(gridDim.y), per_split = (n_hist + splits - 1) / splits;
  const int j_begin = min(n_hist, static_cast<int>(blockIdx.y) * per_split);
  const int j_end = min(n_hist, j_begin + per_split);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int r0 = warp * 16 + g, r1 = r0 + 8;
  const bool valid0 = r0 / H < ntok, valid1 = r1 / H < ntok;
  const int local0 = (first_pos + r0 / H) / kKeys, local1 = (first_pos + r1 / H) / kKeys;
  const int cap = a.k - 1;

  // A fragments of this warp's 16 rows, all 128 dims (32 registers), loaded once.
  std::uint32_t qa[kDim / 16][4];
  {
    const auto* q = static_cast<const __nv_bfloat16*>(a.index_q);
    const __nv_bfloat16* row0 = q + (static_cast<std::int64_t>(q0 + i0 + r0 / H)) * a.q_stride_t + (r0 % H) * a.q_stride_h;
    const __nv_bfloat16* row1 = q + (static_cast<std::int64_t>(q0 + i0 + r1 / H)) * a.q_stride_t + (r1 % H) * a.q_stride_h;
#pragma unroll
    for (int kk = 0; kk < kDim / 16; ++kk) {
      const int col = kk * 16 + 2 * c;
      qa[kk][0] = valid0 ? *reinterpret_cast<const std::uint32_t*>(row0 + col) : 0u;
      qa[kk][1] = valid1 ? *reinterpret_cast<const std::uint32_t*>(row1 + col) : 0u;
      qa[kk][2] = valid0 ? *reinterpret_cast<const std::uint32_t*>(row0 + col + 8) : 0u;
      qa[kk][3] = valid1 ? *reinterpret_cast<const std::uint32_t*>(row1 + col + 8) : 0u;
    }
  }

  int count0 = 0, count1 = 0;
  float thr0 = -INFINITY, thr1 = -INFINITY;
  const std::int32_t* pt = a.page_table + static_cast<std::int64_t>(b) * a.pt_stride_b;

  if (j_begin < j_end) {
    load_page(a, pt[j_begin * a.pt_stride_j], stages + (j_begin % kStages) * kStageElems);
    cp_async_commit();
  }
  for (int j = j_begin; j < j_end; ++j) {
    if (j + 1 < j_end) {
      load_page(a, pt[(j + 1) * a.pt_stride_j], stages + ((j + 1) % kStages) * kStageElems);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // stage j is visible to every warp

    const __nv_bfloat16* ks = stages + (j % kStages) * kStageElems;
    float m0 = -INFINITY, m1 = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < kKeys / 8; nt += 4) {
      float acc[4][4] = {};
#pragma unroll
      for (int kk = 0; kk < kDim / 16; ++kk) {
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const __nv_bfloat16* krow = ks + ((nt + u) * 8 + g) * kPad + kk * 16 + 2 * c;
          mma_bf16(acc[u], qa[kk], *reinterpret_cast<const std::uint32_t*>(krow),
                   *reinterpret_cast<const std::uint32_t*>(krow + 8));
        }
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        m0 = fmaxf(m0, fmaxf(acc[u][0], acc[u][1]));
        m1 = fmaxf(m1, fmaxf(acc[u][2], acc[u][3]));
      }
    }
    // The quad's 4 lanes hold disjoint columns of rows r0 and r1.
    m0 = fmaxf(m0, __shfl_xor_sync(0xffffffffu, m0, 1));
    m0 = fmaxf(m0, __shfl_xor_sync(0xffffffffu, m0, 2));
    m1 = fmaxf(m1, __shfl_xor_sync(0xffffffffu, m1, 1));
    m1 = fmaxf(m1, __shfl_xor_sync(0xffffffffu, m1, 2));
    if (c == 0 && cap > 0) {
      if (valid0 && j < local0 && m0 > thr0) {
        insert(list_sc + r0 * kMaxList, list_id + r0 * kMaxList, count0, cap, m0, j);
        if (count0 == cap) thr0 = list_sc[r0 * kMaxList + cap - 1];
      }
      if (valid1 && j < local1 && m1 > thr1) {
        insert(list_sc + r1 * kMaxList, list_id + r1 * kMaxList, count1, cap, m1, j);
        if (count1 == cap) thr1 = list_sc[r1 * kMaxList + cap - 1];
      }
    }
    __syncthreads();  // every warp is done with stage j before it is refilled
  }

  if (splits > 1) {  // partial lists: (score, id) x (k - 1) per (row, split), unused entries (-inf, -1)
    if (c == 0) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int r = half ? r1 : r0, count = half ? count1 : count0;
        if (!(half ? valid1 : valid0)) continue;
        const std::int64_t row = static_cast<std::int64_t>(q0 + i0 + r / H) * H + r % H;
        const PartialList part = partial_list(a, row, splits, static_cast<int>(blockIdx.y));
        for (int s = 0; s < cap; ++s) {
          part.sc[s] = s < count ? list_sc[r * kMaxList + s] : -INFINITY;
          part.id[s] = s < count ? list_id[r * kMaxList + s] : -1;
        }
      }
    }
    return;
  }

  // Write the selection: all visible blocks when n_vis <= k, else the list, the local block, then -1.
  if (c == 0) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = half ? r1 : r0;
      if (!(half ? valid1 : valid0)) continue;
      write_selection(a, q0 + i0 + r / H, r % H, half ? local1 : local0, list_id + r * kMaxList,
                      half ? count1 : count0);
    }
  }
}

// One thread per (token, head): merges the splits' sorted partial lists. Split s holds only ids below split s + 1's,
// so on equal scores the earlier split (the smaller id) wins, which keeps the tie rule exact.
__global__ void merge_splits_kernel(const IndexSelectLaunch a, int splits) {
  const std::int64_t row = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const int H = a.num_heads;
  if (row >= a.total_q * H) return;
  const std::int64_t t = row / H;
  const int head = static_cast<int>(row % H);
  int b = 0;
  while (b + 1 < a.num_requests && query_start(a, b + 1) <= t) ++b;
  const int q0 = query_start(a, b), nq = query_start(a, b + 1) - q0;
  const int local = (a.seq_lens_k[b * a.seq_stride] - nq + static_cast<int>(t - q0)) / kKeys;
  const int cap = a.k - 1;
  int ids[kMaxList];
  int count = 0;
  if (local + 1 > a.k) {
    int head_pos[kMaxSplits];  // next unread entry of each split's list
    for (int p = 0; p < splits; ++p) head_pos[p] = 0;
    for (; count < cap; ++count) {
      int best = -1;
      float best_sc = -INFINITY;
      for (int p = 0; p < splits; ++p) {
        if (head_pos[p] >= cap) continue;
        const float v = partial_list(a, row, splits, p).sc[head_pos[p]];
        if (v > best_sc) {  // strict: an equal score in a later split has a larger id
          best_sc = v;
          best = p;
        }
      }
      if (best < 0) break;  // only -inf left: never selected
      ids[count] = partial_list(a, row, splits, best).id[head_pos[best]++];
    }
  }
  write_selection(a, t, head, local, ids, count);
}

// Splits of a decode launch: enough CTAs for two waves on the GPU, at least 16 blocks (512 KiB) per split.
int decode_splits(const IndexSelectLaunch& a, int tiles, int sms) {
  if (!a.split_pages) return 1;
  const int by_work = (a.max_pages + 15) / 16;
  const int by_gpu = (2 * sms + tiles - 1) / tiles;
  return max(1, min(kMaxSplits, min(by_work, by_gpu)));
}

int sm_count(int device) {
  int sms = 132;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  return sms;
}

Status cuda_error(cudaError_t e, const char* what) {
  return Status::CudaError(std::string("index selection: ") + what + ": " + cudaGetErrorString(e));
}

std::int64_t tile_bound(const IndexSelectLaunch& a) {
  // Upper bound on tiles without reading device metadata: each request wastes less than one tile.
  const int tpt = kRows / a.num_heads;
  return (a.total_q + tpt - 1) / tpt + a.num_requests;
}

}  // namespace

Status index_select_workspace_bytes_sm90(const IndexSelectLaunch& a, std::size_t* bytes) {
  *bytes = 0;
  if (a.num_heads < 1 || kRows % a.num_heads != 0 || a.total_q == 0) return Status::Ok();
  const int splits = decode_splits(a, static_cast<int>(tile_bound(a)), sm_count(a.device));
  if (splits > 1)
    *bytes = static_cast<std::size_t>(a.total_q) * a.num_heads * splits * kMaxList * (sizeof(float) + sizeof(int));
  return Status::Ok();
}

Status launch_index_select_sm90(const IndexSelectLaunch& a) {
  if (a.num_heads < 1 || kRows % a.num_heads != 0)
    return Status::NotImplemented("index selection on CUDA: H_idx must divide 64, got " + std::to_string(a.num_heads));
  if (a.total_q == 0) return Status::Ok();
  const std::int64_t grid = tile_bound(a);
  const int splits = decode_splits(a, static_cast<int>(grid), sm_count(a.device));
  if (splits > 1 && a.workspace == nullptr)
    return Status::InvalidArgument("workspace: the split decode selection needs the workspace of its size query");
  int current = 0;
  cudaError_t e = cudaGetDevice(&current);
  if (e != cudaSuccess) return cuda_error(e, "cudaGetDevice");
  if (current != a.device && (e = cudaSetDevice(a.device)) != cudaSuccess) return cuda_error(e, "cudaSetDevice");
  // Opt in to more than 48 KiB of dynamic shared memory (a per-device attribute; cheap to repeat).
  e = cudaFuncSetAttribute(index_select_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmemBytes));
  if (e == cudaSuccess) {
    const dim3 blocks(static_cast<unsigned>(grid), static_cast<unsigned>(splits));
    index_select_kernel<<<blocks, kThreads, kSmemBytes, static_cast<cudaStream_t>(a.stream)>>>(a);
    if (splits > 1) {
      const std::int64_t rows = a.total_q * a.num_heads;
      merge_splits_kernel<<<static_cast<unsigned>((rows + 127) / 128), 128, 0, static_cast<cudaStream_t>(a.stream)>>>(
          a, splits);
    }
    e = cudaGetLastError();
  }
  if (current != a.device) cudaSetDevice(current);
  return e == cudaSuccess ? Status::Ok() : cuda_error(e, "launch");
}

}  // namespace kernels
}  // namespace msa
