// test_sm90_kv_outer.cpp — the two sm90 prefill attention schedules against the CPU SparsePrefillAttention on a
// fresh random varlen batch with G = 16, and G = 8, 4, 2, 1 for KV-outer (irregular lengths, a zero-length request,
// chunked prefill over history, shuffled selections, NaN in the cache past each request's length): the KV-outer
// chain (device k2q → KV-outer attention → combine) and the query-outer union-of-blocks kernel, the latter also on
// clustered selections (the tokens of a query block share a pool of blocks, so a tile's lists overlap). The tests
// drive the launches directly.
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <random>
#include <set>

#include "cuda_test_util.h"
#include "kernels/combine/launch.h"
#include "kernels/k2q/launch.h"
#include "kernels/sm90/attention/launch.h"
#include "test_util.h"

namespace msa {
namespace test {
namespace {

// The varlen problem of these tests (by default 476 query tokens, Hq 32, Hkv 2), selected by the CPU indexer, each
// row's valid ids shuffled; out / lse hold the CPU reference.
Problem varlen_problem(bool clustered, std::vector<std::int64_t> q_lens = {129, 0, 40, 300, 7},
                       std::vector<std::int64_t> kv_lens = {129, 500, 16385, 2600, 2049}, int Hq = 32, int Hkv = 2,
                       double key_ramp = 0.0) {
  ProblemSpec s = spec(std::move(q_lens), std::move(kv_lens), Hq, Hkv);
  s.seed = random_seed();
  Problem p = testing::make_problem(s);
  if (key_ramp > 0) ramp_keys(p, key_ramp);
  poison_cache_tails(p);  // rows past L must never reach O
  EXPECT_TRUE(select(p).ok());
  if (clustered) cluster_selection(p, s.seed);
  shuffle_rows(p);
  EXPECT_TRUE(sparse_prefill(p).ok());  // CPU reference into p.out / p.lse
  return p;
}

// The paged inputs of either prefill kernel for p (contiguous layouts, already on the device).
void set_problem_inputs(kernels::PagedPrefillInputs* l, const Problem& p, const DeviceBuffer<std::uint16_t>& q,
                        const DeviceBuffer<std::uint16_t>& kc, const DeviceBuffer<std::uint16_t>& vc,
                        const DeviceBuffer<std::int32_t>& pt, const DeviceBuffer<std::int32_t>& cu,
                        const DeviceBuffer<std::int32_t>& seq) {
  set_problem_qkv(l, p, q.ptr, kc.ptr, vc.ptr);
  l->num_pages = p.num_pages;
  l->page_table = pt.ptr;
  l->pt_stride_b = p.max_pages;
  l->pt_stride_j = 1;
  l->cu_seqlens_q = cu.ptr;
  l->cu_stride = 1;
  l->seq_lens_k = seq.ptr;
  l->seq_stride = 1;
}

// The KV-outer chain (device k2q, KV-outer kernel into NaN-poisoned partials, combine) on the varlen problem with
// Hq / Hkv heads: every output row and LSE against the CPU reference.
void check_kv_outer_kernel(int Hq, int Hkv) {
  const int k = 16;
  Problem p = varlen_problem(false, {129, 0, 40, 300, 7}, {129, 500, 16385, 2600, 2049}, Hq, Hkv);
  SCOPED_TRACE(seed_note(p.spec.seed));
  const std::int64_t T = p.total_q;

  DeviceBuffer<std::uint16_t> q(p.q), kc(p.k_cache), vc(p.v_cache);
  DeviceBuffer<std::int32_t> topk(p.topk), pt(p.page_table), cu(p.cu_seqlens_q), seq(p.seq_lens_k);
  // k2q on the device.
  const kernels::K2qBuildArgs ka = k2q_args(p, topk.ptr, cu.ptr, seq.ptr, 64);
  const std::int64_t r_cap = kernels::k2q_row_capacity(ka), i_cap = kernels::k2q_item_capacity(ka);
  DeviceBuffer<std::int32_t> row_ptr(std::vector<std::int32_t>(static_cast<std::size_t>(Hkv * (r_cap + 1)))),
      row_batch(std::vector<std::int32_t>(static_cast<std::size_t>(r_cap))),
      row_block(std::vector<std::int32_t>(static_cast<std::size_t>(r_cap))),
      q_idx(std::vector<std::int32_t>(static_cast<std::size_t>(Hkv * T * k))),
      qsplit(std::vector<std::int32_t>(static_cast<std::size_t>(Hkv * T * k))),
      counts(std::vector<std::int32_t>(static_cast<std::size_t>(T * Hkv))), total(std::vector<std::int32_t>(1)),
      items(std::vector<std::int32_t>(static_cast<std::size_t>(i_cap * 6))), n_items(std::vector<std::int32_t>(1));
  const kernels::K2qBuildOutputs ko{row_ptr.ptr, row_batch.ptr, row_block.ptr, q_idx.ptr, qsplit.ptr,
                                    counts.ptr,  total.ptr,     items.ptr,     n_items.ptr};
  std::size_t ws_bytes = 0;
  ASSERT_TRUE(kernels::k2q_workspace_bytes(ka, &ws_bytes).ok());
  void* ws = nullptr;
  ASSERT_EQ(cudaMalloc(&ws, std::max<std::size_t>(ws_bytes, 1)), cudaSuccess);
  ASSERT_TRUE(kernels::launch_k2q_build(ka, ko, ws, ws_bytes).ok());

  // KV-outer attention into poisoned partials, then combine.
  const std::size_t rows = static_cast<std::size_t>(k) * static_cast<std::size_t>(T) * Hq;
  DeviceBuffer<std::uint16_t> po(std::vector<std::uint16_t>(rows * 128, 0x7fc1));
  DeviceBuffer<float> pl(std::vector<float>(rows, NAN));
  DeviceBuffer<std::uint16_t> out(std::vector<std::uint16_t>(p.out.size(), 0x7fc1));
  DeviceBuffer<float> lse(std::vector<float>(p.lse.size(), NAN));
  kernels::KvOuterLaunch a{};
  set_problem_inputs(&a, p, q, kc, vc, pt, cu, seq);
  a.row_ptr = row_ptr.ptr;
  a.qsplit_indices = qsplit.ptr;
  a.items = items.ptr;
  a.num_items = n_items.ptr;
  a.row_capacity = r_cap;
  a.item_capacity = i_cap;
  a.total_q = T;
  a.num_q_heads = Hq;
  a.num_kv_heads = Hkv;
  a.k = k;
  a.sm_scale = static_cast<float>(1.0 / std::sqrt(128.0));
  a.partial_out = po.ptr;
  a.partial_lse = pl.ptr;
  const Status st = kernels::launch_kv_outer_attention(a);
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_TRUE(kernels::launch_combine(
                  kernels::contiguous_combine_launch(po.ptr, pl.ptr, counts.ptr, out.ptr, lse.ptr, T, Hq, Hkv, k))
                  .ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudaFree(ws);

  expect_device_attention_rule(p, out, lse, /*bf16_partials=*/true);
}

TEST(SM90_KvOuterKernel, VarlenBatchMatchesCpu) {
  MSA_REQUIRE_SM90();
  check_kv_outer_kernel(32, 2);  // G = 16: tiles of 4 tokens x 16 heads
}

// G = 8: tiles of 8 tokens x 8 heads, a warp's 16 rows two tokens (their own masks, handles and output boxes); the
// batch's 476 tokens leave partial tiles and warps whose second token is past the item's queries.
TEST(SM90_KvOuterKernel, GroupOf8MatchesCpu) {
  MSA_REQUIRE_SM90();
  check_kv_outer_kernel(32, 4);
}

// G = 4, 2, 1: tiles of 16, 32, 64 tokens whose Q rows the producer warps gather by cp.async into the 128B-swizzled
// stage (one tile ahead on their handle loads, across items), a warp's 16 rows 4, 8, 16 tokens with their own masks,
// handles, LSE rows and output boxes of G rows (fewer than a swizzle atom).
TEST(SM90_KvOuterKernel, SmallGroupsMatchCpu) {
  MSA_REQUIRE_SM90();
  for (const int Hq : {32, 16, 8}) {
    SCOPED_TRACE("G = " + std::to_string(Hq / 8));
    check_kv_outer_kernel(Hq, 8);
  }
}

// The token groups launch_token_groups must produce, from the host: per (KV head, group of 128 queries of a
// request) no grouping when the group lists more than 64 distinct blocks, else groups of 4 formed greedily — the
// lowest query not yet placed, then three times the query adding the fewest blocks to the group's union (ties: the
// lower query). Returns the slots [Hkv, tiles, 8] as offsets in each group (slots past a group's queries: their own
// index; the slack tiles past the requests' tiles: `unwritten`).
std::vector<std::uint8_t> host_token_groups(const Problem& p, std::int64_t tiles, std::uint8_t unwritten) {
  const int k = p.spec.topk, Hkv = p.spec.num_kv_heads;
  std::vector<std::uint8_t> slots(static_cast<std::size_t>(Hkv * tiles * 8), unwritten);
  for (int g = 0; g < Hkv; ++g) {
    std::int64_t tile0 = 0;
    for (std::int64_t b = 0; b < p.num_requests(); ++b) {
      const std::int64_t q0 = p.cu_seqlens_q[static_cast<std::size_t>(b)];
      const std::int64_t nq = p.cu_seqlens_q[static_cast<std::size_t>(b) + 1] - q0;
      for (std::int64_t s0 = 0; s0 < nq; s0 += 128) {
        const int n = static_cast<int>(std::min<std::int64_t>(128, nq - s0));
        std::vector<std::set<int>> lists(static_cast<std::size_t>(n));
        std::set<int> all;
        for (int i = 0; i < n; ++i)
          for (int e = 0; e < k; ++e) {
            const int id = p.topk[static_cast<std::size_t>((g * p.total_q + q0 + s0 + i) * k + e)];
            if (id >= 0) lists[static_cast<std::size_t>(i)].insert(id), all.insert(id);
          }
        std::vector<int> order;
        if (all.size() > 64) {
          for (int i = 0; i < n; ++i) order.push_back(i);
        } else {
          std::vector<bool> placed(static_cast<std::size_t>(n), false);
          while (static_cast<int>(order.size()) < n) {
            int seed = 0;
            while (placed[static_cast<std::size_t>(seed)]) ++seed;
            placed[static_cast<std::size_t>(seed)] = true;
            order.push_back(seed);
            std::set<int> uni = lists[static_cast<std::size_t>(seed)];
            for (int member = 1; member < 4 && static_cast<int>(order.size()) < n; ++member) {
              int best = -1;
              std::size_t best_size = 0;
              for (int q = 0; q < n; ++q) {
                if (placed[static_cast<std::size_t>(q)]) continue;
                std::set<int> u = uni;
                u.insert(lists[static_cast<std::size_t>(q)].begin(), lists[static_cast<std::size_t>(q)].end());
                if (best < 0 || u.size() < best_size) best = q, best_size = u.size();
              }
              placed[static_cast<std::size_t>(best)] = true;
              order.push_back(best);
              uni.insert(lists[static_cast<std::size_t>(best)].begin(), lists[static_cast<std::size_t>(best)].end());
            }
          }
        }
        const std::int64_t first = g * tiles + tile0 + s0 / 8;
        for (int i = 0; i < (n + 7) / 8 * 8; ++i)
          slots[static_cast<std::size_t>(first * 8 + i)] = static_cast<std::uint8_t>(i < n ? order[static_cast<std::size_t>(i)] : i);
      }
      tile0 += (nq + 7) / 8;
    }
  }
  return slots;
}

// The union launches' arguments for p, inputs already on the device (out, lse, the rule and the schedule's
// buffers are the caller's).
struct UnionInputs {
  explicit UnionInputs(const Problem& p)
      : q(p.q), kc(p.k_cache), vc(p.v_cache), topk(p.topk), pt(p.page_table), cu(p.cu_seqlens_q), seq(p.seq_lens_k) {
    const int Hq = p.spec.num_q_heads, k = p.spec.topk;
    set_problem_inputs(&a, p, q, kc, vc, pt, cu, seq);
    a.topk = topk.ptr;
    a.topk_stride_h = p.total_q * k;
    a.topk_stride_t = k;
    a.topk_stride_s = 1;
    a.total_q = p.total_q;
    a.num_requests = static_cast<int>(p.num_requests());
    a.num_q_heads = Hq;
    a.num_kv_heads = p.spec.num_kv_heads;
    a.k = k;
    a.sm_scale = static_cast<float>(1.0 / std::sqrt(128.0));
    a.out_stride_t = static_cast<std::int64_t>(Hq) * 128;
    a.out_stride_h = 128;
    a.lse_stride_t = Hq;
    a.lse_stride_h = 1;
  }
  DeviceBuffer<std::uint16_t> q, kc, vc;
  DeviceBuffer<std::int32_t> topk, pt, cu, seq;
  kernels::UnionLaunch a{};
};

// One union-kernel run's output as it came back, after every row was held to the attention rule.
struct UnionOutput {
  std::vector<std::uint16_t> out;
  std::vector<float> lse;
};
UnionOutput checked_output(Problem& p, const DeviceBuffer<std::uint16_t>& out, const DeviceBuffer<float>& lse) {
  expect_device_attention_rule(p, out, lse);
  UnionOutput r{std::vector<std::uint16_t>(p.out.size()), std::vector<float>(p.lse.size())};
  out.download(&r.out);
  lse.download(&r.lse);
  return r;
}
// Two runs that must agree bit for bit; `what` names the difference between them.
void expect_same_output(const UnionOutput (&r)[2], const char* what) {
  EXPECT_EQ(std::memcmp(r[0].out.data(), r[1].out.data(), r[0].out.size() * 2), 0) << "out differs " << what;
  EXPECT_EQ(std::memcmp(r[0].lse.data(), r[1].lse.data(), r[0].lse.size() * 4), 0) << "lse differs " << what;
}

// The union-of-blocks kernel writes the final output directly; every row is compared, LSE included. It runs twice:
// on consecutive queries, then behind launch_token_groups, whose slots must equal the host's grouping; the grouped
// output must equal the other bit for bit (a query's result does not depend on who shares its warpgroup).
void check_union_kernel(Problem p) {
  SCOPED_TRACE(seed_note(p.spec.seed));
  const int Hkv = p.spec.num_kv_heads;
  UnionInputs in(p);
  kernels::UnionLaunch& a = in.a;
  a.union_budget = kernels::kUnionBudgetAll;  // every tile (the kAuto rule: MaskAndListFollowTheRule)
  const std::int64_t tiles = kernels::union_tiles(a);
  UnionOutput runs[2];
  for (int grouped = 0; grouped < 2; ++grouped) {
    SCOPED_TRACE(grouped ? "token groups" : "consecutive queries");
    DeviceBuffer<std::uint16_t> out(std::vector<std::uint16_t>(p.out.size(), 0x7fc1));
    DeviceBuffer<float> lse(std::vector<float>(p.lse.size(), NAN));
    DeviceBuffer<std::uint8_t> slots(std::vector<std::uint8_t>(static_cast<std::size_t>(Hkv * tiles * 8), 0xEE));
    a.out = out.ptr;
    a.lse = lse.ptr;
    a.tile_slots = grouped ? slots.ptr : nullptr;
    Status st = kernels::launch_token_groups(a);
    ASSERT_TRUE(st.ok()) << st.to_string();
    st = kernels::launch_union_attention(a);
    ASSERT_TRUE(st.ok()) << st.to_string();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    runs[grouped] = checked_output(p, out, lse);
    if (grouped) {
      std::vector<std::uint8_t> got(static_cast<std::size_t>(Hkv * tiles * 8));
      slots.download(&got);
      const std::vector<std::uint8_t> want = host_token_groups(p, tiles, 0xEE);
      std::int64_t differ = 0;
      for (std::size_t i = 0; i < want.size(); ++i) differ += got[i] != want[i];
      EXPECT_EQ(differ, 0) << "of " << want.size() << " slots";
    }
  }
  expect_same_output(runs, "with token groups");
}

TEST(SM90_UnionKernel, VarlenBatchMatchesCpu) {
  MSA_REQUIRE_SM90();
  check_union_kernel(varlen_problem(false));
}

TEST(SM90_UnionKernel, ClusteredSelectionsMatchCpu) {
  MSA_REQUIRE_SM90();
  check_union_kernel(varlen_problem(true));
}

// The kernel is persistent (one CTA per SM): the batches above have fewer work items than an H100 has SMs. Here
// 527 tiles of one KV head (4202 query tokens; 532 work items with the per-request slack) give each CTA several,
// so the tile buffers alternate, the barrier phases flip and the K/V ring runs on across tiles; a zero-length
// request and a one-token one sit between long ones.
TEST(SM90_UnionKernel, ManyTilesPerCtaMatchCpu) {
  MSA_REQUIRE_SM90();
  check_union_kernel(varlen_problem(true, {2000, 0, 1500, 701, 1}, {2000, 300, 9000, 701, 129}, 16, 1));
}

// Two launches of the persistent kernel sharing one work counter (kAuto's tail launch joins the running kernel once
// the chain is done: api/attention_cuda.cpp), here 3 and 5 CTAs on two streams at once: together they must compute
// every item exactly once, the result equal bit for bit to one launch of the kernel without a counter (each CTA
// then takes every gridDim-th item), and each CTA stops after one fetch past the end (counter = items + 8).
TEST(SM90_UnionKernel, LaunchesSharingTheCounterEqualOne) {
  MSA_REQUIRE_SM90();
  Problem p = varlen_problem(true, {2000, 0, 1500, 701, 1}, {2000, 300, 9000, 701, 129}, 16, 1);
  SCOPED_TRACE(seed_note(p.spec.seed));
  UnionInputs in(p);
  kernels::UnionLaunch& a = in.a;
  a.union_budget = kernels::kUnionBudgetAll;
  const std::int64_t items = kernels::union_tiles(a) * p.spec.num_kv_heads;
  UnionOutput runs[2];
  for (int shared = 0; shared < 2; ++shared) {
    SCOPED_TRACE(shared ? "two launches, one counter" : "one launch");
    DeviceBuffer<std::uint16_t> out(std::vector<std::uint16_t>(p.out.size(), 0x7fc1));
    DeviceBuffer<float> lse(std::vector<float>(p.lse.size(), NAN));
    DeviceBuffer<std::int32_t> counter(std::vector<std::int32_t>{99, 99});
    a.out = out.ptr;
    a.lse = lse.ptr;
    if (!shared) {
      a.work_counter = nullptr;
      a.max_ctas = 0;
      const Status st = kernels::launch_union_attention(a);
      ASSERT_TRUE(st.ok()) << st.to_string();
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    } else {
      a.work_counter = counter.ptr;
      Status st = kernels::launch_union_list(a);  // zeroes the counter
      ASSERT_TRUE(st.ok()) << st.to_string();
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      cudaStream_t s[2];
      for (cudaStream_t& x : s) ASSERT_EQ(cudaStreamCreateWithFlags(&x, cudaStreamNonBlocking), cudaSuccess);
      for (int i = 0; i < 2; ++i) {
        a.stream = s[i];
        a.max_ctas = i == 0 ? 3 : 5;
        st = kernels::launch_union_kernel(a);
        ASSERT_TRUE(st.ok()) << st.to_string();
      }
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      for (cudaStream_t x : s) cudaStreamDestroy(x);
      a.stream = nullptr;
      std::vector<std::int32_t> got(2);
      counter.download(&got);
      EXPECT_EQ(got[0], items + 8) << "the counter after both launches";
    }
    runs[shared] = checked_output(p, out, lse);
  }
  expect_same_output(runs, "between the launches");
  a.max_ctas = -1;
  EXPECT_EQ(kernels::launch_union_kernel(a).code(), StatusCode::kInvalidArgument);
}

// Keys scaled up with their position (ramp_keys): a row's max keeps rising from block to block, so O and l are
// rescaled mid-row, and rows are peaked (one key holds most of the mass), where a softmax base that is not the exact
// running max would leave the largest P inexact in bf16 and break the error rule (scripts/softmax_base_sim.cpp).
TEST(SM90_UnionKernel, RampedKeysMatchCpu) {
  MSA_REQUIRE_SM90();
  check_union_kernel(varlen_problem(true, {129, 0, 40, 300, 7}, {129, 500, 16385, 2600, 2049}, 32, 2, 1.0 / 1024));
}

// kAuto's per-tile rule, from the host: a tile takes the union schedule when the distinct ids its two warpgroups'
// slots list (4 slots each, in the token groups' order) add up to at most budget per warpgroup with tokens. For
// several budgets, on clustered and on random selections: union_mask_kernel's tile_flags and masked_topk (the union
// tiles' rows become kRowElsewhere, -1, ...; the others are copied) must be exactly the host's, and the union
// launch must take exactly the listed tiles in order (union_list_kernel: the list in place of the flags, its
// length in work_counter[1]). The budgets must split the tiles both ways at least once, so the check is not vacuous.
void check_union_mask(bool clustered) {
  Problem p = varlen_problem(clustered);
  SCOPED_TRACE(seed_note(p.spec.seed));
  const std::int64_t T = p.total_q;
  const int Hkv = p.spec.num_kv_heads, k = p.spec.topk;
  UnionInputs in(p);
  kernels::UnionLaunch& a = in.a;
  const std::int64_t tiles = kernels::union_tiles(a);
  DeviceBuffer<std::uint8_t> slots(std::vector<std::uint8_t>(static_cast<std::size_t>(Hkv * tiles * 8), 0xEE));
  a.tile_slots = slots.ptr;
  ASSERT_TRUE(kernels::launch_token_groups(a).ok());
  const std::vector<std::uint8_t> order = host_token_groups(p, tiles, 0xEE);
  DeviceBuffer<std::uint16_t> out(std::vector<std::uint16_t>(p.out.size(), 0x7fc1));
  DeviceBuffer<float> lse(std::vector<float>(p.lse.size(), NAN));
  a.out = out.ptr;
  a.lse = lse.ptr;
  bool mixed = false;
  for (int budget : {4, 12, 16, 20, 24, 28, 40, kernels::kUnionBudgetAll}) {
    SCOPED_TRACE("budget " + std::to_string(budget));
    // Host: decisions per (head, tile) and the masked selection.
    std::vector<std::int32_t> want_flags(static_cast<std::size_t>(Hkv * tiles), 0), want_masked(p.topk.size(), 0x5a5a5a5a);
    std::vector<std::int32_t> want_list;
    int taken = 0, real = 0;
    for (int g = 0; g < Hkv; ++g) {
      std::int64_t tile = 0;
      for (std::int64_t b = 0; b < p.num_requests(); ++b) {
        const std::int64_t q0 = p.cu_seqlens_q[static_cast<std::size_t>(b)];
        const std::int64_t nq = p.cu_seqlens_q[static_cast<std::size_t>(b) + 1] - q0;
        for (std::int64_t i0 = 0; i0 < nq; i0 += 8, ++tile) {
          const int ntok = static_cast<int>(std::min<std::int64_t>(8, nq - i0));
          std::int64_t tok[8];
          std::set<int> u[2];
          for (int i = 0; i < ntok; ++i) {
            tok[i] = q0 + (i0 & ~127) + order[static_cast<std::size_t>((g * tiles + tile) * 8 + i)];
            for (int e = 0; e < k; ++e) {
              const int id = p.topk[static_cast<std::size_t>((g * T + tok[i]) * k + e)];
              if (id >= 0) u[i / 4].insert(id);
            }
          }
          const bool take = static_cast<int>(u[0].size() + u[1].size()) <= budget * ((ntok + 3) / 4);
          want_flags[static_cast<std::size_t>(g * tiles + tile)] = take;
          if (take) want_list.push_back(static_cast<std::int32_t>(g * tiles + tile));
          taken += take;
          ++real;
          for (int i = 0; i < ntok; ++i)
            for (int e = 0; e < k; ++e) {
              const std::size_t at = static_cast<std::size_t>((g * T + tok[i]) * k + e);
              want_masked[at] = take ? (e == 0 ? kernels::kRowElsewhere : -1) : p.topk[at];
            }
        }
      }
    }
    mixed |= taken > 0 && taken < real;

    DeviceBuffer<std::int32_t> flags(std::vector<std::int32_t>(want_flags.size(), 7)),
        masked(std::vector<std::int32_t>(p.topk.size(), 0x5a5a5a5a)), counter(std::vector<std::int32_t>{99, 99});
    a.union_budget = budget;
    a.tile_flags = flags.ptr;
    a.masked_topk = masked.ptr;
    a.work_counter = counter.ptr;
    Status st = kernels::launch_union_mask(a);
    ASSERT_TRUE(st.ok()) << st.to_string();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<std::int32_t> got_flags(want_flags.size()), got_masked(want_masked.size());
    flags.download(&got_flags);
    masked.download(&got_masked);
    std::int64_t flag_diff = 0, masked_diff = 0;
    for (std::size_t i = 0; i < want_flags.size(); ++i) flag_diff += got_flags[i] != want_flags[i];
    for (std::size_t i = 0; i < want_masked.size(); ++i) masked_diff += got_masked[i] != want_masked[i];
    EXPECT_EQ(flag_diff, 0) << "of " << want_flags.size() << " tile flags (" << taken << " of " << real << " tiles take the union)";
    EXPECT_EQ(masked_diff, 0) << "of " << want_masked.size() << " masked_topk entries";

    st = kernels::launch_union_attention(a);
    ASSERT_TRUE(st.ok()) << st.to_string();
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<std::int32_t> got_counter(2);
    flags.download(&got_flags);
    counter.download(&got_counter);
    ASSERT_EQ(got_counter[1], static_cast<std::int32_t>(want_list.size()));
    std::int64_t list_diff = 0;
    for (std::size_t i = 0; i < want_list.size(); ++i) list_diff += got_flags[i] != want_list[i];
    EXPECT_EQ(list_diff, 0) << "of " << want_list.size() << " items of the union items' list";
  }
  EXPECT_TRUE(mixed) << "no budget split the tiles both ways";
}

TEST(SM90_UnionKernel, MaskAndListFollowTheRuleClustered) {
  MSA_REQUIRE_SM90();
  check_union_mask(true);
}

TEST(SM90_UnionKernel, MaskAndListFollowTheRuleRandom) {
  MSA_REQUIRE_SM90();
  check_union_mask(false);
}

}  // namespace
}  // namespace test
}  // namespace msa
