// test_sm90_ops.cpp — the public attention and layer ops with CUDA descriptors, against the CPU reference on fresh
// random inputs: sparse prefill (KV-outer for every G, the union of blocks for G = 16) over chunk boundaries that cut
// requests, sparse decode, and the MsaPrefill / MsaDecode layers (their GPU selection judged by the selection
// contract, their attention by design.md's error rule on that selection). Cache tails past each length are NaN.
#include <cuda_runtime.h>

#include <cstring>
#include <random>

#include "cuda_test_util.h"
#include "test_util.h"

namespace msa {
namespace test {
namespace {

// Both chunkings are judged by the error rule, and they must agree bit for bit: every (token, head) result is
// computed by the same arithmetic whatever the chunking (chunks of 100 tokens cut requests mid-way). Under kAuto too:
// the union schedule takes its tiles and decides them once over the whole batch, before the chunks' KV-outer chains.
void check_prefill_op(std::vector<std::int64_t> nq, std::vector<std::int64_t> L, int Hq, int Hkv,
                      PrefillSchedule schedule = PrefillSchedule::kAuto, bool clustered = false,
                      double key_ramp = 0.0) {
  ProblemSpec s = spec(std::move(nq), std::move(L), Hq, Hkv);
  s.seed = random_seed();
  SCOPED_TRACE(seed_note(s.seed));
  Problem p = testing::make_problem(s);
  if (key_ramp > 0) ramp_keys(p, key_ramp);
  poison_cache_tails(p);
  ASSERT_TRUE(select(p).ok());
  if (clustered) cluster_selection(p, s.seed);
  shuffle_rows(p);
  std::vector<std::uint16_t> out, out_chunked;
  std::vector<float> lse, lse_chunked;
  // kKvOuter merges bf16 partials on every row, kAuto on the rows of its KV-outer tiles (their documented rounding,
  // include/msa/attention.h); only kUnion is held to the P-only emulation.
  const bool bf16_partials = schedule != PrefillSchedule::kUnion;
  run_prefill_op(p, 0, schedule, &out, &lse);
  expect_attention_rule(p, out, lse, 0.0, bf16_partials);
  run_prefill_op(p, 100, schedule, &out_chunked, &lse_chunked);
  expect_attention_rule(p, out_chunked, lse_chunked, 0.0, bf16_partials);
  EXPECT_EQ(out, out_chunked);
  EXPECT_EQ(0, std::memcmp(lse.data(), lse_chunked.data(), lse.size() * sizeof(float)));
}

TEST(SM90_SparsePrefillOp, KvOuterVarlenChunked) {
  MSA_REQUIRE_SM90();
  check_prefill_op({129, 0, 40, 300, 7, 1}, {129, 500, 16385, 2600, 2049, 130}, 32, 2, PrefillSchedule::kKvOuter);
}

TEST(SM90_SparsePrefillOp, UnionOfBlocksVarlenChunked) {
  MSA_REQUIRE_SM90();
  check_prefill_op({129, 0, 40, 300, 7, 1}, {129, 500, 16385, 2600, 2049, 130}, 32, 2, PrefillSchedule::kUnion);
}

// The default schedule mixes both per tile: on clustered selections most long-context tiles take the union kernel,
// the first blocks' tiles too (few visible blocks), the rest KV-outer.
TEST(SM90_SparsePrefillOp, AutoScheduleVarlenChunked) {
  MSA_REQUIRE_SM90();
  check_prefill_op({129, 0, 40, 300, 7, 1}, {129, 500, 16385, 2600, 2049, 130}, 32, 2);
  check_prefill_op({129, 0, 40, 300, 7, 1}, {129, 500, 16385, 2600, 2049, 130}, 32, 2, PrefillSchedule::kAuto, true);
}

// Peaked rows (keys scaled up with their position, ramp_keys): one key holds most of a row's softmax mass and the
// row maxima keep rising from block to block; every schedule must still meet the error rule.
TEST(SM90_SparsePrefillOp, RampedKeysEverySchedule) {
  MSA_REQUIRE_SM90();
  for (PrefillSchedule schedule : {PrefillSchedule::kKvOuter, PrefillSchedule::kUnion, PrefillSchedule::kAuto}) {
    SCOPED_TRACE(static_cast<int>(schedule));
    check_prefill_op({129, 0, 40, 300, 7, 1}, {129, 500, 16385, 2600, 2049, 130}, 32, 2, schedule, true, 1.0 / 1024);
  }
}

// G = 8 runs the KV-outer chain under kKvOuter and kAuto (8 tokens x 8 heads per tile), peaked rows included.
TEST(SM90_SparsePrefillOp, KvOuterGroupOf8VarlenChunked) {
  MSA_REQUIRE_SM90();
  check_prefill_op({129, 0, 40, 300, 7, 1}, {129, 500, 16385, 2600, 2049, 130}, 32, 4, PrefillSchedule::kKvOuter);
  check_prefill_op({129, 0, 40, 300, 7, 1}, {129, 500, 16385, 2600, 2049, 130}, 64, 8, PrefillSchedule::kAuto, true);
  check_prefill_op({129, 0, 40, 300, 7, 1}, {129, 500, 16385, 2600, 2049, 130}, 32, 4, PrefillSchedule::kKvOuter,
                   true, 1.0 / 1024);
}

// The non-finite tests' cases: 32 query heads over Hkv = 2 .. 32 KV heads (G = 16 .. 1: every KV-outer
// instantiation) under each schedule that takes that G, on fresh inputs with their selection; request 0's four tokens
// sit at 296 .. 299 (L 300), request 1 has 64 tokens over L 6000. check(p, schedule) edits the caches and runs.
template <class Check>
void for_each_nonfinite_case(Check check) {
  for (int Hkv : {2, 4, 8, 16, 32}) {
    for (PrefillSchedule schedule : {PrefillSchedule::kKvOuter, PrefillSchedule::kUnion, PrefillSchedule::kAuto}) {
      if (Hkv != 2 && schedule == PrefillSchedule::kUnion) continue;  // the union schedule needs G = 16
      SCOPED_TRACE(::testing::Message() << "Hkv " << Hkv << ", schedule " << static_cast<int>(schedule));
      ProblemSpec s = spec({4, 64}, {300, 6000}, 32, Hkv);
      s.seed = random_seed();
      SCOPED_TRACE(seed_note(s.seed));
      Problem p = testing::make_problem(s);
      ASSERT_TRUE(select(p).ok());
      check(p, schedule);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

// A NaN or infinity in V reaches exactly the rows that see its key, as in the reference (CPU_Attention.
// NanValueReachesOnlyRowsThatSeeIt): not the tokens of its block before it (they mask it), and under the union
// schedule not the tokens of a warpgroup that did not select its block (their warps add P = 0). The kernels multiply
// those keys' P = 0 into V on the tensor cores, where 0 * NaN = NaN, and recompute such rows exactly
// (kernels/sm90/attention/nonfinite_rows.cuh). G = 16 (every schedule) and G = 8 .. 1 (KV-outer: a warp's rows are
// several tokens', each with its own mask).
TEST(SM90_SparsePrefillOp, NanValueReachesOnlyRowsThatSeeIt) {
  MSA_REQUIRE_SM90();
  for_each_nonfinite_case([](Problem& p, PrefillSchedule schedule) {
    set_value_row(p, 0, 0, 298, NAN);  // request 0's tokens sit at 296 .. 299: 296 and 297 mask key 298
    // Request 1: +inf in a history block that token 0 of its first tile lists and token 1 does not.
    const std::int64_t t0 = p.cu_seqlens_q[1], k = p.spec.topk;
    std::int32_t block = -1;
    for (std::int64_t e = 0; e + 1 < k && block < 0; ++e) {
      const std::int32_t id = topk_at(p, 0, t0, e);
      bool listed_by_next = false;
      for (std::int64_t f = 0; f < k; ++f) listed_by_next |= topk_at(p, 0, t0 + 1, f) == id;
      if (!listed_by_next) block = id;
    }
    ASSERT_GE(block, 0);
    set_value_row(p, 1, 0, static_cast<std::int64_t>(block) * 128 + 5, INFINITY);
    std::vector<std::uint16_t> out;
    std::vector<float> lse;
    run_prefill_op(p, 0, schedule, &out, &lse);
    expect_attention_rule(p, out, lse, 0.0, schedule != PrefillSchedule::kUnion);
  });
}

// The documented limit of the rule above (docs/attention.md, "Non-finite K and V"): an infinity in V at a key a row
// sees, whose softmax weight underflows fp32 (its score more than 126 · ln 2 ≈ 87 below the row's max; ~110 here),
// comes out NaN (0 · inf) where the fp64 reference, whose weight does not underflow, gives the infinity. Request 0's
// tokens sit at 296 .. 299 and all see key 290 of their own block; head 0 of token 0 scores it ~ −110 (its K is
// −λ sign(q) there), and the other rows of KV head 0 see it with ordinary weights (their scores there have a spread
// of ~12: 0.11 of the target's, 1 / (0.8 √128) for normal q). Every row but that one keeps the reference's
// NaN / inf positions and stays finite where the reference is.
TEST(SM90_SparsePrefillOp, InfValueUnderUnderflowedWeightIsNan) {
  MSA_REQUIRE_SM90();
  for_each_nonfinite_case([](Problem& p, PrefillSchedule schedule) {
    const std::int64_t key = 290, Hq = p.spec.num_q_heads, Hkv = p.spec.num_kv_heads;
    std::uint16_t* k_row = cache_row(p, p.k_cache, 0, 0, key);
    double abs_sum = 0;
    for (int d = 0; d < 128; ++d) abs_sum += std::fabs(testing::from_bf16(p.q[static_cast<std::size_t>(d)]));
    const float lambda = testing::from_bf16(testing::to_bf16(static_cast<float>(110.0 * std::sqrt(128.0) / abs_sum)));
    double score = 0;  // head 0 of token 0 against the key, as the reference scores it
    for (int d = 0; d < 128; ++d) {
      const float qd = testing::from_bf16(p.q[static_cast<std::size_t>(d)]);
      const float kd = qd > 0 ? -lambda : qd < 0 ? lambda : 0.f;
      k_row[d] = testing::to_bf16(kd);
      score += static_cast<double>(qd) * kd / std::sqrt(128.0);
    }
    ASSERT_LT(score, -100.0);  // far below the row's max (> 0: the largest of ~300 scores of a few units), far
    ASSERT_GT(score, -120.0);  // above fp64's underflow at −745
    set_value_row(p, 0, 0, key, INFINITY);
    std::vector<std::uint16_t> out;
    std::vector<float> lse;
    run_prefill_op(p, 0, schedule, &out, &lse);
    std::vector<float> ref, ref_lse;
    ASSERT_TRUE(reference_fp64(p, &ref, &ref_lse).ok());
    int infinite_rows = 0;  // rows other than the underflowed one that the key's infinity reaches
    for (std::size_t i = 0; i < out.size(); ++i) {
      const double want = ref[i], have = testing::from_bf16(out[i]);
      if (i < 128) {  // token 0, head 0
        ASSERT_EQ(want, INFINITY) << "dim " << i;
        ASSERT_TRUE(std::isnan(have)) << "dim " << i << " = " << have;
      } else if (!std::isfinite(want)) {
        ASSERT_EQ(std::isnan(want), std::isnan(have)) << "element " << i;
        if (!std::isnan(want)) {
          ASSERT_EQ(want, have) << "element " << i;
        }
        infinite_rows += i % 128 == 0;
      } else {
        ASSERT_TRUE(std::isfinite(have)) << "element " << i << " = " << have;
      }
    }
    EXPECT_GE(infinite_rows, 4 * (Hq / Hkv) - 1);  // the four tokens' other heads of KV head 0
    for (std::size_t r = 0; r < lse.size(); ++r) ASSERT_NEAR(lse[r], ref_lse[r], 1e-4 * (1 + std::fabs(ref_lse[r])));
  });
}

TEST(SM90_SparsePrefillOp, UnionScheduleNeedsGroupOf16) {
  MSA_REQUIRE_SM90();
  for (int Hkv : {4, 2}) {  // G = 4 and 8
    Problem p = testing::make_problem(spec({8}, {300}, 16, Hkv));
    DeviceProblem d(p);
    SparsePrefillPlanArgs pa = prefill_plan_args(p, d);
    pa.schedule = PrefillSchedule::kUnion;
    SparsePrefillAttention attn;
    const Status st = attn.plan(pa);
    EXPECT_EQ(st.code(), StatusCode::kNotImplemented);
    EXPECT_NE(st.message().find("schedule: kUnion needs Hq / Hkv = 16, got " + std::to_string(16 / Hkv)),
              std::string::npos)
        << st.message();
  }
}

// k2q packs a query's chunk-local index into 24 bits, so the KV-outer schedules refuse chunks of 2^24 tokens at plan
// time (plan() reads the batch metadata only: topk may describe more tokens than its buffer holds).
TEST(SM90_SparsePrefillOp, KvOuterChunksBelow2To24Tokens) {
  MSA_REQUIRE_SM90();
  const std::int32_t T = 1 << 24;
  DeviceBuffer<std::int32_t> cu(std::vector<std::int32_t>{0, T}), seq(std::vector<std::int32_t>{T});
  DeviceBuffer<std::int32_t> table(std::vector<std::int32_t>(T / 128, 0)), topk(std::vector<std::int32_t>(16, -1));
  SparsePrefillPlanArgs pa;
  pa.topk = on_device(make_tensor(nullptr, DType::kInt32, {4, T, 16}), topk.ptr);
  pa.cu_seqlens_q = on_device(make_tensor(nullptr, DType::kInt32, {2}), cu.ptr);
  pa.seq_lens_k = on_device(make_tensor(nullptr, DType::kInt32, {1}), seq.ptr);
  pa.page_table = on_device(make_tensor(nullptr, DType::kInt32, {1, T / 128}), table.ptr);
  pa.max_chunk_tokens = T;
  for (PrefillSchedule schedule : {PrefillSchedule::kKvOuter, PrefillSchedule::kAuto}) {
    pa.schedule = schedule;
    SparsePrefillAttention attn;
    const Status st = attn.plan(pa);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
    EXPECT_NE(st.message().find("max_chunk_tokens: the KV-outer schedule takes chunks of fewer than 2^24"),
              std::string::npos)
        << st.message();
  }
  pa.max_chunk_tokens = T - 1;  // two chunks, the first of 2^24 - 1 tokens: accepted
  pa.schedule = PrefillSchedule::kKvOuter;
  SparsePrefillAttention attn;
  const Status st = attn.plan(pa);
  EXPECT_TRUE(st.ok()) << st.to_string();
}

TEST(SM90_SparsePrefillOp, KvOuterSmallGroupsVarlenChunked) {
  MSA_REQUIRE_SM90();
  check_prefill_op({129, 0, 40, 300}, {129, 500, 16385, 2600}, 16, 4);  // G = 4, kAuto: KV-outer
  check_prefill_op({129, 0, 40, 300}, {129, 500, 16385, 2600}, 8, 8, PrefillSchedule::kKvOuter);  // G = 1
}

// Public SparseDecodeAttention on the device for requests of Q queries with context lengths L, planned for
// `capacity` requests; checks out and LSE by the error rule, and that a run without LSE writes the same out.
// `path` says which decode kernel the batch must take (decode_kernel_for).
// nan_last_key: V of each request's last key is NaN for KV head 0, which only the request's last query sees.
void check_decode_op(int Q, std::vector<std::int64_t> L, int capacity, int Hq, int Hkv, DecodePath path, int k = 16,
                     double key_ramp = 0.0, bool nan_last_key = false) {
  const std::int64_t T = static_cast<std::int64_t>(L.size()) * Q;
  ASSERT_EQ(decode_path(T * Hkv, k), path);
  const std::vector<std::int64_t> queries(L.size(), Q);  // before L is handed over (argument order is unspecified)
  ProblemSpec s = spec(queries, std::move(L), Hq, Hkv);
  s.topk = k;
  s.seed = random_seed();
  SCOPED_TRACE(seed_note(s.seed));
  Problem p = testing::make_problem(s);
  if (key_ramp > 0) ramp_keys(p, key_ramp);
  poison_cache_tails(p);
  ASSERT_EQ(p.total_q, T);  // the run covers every query token
  const Status selected = select(p);
  ASSERT_TRUE(selected.ok()) << selected.to_string();
  if (nan_last_key)
    for (std::size_t b = 0; b < p.seq_lens_k.size(); ++b)
      set_value_row(p, static_cast<std::int64_t>(b), 0, p.seq_lens_k[b] - 1, NAN);
  shuffle_rows(p);
  DeviceProblem d(p);
  SparseDecodePlanArgs pa;
  pa.batch_size = capacity;  // capacity at or above the batch actually run
  pa.queries_per_request = Q;
  pa.num_q_heads = Hq;
  pa.num_kv_heads = Hkv;
  pa.topk = k;
  pa.device = Device::cuda(0);
  SparseDecodeAttention attn;
  ASSERT_TRUE(attn.plan(pa).ok());
  DeviceMemory ws(attn.workspace_bytes());
  SparseDecodeRunArgs ra{on_device(p.q_t(), d.q.ptr),          on_device(p.k_cache_t(), d.k_cache.ptr),
                         on_device(p.v_cache_t(), d.v_cache.ptr), on_device(p.topk_t(), d.topk.ptr),
                         on_device(p.page_table_t(), d.page_table.ptr), on_device(p.seq_lens_k_t(), d.seq_lens_k.ptr),
                         on_device(p.out_t(), d.out.ptr),         on_device(p.lse_t(), d.lse.ptr)};
  // Only split + combine needs workspace; the plan covers any batch up to its capacity.
  const std::size_t need = kernels::decode_workspace_bytes(T, Hq, Hkv, k, device0_sms());
  EXPECT_EQ(need > 0, path == DecodePath::kSplitCombine);
  EXPECT_GE(attn.workspace_bytes(), need);
  Status st;
  if (need > 0) {
    EXPECT_EQ(attn.run(ra, nullptr, 0).code(), StatusCode::kInvalidArgument);
    st = attn.run(ra, ws.ptr, attn.workspace_bytes());
  } else {
    st = attn.run(ra, nullptr, 0);  // the fused and rows kernels write out directly: no workspace at all
  }
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<std::uint16_t> out(p.out.size()), out_no_lse(p.out.size());
  std::vector<float> lse(p.lse.size());
  d.out.download(&out);
  d.lse.download(&lse);
  expect_attention_rule(p, out, lse);
  // Without the optional LSE: the same out, bit for bit.
  d.out.upload(std::vector<std::uint16_t>(p.out.size(), 0x7fc1));
  ra.lse = Tensor{};
  st = attn.run(ra, ws.ptr, attn.workspace_bytes());
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  d.out.download(&out_no_lse);
  EXPECT_EQ(out, out_no_lse);
}

TEST(SM90_SparseDecodeOp, MatchesReferenceBelowCapacity) {
  MSA_REQUIRE_SM90();
  const auto split = DecodePath::kSplitCombine, fused = DecodePath::kFusedCluster;
  check_decode_op(2, {40000, 129, 2}, 5, 64, 4, split);  // 24 rows: split kernel + combine
  check_decode_op(2, {40000, 129, 2}, 5, 16, 4, split);  // G = 4
  // 4 rows: the fused cluster kernel, clusters of 16 CTAs; a row with 1 or 2 blocks leaves most of them empty.
  check_decode_op(1, {300000}, 1, 64, 4, fused);
  check_decode_op(1, {2}, 3, 64, 4, fused);
  check_decode_op(2, {40000}, 1, 16, 4, fused, 5);  // G = 4, k = 5: clusters of 5 CTAs, 8 rows
  check_decode_op(1, {40000}, 1, 64, 4, fused, 12);  // 12: a non-portable cluster size
}

TEST(SM90_SparseDecodeOp, RowsKernelMatchesReference) {
  MSA_REQUIRE_SM90();
  // 128 (token, KV head) rows: one CTA per row writes out directly; M3 heads, then G = 4. A context holds its
  // request's queries, so the shortest ones are exactly Q tokens long.
  check_decode_op(4, {40000, 129, 4, 5, 300, 16385, 128, 5000}, 9, 64, 4, DecodePath::kRows);
  check_decode_op(2, {7000, 2, 129, 2049, 3, 900, 128, 260}, 8, 16, 4, DecodePath::kRows);
}

// Peaked rows (ramp_keys) on each decode kernel: its per-block softmax and its merge of the blocks' partials (on
// chip, or by the combine) must keep the error rule when one key holds most of the mass.
TEST(SM90_SparseDecodeOp, RampedKeysEveryPath) {
  MSA_REQUIRE_SM90();
  const double ramp = 1.0 / 16384;
  check_decode_op(2, {40000, 129, 2}, 5, 64, 4, DecodePath::kSplitCombine, 16, ramp);
  check_decode_op(1, {300000}, 1, 64, 4, DecodePath::kFusedCluster, 16, ramp);
  check_decode_op(4, {40000, 129, 4, 5, 300, 16385, 128, 5000}, 9, 64, 4, DecodePath::kRows, 16, ramp);
}

// A NaN in V at each request's last key reaches only its last query's rows: the earlier queries mask it, and every
// decode kernel zeroes the V rows after its token's position (decode_common.cuh's load_block_rows).
TEST(SM90_SparseDecodeOp, NanValueReachesOnlyRowsThatSeeIt) {
  MSA_REQUIRE_SM90();
  check_decode_op(2, {40000, 129, 2}, 5, 64, 4, DecodePath::kSplitCombine, 16, 0.0, true);
  check_decode_op(2, {40000}, 1, 16, 4, DecodePath::kFusedCluster, 5, 0.0, true);
  check_decode_op(4, {40000, 129, 4, 5, 300, 16385, 128, 5000}, 9, 64, 4, DecodePath::kRows, 16, 0.0, true);
}

// MsaPrefill over a batch with history and an empty request: topk by the selection contract, out / LSE by the
// error rule; then the same run without a topk output. fp8: e4m3 index tensors.
void check_prefill_layer(bool fp8) {
  ProblemSpec s = spec({129, 0, 40, 300, 2049}, {129, 500, 16385, 2600, 2049}, 64, 4);
  s.seed = random_seed();
  SCOPED_TRACE(seed_note(s.seed));
  Problem p = testing::make_problem(s);
  if (fp8) p.use_fp8_index();
  poison_cache_tails(p);
  DeviceProblem d(p);
  MsaPrefillPlanArgs pa = prefill_layer_plan_args(p, d);
  pa.max_chunk_tokens = 1000;
  MsaPrefill layer;
  Status st = layer.plan(pa);
  ASSERT_TRUE(st.ok()) << st.to_string();
  DeviceMemory ws(layer.workspace_bytes());
  MsaPrefillRunArgs ra = prefill_layer_args(d);
  // The default schedule, kAuto: its KV-outer tiles merge bf16 partials.
  const std::vector<std::uint16_t> out = run_layer_and_check(layer, ra, ws, p, d, /*bf16_partials=*/true);
  ASSERT_FALSE(::testing::Test::HasFailure());
  // Without a topk output the selection lives in the workspace; the result is the same.
  ra.topk = Tensor{};
  st = layer.run(ra, ws.ptr, layer.workspace_bytes());
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<std::uint16_t> again(out.size());
  d.out.download(&again);
  EXPECT_EQ(out, again);
}

TEST(SM90_LayerOps, PrefillSelectsAndAttends) {
  MSA_REQUIRE_SM90();
  check_prefill_layer(false);
}

// MsaDecode on requests of Q queries with context lengths L: its topk by the selection contract, out / LSE by the
// error rule. `path` is the attention kernel the batch must take (decode_kernel_for); the layer runs it right behind
// the selection, with q and the lengths read before the kernel's wait. capacity: the plan's batch_size (0: the
// batch's own size).
void check_decode_layer(int Q, std::vector<std::int64_t> L, DecodePath path, bool fp8 = false, int capacity = 0) {
  const std::int64_t T = static_cast<std::int64_t>(L.size()) * Q;
  ASSERT_EQ(decode_path(T * 4, 16), path);
  const std::vector<std::int64_t> queries(L.size(), Q);
  ProblemSpec s = spec(queries, std::move(L), 64, 4);
  s.seed = random_seed();
  SCOPED_TRACE(seed_note(s.seed));
  Problem p = testing::make_problem(s);
  ASSERT_EQ(p.total_q, T);
  if (fp8) p.use_fp8_index();
  poison_cache_tails(p);
  DeviceProblem d(p);
  MsaDecodePlanArgs pa;
  pa.batch_size = capacity > 0 ? capacity : static_cast<int>(p.seq_lens_k.size());
  pa.queries_per_request = Q;
  pa.device = Device::cuda(0);
  MsaDecode layer;
  Status st = layer.plan(pa);
  ASSERT_TRUE(st.ok()) << st.to_string();
  DeviceMemory ws(layer.workspace_bytes());
  run_layer_and_check(layer, decode_layer_args(d), ws, p, d);
}

TEST(SM90_LayerOps, DecodeSelectsAndAttends) {
  MSA_REQUIRE_SM90();
  check_decode_layer(3, {70000, 3, 129, 2048}, DecodePath::kSplitCombine);  // 48 rows
  check_decode_layer(1, {300000}, DecodePath::kFusedCluster);                 // 4 rows: the single long request
  check_decode_layer(1, {1900}, DecodePath::kFusedCluster);  // 15 pages: one split, no merge, no handoff
  check_decode_layer(2, {70000, 2, 129, 2048, 5000, 300, 128, 40000, 9000, 16385, 7, 1000, 131072, 2, 600, 20000},
                     DecodePath::kRows);  // 128 rows
}

// A decode plan serves every batch up to its capacity. One request of a long context splits its selection over
// more CTAs than each request of a full batch does (one split per SM in all), so it needs more partial lists than
// the full batch whenever the SM count is not a multiple of the capacity.
TEST(SM90_LayerOps, DecodeOneRequestBelowCapacity) {
  MSA_REQUIRE_SM90();
  int capacity = 5;
  while (device0_sms() % capacity == 0) ++capacity;
  check_decode_layer(1, {300000}, DecodePath::kFusedCluster, false, capacity);
}

TEST(SM90_LayerOps, Fp8IndexPrefillAndDecode) {
  MSA_REQUIRE_SM90();
  check_prefill_layer(true);
  ASSERT_FALSE(::testing::Test::HasFailure());
  check_decode_layer(1, {300000}, DecodePath::kFusedCluster, true);  // split selection, merge, handoff
  check_decode_layer(3, {70000, 3, 129, 2048}, DecodePath::kSplitCombine, true);
}

// One MsaDecode and one workspace for a sequence of runs whose selections differ (fresh inputs, a shorter request
// each time, a page table 47 pages wide): the split selection merges and hands each slot's (id, page) to the fused
// attention. Each run is checked against the CPU, so an entry left from the run before would show. Lengths of at
// most 16 blocks take the merge's path without ranking.
TEST(SM90_LayerOps, DecodeHandoffAcrossRuns) {
  MSA_REQUIRE_SM90();
  const std::int64_t table_tokens = 6000;
  MsaDecodePlanArgs pa;
  pa.batch_size = 1;
  pa.queries_per_request = 1;
  pa.device = Device::cuda(0);
  MsaDecode layer;
  ASSERT_TRUE(layer.plan(pa).ok());
  DeviceMemory ws(layer.workspace_bytes());
  for (const std::int64_t L : {6000, 4097, 2100, 2048, 1000, 129, 1}) {
    ProblemSpec s = spec({1}, {table_tokens}, 64, 4);
    s.seed = random_seed();
    SCOPED_TRACE(seed_note(s.seed));
    Problem p = testing::make_problem(s);
    p.spec.kv_lens = {L};  // the CPU checks read the lengths from the spec
    p.seq_lens_k = {static_cast<std::int32_t>(L)};
    poison_cache_tails(p);
    DeviceProblem d(p);
    run_layer_and_check(layer, decode_layer_args(d), ws, p, d);
    ASSERT_FALSE(::testing::Test::HasFailure()) << "L = " << L;
  }
}

}  // namespace
}  // namespace test
}  // namespace msa
