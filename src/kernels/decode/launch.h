// launch.h — host-side entries of the decode attention kernels (plain pointers, strides in elements): the split
// kernel (decode_attention.cu) and the rows kernel (decode_rows.cu), and the rule choosing between them.
//
// Used by SparseDecodeAttention and, for Hq / Hkv != 16, SparsePrefillAttention (split kernel) on CUDA
// (api/attention_cuda.cpp).
#ifndef MSA_KERNELS_DECODE_LAUNCH_H_
#define MSA_KERNELS_DECODE_LAUNCH_H_

#include <cstddef>
#include <cstdint>

#include "msa/status.h"

namespace msa {
namespace kernels {

struct DecodeAttentionLaunch {
  const void* q;  // [T = B * Q, Hq, 128] bf16, inner stride 1
  std::int64_t q_stride_t, q_stride_h;
  const void* k_cache;  // [pages, Hkv, 128, 128] bf16, inner stride 1
  const void* v_cache;
  std::int64_t kv_stride_page, kv_stride_h, kv_stride_t;  // shared by K and V
  const std::int32_t* topk;  // [Hkv, T, k], valid ids a prefix
  std::int64_t topk_stride_h, topk_stride_t, topk_stride_s;
  const std::int32_t* page_table;  // [B, max_pages]
  std::int64_t pt_stride_b, pt_stride_j;
  const std::int32_t* seq_lens_k;  // [B]
  std::int64_t seq_stride;
  const std::int32_t* cu_seqlens_q;  // [B + 1] for a varlen (prefill) batch, or nullptr: Q queries per request
  std::int64_t cu_stride;
  int num_requests;
  std::int64_t total_q;  // T
  int queries_per_request;
  int num_q_heads, num_kv_heads, k;
  float sm_scale;
  // Outputs: the partials of slot s = the s-th listed block (combine reads exactly split_counts slots).
  // fp32: with bf16 partials the combined output can exceed design.md's attention error rule (each partial's bf16
  // rounding is an error the rule's emulation does not include; scripts/split_error_model.py).
  float* partial_out;        // [k, T, Hq, 128] fp32, contiguous
  float* partial_lse;        // [k, T, Hq], natural log
  std::int32_t* split_counts;  // [T, Hkv]
  // True when the launch's predecessor on the stream is msa's decode selection (MsaDecode::run): its kernels let
  // dependents launch only after their own griddepcontrol.wait, so q, seq_lens_k and cu_seqlens_q, written before
  // the selection, are complete when this grid starts, and the kernels read them before their own wait, overlapping
  // the selection's last kernel (1 x 1M x 1 decode: 1.5-1.7 us less end to end on H100). False: after the wait,
  // whatever the predecessor.
  bool inputs_before_wait;
  // Fused kernel only, with inputs_before_wait: MsaDecode's merge fills these [T, Hkv, k] entries (id, page) of the
  // topk (kernels/common/handoff.cuh); each CTA polls its own instead of waiting for the merge grid, and reads
  // neither topk nor the page table. nullptr: wait, then read topk.
  const unsigned long long* handoff;
  int device;
  void* stream;
};

// Workspace of a launch: partials [k, T, Hq, 128] fp32, LSEs [k, T, Hq] and split counts [T, Hkv], each part
// 256-byte aligned. decode_partials_at() carves it in the same layout that decode_partials_bytes() sizes.
struct DecodePartials {
  float* out;
  float* lse;
  std::int32_t* counts;
};
inline std::size_t decode_partials_align(std::size_t bytes) { return (bytes + 255) / 256 * 256; }
inline std::size_t decode_partials_bytes(std::int64_t total_q, int num_q_heads, int num_kv_heads, int k) {
  const std::size_t rows = static_cast<std::size_t>(k) * static_cast<std::size_t>(total_q) * num_q_heads;
  return decode_partials_align(rows * 128 * 4) + decode_partials_align(rows * 4) +
         decode_partials_align(static_cast<std::size_t>(total_q) * num_kv_heads * 4);
}
inline DecodePartials decode_partials_at(void* workspace, std::int64_t total_q, int num_q_heads, int k) {
  const std::size_t rows = static_cast<std::size_t>(k) * static_cast<std::size_t>(total_q) * num_q_heads;
  auto* ws = static_cast<unsigned char*>(workspace);
  const std::size_t lse_at = decode_partials_align(rows * 128 * 4), counts_at = lse_at + decode_partials_align(rows * 4);
  return {reinterpret_cast<float*>(ws), reinterpret_cast<float*>(ws + lse_at), reinterpret_cast<std::int32_t*>(ws + counts_at)};
}

// G = Hq / Hkv must be 1, 2, 4, 8 or 16. Enqueues one CTA (4 warps) per (token, KV head, list slot); the combine
// kernel then merges split_counts slots per (token, head).
Status launch_decode_attention(const DecodeAttentionLaunch& args);

// The split kernel with the combine folded in: the k CTAs of a (token, KV head) form a thread-block cluster that
// merges its partials over distributed shared memory and writes `out` / `lse` (lse may be null) directly; no
// workspace. k <= 16 (clusters above 8 CTAs are Hopper's non-portable sizes).
Status launch_decode_attention_fused(const DecodeAttentionLaunch& args, void* out, std::int64_t out_stride_t,
                                     std::int64_t out_stride_h, float* lse, std::int64_t lse_stride_t,
                                     std::int64_t lse_stride_h);

// One CTA per (token, KV head) streaming all of the token's listed blocks (decode_rows.cu): writes `out` /
// `lse` directly (lse may be null), no partials, no combine; k <= 16.
Status launch_decode_attention_rows(const DecodeAttentionLaunch& args, void* out, std::int64_t out_stride_t,
                                    std::int64_t out_stride_h, float* lse, std::int64_t lse_stride_t,
                                    std::int64_t lse_stride_h);

// SparseDecodeAttention's choice between the two for T * Hkv rows (token, KV head) on `num_sms` SMs. Measured by
// bench_decode_attention's sweep (B x 32K x 1, Hkv 4, H100 132 SMs, 2026-11-26): split + combine wins at 32 and 40
// rows (25.0 vs 32.9, 29.2 vs 33.5 us: a lone rows CTA streams its 16 blocks at ~32 GB/s, so a short grid leaves
// most SMs idle), ties at 48 (33.8 vs 33.6 us), and the rows kernel wins from 56 rows up (39.7 vs 34.2 us at 56,
// 130 vs 103 us at 256, 255 vs 200 us at 512): the crossover sits near 3/8 of the SM count.
inline bool decode_prefers_rows(std::int64_t rows, int k, int num_sms) {
  return k >= 1 && k <= 16 && rows * 8 >= 3LL * num_sms;
}

// Below that, the fused cluster kernel instead of split + combine when its rows * k CTAs fill at most half the SMs.
// Measured by the same sweep (H100, 2026-11-27): the fused kernel wins at 4 rows (1 x 1M x 1: 8.0 against 9.0 us;
// 1 x 32K x 1: 8.4 against 9.1 us) and loses from 8 rows up (11.5 against 10.0 us; 24.1 against 27.6 us at 32 rows):
// clusters of k CTAs must be co-scheduled within one GPC, which stalls a grid of several waves. Re-measured with the
// pushed merge (122a13e, two CTAs per SM): 4 rows 7.0 / 7.4 against 8.9 / 9.0 us, 8 rows 10.0 against 9.6 us,
// 12 rows 10.0 against 11.4 us (the one point off the rule), 16 rows 16.4 against 12.5 us.
inline bool decode_prefers_fused(std::int64_t rows, int k, int num_sms) {
  return k >= 1 && k <= 16 && rows * k * 2 <= num_sms;
}

// The kernel SparseDecodeAttention runs for `rows` (token, KV head) rows on num_sms SMs, by the two rules above.
enum class DecodeKernel { kSplitCombine, kFusedCluster, kRows };
inline DecodeKernel decode_kernel_for(std::int64_t rows, int k, int num_sms) {
  if (decode_prefers_rows(rows, k, num_sms)) return DecodeKernel::kRows;
  return decode_prefers_fused(rows, k, num_sms) ? DecodeKernel::kFusedCluster : DecodeKernel::kSplitCombine;
}

// Workspace a decode run of total_q tokens needs on num_sms SMs: the partials of split + combine; the fused and
// rows kernels write out / LSE directly and need none.
inline std::size_t decode_workspace_bytes(std::int64_t total_q, int num_q_heads, int num_kv_heads, int k, int num_sms) {
  if (total_q < 1 || decode_kernel_for(total_q * num_kv_heads, k, num_sms) != DecodeKernel::kSplitCombine) return 0;
  return decode_partials_bytes(total_q, num_q_heads, num_kv_heads, k);
}

// What a plan for up to capacity_q tokens reserves: the most any run of 1 .. capacity_q tokens needs (the partials
// of the largest token count that takes split + combine).
inline std::size_t decode_plan_workspace_bytes(std::int64_t capacity_q, int num_q_heads, int num_kv_heads, int k,
                                               int num_sms) {
  for (std::int64_t t = capacity_q; t >= 1; --t) {
    const std::size_t bytes = decode_workspace_bytes(t, num_q_heads, num_kv_heads, k, num_sms);
    if (bytes > 0) return bytes;  // the partials grow with t
  }
  return 0;
}

}  // namespace kernels
}  // namespace msa

#endif  // MSA_KERNELS_DECODE_LAUNCH_H_
