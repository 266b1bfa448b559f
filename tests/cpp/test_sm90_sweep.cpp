// test_sm90_sweep.cpp — randomized shapes for the public ops on the GPU, against the CPU implementation. Each round
// draws from a fresh seed what the fixed-shape suites pin down one case at a time: the batch (1–5 requests, empty
// ones, prefills with and without history, lengths on and off the 128-token grid), the head geometry (Hq / Hkv in
// {1, 2, 4, 8, 16}, Hkv = H_idx in {1, 2, 4, 8}), k in [1, 16], the prefill schedule and chunking, bf16 or fp8 index
// tensors, and requests whose index keys are all zero (every block ties: the selection must be [0 .. k-2, local]).
// A third of the rounds run on a non-blocking stream whose inputs land late (device_views.h: work of the op that
// does not wait for its stream reads garbage). Half the rounds pass every tensor as a strided view (device_views.h: padded rows, interleaved K / V pages,
// token-major topk, column-major page table, ...) with poisoned padding that outputs must leave untouched. The
// selection is judged by its contract, the attention by design.md's error rule, and every prefill runs a second
// time under another chunking, which must change no bit.
//
// MSA_SWEEP_ROUNDS sets the rounds of each test (default 3); every round names its seed and shape in its trace, and
// MSA_TEST_SEED=<seed> with MSA_SWEEP_ROUNDS=1 replays a failed one.
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <sstream>

#include "cuda_test_util.h"
#include "device_views.h"
#include "test_util.h"

