// attention_cuda.h — the CUDA paths of the sparse attention ops (host code: plans, workspace layouts, launches).
//
// Prefill: plan() copies the batch metadata to the host once (it may synchronise), checks it, and cuts the query
// tokens into chunks of at most max_chunk_tokens; run() enqueues, per chunk, the device k2q build, the attention
// kernel (KV-outer for every Hq / Hkv; the query-outer split kernel only through the split_kernel benchmark hook) and
// the combine, all on the stream of
// q, with no allocation and no synchronisation. For Hq / Hkv = 16 the plan's schedule adds the union-of-blocks
// kernels around that chain: a mask launch first (the union tiles' rows leave the chain's selection) and the union
// attention last (it writes those tiles' outputs). Over several chunks the front of chunk c + 1 (union mask, k2q)
// runs on the plan's side stream while chunk c attends and combines on q's stream (two sets of the selection
// structures, alternating). The workspace holds those two sets and one chunk's partials, so it is bounded by the
// chunk size, not by T. topk contents on the device are trusted (the indexer's output contract).
// Decode: the kernel decode_kernel_for picks per batch (rows, fused cluster, or split + combine), capacities fixed
// at plan time; behind MsaDecode's selection the kernels read q and the lengths before their wait.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "api/device.h"
#include "api/validate.h"
#include "msa/attention.h"

namespace msa {
namespace detail {

struct PrefillChunk {
  std::int64_t t0 = 0, num_q = 0;  // packed query tokens [t0, t0 + num_q)
  int b_first = 0, num_requests = 0;
  std::size_t meta = 0;  // int32 offset into the plan's device metadata: cu_seqlens [n + 1], then seq_lens [n]
};

struct PrefillCudaPlan {
  SparsePrefillPlanArgs args;
  BatchInfo batch;                        // host copy of the batch metadata
  std::vector<std::int32_t> page_table;  // host copy, checked against the cache's page count at run()
  std::vector<PrefillChunk> chunks;
  PrefillChunk whole;  // the whole batch as one chunk: the union schedule's launches (G = 16) run over it
  DeviceBuffer meta;  // per-chunk cu_seqlens / seq_lens (int32)
  bool kv_outer = false;        // KV-outer (or the union schedule); false only with the split_kernel hook
  bool kv_outer_chain = false;  // k2q, KV-outer and combine run (kv_outer and not PrefillSchedule::kUnion)
  int union_budget = 0;         // the union kernels' rule (kernels/sm90/attention/launch.h); 0: not launched
  std::int64_t max_chunk_q = 0;
  // Workspace layout (bytes from the base, each part 256-aligned). The per-chunk selection structures (k2q lists,
  // split counts) form a set at the base; with overlap_front a second set follows front_set_bytes later, and chunk
  // c uses set c % 2. The union schedule's structures for the whole batch (token groups; under kAuto the union
  // mask's decisions and its copy of topk) and then the partials come after the sets.
  std::size_t off_row_ptr = 0, off_row_batch = 0, off_row_block = 0, off_q_idx = 0, off_qsplit = 0, off_counts = 0,
              off_total = 0, off_items = 0, off_num_items = 0, off_k2q_scratch = 0, k2q_scratch_bytes = 0,
              off_partial_out = 0, off_partial_lse = 0, off_masked_topk = 0, off_tile_flags = 0, off_tile_slots = 0,
              off_work_counter = 0,
              front_set_bytes = 0, workspace_bytes = 0;
  // The KV-outer chain over several chunks builds chunk c + 1's k2q lists on a side stream while chunk c attends
  // and combines on the caller's stream (see run_prefill_cuda).
  bool overlap_front = false;
  SideStream side;
  // Under kAuto with overlap_front: the stream the union kernel runs on, beside the chain (run_prefill_cuda).
  SideStream union_side;
};

// Default chunk: 16384 tokens, i.e. at M3 heads (Hq 64) and k = 16 about 4.3 GB of bf16 partials.
constexpr std::int64_t kDefaultPrefillChunkTokens = 16384;

// The chunks of a batch (host only): tokens [t0, t0 + num_q) in order, each a varlen batch of requests
// [b_first, b_first + num_requests) whose cu_seqlens and seq_lens are appended to `meta` at chunk.meta.
std::vector<PrefillChunk> plan_prefill_chunks(const BatchInfo& batch, std::int64_t chunk, std::vector<std::int32_t>* meta);
// split_kernel (a benchmark hook, never set by the ops): the query-outer split kernel and the combine for every G,
// in place of KV-outer (kUnion still takes the union schedule), to compare the two on the same inputs.
Status plan_prefill_cuda(const SparsePrefillPlanArgs& args, std::int64_t max_chunk_tokens, PrefillCudaPlan* plan,
                         bool split_kernel = false);
// The plan's page table against the cache's page count (host copy, no device access).
Status check_prefill_pages(const PrefillCudaPlan& plan, std::int64_t num_pages);
// topk: the planned selection's descriptor, or (layer ops) one of the same shape whose contents run() computes.
// Benchmark hooks, timing only (the outputs are then not written, or not all of them): phases < 3 stops each chunk
// after the k2q build (1) or the attention kernel (2); skip leaves out launches of each chunk's back (KV-outer).
enum PrefillSkip : unsigned {
  kSkipNothing = 0,
  kSkipKvOuterBack = 1,  // the KV-outer attention and the combine
  kSkipUnionBack = 2,    // the union-of-blocks attention
};
Status run_prefill_cuda(const PrefillCudaPlan& plan, const Tensor& topk, const SparsePrefillRunArgs& args,
                        void* workspace, std::size_t workspace_bytes, int phases = 3, unsigned skip = kSkipNothing);

// Decode: the partials workspace for B * Q tokens (see kernels/decode/launch.h); G must be 1, 2, 4, 8 or 16.
Status plan_decode_cuda(const SparseDecodePlanArgs& args, std::size_t* workspace_bytes);
// after_selection: the run follows msa's decode selection on the stream (MsaDecode), so the kernels may read q and
// the lengths before their griddepcontrol.wait (DecodeAttentionLaunch::inputs_before_wait).
Status run_decode_cuda(const SparseDecodePlanArgs& plan, const SparseDecodeRunArgs& args, void* workspace,
                       std::size_t workspace_bytes, bool after_selection, const void* handoff = nullptr);

}  // namespace detail
}  // namespace msa
