// sweep.h — the random shapes of the sweep suites (CPU_Sweep in test_sweep.cpp, SM90_Sweep in
// test_sm90_sweep.cpp): each round draws from a fresh seed the batch (1–5 requests, empty ones, prefills with and
// without history, lengths on and off the 128-token grid), the head geometry (Hq / Hkv in {1, 2, 4, 8, 16}, Hkv =
// H_idx in {1, 2, 4, 8}), k in [1, 16], the prefill schedule and chunking, bf16 or fp8 index tensors, and requests
// whose index keys are all zero (every block ties: the selection must be [0 .. k-2, local]). MSA_SWEEP_ROUNDS sets
// the rounds of each test (default 3); a round names its seed and shape in its trace, and MSA_TEST_SEED=<seed> with
// MSA_SWEEP_ROUNDS=1 replays it.
#ifndef MSA_TESTS_SWEEP_H_
#define MSA_TESTS_SWEEP_H_

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace msa {
namespace test {

inline int sweep_rounds() {
  const char* e = std::getenv("MSA_SWEEP_ROUNDS");
  return e != nullptr ? std::max(1, std::atoi(e)) : 3;
}

inline std::int64_t uniform(std::mt19937_64& rng, std::int64_t lo, std::int64_t hi) {  // [lo, hi]
  return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
}

inline bool chance(std::mt19937_64& rng, double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; }

// Log-uniform in [lo, hi]: short and long contexts alike.
inline std::int64_t log_uniform(std::mt19937_64& rng, std::int64_t lo, std::int64_t hi) {
  const double x = std::exp(std::uniform_real_distribution<double>(std::log(lo), std::log(hi + 1.0))(rng));
  return std::min<std::int64_t>(hi, std::max<std::int64_t>(lo, static_cast<std::int64_t>(x)));
}

// The softmax scale: the default (0, i.e. 1/sqrt(128)) in half the draws, else log-uniform in [0.02, 0.3].
inline double draw_scale(std::mt19937_64& rng) {
  if (chance(rng, 0.5)) return 0.0;
  return std::exp(std::uniform_real_distribution<double>(std::log(0.02), std::log(0.3))(rng));
}

// Head geometry: Hkv (= index heads) and G = Hq / Hkv with Hq <= 64; half the draws are G = 16.
inline void draw_heads(std::mt19937_64& rng, int* Hq, int* Hkv) {
  const int G = chance(rng, 0.5) ? 16 : 1 << uniform(rng, 0, 3);
  *Hkv = 1 << uniform(rng, 0, G == 16 ? 2 : 3);
  *Hq = G * *Hkv;
}

inline int draw_k(std::mt19937_64& rng) { return chance(rng, 0.5) ? 16 : static_cast<int>(uniform(rng, 1, 15)); }

// The CPU checks walk every visible index key per (token, head) and every selected key per (token, query head);
// shapes are drawn within these budgets so a round takes seconds.
constexpr std::int64_t kScoreBudget = 12'000'000;  // sum over tokens of visible keys x index heads
constexpr std::int64_t kTokenBudget = 1200;        // query tokens of a prefill round

struct Shape {
  std::vector<std::int64_t> nq, L;
  int Hq = 64, Hkv = 4, k = 16;
  double sm_scale = 0.0;  // 0: the default 1/sqrt(128)
  bool fp8 = false;
  std::vector<bool> zero_keys;  // per request: every index key 0 (all blocks tie)
  std::string describe() const {
    std::ostringstream s;
    s << "Hq " << Hq << " Hkv " << Hkv << " k " << k << " scale " << sm_scale << (fp8 ? " fp8" : " bf16")
      << " requests (nq/L):";
    for (std::size_t b = 0; b < nq.size(); ++b) s << " " << nq[b] << "/" << L[b] << (zero_keys[b] ? "z" : "");
    return s.str();
  }
};

// A prefill batch: empty requests, whole prompts, and chunks behind a history, within the budgets.
inline Shape draw_prefill(std::mt19937_64& rng) {
  Shape s;
  draw_heads(rng, &s.Hq, &s.Hkv);
  s.k = draw_k(rng);
  s.fp8 = chance(rng, 0.25);
  s.sm_scale = draw_scale(rng);
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
inline Problem make_sweep_problem(const Shape& shape, std::uint64_t seed) {
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
inline void expect_tied_rows(const Problem& p, const Shape& shape) {
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

inline PrefillSchedule draw_schedule(std::mt19937_64& rng, int G) {
  const int pick = static_cast<int>(uniform(rng, 0, G == 16 ? 2 : 1));
  return pick == 0 ? PrefillSchedule::kAuto : pick == 1 ? PrefillSchedule::kKvOuter : PrefillSchedule::kUnion;
}

inline std::int64_t draw_chunk(std::mt19937_64& rng) { return chance(rng, 0.4) ? 0 : log_uniform(rng, 1, 700); }

// A decode batch: 1–48 requests (1–2 in 40 % of the draws) of Q queries each (Q = 1 in half the draws, else 1–16),
// contexts from Q tokens to 200K within the budget, and a plan for up to twice the batch.
struct DecodeDraw {
  Shape shape;
  int Q = 1, capacity = 1;
  std::string describe() const {
    return shape.describe() + ", Q " + std::to_string(Q) + ", capacity " + std::to_string(capacity);
  }
  MsaDecodePlanArgs plan_args(Device device) const {
    MsaDecodePlanArgs pa;
    pa.batch_size = capacity;
    pa.queries_per_request = Q;
    pa.num_q_heads = shape.Hq;
    pa.num_kv_heads = shape.Hkv;
    pa.topk = shape.k;
    pa.sm_scale = shape.sm_scale;
    pa.device = device;
    return pa;
  }
};

inline DecodeDraw draw_decode(std::mt19937_64& rng) {
  DecodeDraw d;
  Shape& s = d.shape;
  draw_heads(rng, &s.Hq, &s.Hkv);
  s.k = draw_k(rng);
  s.fp8 = chance(rng, 0.25);
  s.sm_scale = draw_scale(rng);
  const int B = static_cast<int>(chance(rng, 0.4) ? uniform(rng, 1, 2) : log_uniform(rng, 1, 48));
  d.Q = static_cast<int>(chance(rng, 0.5) ? 1 : uniform(rng, 1, 16));
  const std::int64_t per_request = kScoreBudget / (static_cast<std::int64_t>(B) * d.Q * s.Hkv);
  for (int b = 0; b < B; ++b) {
    s.nq.push_back(d.Q);
    s.L.push_back(log_uniform(rng, d.Q, std::max<std::int64_t>(d.Q, std::min<std::int64_t>(200000, per_request))));
    s.zero_keys.push_back(chance(rng, 0.12));
  }
  d.capacity = static_cast<int>(uniform(rng, B, 2 * B));
  return d;
}

}  // namespace test
}  // namespace msa

#endif  // MSA_TESTS_SWEEP_H_
