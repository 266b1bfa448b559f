// msa/attention.h — the main branch: sparse attention over selected blocks, and the LSE combine.
//
// For query token i (position p) and head h of KV group g = h / (Hq / Hkv), with I = the valid ids of topk[g, i]:
//   U = { t : t / 128 in I, t <= p, t < L_b },  O = softmax_U(sm_scale * q . K[t, g]) V[t, g],  LSE = log sum exp.
// topk rows hold a valid prefix in any order (unique ids < n_vis that include the local block p / 128) followed by
// -1 padding. A row of only -1 is a padding row: its output is O = 0, LSE = -inf.
//
// Prefill and decode follow plan()/run(): plan() reads metadata and may allocate and synchronise; run() only
// enqueues work on the stream of the descriptors and can be captured in a CUDA graph.
#ifndef MSA_ATTENTION_H_
#define MSA_ATTENTION_H_

#include <cstddef>
#include <memory>

#include "msa/params.h"
#include "msa/status.h"
#include "msa/types.h"

namespace msa {

class MsaDecode;

// How a CUDA prefill with Hq / Hkv = 16 is scheduled: SparsePrefillPlanArgs::schedule says what each one does.
enum class PrefillSchedule { kAuto, kKvOuter, kUnion };

struct SparsePrefillPlanArgs {
  Tensor topk;          // [Hkv, T, k] int32, k <= 16
  Tensor cu_seqlens_q;  // [B + 1] int32
  Tensor seq_lens_k;    // [B] int32
  Tensor page_table;    // [B, max_pages] int32
  int num_q_heads = kM3NumQHeads;
  int num_kv_heads = kM3NumKVHeads;
  double sm_scale = 0.0;  // 0 selects 1/sqrt(128)
  // CUDA: query tokens per chunk (0 selects 16384). run() handles the tokens in chunks so the workspace holds one
  // chunk's partials, about max_chunk_tokens * k * Hq * 260 bytes (4.4 GB at the default, Hq = 64, k = 16).
  // Larger chunks reload less K / V at long contexts: a 1M-token prefill's main branch (k2q, attention, combine;
  // KV-outer schedule, random selections) took 309 / 305 / 304 ms with 16K / 32K / 64K-token chunks on an H100
  // (docs/performance.md). Under kKvOuter and kAuto a chunk holds fewer than 2^24 query tokens (k2q's 24-bit
  // query indices; plan() returns InvalidArgument otherwise).
  std::int64_t max_chunk_tokens = 0;
  // CUDA with Hq / Hkv = 16: how each tile of 8 query tokens x 1 KV head is computed (docs/attention.md).
  //   kAuto     the union of blocks where the tile's selections overlap enough (a measured rule, decided on the
  //             device from topk, once over the whole batch, so a different chunking changes no bit), KV-outer
  //             elsewhere.
  //   kKvOuter  KV-outer for every tile: per-block bf16 partials merged by the combine. Their rounding is an
  //             error the rule's P-only emulation leaves out (docs/attention.md, "Partials and design.md's error
  //             rule"): it can exceed that rule by a few percent where |out| is largest, on small chunks of short
  //             rows (about 1 random problem in 100, scripts/split_error_model.py) and on peaked rows whose mass
  //             sits in one block (about 5 ramped-key problems in 100; kAuto's KV-outer tiles too, rarer). It
  //             meets the rule with an emulation that also rounds each partial to bf16 (the tests' bound for
  //             kKvOuter and kAuto). kAuto computes every row with <= 16 visible blocks with the union kernel.
  //   kUnion    every tile query-outer over the union of its 8 tokens' blocks (no partials; slow when the tokens
  //             of a tile select different blocks).
  // Other head ratios (1, 2, 4, 8): kAuto and kKvOuter both run KV-outer for every tile, with kKvOuter's bf16
  // partials also on rows of <= 16 visible blocks; kUnion is NotImplemented.
  PrefillSchedule schedule = PrefillSchedule::kAuto;
};

struct SparsePrefillRunArgs {
  Tensor q;        // [T, Hq, 128] bf16
  Tensor k_cache;  // [num_pages, Hkv, 128, 128] bf16 (any strides with a unit innermost stride)
  Tensor v_cache;  // [num_pages, Hkv, 128, 128] bf16
  Tensor out;      // [T, Hq, 128] bf16 output
  Tensor lse;      // [T, Hq] fp32 output, natural log; optional
};

// Sparse prefill attention with a plan/run split. The descriptors given to plan() must stay valid (same
// memory, same contents) until the last run() of that plan. With CUDA descriptors, plan() reads cu_seqlens_q,
// seq_lens_k and page_table to the host (it synchronises) and checks them; topk contents on the device are not
// checked (they are the indexer's output: valid rows by contract). run() needs workspace_bytes() of device memory
// (256-byte aligned) and enqueues everything on q's stream; for Hq / Hkv = 16 over several query chunks the plan
// also owns a second stream, onto which run() forks each next chunk's list building, and under kAuto a third, on
// which the union-of-blocks kernel runs beside the chunks; run() joins both back through events before it
// returns (no synchronisation; a CUDA graph capture of q's stream records all three). Those events belong to the
// plan, so runs of one plan must not be enqueued from several host threads at once; runs on
// different streams are fine when their enqueueing is ordered (one plan per thread otherwise).
class SparsePrefillAttention {
 public:
  SparsePrefillAttention();
  ~SparsePrefillAttention();
  SparsePrefillAttention(SparsePrefillAttention&&) noexcept;
  SparsePrefillAttention& operator=(SparsePrefillAttention&&) noexcept;
  SparsePrefillAttention(const SparsePrefillAttention&) = delete;
  SparsePrefillAttention& operator=(const SparsePrefillAttention&) = delete;

