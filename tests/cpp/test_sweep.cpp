// test_sweep.cpp — the sweep's random shapes (sweep.h) through the public ops with CPU descriptors: MsaPrefill,
// SparsePrefillAttention (the selection shuffled per row, half the rounds clustered) and MsaDecode, half the rounds
// on strided views of every tensor with poisoned padding (views.h). The CPU implementation's selection is judged by
// its contract (tied requests exactly), its attention by design.md's error rule, and no output may be written
// outside its view. The same draws run on the GPU in test_sm90_sweep.cpp.
#include <cstring>
#include <random>

#include "sweep.h"
#include "test_util.h"
#include "views.h"

namespace msa {
namespace test {
namespace {

// Runs a planned layer op (MsaPrefill or MsaDecode) on d's tensors and checks it: the selection by its contract and
// tied requests exactly, the attention by the error rule, no write outside a view. Then runs it again with the LSE
// and the topk output left out at random: out and the selection bit for bit.
template <typename Layer, typename RunArgs>
void run_and_check(Layer& layer, const RunArgs& ra, Problem& p, ViewProblem<HostView>& d, const Shape& shape,
                   std::mt19937_64& rng) {
  std::vector<unsigned char> ws(layer.workspace_bytes());
  Status st = layer.run(ra, ws.data(), ws.size());
  ASSERT_TRUE(st.ok()) << st.to_string();
  const std::vector<std::uint16_t> out = check_layer_outputs(p, d, false, shape.sm_scale);
  ASSERT_FALSE(::testing::Test::HasFailure());
  expect_tied_rows(p, shape);
  ASSERT_FALSE(::testing::Test::HasFailure());
  expect_rerun_without_optional_outputs(layer, ra, ws.data(), ws.size(), p, d, out, rng, [] {});
}

TEST(CPU_Sweep, PrefillLayer) {
  for (int round = 0; round < sweep_rounds(); ++round) {
    const std::uint64_t seed = random_seed();
    std::mt19937_64 rng(seed);
    const Shape shape = draw_prefill(rng);
    SCOPED_TRACE(seed_note(seed) + ": " + shape.describe());
    Problem p = make_sweep_problem(shape, seed);
    ViewProblem<HostView> d(p, chance(rng, 0.5), rng);
    SCOPED_TRACE(d.describe());
    MsaPrefill layer;
    MsaPrefillPlanArgs pa = prefill_layer_plan_args(p, d);
    pa.sm_scale = shape.sm_scale;
    const Status st = layer.plan(pa);
    ASSERT_TRUE(st.ok()) << st.to_string();
    run_and_check(layer, prefill_layer_args(d), p, d, shape, rng);
    ASSERT_FALSE(::testing::Test::HasFailure());
  }
}

TEST(CPU_Sweep, PrefillAttention) {
  for (int round = 0; round < sweep_rounds(); ++round) {
    const std::uint64_t seed = random_seed();
    std::mt19937_64 rng(seed);
    Shape shape = draw_prefill(rng);
    shape.fp8 = false;  // the index tensors only feed the selection here
    const bool clustered = chance(rng, 0.5);
    SCOPED_TRACE(seed_note(seed) + ": " + shape.describe() + (clustered ? " clustered" : ""));
    Problem p = make_sweep_problem(shape, seed);
    ASSERT_TRUE(select(p).ok());
    if (clustered) cluster_selection(p, seed);
    shuffle_rows(p);
    ViewProblem<HostView> d(p, chance(rng, 0.5), rng);
    SCOPED_TRACE(d.describe());
    SparsePrefillAttention attn;
    SparsePrefillPlanArgs pa = prefill_plan_args(p, d);
    pa.sm_scale = shape.sm_scale;
    Status st = attn.plan(pa);
    ASSERT_TRUE(st.ok()) << st.to_string();
    st = attn.run({d.q_t(), d.k_cache_t(), d.v_cache_t(), d.out_t(), d.lse_t()});
    ASSERT_TRUE(st.ok()) << st.to_string();
    std::vector<std::uint16_t> out;
    std::vector<float> lse;
    d.download(p, &out, &lse, false);
    d.expect_padding_untouched();
    expect_attention_rule(p, out, lse, shape.sm_scale);
  }
}

TEST(CPU_Sweep, DecodeLayer) {
  for (int round = 0; round < sweep_rounds(); ++round) {
    const std::uint64_t seed = random_seed();
    std::mt19937_64 rng(seed);
    const DecodeDraw draw = draw_decode(rng);
    SCOPED_TRACE(seed_note(seed) + ": " + draw.describe());
    Problem p = make_sweep_problem(draw.shape, seed);
    ViewProblem<HostView> d(p, chance(rng, 0.5), rng);
    SCOPED_TRACE(d.describe());
    MsaDecode layer;
    const Status st = layer.plan(draw.plan_args(Device::cpu()));
    ASSERT_TRUE(st.ok()) << st.to_string();
    run_and_check(layer, decode_layer_args(d), p, d, draw.shape, rng);
    ASSERT_FALSE(::testing::Test::HasFailure());
  }
}

TEST(CPU_Sweep, ViewsRoundTripAndCatchStrayWrites) {
  std::mt19937_64 rng(random_seed());
  expect_views_round_trip<HostView>(rng, [](std::int32_t* at) { *at = 1; });
}

}  // namespace
}  // namespace test
}  // namespace msa
