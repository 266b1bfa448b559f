// test_sm90_sweep.cpp — the sweep's random shapes (sweep.h) through the public ops on the GPU, against the CPU
// implementation: MsaPrefill (GPU selection), SparsePrefillAttention (the CPU's selection, half the rounds
// clustered) and MsaDecode. Half the rounds pass every tensor as a strided view (views.h: padded rows, interleaved
// K / V pages, token-major topk, column-major page table, ...) with poisoned padding that outputs must leave
// untouched, and a third run on a non-blocking stream whose inputs land late (device_views.h: work of an op that does
// not wait for its stream reads garbage). The selection is judged by its contract, the attention by design.md's
// error rule, and every prefill runs a second time under another chunking, which must change no bit.
#include <cuda_runtime.h>

#include <cstring>
#include <random>

#include "cuda_test_util.h"
#include "device_views.h"
#include "sweep.h"
#include "test_util.h"

namespace msa {
namespace test {
namespace {

// MsaPrefill: the GPU selection by its contract (and tied requests exactly), the attention by the error rule, then
// the same layer planned with another chunking, the LSE and the topk output left out at random: out and the
// selection bit for bit.
TEST(SM90_Sweep, PrefillLayer) {
  MSA_REQUIRE_SM90();
  for (int round = 0; round < sweep_rounds(); ++round) {
    const std::uint64_t seed = random_seed();
    std::mt19937_64 rng(seed);
    const Shape shape = draw_prefill(rng);
    const PrefillSchedule schedule = draw_schedule(rng, shape.Hq / shape.Hkv);
    const std::int64_t chunk = draw_chunk(rng), chunk2 = draw_chunk(rng);
    SCOPED_TRACE(seed_note(seed) + ": " + shape.describe() + ", schedule " + std::to_string(static_cast<int>(schedule)) +
                 ", chunks " + std::to_string(chunk) + " / " + std::to_string(chunk2));
    Problem p = make_sweep_problem(shape, seed);
    const bool views = chance(rng, 0.5), late_inputs = chance(rng, 0.3);
    DeviceViewProblem d(p, views, rng, late_inputs);
    SCOPED_TRACE(d.describe());
    MsaPrefillPlanArgs pa = prefill_layer_plan_args(p, d);
    pa.sm_scale = shape.sm_scale;
    pa.schedule = schedule;
    pa.max_chunk_tokens = chunk;
    MsaPrefill layer;
    Status st = layer.plan(pa);
    ASSERT_TRUE(st.ok()) << st.to_string();
    DeviceMemory ws(layer.workspace_bytes());
    const MsaPrefillRunArgs ra = prefill_layer_args(d);
    const std::vector<std::uint16_t> out =
        run_layer_and_check(layer, ra, ws, p, d, /*bf16_partials=*/schedule != PrefillSchedule::kUnion, shape.sm_scale);
    ASSERT_FALSE(::testing::Test::HasFailure());
    expect_tied_rows(p, shape);
    ASSERT_FALSE(::testing::Test::HasFailure());

    pa.max_chunk_tokens = chunk2;
    MsaPrefill again;
    st = again.plan(pa);
    ASSERT_TRUE(st.ok()) << st.to_string();
    DeviceMemory ws2(again.workspace_bytes());
    expect_rerun_without_optional_outputs(again, ra, ws2.ptr, again.workspace_bytes(), p, d, out, rng,
                                          [] { ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess); });
  }
}

// SparsePrefillAttention on the CPU's selection, half the rounds clustered (the union schedule's case), rows in
// random order: the error rule under one chunking, bit-identical results under another.
TEST(SM90_Sweep, PrefillAttention) {
  MSA_REQUIRE_SM90();
  for (int round = 0; round < sweep_rounds(); ++round) {
    const std::uint64_t seed = random_seed();
    std::mt19937_64 rng(seed);
    Shape shape = draw_prefill(rng);
    shape.fp8 = false;  // the index tensors only feed the CPU selection here
    const PrefillSchedule schedule = draw_schedule(rng, shape.Hq / shape.Hkv);
    const bool clustered = chance(rng, 0.5);
    const std::int64_t chunk = draw_chunk(rng), chunk2 = draw_chunk(rng);
    SCOPED_TRACE(seed_note(seed) + ": " + shape.describe() + (clustered ? " clustered" : "") + ", schedule " +
                 std::to_string(static_cast<int>(schedule)) + ", chunks " + std::to_string(chunk) + " / " +
                 std::to_string(chunk2));
    Problem p = make_sweep_problem(shape, seed);
    ASSERT_TRUE(select(p).ok());
    if (clustered) cluster_selection(p, seed);
    shuffle_rows(p);
    const bool views = chance(rng, 0.5), late_inputs = chance(rng, 0.3);
    DeviceViewProblem d(p, views, rng, late_inputs);
    SCOPED_TRACE(d.describe());
    std::vector<std::uint16_t> out[2];
    std::vector<float> lse[2];
    run_prefill_op(p, d, chunk, schedule, &out[0], &lse[0], shape.sm_scale);
    d.reset_outputs();
    run_prefill_op(p, d, chunk2, schedule, &out[1], &lse[1], shape.sm_scale);
    ASSERT_FALSE(::testing::Test::HasFailure());
    expect_attention_rule(p, out[0], lse[0], shape.sm_scale, /*bf16_partials=*/schedule != PrefillSchedule::kUnion);
    EXPECT_EQ(out[0], out[1]);
    EXPECT_EQ(0, std::memcmp(lse[0].data(), lse[1].data(), lse[0].size() * sizeof(float)));
  }
}

// MsaDecode: 1–48 requests of Q in [1, 16] queries (so every attention kernel: fused cluster, split + combine,
// rows), a plan for a batch up to twice as large, contexts from Q tokens to 200K; selection by its contract and tied
// requests exactly, attention by the error rule; then once more with the LSE and the topk output left out at
// random.
TEST(SM90_Sweep, DecodeLayer) {
  MSA_REQUIRE_SM90();
  for (int round = 0; round < sweep_rounds(); ++round) {
    const std::uint64_t seed = random_seed();
    std::mt19937_64 rng(seed);
    const DecodeDraw draw = draw_decode(rng);
    const Shape& shape = draw.shape;
    const DecodePath path = decode_path(static_cast<std::int64_t>(shape.nq.size()) * draw.Q * shape.Hkv, shape.k);
    SCOPED_TRACE(seed_note(seed) + ": " + draw.describe() + ", path " + std::to_string(static_cast<int>(path)));
    Problem p = make_sweep_problem(shape, seed);
    const bool views = chance(rng, 0.5), late_inputs = chance(rng, 0.3);
    DeviceViewProblem d(p, views, rng, late_inputs);
    SCOPED_TRACE(d.describe());
    MsaDecode layer;
    const Status st = layer.plan(draw.plan_args(Device::cuda(0)));
    ASSERT_TRUE(st.ok()) << st.to_string();
    DeviceMemory ws(layer.workspace_bytes());
    const std::vector<std::uint16_t> out =
        run_layer_and_check(layer, decode_layer_args(d), ws, p, d, false, shape.sm_scale);
    ASSERT_FALSE(::testing::Test::HasFailure());
    expect_tied_rows(p, shape);
    ASSERT_FALSE(::testing::Test::HasFailure());
    // Again on the same plan and workspace, the optional outputs left out at random.
    expect_rerun_without_optional_outputs(layer, decode_layer_args(d), ws.ptr, layer.workspace_bytes(), p, d, out, rng,
                                          [] { ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess); });
  }
}

TEST(SM90_Sweep, ViewsRoundTripAndCatchStrayWrites) {
  MSA_REQUIRE_SM90();
  std::mt19937_64 rng(random_seed());
  expect_views_round_trip<DeviceView>(rng, [](std::int32_t* at) {
    const std::int32_t stray = 1;
    ASSERT_EQ(cudaMemcpy(at, &stray, 4, cudaMemcpyHostToDevice), cudaSuccess);
  });
}

// Late inputs: after before_run() an input holds 0xff bytes until its stream has slept and copied it back, so work
// that does not wait for the stream reads garbage; work that does reads the problem.
TEST(SM90_Sweep, LateInputsLandInStreamOrder) {
  MSA_REQUIRE_SM90();
  std::mt19937_64 rng(random_seed());
  Problem p = testing::make_problem(spec({3}, {300}, 16, 2));
  DeviceViewProblem d(p, true, rng, /*late_inputs=*/true);
  d.before_run();
  const Tensor q = d.q_t();
  std::uint16_t early = 0, late = 0;  // q[0, 0, 0]
  ASSERT_EQ(cudaMemcpy(&early, q.data, 2, cudaMemcpyDeviceToHost), cudaSuccess);  // the legacy stream: no wait
  ASSERT_EQ(cudaStreamSynchronize(static_cast<cudaStream_t>(q.device.stream)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(&late, q.data, 2, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(early, 0xffff);
  EXPECT_EQ(late, p.q[0]);
}

}  // namespace
}  // namespace test
}  // namespace msa