namespace msa {
namespace test {
namespace {

int sweep_rounds() {
  const char* e = std::getenv("MSA_SWEEP_ROUNDS");
  return e != nullptr ? std::max(1, std::atoi(e)) : 3;
}

std::int64_t uniform(std::mt19937_64& rng, std::int64_t lo, std::int64_t hi) {  // [lo, hi]
  return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
}

bool chance(std::mt19937_64& rng, double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; }

// Log-uniform in [lo, hi]: short and long contexts alike.
std::int64_t log_uniform(std::mt19937_64& rng, std::int64_t lo, std::int64_t hi) {
  const double x = std::exp(std::uniform_real_distribution<double>(std::log(lo), std::log(hi + 1.0))(rng));
  return std::min<std::int64_t>(hi, std::max<std::int64_t>(lo, static_cast<std::int64_t>(x)));
}

// Head geometry: Hkv (= index heads) and G = Hq / Hkv with Hq <= 64; half the draws are G = 16.
void draw_heads(std::mt19937_64& rng, int* Hq, int* Hkv) {
  const int G = chance(rng, 0.5) ? 16 : 1 << uniform(rng, 0, 3);
  *Hkv = 1 << uniform(rng, 0, G == 16 ? 2 : 3);
  *Hq = G * *Hkv;
}

int draw_k(std::mt19937_64& rng) { return chance(rng, 0.5) ? 16 : static_cast<int>(uniform(rng, 1, 15)); }

// The CPU checks walk every visible index key per (token, head) and every selected key per (token, query head);
// shapes are drawn within these budgets so a round takes seconds.
constexpr std::int64_t kScoreBudget = 12'000'000;  // sum over tokens of visible keys x index heads
constexpr std::int64_t kTokenBudget = 1200;        // query tokens of a prefill round

struct Shape {
  std::vector<std::int64_t> nq, L;
  int Hq = 64, Hkv = 4, k = 16;
  bool fp8 = false;
  std::vector<bool> zero_keys;  // per request: every index key 0 (all blocks tie)
  std::string describe() const {
    std::ostringstream s;
    s << "Hq " << Hq << " Hkv " << Hkv << " k " << k << (fp8 ? " fp8" : " bf16") << " requests (nq/L):";
    for (std::size_t b = 0; b < nq.size(); ++b) s << " " << nq[b] << "/" << L[b] << (zero_keys[b] ? "z" : "");
    return s.str();
  }
};

// A prefill batch: empty requests, whole prompts, and chunks behind a history, within the budgets.
Shape draw_prefill(std::mt19937_64& rng) {
  Shape s;
  draw_heads(rng, &s.Hq, &s.Hkv);
  s.k = draw_k(rng);
  s.fp8 = chance(rng, 0.25);
  const int B = static_cast<int>(uniform(rng, 1, 5));
  std::int64_t tokens = 0, score = 0;
  for (int b = 0; b < B; ++b) {
    std::int64_t nq, L;
    const double kind = std::uniform_real_distribution<double>(0, 1)(rng);
    if (kind < 0.15) {  // no new tokens (a history of any length, also none)
      L = chance(rng, 0.3) ? 0 : log_uniform(rng, 1, 5000);
      nq = 0;
    } else if (kind < 0.45) {  // a whole prompt
      L = nq = log_uniform(rng, 1, 900);
    } else {  // a chunk behind a history
      L = log_uniform(rng, 2, 40000);
      nq = std::min<std::int64_t>(L, log_uniform(rng, 1, 400));
    }
    nq = std::min(nq, kTokenBudget - tokens);
    // Shrink the chunk until its checks fit the budget: each of its tokens sees at most L keys.
    while (nq > 1 && score + nq * L * s.Hkv > kScoreBudget) nq /= 2;
    if (score + nq * L * s.Hkv > kScoreBudget) nq = 0;
    tokens += nq;
    score += nq * L * s.Hkv;
    s.nq.push_back(nq);
    s.L.push_back(L);
    s.zero_keys.push_back(chance(rng, 0.12));
  }
  if (tokens == 0) {  // the rule needs query tokens: give the last request one
    s.nq.back() = 1;
    s.L.back() = std::max<std::int64_t>(s.L.back(), 1);
  }
  return s;
}

// The problem of a shape: fresh values, NaN cache tails, zeroed index keys where drawn, fp8 copies where drawn.
Problem make_sweep_problem(const Shape& shape, std::uint64_t seed) {
  ProblemSpec s = spec(shape.nq, shape.L, shape.Hq, shape.Hkv);
  s.topk = shape.k;
  s.seed = seed;
  Problem p = testing::make_problem(s);
  for (std::int64_t b = 0; b < p.num_requests(); ++b) {
    if (!shape.zero_keys[static_cast<std::size_t>(b)]) continue;
    for (std::int64_t j = 0; j < (shape.L[static_cast<std::size_t>(b)] + 127) / 128; ++j)
      std::fill_n(p.index_k_cache.begin() + static_cast<std::ptrdiff_t>(p.page(b, j)) * 128 * 128, 128 * 128,
                  std::uint16_t{0});
  }
  if (shape.fp8) p.use_fp8_index();
  poison_cache_tails(p);
  return p;
}

// Rows of requests whose index keys are all zero: every block scores 0, so ties to the smaller id give
// [0 .. k-2, local] (all visible blocks when n_vis <= k), -1 after.
void expect_tied_rows(const Problem& p, const Shape& shape) {
  const int k = shape.k;
  for (std::int64_t b = 0; b < p.num_requests(); ++b) {
    if (!shape.zero_keys[static_cast<std::size_t>(b)]) continue;
    for (std::int64_t i = 0; i < shape.nq[static_cast<std::size_t>(b)]; ++i) {
      const std::int64_t t = p.cu_seqlens_q[static_cast<std::size_t>(b)] + i, local = p.position(b, i) / 128;
      for (int g = 0; g < shape.Hkv; ++g)
        for (int e = 0; e < k; ++e) {
          const std::int64_t want = local + 1 <= k ? (e <= local ? e : -1) : (e < k - 1 ? e : local);
          ASSERT_EQ(topk_at(p, g, t, e), want) << "tied request " << b << " token " << t << " head " << g << " slot " << e;
        }
    }
  }
}

PrefillSchedule draw_schedule(std::mt19937_64& rng, int G) {
  const int pick = static_cast<int>(uniform(rng, 0, G == 16 ? 2 : 1));
  return pick == 0 ? PrefillSchedule::kAuto : pick == 1 ? PrefillSchedule::kKvOuter : PrefillSchedule::kUnion;
}

std::int64_t draw_chunk(std::mt19937_64& rng) { return chance(rng, 0.4) ? 0 : log_uniform(rng, 1, 700); }

// MsaPrefill: the GPU selection by its contract (and tied requests exactly), the attention by the error rule, then
// the same layer planned with another chunking: topk and out bit for bit.
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
    ViewProblem d(p, views, rng, late_inputs);
    SCOPED_TRACE(d.describe());
    MsaPrefillPlanArgs pa = prefill_layer_plan_args(p, d);
    pa.schedule = schedule;
    pa.max_chunk_tokens = chunk;
    MsaPrefill layer;
    Status st = layer.plan(pa);
    ASSERT_TRUE(st.ok()) << st.to_string();
    DeviceMemory ws(layer.workspace_bytes());
    const MsaPrefillRunArgs ra = prefill_layer_args(d);
    const std::vector<std::uint16_t> out =
        run_layer_and_check(layer, ra, ws, p, d, /*bf16_partials=*/schedule != PrefillSchedule::kUnion);
    ASSERT_FALSE(::testing::Test::HasFailure());
    expect_tied_rows(p, shape);
    ASSERT_FALSE(::testing::Test::HasFailure());
    const std::vector<std::int32_t> topk = p.topk;