  Status plan(const SparsePrefillPlanArgs& args);
  std::size_t workspace_bytes() const;  // valid after a successful plan()
  Status run(const SparsePrefillRunArgs& args, void* workspace = nullptr, std::size_t workspace_bytes = 0);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct SparseDecodePlanArgs {
  int batch_size = 1;           // capacity: requests per run
  int queries_per_request = 1;  // Q, 1..16
  int num_q_heads = kM3NumQHeads;
  int num_kv_heads = kM3NumKVHeads;
  int topk = kDefaultTopK;
  double sm_scale = 0.0;  // 0 selects 1/sqrt(128)
  Device device{};
};

// Everything here may change between runs of one plan (CUDA-graph replay updates it in place).
struct SparseDecodeRunArgs {
  Tensor q;           // [B * Q, Hq, 128] bf16
  Tensor k_cache;     // [num_pages, Hkv, 128, 128] bf16
  Tensor v_cache;     // [num_pages, Hkv, 128, 128] bf16
  Tensor topk;        // [Hkv, B * Q, k] int32
  Tensor page_table;  // [B, max_pages] int32
  Tensor seq_lens_k;  // [B] int32, L_b >= Q
  Tensor out;         // [B * Q, Hq, 128] bf16 output
  Tensor lse;         // [B * Q, Hq] fp32 output; optional
};

// Decode attention with a plan/run split. With a CUDA device in the plan, run() enqueues on q's stream, for T query
// tokens: one CTA per (token, KV head) writing out directly when T * Hkv is at least 3/8 of the device's SM count;
// for a handful of (token, KV head) rows (T * Hkv * k at most half the SMs), thread-block clusters of k CTAs that
// merge on chip and write out directly; otherwise one CTA per listed block followed by the combine, whose partials
// need workspace. workspace_bytes() is the most any batch up to batch_size * queries_per_request tokens needs
// (256-byte aligned device memory; 0 when no such batch takes split + combine, and run() then accepts a null
// workspace). The choice and the launch shapes depend on the tensors' shapes and the device only, so run() can be
// captured in a CUDA graph and replayed while lengths, pages, queries and caches change in place.
class SparseDecodeAttention {
 public:
  SparseDecodeAttention();
  ~SparseDecodeAttention();
  SparseDecodeAttention(SparseDecodeAttention&&) noexcept;
  SparseDecodeAttention& operator=(SparseDecodeAttention&&) noexcept;
  SparseDecodeAttention(const SparseDecodeAttention&) = delete;
  SparseDecodeAttention& operator=(const SparseDecodeAttention&) = delete;

  Status plan(const SparseDecodePlanArgs& args);
  std::size_t workspace_bytes() const;
  Status run(const SparseDecodeRunArgs& args, void* workspace = nullptr, std::size_t workspace_bytes = 0);

 private:
  friend class MsaDecode;
  // MsaDecode's run(): the same, right behind msa's own index selection on the stream, which lets the CUDA kernels
  // read q and the lengths before they wait for the selection; with `handoff` (the merge's entries of the topk,
  // filled by that selection) the fused kernel reads those instead of waiting for it.
  Status run_after_selection(const SparseDecodeRunArgs& args, void* workspace, std::size_t workspace_bytes,
                             const void* handoff);
  Status run_impl(const SparseDecodeRunArgs& args, void* workspace, std::size_t workspace_bytes, bool after_selection,
                  const void* handoff);

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// LSE-merge of per-block partial attention results (the split-K / KV-outer combine):
//   for each (t, h): s < split_counts[t, h / G] valid slots; partials with a non-finite LSE get weight 0;
//   M = max LSE_s, w_s = exp(LSE_s - M), O = sum w_s O_s / sum w_s, LSE = M + log sum w_s.
//   No valid partial gives O = 0, LSE = -inf. Slots at or beyond split_counts are never read.
struct CombineArgs {
  Tensor partial_out;   // [S, T, Hq, 128] bf16 or fp32, normalised partial outputs
  Tensor partial_lse;   // [S, T, Hq] fp32, natural log
  Tensor split_counts;  // [T, Hkv] int32, 0 <= count <= S
  Tensor out;           // [T, Hq, 128] bf16 output
  Tensor lse;           // [T, Hq] fp32 output; optional
};

Status combine(const CombineArgs& args);

}  // namespace msa

#endif  // MSA_ATTENTION_H_
