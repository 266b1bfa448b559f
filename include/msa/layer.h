// msa/layer.h — layer-level MSA ops: one call per sparse layer from index queries and caches to the attention
// output (index selection → sparse attention, plus the k2q inversion and combine on the GPU).
//
// plan() once per batch (may allocate and read metadata), then run() any number of times with the same shapes;
// run() only enqueues work. Optional outputs: the selection (topk) and the LSE. CPU descriptors run the CPU
// implementation. CUDA descriptors run the kernels on q's stream and need workspace_bytes() of 256-byte aligned
// device memory (the selection lives there when no topk output is given); with CUDA, MsaPrefill::plan reads the
// batch metadata to the host (see SparsePrefillAttention, also for enqueueing runs of one plan from several host
// threads).
#ifndef MSA_LAYER_H_
#define MSA_LAYER_H_

#include <cstddef>
#include <memory>

#include "msa/attention.h"
#include "msa/params.h"
#include "msa/status.h"
#include "msa/types.h"

namespace msa {

struct MsaPrefillPlanArgs {
  Tensor cu_seqlens_q;  // [B + 1] int32
  Tensor seq_lens_k;    // [B] int32, L_b >= nq_b
  Tensor page_table;    // [B, max_pages] int32
  std::int64_t total_q = 0;  // T
  int num_q_heads = kM3NumQHeads;
  int num_kv_heads = kM3NumKVHeads;  // = index heads
  int topk = kDefaultTopK;
  double sm_scale = 0.0;  // 0 selects 1/sqrt(128)
  std::int64_t max_chunk_tokens = 0;  // CUDA: attention chunk size (see SparsePrefillPlanArgs)
  PrefillSchedule schedule = PrefillSchedule::kAuto;  // CUDA, Hq / Hkv = 16 (see SparsePrefillPlanArgs)
};

struct MsaPrefillRunArgs {
  Tensor q;              // [T, Hq, 128] bf16
  Tensor k_cache;        // [num_pages, Hkv, 128, 128] bf16
  Tensor v_cache;        // [num_pages, Hkv, 128, 128] bf16
  Tensor index_q;        // [T, Hkv, 128] bf16 or fp8 e4m3 (msa/indexer.h)
  Tensor index_k_cache;  // [num_pages, 128, 128], index_q's dtype
  Tensor out;            // [T, Hq, 128] bf16 output
  Tensor lse;            // [T, Hq] fp32 output; optional
  Tensor topk;           // [Hkv, T, k] int32 output; optional (else it lives in the workspace)
};

class MsaPrefill {
 public:
  MsaPrefill();
  ~MsaPrefill();
  MsaPrefill(MsaPrefill&&) noexcept;
  MsaPrefill& operator=(MsaPrefill&&) noexcept;
  MsaPrefill(const MsaPrefill&) = delete;
  MsaPrefill& operator=(const MsaPrefill&) = delete;

  Status plan(const MsaPrefillPlanArgs& args);
  std::size_t workspace_bytes() const;  // valid after a successful plan()
  Status run(const MsaPrefillRunArgs& args, void* workspace = nullptr, std::size_t workspace_bytes = 0);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The decode layer plans from the same capacities as its attention step (batch_size, queries_per_request, heads,
// topk, sm_scale, device).
using MsaDecodePlanArgs = SparseDecodePlanArgs;

struct MsaDecodeRunArgs {
  Tensor q;              // [B * Q, Hq, 128] bf16
  Tensor k_cache;        // [num_pages, Hkv, 128, 128] bf16
  Tensor v_cache;        // [num_pages, Hkv, 128, 128] bf16
  Tensor index_q;        // [B * Q, Hkv, 128] bf16 or fp8 e4m3 (msa/indexer.h)
  Tensor index_k_cache;  // [num_pages, 128, 128], index_q's dtype
  Tensor page_table;     // [B, max_pages] int32
  Tensor seq_lens_k;     // [B] int32, L_b >= Q
  Tensor out;            // [B * Q, Hq, 128] bf16 output
  Tensor lse;            // optional
  Tensor topk;           // [Hkv, B * Q, k] int32 output; optional
};

class MsaDecode {
 public:
  MsaDecode();
  ~MsaDecode();
  MsaDecode(MsaDecode&&) noexcept;
  MsaDecode& operator=(MsaDecode&&) noexcept;
  MsaDecode(const MsaDecode&) = delete;
  MsaDecode& operator=(const MsaDecode&) = delete;

  Status plan(const MsaDecodePlanArgs& args);
  std::size_t workspace_bytes() const;
  Status run(const MsaDecodeRunArgs& args, void* workspace = nullptr, std::size_t workspace_bytes = 0);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace msa

#endif  // MSA_LAYER_H_