    pa.max_chunk_tokens = chunk2;
    MsaPrefill again;
    st = again.plan(pa);
    ASSERT_TRUE(st.ok()) << st.to_string();
    DeviceMemory ws2(again.workspace_bytes());
    d.reset_outputs();
    st = again.run(ra, ws2.ptr, again.workspace_bytes());
    ASSERT_TRUE(st.ok()) << st.to_string();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<std::uint16_t> out2;
    std::vector<float> lse2;
    d.download(p, &out2, &lse2, true);
    d.expect_padding_untouched();
    EXPECT_EQ(topk, p.topk);
    EXPECT_EQ(out, out2);
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
    ViewProblem d(p, views, rng, late_inputs);
    SCOPED_TRACE(d.describe());
    std::vector<std::uint16_t> out[2];
    std::vector<float> lse[2];
    run_prefill_op(p, d, chunk, schedule, &out[0], &lse[0]);
    d.reset_outputs();
    run_prefill_op(p, d, chunk2, schedule, &out[1], &lse[1]);
    ASSERT_FALSE(::testing::Test::HasFailure());
    expect_attention_rule(p, out[0], lse[0], 0.0, /*bf16_partials=*/schedule != PrefillSchedule::kUnion);
    EXPECT_EQ(out[0], out[1]);
    EXPECT_EQ(0, std::memcmp(lse[0].data(), lse[1].data(), lse[0].size() * sizeof(float)));
  }
}

// MsaDecode: 1–48 requests of Q in [1, 16] queries (so every attention kernel: fused cluster, split + combine,
// rows), a plan for a batch up to twice as large, contexts from Q tokens to 200K; selection by its contract and tied
// requests exactly, attention by the error rule.
TEST(SM90_Sweep, DecodeLayer) {
  MSA_REQUIRE_SM90();
  for (int round = 0; round < sweep_rounds(); ++round) {
    const std::uint64_t seed = random_seed();
    std::mt19937_64 rng(seed);
    Shape shape;
    draw_heads(rng, &shape.Hq, &shape.Hkv);
    shape.k = draw_k(rng);
    shape.fp8 = chance(rng, 0.25);
    const int B = static_cast<int>(chance(rng, 0.4) ? uniform(rng, 1, 2) : log_uniform(rng, 1, 48));
    const int Q = static_cast<int>(chance(rng, 0.5) ? 1 : uniform(rng, 1, 16));
    const std::int64_t per_request = kScoreBudget / (static_cast<std::int64_t>(B) * Q * shape.Hkv);
    for (int b = 0; b < B; ++b) {
      shape.nq.push_back(Q);
      shape.L.push_back(log_uniform(rng, Q, std::max<std::int64_t>(Q, std::min<std::int64_t>(200000, per_request))));
      shape.zero_keys.push_back(chance(rng, 0.12));
    }
    const int capacity = static_cast<int>(uniform(rng, B, 2 * B));
    const DecodePath path = decode_path(static_cast<std::int64_t>(B) * Q * shape.Hkv, shape.k);
    SCOPED_TRACE(seed_note(seed) + ": " + shape.describe() + ", capacity " + std::to_string(capacity) + ", path " +
                 std::to_string(static_cast<int>(path)));
    Problem p = make_sweep_problem(shape, seed);
    const bool views = chance(rng, 0.5), late_inputs = chance(rng, 0.3);
    ViewProblem d(p, views, rng, late_inputs);
    SCOPED_TRACE(d.describe());
    MsaDecodePlanArgs pa;
    pa.batch_size = capacity;
    pa.queries_per_request = Q;
    pa.num_q_heads = shape.Hq;
    pa.num_kv_heads = shape.Hkv;
    pa.topk = shape.k;
    pa.device = Device::cuda(0);
    MsaDecode layer;
    const Status st = layer.plan(pa);
    ASSERT_TRUE(st.ok()) << st.to_string();
    DeviceMemory ws(layer.workspace_bytes());
    run_layer_and_check(layer, decode_layer_args(d), ws, p, d);
    ASSERT_FALSE(::testing::Test::HasFailure());
    expect_tied_rows(p, shape);
    ASSERT_FALSE(::testing::Test::HasFailure());
  }
}

// The views themselves: a round trip through every memory order of a 3-D view, and a write outside a view (one
// element before its first) caught by padding_written().
TEST(SM90_Sweep, ViewsRoundTripAndCatchStrayWrites) {
  MSA_REQUIRE_SM90();
  std::mt19937_64 rng(random_seed());
  std::vector<std::int32_t> host(3 * 5 * 7);
  std::iota(host.begin(), host.end(), 0);
  for (const std::vector<int>& order : std::vector<std::vector<int>>{{0, 1, 2}, {1, 0, 2}, {2, 1, 0}, {1, 2, 0}}) {
    const std::vector<std::int64_t> stride = draw_strides({3, 5, 7}, order, 4, true, rng);
    DeviceView v(host.data(), DType::kInt32, {3, 5, 7}, stride, 4, 0x7eadbeef);
    SCOPED_TRACE(v.layout());
    std::vector<std::int32_t> back;
    v.download(&back);
    EXPECT_EQ(back, host);
    EXPECT_EQ(v.padding_written(), 0);
    const std::int32_t stray = 1;
    ASSERT_EQ(cudaMemcpy(static_cast<std::int32_t*>(v.tensor().data) - 1, &stray, 4, cudaMemcpyHostToDevice),
              cudaSuccess);
    EXPECT_EQ(v.padding_written(), 1);
  }
}

// Late inputs: after before_run() an input holds 0xff bytes until its stream has slept and copied it back, so work
// that does not wait for the stream reads garbage; work that does reads the problem.
TEST(SM90_Sweep, LateInputsLandInStreamOrder) {
  MSA_REQUIRE_SM90();
  std::mt19937_64 rng(random_seed());
  Problem p = testing::make_problem(spec({3}, {300}, 16, 2));
  ViewProblem d(p, true, rng, /*late_inputs=*/true);
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
