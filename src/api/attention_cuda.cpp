// attention_cuda.cpp — plans and launch sequences of the CUDA sparse attention paths (see attention_cuda.h).
#include "api/attention_cuda.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "api/op_checks.h"
#include "kernels/combine/launch.h"
#include "kernels/decode/launch.h"
#include "kernels/k2q/launch.h"
#include "kernels/sm90/attention/launch.h"

namespace msa {
namespace detail {
namespace {

// Work items of the KV-outer schedule hold at most this many Q rows (queries x G heads: 64 tiles): hot rows are
// split so the largest-first order (within each KV head) can balance them, while each item amortises its 64 KiB K/V
// load over up to 1 MiB of Q.
// Measured on H100 at G = 16 (attention phase, 128K random), in queries: 64 → 26.7 ms, 128 → 25.1 ms, 256 → 23.6 ms.
constexpr int kMaxRowsPerItem = 256 * 16;
// The group size Hq / Hkv the union of blocks needs (8 tokens x 16 heads per tile of two warpgroups); KV-outer takes
// every G that plan_prefill_cuda accepts (kernels/sm90/attention/kv_outer.cu).
constexpr int kUnionGroup = 16;
// Events of a plan's side stream (run_prefill_cuda): the chunks' chain may start (the union kernel is done), set s
// built (kEventBuilt + s), set s free again (kEventFree + s).
constexpr int kEventStart = 0, kEventBuilt = 1, kEventFree = 3, kSideEvents = 5;
// Under kAuto with several chunks the persistent union kernel runs on a stream of its own beside the KV-outer
// chain, leaving kUnionReserveSms SMs to the chain: on clustered selections the chain over the tiles it leaves is
// nearly all fixed cost per chunk (each k2q over every entry of topk, launches), which then overlaps the union
// kernel instead of following it. Once the chain is done, a second launch of kUnionReserveSms CTAs on the caller's
// stream takes the union items still left. Events: the union items' list is ready (fork), the union kernel is done
// (join).
// 4 is the only value measured (H100, clustered 1M kAuto 227.2-227.8 -> 219.3-219.8 ms; 128K and random 1M the
// same within their spread; docs/performance.md, "Union kernel beside the chain").
constexpr int kUnionReserveSms = 4;
constexpr int kUnionFork = 0, kUnionJoin = 1, kUnionEvents = 2;

std::size_t align256(std::size_t x) { return (x + 255) / 256 * 256; }

float scale_of(double sm_scale) { return static_cast<float>(sm_scale > 0 ? sm_scale : 1.0 / std::sqrt(128.0)); }

// Host copy of a (possibly strided) device int32 tensor, as a CPU descriptor with the same strides over `store`.
Status host_copy(const Tensor& t, std::vector<std::int32_t>* store, Tensor* host) {
  std::int64_t span = 1;
  for (int d = 0; d < t.ndim; ++d)
    if (t.shape[d] == 0) span = 0;
  if (span > 0)
    for (int d = 0; d < t.ndim; ++d) span += (t.shape[d] - 1) * t.stride[d];
  store->assign(static_cast<std::size_t>(span), 0);
  MSA_RETURN_IF_ERROR(cuda_copy_to_host(store->data(), t.data, static_cast<std::size_t>(span) * 4, t.device.index));
  *host = t;
  host->data = store->data();
  host->device = Device::cpu();
  return Status::Ok();
}

// Q, K and V of a launch (PagedPrefillInputs or DecodeAttentionLaunch: the same field names), q possibly offset.
template <class Launch>
void set_qkv(Launch* l, const void* q, const Tensor& q_t, const Tensor& k_cache, const Tensor& v_cache) {
  l->q = q;
  l->q_stride_t = q_t.stride[0];
  l->q_stride_h = q_t.stride[1];
  l->k_cache = k_cache.data;
  l->v_cache = v_cache.data;
  l->kv_stride_page = k_cache.stride[0];
  l->kv_stride_h = k_cache.stride[1];
  l->kv_stride_t = k_cache.stride[2];
}

// The problem size, partial buffers and stream of a launch (KvOuterLaunch or DecodeAttentionLaunch).
template <class Launch>
void set_work(Launch* l, std::int64_t total_q, int num_q_heads, int num_kv_heads, int k, double sm_scale,
              void* partial_out, float* partial_lse, int device, void* stream) {
  l->total_q = total_q;
  l->num_q_heads = num_q_heads;
  l->num_kv_heads = num_kv_heads;
  l->k = k;
  l->sm_scale = scale_of(sm_scale);
  l->partial_out = static_cast<decltype(l->partial_out)>(partial_out);  // bf16 (KV-outer) or fp32 (split kernel)
  l->partial_lse = partial_lse;
  l->device = device;
  l->stream = stream;
}

// The split kernel's selection and page table, both possibly offset to a chunk's first token / request.
void set_selection(kernels::DecodeAttentionLaunch* l, const std::int32_t* topk, const Tensor& topk_t,
                   const std::int32_t* page_table, const Tensor& page_table_t) {
  l->topk = topk;
  l->topk_stride_h = topk_t.stride[0];
  l->topk_stride_t = topk_t.stride[1];
  l->topk_stride_s = topk_t.stride[2];
  l->page_table = page_table;
  l->pt_stride_b = page_table_t.stride[0];
  l->pt_stride_j = page_table_t.stride[1];
}

// The combine of a contiguous partial buffer into `out` / `lse` (rows from `first_token` on; lse optional);
// units_per_cta as in kernels::CombineLaunch (0: the kernel's default).
Status launch_combine_into(void* po, bool po_fp32, float* pl, std::int32_t* counts, std::int64_t T, int Hq, int Hkv,
                           int k, const Tensor& out, const Tensor& lse, std::int64_t first_token, int device,
                           void* stream, int units_per_cta = 0) {
  kernels::CombineLaunch cl =
      kernels::contiguous_combine_launch(po, pl, counts, nullptr, nullptr, T, Hq, Hkv, k);
  cl.partial_fp32 = po_fp32;
  cl.units_per_cta = units_per_cta;
  cl.out = static_cast<std::uint16_t*>(out.data) + first_token * out.stride[0];
  cl.out_stride_t = out.stride[0];
  cl.out_stride_h = out.stride[1];
  if (lse.present()) {
    cl.lse = static_cast<float*>(lse.data) + first_token * lse.stride[0];
    cl.lse_stride_t = lse.stride[0];
    cl.lse_stride_h = lse.stride[1];
  }
  cl.device = device;
  cl.stream = stream;
  return kernels::launch_combine(cl);
}

// The k2q build of chunk c over its rows of topk, or over `masked` (the union mask's copy of the whole batch's
// topk, [Hkv, T, k] contiguous) when given.
kernels::K2qBuildArgs chunk_k2q_args(const PrefillCudaPlan& p, const Tensor& topk, const PrefillChunk& c,
                                     const std::int32_t* meta, const std::int32_t* masked = nullptr) {
  kernels::K2qBuildArgs a{};
  a.topk = static_cast<const std::int32_t*>(topk.data) + c.t0 * topk.stride[1];
  a.topk_stride_h = topk.stride[0];
  a.topk_stride_t = topk.stride[1];
  a.topk_stride_s = topk.stride[2];
  if (masked != nullptr) {
    a.topk = masked + c.t0 * topk.shape[2];
    a.topk_stride_h = topk.shape[1] * topk.shape[2];
    a.topk_stride_t = topk.shape[2];
    a.topk_stride_s = 1;
  }
  a.cu_seqlens_q = meta != nullptr ? meta + c.meta : nullptr;
  a.cu_stride = 1;
  a.seq_lens_k = meta != nullptr ? meta + c.meta + c.num_requests + 1 : nullptr;
  a.seq_stride = 1;
  a.num_heads = p.args.num_kv_heads;
  a.k = static_cast<int>(topk.shape[2]);
  a.num_requests = c.num_requests;
  a.total_q = c.num_q;
  a.max_blocks = static_cast<int>(p.args.page_table.shape[1]);
  a.max_q_per_item = kMaxRowsPerItem / (p.args.num_q_heads / p.args.num_kv_heads);
  a.device = topk.device.index;
  return a;
}

// One chunk of a run: the plan, the run's tensors and workspace, and what every launch of the chunk derives from them.
struct ChunkRun {
  const PrefillCudaPlan& p;
  const Tensor& topk;
  const SparsePrefillRunArgs& a;
  unsigned char* ws;
  unsigned char* set;        // the chunk's set of k2q structures (ws, or ws + front_set_bytes)
  const std::int32_t* meta;  // the plan's device metadata
  const PrefillChunk& c;

  int k() const { return static_cast<int>(topk.shape[2]); }
  const std::int32_t* cu_seqlens() const { return meta + c.meta; }
  const std::int32_t* seq_lens() const { return meta + c.meta + c.num_requests + 1; }
  const std::int32_t* topk_rows() const { return static_cast<const std::int32_t*>(topk.data) + c.t0 * topk.stride[1]; }
  const std::int32_t* page_table() const {
    return static_cast<const std::int32_t*>(p.args.page_table.data) + c.b_first * p.args.page_table.stride[0];
  }
  const void* q() const { return static_cast<const std::uint16_t*>(a.q.data) + c.t0 * a.q.stride[0]; }
  std::int32_t* counts() const { return reinterpret_cast<std::int32_t*>(set + p.off_counts); }
  void* partial_out() const { return ws + p.off_partial_out; }
  float* partial_lse() const { return reinterpret_cast<float*>(ws + p.off_partial_lse); }
  // The union mask's copy of the whole batch's topk (kAuto: the KV-outer chain runs beside the union schedule);
  // nullptr otherwise.
  std::int32_t* masked_topk() const {
    return p.kv_outer_chain && p.union_budget > 0 ? reinterpret_cast<std::int32_t*>(ws + p.off_masked_topk) : nullptr;
  }
  int device() const { return a.q.device.index; }
  void* stream() const { return a.q.device.stream; }
};

// Q, the caches, the page table and the batch metadata of the chunk, for either sm90 prefill kernel.
void set_chunk_inputs(kernels::PagedPrefillInputs* l, const ChunkRun& r) {
  set_qkv(l, r.q(), r.a.q, r.a.k_cache, r.a.v_cache);
  l->num_pages = r.a.k_cache.shape[0];
  l->page_table = r.page_table();
  l->pt_stride_b = r.p.args.page_table.stride[0];
  l->pt_stride_j = r.p.args.page_table.stride[1];
  l->cu_seqlens_q = r.cu_seqlens();
  l->cu_stride = 1;
  l->seq_lens_k = r.seq_lens();
  l->seq_stride = 1;
}

// The union-of-blocks launch over chunk r.c (the plan's whole batch: kernels/sm90/attention/launch.h); masked_topk
// and tile_flags point into the workspace when the plan runs the KV-outer chain beside it (kAuto).
kernels::UnionLaunch chunk_union_launch(const ChunkRun& r) {
  const PrefillCudaPlan& p = r.p;
  const SparsePrefillRunArgs& a = r.a;
  kernels::UnionLaunch u{};
  set_chunk_inputs(&u, r);
  u.topk = r.topk_rows();
  u.topk_stride_h = r.topk.stride[0];
  u.topk_stride_t = r.topk.stride[1];
  u.topk_stride_s = r.topk.stride[2];
  u.total_q = r.c.num_q;
  u.num_requests = r.c.num_requests;
  u.num_q_heads = p.args.num_q_heads;
  u.num_kv_heads = p.args.num_kv_heads;
  u.k = r.k();
  u.sm_scale = scale_of(p.args.sm_scale);
  u.out = static_cast<std::uint16_t*>(a.out.data) + r.c.t0 * a.out.stride[0];
  u.out_stride_t = a.out.stride[0];
  u.out_stride_h = a.out.stride[1];
  if (a.lse.present()) {
    u.lse = static_cast<float*>(a.lse.data) + r.c.t0 * a.lse.stride[0];
    u.lse_stride_t = a.lse.stride[0];
    u.lse_stride_h = a.lse.stride[1];
  }
  u.union_budget = p.union_budget;
  u.masked_topk = r.masked_topk();
  u.tile_flags = u.masked_topk != nullptr ? reinterpret_cast<std::int32_t*>(r.ws + p.off_tile_flags) : nullptr;
  u.tile_slots = p.union_budget > 0 ? r.ws + p.off_tile_slots : nullptr;
  u.work_counter = p.union_budget > 0 ? reinterpret_cast<int*>(r.ws + p.off_work_counter) : nullptr;
  u.device = r.device();
  u.stream = r.stream();
  return u;
}

// The k2q lists of a chunk in its set of the workspace.
kernels::K2qBuildOutputs chunk_k2q_outputs(const ChunkRun& r) {
  const PrefillCudaPlan& p = r.p;
  auto at = [&r](std::size_t off) { return reinterpret_cast<std::int32_t*>(r.set + off); };
  return {at(p.off_row_ptr), at(p.off_row_batch), at(p.off_row_block), at(p.off_q_idx), at(p.off_qsplit),
          r.counts(),        at(p.off_total),     at(p.off_items),     at(p.off_num_items)};
}

// G = 16, the union schedule over the whole batch on the caller's stream: the token groups and, under kAuto, the
// union mask (the union tiles leave the chain's selection, `masked_topk`), then the union kernel (phases >= 3).
// It is launched once for the whole batch, not per chunk: the kernel is persistent, one CTA per SM, so it pays one
// launch and one tail instead of one per chunk, and its front one pair of launches. On one stream it runs before
// the chunks' chain. With `beside` (kAuto with the chain on two streams) it goes on the plan's union stream once
// the list is ready, on all SMs but kUnionReserveSms, and the chain runs beside it (the chain's k2q and KV-outer
// read the masked selection, the union kernel only its own tiles' rows; their output rows are disjoint); the
// caller's stream waits for kUnionJoin before run() returns.
Status run_union(const ChunkRun& w, int phases, unsigned skip, bool beside) {
  kernels::UnionLaunch u = chunk_union_launch(w);
  // Under kAuto the mask launch forms the token groups too.
  MSA_RETURN_IF_ERROR(u.masked_topk != nullptr ? kernels::launch_union_mask(u) : kernels::launch_token_groups(u));
  if (phases < 3 || (skip & kSkipUnionBack) != 0) return Status::Ok();
  MSA_RETURN_IF_ERROR(kernels::launch_union_list(u));
  if (beside) {
    const SideStream& us = w.p.union_side;
    MSA_RETURN_IF_ERROR(us.record(kUnionFork, u.stream));
    MSA_RETURN_IF_ERROR(us.wait(us.stream(), kUnionFork));
    u.stream = us.stream();
    u.reserve_sms = kUnionReserveSms;
  }
  MSA_RETURN_IF_ERROR(kernels::launch_union_kernel(u));
  if (beside) MSA_RETURN_IF_ERROR(w.p.union_side.record(kUnionJoin, u.stream));
  return Status::Ok();
}

// KV-outer, a chunk's front on `stream`: the k2q build over its rows of topk (kAuto: of the union mask's copy, where
// the union tiles' rows list nothing). It reads only the selection and the plan's metadata and writes only the
// chunk's set.
Status run_front(const ChunkRun& r, void* stream) {
  const PrefillCudaPlan& p = r.p;
  kernels::K2qBuildArgs ka = chunk_k2q_args(p, r.topk, r.c, r.meta, r.masked_topk());
  ka.stream = stream;
  ka.device = r.device();
  return kernels::launch_k2q_build(ka, chunk_k2q_outputs(r), r.set + p.off_k2q_scratch, p.k2q_scratch_bytes);
}

// KV-outer, the rest of the chunk on the caller's stream: KV-outer attention over the front's lists and the combine
// (which leaves the union tiles' rows alone: split count -1). phases < 3 stop after the attention kernel, skip
// leaves launches out (the benchmark hooks of run_prefill_cuda).
Status kv_outer_back(const ChunkRun& r, int phases, unsigned skip) {
  const PrefillCudaPlan& p = r.p;
  if ((skip & kSkipKvOuterBack) == 0) {
    const kernels::K2qBuildArgs ka = chunk_k2q_args(p, r.topk, r.c, r.meta);
    const kernels::K2qBuildOutputs ko = chunk_k2q_outputs(r);
    kernels::KvOuterLaunch l{};
    set_chunk_inputs(&l, r);
    l.row_ptr = ko.row_ptr;
    l.qsplit_indices = ko.qsplit_indices;
    l.items = ko.items;
    l.num_items = ko.num_items;
    l.row_capacity = kernels::k2q_row_capacity(ka);
    l.item_capacity = kernels::k2q_item_capacity(ka);
    set_work(&l, r.c.num_q, p.args.num_q_heads, p.args.num_kv_heads, r.k(), p.args.sm_scale, r.partial_out(),
             r.partial_lse(), r.device(), r.stream());
    MSA_RETURN_IF_ERROR(kernels::launch_kv_outer_attention(l));
    if (phases < 3) return Status::Ok();
    // Under kAuto the union tiles' rows (count -1) may be nearly all of a chunk's: 8 units of 16 rows per CTA
    // (kernels/combine/launch.h has the measurements).
    MSA_RETURN_IF_ERROR(launch_combine_into(r.partial_out(), false, r.partial_lse(), r.counts(), r.c.num_q,
                                            p.args.num_q_heads, p.args.num_kv_heads, r.k(), r.a.out, r.a.lse, r.c.t0,
                                            r.device(), r.stream(), r.masked_topk() != nullptr ? 8 : 0));
  }
  return Status::Ok();
}

// The split_kernel hook (benchmarks only): the query-outer split kernel over the chunk's selection, then the combine.
Status run_split_chunk(const ChunkRun& r, int phases) {
  if (phases < 2) return Status::Ok();
  const SparsePrefillPlanArgs& pa = r.p.args;
  kernels::DecodeAttentionLaunch l{};
  set_qkv(&l, r.q(), r.a.q, r.a.k_cache, r.a.v_cache);
  set_selection(&l, r.topk_rows(), r.topk, r.page_table(), pa.page_table);
  l.seq_lens_k = r.seq_lens();
  l.seq_stride = 1;
  l.cu_seqlens_q = r.cu_seqlens();
  l.cu_stride = 1;
  l.num_requests = r.c.num_requests;
  set_work(&l, r.c.num_q, pa.num_q_heads, pa.num_kv_heads, r.k(), pa.sm_scale, r.partial_out(), r.partial_lse(),
           r.device(), r.stream());
  l.split_counts = r.counts();
  MSA_RETURN_IF_ERROR(kernels::launch_decode_attention(l));
  if (phases < 3) return Status::Ok();
  return launch_combine_into(r.partial_out(), true, r.partial_lse(), r.counts(), r.c.num_q, pa.num_q_heads,
                             pa.num_kv_heads, r.k(), r.a.out, r.a.lse, r.c.t0, r.device(), r.stream());
}

}  // namespace

std::vector<PrefillChunk> plan_prefill_chunks(const BatchInfo& batch, std::int64_t chunk, std::vector<std::int32_t>* meta) {
  // A request cut by a chunk boundary becomes a shorter request whose KV length ends at its last query of the
  // chunk, so bottom-right positions are unchanged.
  std::vector<PrefillChunk> chunks;
  meta->clear();
  const std::int64_t T = batch.num_q(), B = batch.num_requests();
  std::int64_t b = 0;
  for (std::int64_t t0 = 0; t0 < T; t0 += chunk) {
    const std::int64_t t1 = std::min(T, t0 + chunk);
    while (batch.q_start[b + 1] <= t0) ++b;  // first request with a token at or after t0
    PrefillChunk c;
    c.t0 = t0;
    c.num_q = t1 - t0;
    c.b_first = static_cast<int>(b);
    c.meta = meta->size();
    std::int64_t e = b;
    while (e < B && batch.q_start[e] < t1) ++e;  // requests [b, e) have tokens in [t0, t1)
    c.num_requests = static_cast<int>(e - b);
    meta->push_back(0);
    std::vector<std::int32_t> lens;
    for (std::int64_t r = b; r < e; ++r) {
      const std::int64_t q1 = std::min(batch.q_start[r + 1], t1);  // the request's last token in the chunk, + 1
      meta->push_back(static_cast<std::int32_t>(q1 - t0));
      lens.push_back(static_cast<std::int32_t>(batch.position(r, q1 - 1 - batch.q_start[r]) + 1));
    }
    meta->insert(meta->end(), lens.begin(), lens.end());
    chunks.push_back(c);
  }
  return chunks;
}

Status plan_prefill_cuda(const SparsePrefillPlanArgs& a, std::int64_t max_chunk_tokens, PrefillCudaPlan* p,
                         bool split_kernel) {
  MSA_RETURN_IF_ERROR(require_sm90(a.topk.device.index, "sparse prefill attention"));
  const int G = a.num_q_heads / a.num_kv_heads;
  if (G > 16 || (G & (G - 1)) != 0)
    return Status::NotImplemented("SparsePrefillAttention on CUDA: Hq / Hkv must be 1, 2, 4, 8 or 16, got " +
                                  std::to_string(G));
  if (max_chunk_tokens < 0)
    return Status::InvalidArgument("max_chunk_tokens: must be >= 0 (0 selects the default), got " +
                                   std::to_string(max_chunk_tokens));
  const std::int64_t chunk = max_chunk_tokens > 0 ? max_chunk_tokens : kDefaultPrefillChunkTokens;
  MSA_RETURN_IF_ERROR(check_prefill_schedule(a.schedule));
  if (a.schedule == PrefillSchedule::kUnion && G != kUnionGroup)
    return Status::NotImplemented("schedule: kUnion needs Hq / Hkv = 16, got " + std::to_string(G));
  p->args = a;
  const bool split = split_kernel && a.schedule != PrefillSchedule::kUnion;
  p->kv_outer = !split;
  p->kv_outer_chain = p->kv_outer && a.schedule != PrefillSchedule::kUnion;
  p->union_budget = G != kUnionGroup || split || a.schedule == PrefillSchedule::kKvOuter ? 0
                    : a.schedule == PrefillSchedule::kUnion                ? kernels::kUnionBudgetAll
                                                                           : kernels::kUnionBudgetAuto;

  // Batch metadata: read once, checked like the host path's.
  std::vector<std::int32_t> cu_store, seq_store;
  Tensor cu_host, seq_host, pt_host;
  MSA_RETURN_IF_ERROR(host_copy(a.cu_seqlens_q, &cu_store, &cu_host));
  MSA_RETURN_IF_ERROR(host_copy(a.seq_lens_k, &seq_store, &seq_host));
  MSA_RETURN_IF_ERROR(host_copy(a.page_table, &p->page_table, &pt_host));
  MSA_RETURN_IF_ERROR(read_batch(&cu_host, 0, seq_host, a.topk.shape[1], &p->batch));

  std::vector<std::int32_t> meta, whole_meta;
  p->chunks = plan_prefill_chunks(p->batch, chunk, &meta);
  const std::vector<PrefillChunk> whole =
      plan_prefill_chunks(p->batch, std::max<std::int64_t>(p->batch.num_q(), 1), &whole_meta);
  p->whole = whole.empty() ? PrefillChunk{} : whole[0];
  p->whole.meta = meta.size();
  meta.insert(meta.end(), whole_meta.begin(), whole_meta.end());
  p->max_chunk_q = 0;
  for (const PrefillChunk& c : p->chunks) {
    p->max_chunk_q = std::max(p->max_chunk_q, c.num_q);
  }
  MSA_RETURN_IF_ERROR(p->meta.upload(meta.data(), meta.size() * 4, a.topk.device.index));

  // Workspace: the largest chunk's k2q lists (KV-outer only) and partials.
  const std::int64_t H = a.num_kv_heads, k = a.topk.shape[2], Tc = p->max_chunk_q;
  std::size_t off = 0;
  auto part = [&off](std::size_t bytes) {
    const std::size_t at = off;
    off += align256(bytes);
    return at;
  };
  if (p->kv_outer_chain) {
    std::int64_t r_cap = 0, i_cap = 0;
    std::size_t scratch = 0;
    for (const PrefillChunk& c : p->chunks) {
      const kernels::K2qBuildArgs ka = chunk_k2q_args(*p, a.topk, c, nullptr);
      std::size_t bytes = 0;
      MSA_RETURN_IF_ERROR(kernels::k2q_workspace_bytes(ka, &bytes));  // also k2q's size limits (chunks < 2^24)
      r_cap = std::max(r_cap, kernels::k2q_row_capacity(ka));
      i_cap = std::max(i_cap, kernels::k2q_item_capacity(ka));
      scratch = std::max(scratch, bytes);
    }
    p->off_row_ptr = part(static_cast<std::size_t>(H * (r_cap + 1)) * 4);
    p->off_row_batch = part(static_cast<std::size_t>(r_cap) * 4);
    p->off_row_block = part(static_cast<std::size_t>(r_cap) * 4);
    p->off_q_idx = part(static_cast<std::size_t>(H * Tc * k) * 4);
    p->off_qsplit = part(static_cast<std::size_t>(H * Tc * k) * 4);
    p->off_total = part(4);
    p->off_items = part(static_cast<std::size_t>(i_cap) * 6 * 4);
    p->off_num_items = part(4);
    p->off_k2q_scratch = part(scratch);
    p->k2q_scratch_bytes = scratch;
  }
  const bool partials = !p->kv_outer || p->kv_outer_chain;
  if (partials) p->off_counts = part(static_cast<std::size_t>(Tc * H) * 4);
  // Several chunks through the KV-outer chain: a second set of the structures above, and the side stream that
  // builds chunk c + 1's set while chunk c attends.
  p->front_set_bytes = off;
  p->overlap_front = p->kv_outer_chain && p->chunks.size() > 1;
  if (p->overlap_front) {
    off += p->front_set_bytes;
    MSA_RETURN_IF_ERROR(p->side.create(a.topk.device.index, kSideEvents));
    if (p->union_budget > 0) MSA_RETURN_IF_ERROR(p->union_side.create(a.topk.device.index, kUnionEvents));
  }
  // The union schedule's structures for the whole batch (kernels/sm90/attention/union_tiles.cuh): kernels::
  // union_tiles of it. The mask's copy of topk is H * T * k int32 (256 MB at 1M tokens, M3 shapes).
  const std::int64_t T = p->batch.num_q(), union_tiles = (T + 7) / 8 + p->batch.num_requests();
  if (p->kv_outer_chain && p->union_budget > 0) {
    p->off_masked_topk = part(static_cast<std::size_t>(H * T * k) * 4);
    p->off_tile_flags = part(static_cast<std::size_t>(H * union_tiles) * 4);
  }
  if (p->union_budget > 0) {
    p->off_tile_slots = part(static_cast<std::size_t>(H * union_tiles) * 8);
    p->off_work_counter = part(8);  // the counter and, under kAuto, the length of the union items' list
  }
  if (partials) {
    // bf16 partials for KV-outer, fp32 for the split kernel (kernels/decode/launch.h).
    p->off_partial_out = part(static_cast<std::size_t>(k * Tc * a.num_q_heads) * 128 * (p->kv_outer ? 2 : 4));
    p->off_partial_lse = part(static_cast<std::size_t>(k * Tc * a.num_q_heads) * 4);
  }
  p->workspace_bytes = off;
  return Status::Ok();
}

Status check_prefill_pages(const PrefillCudaPlan& p, std::int64_t num_pages) {
  Tensor pt = p.args.page_table;
  pt.data = const_cast<std::int32_t*>(p.page_table.data());
  pt.device = Device::cpu();
  return check_page_table(pt, p.batch, num_pages);
}

Status run_prefill_cuda(const PrefillCudaPlan& p, const Tensor& topk, const SparsePrefillRunArgs& a, void* workspace,
                        std::size_t workspace_bytes, int phases, unsigned skip) {
  if (workspace_bytes < p.workspace_bytes)
    return Status::InvalidArgument("workspace: needs " + std::to_string(p.workspace_bytes) +
                                   " bytes (workspace_bytes() after plan), got " + std::to_string(workspace_bytes));
  if (p.workspace_bytes > 0 && (workspace == nullptr || reinterpret_cast<std::uintptr_t>(workspace) % 256 != 0))
    return Status::InvalidArgument("workspace: must be a non-null, 256-byte aligned device pointer");
  auto* ws = static_cast<unsigned char*>(workspace);
  auto* meta = static_cast<const std::int32_t*>(p.meta.get());
  const auto run_at = [&](std::size_t i) {
    unsigned char* set = ws + (p.overlap_front && i % 2 == 1 ? p.front_set_bytes : 0);
    return ChunkRun{p, topk, a, ws, set, meta, p.chunks[i]};
  };
  if (!p.kv_outer) {
    for (std::size_t i = 0; i < p.chunks.size(); ++i) MSA_RETURN_IF_ERROR(run_split_chunk(run_at(i), phases));
    return Status::Ok();
  }
  // kAuto with the chain on two streams: the union kernel on a third, beside it (kUnionReserveSms).
  const bool union_beside = p.union_budget > 0 && p.whole.num_q > 0 && p.overlap_front && phases >= 3 &&
                            (skip & kSkipUnionBack) == 0;
  if (p.union_budget > 0 && p.whole.num_q > 0)
    MSA_RETURN_IF_ERROR(run_union(ChunkRun{p, topk, a, ws, ws, meta, p.whole}, phases, skip, union_beside));
  if (!p.kv_outer_chain) return Status::Ok();
  if (!p.overlap_front || phases < 3) {  // one stream: front and back of each chunk in turn
    for (std::size_t i = 0; i < p.chunks.size(); ++i) {
      const ChunkRun r = run_at(i);
      MSA_RETURN_IF_ERROR(run_front(r, r.stream()));
      if (phases >= 2) MSA_RETURN_IF_ERROR(kv_outer_back(r, phases, skip));
    }
    return Status::Ok();
  }
  // Two streams. The side stream starts after everything before the chain on the caller's stream (topk and the
  // union schedule included), builds chunk i + 1's set while the caller's stream attends chunk i, and may refill a
  // set only once the chunk that used it two steps before is done with it. Every front is waited on by its back,
  // so the caller's stream has joined all the side work when run() returns (also when it is being captured into a
  // graph).
  void* main = a.q.device.stream;
  void* side = p.side.stream();
  MSA_RETURN_IF_ERROR(p.side.record(kEventStart, main));
  MSA_RETURN_IF_ERROR(p.side.wait(side, kEventStart));
  MSA_RETURN_IF_ERROR(run_front(run_at(0), side));
  MSA_RETURN_IF_ERROR(p.side.record(kEventBuilt + 0, side));
  for (std::size_t i = 0; i < p.chunks.size(); ++i) {
    const int set = static_cast<int>(i % 2);
    const ChunkRun r = run_at(i);
    MSA_RETURN_IF_ERROR(p.side.wait(main, kEventBuilt + set));
    if (i + 1 < p.chunks.size()) {
      const int next = static_cast<int>((i + 1) % 2);
      if (i >= 1) MSA_RETURN_IF_ERROR(p.side.wait(side, kEventFree + next));  // chunk i - 1's back is done with it
      MSA_RETURN_IF_ERROR(run_front(run_at(i + 1), side));
      MSA_RETURN_IF_ERROR(p.side.record(kEventBuilt + next, side));
    }
    MSA_RETURN_IF_ERROR(kv_outer_back(r, phases, skip));
    MSA_RETURN_IF_ERROR(p.side.record(kEventFree + set, main));
  }
  if (union_beside) {
    // Once the chain is done its SMs join the union kernel for the items still left (they share its work counter;
    // on random selections the union kernel is long done and these CTAs exit at once).
    kernels::UnionLaunch tail = chunk_union_launch(ChunkRun{p, topk, a, ws, ws, meta, p.whole});
    tail.max_ctas = kUnionReserveSms;
    MSA_RETURN_IF_ERROR(kernels::launch_union_kernel(tail));
    MSA_RETURN_IF_ERROR(p.union_side.wait(main, kUnionJoin));
  }
  return Status::Ok();
}

Status plan_decode_cuda(const SparseDecodePlanArgs& a, std::size_t* workspace_bytes) {
  MSA_RETURN_IF_ERROR(require_sm90(a.device.index, "sparse decode attention"));
  const int G = a.num_q_heads / a.num_kv_heads;
  if (G > 16 || (G & (G - 1)) != 0)
    return Status::NotImplemented("SparseDecodeAttention on CUDA: Hq / Hkv must be 1, 2, 4, 8 or 16, got " +
                                  std::to_string(G));
  *workspace_bytes =
      kernels::decode_plan_workspace_bytes(static_cast<std::int64_t>(a.batch_size) * a.queries_per_request,
                                           a.num_q_heads, a.num_kv_heads, a.topk, cuda_sm_count(a.device.index));
  return Status::Ok();
}

Status run_decode_cuda(const SparseDecodePlanArgs& p, const SparseDecodeRunArgs& a, void* workspace,
                       std::size_t workspace_bytes, bool after_selection, const void* handoff) {
  const std::int64_t T = a.q.shape[0];
  const int device = a.q.device.index, sms = cuda_sm_count(device);
  // Only split + combine uses the workspace (its partials); the plan reserved the most any batch up to its
  // capacity needs.
  const std::size_t need = kernels::decode_workspace_bytes(T, p.num_q_heads, p.num_kv_heads, p.topk, sms);
  if (workspace_bytes < need)
    return Status::InvalidArgument("workspace: needs " + std::to_string(need) +
                                   " bytes (workspace_bytes() after plan), got " + std::to_string(workspace_bytes));
  if (need > 0 && (workspace == nullptr || reinterpret_cast<std::uintptr_t>(workspace) % 256 != 0))
    return Status::InvalidArgument("workspace: must be a non-null, 256-byte aligned device pointer");
  kernels::DecodeAttentionLaunch l{};
  set_qkv(&l, a.q.data, a.q, a.k_cache, a.v_cache);
  set_selection(&l, static_cast<const std::int32_t*>(a.topk.data), a.topk,
                static_cast<const std::int32_t*>(a.page_table.data), a.page_table);
  l.seq_lens_k = static_cast<const std::int32_t*>(a.seq_lens_k.data);
  l.seq_stride = a.seq_lens_k.stride[0];
  l.cu_seqlens_q = nullptr;
  l.num_requests = static_cast<int>(a.seq_lens_k.shape[0]);
  l.queries_per_request = p.queries_per_request;
  l.inputs_before_wait = after_selection;
  // Enough (token, KV head) rows to fill the GPU: one CTA per row writes out / LSE directly (decode_rows.cu). A
  // handful of rows: the k CTAs of a row form a cluster that merges its partials on chip and writes out / LSE
  // (decode_attention.cu). In between: one CTA per listed block, then the combine. The choice depends on T and the
  // device only, so a captured graph replays the kernels it was captured with.
  const kernels::DecodeKernel kernel = kernels::decode_kernel_for(T * p.num_kv_heads, p.topk, sms);
  if (kernel != kernels::DecodeKernel::kSplitCombine) {
    const auto direct = kernel == kernels::DecodeKernel::kRows ? &kernels::launch_decode_attention_rows
                                                               : &kernels::launch_decode_attention_fused;
    set_work(&l, T, p.num_q_heads, p.num_kv_heads, p.topk, p.sm_scale, nullptr, nullptr, device, a.q.device.stream);
    // The fused kernel takes the selection merge's handoff (MsaDecode); the rows kernel reads topk after its wait.
    if (kernel == kernels::DecodeKernel::kFusedCluster) l.handoff = static_cast<const unsigned long long*>(handoff);
    const bool with_lse = a.lse.present();
    return direct(l, a.out.data, a.out.stride[0], a.out.stride[1], with_lse ? static_cast<float*>(a.lse.data) : nullptr,
                  with_lse ? a.lse.stride[0] : 0, with_lse ? a.lse.stride[1] : 0);
  }
  const kernels::DecodePartials parts = kernels::decode_partials_at(workspace, T, p.num_q_heads, p.topk);
  set_work(&l, T, p.num_q_heads, p.num_kv_heads, p.topk, p.sm_scale, parts.out, parts.lse, device,
           a.q.device.stream);
  l.split_counts = parts.counts;
  MSA_RETURN_IF_ERROR(kernels::launch_decode_attention(l));
  return launch_combine_into(parts.out, true, parts.lse, parts.counts, T, p.num_q_heads, p.num_kv_heads, p.topk, a.out,
                             a.lse, 0, l.device, l.stream);
}

}  // namespace detail
}  // namespace msa
