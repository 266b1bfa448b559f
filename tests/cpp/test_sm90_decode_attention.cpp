// test_sm90_decode_attention.cpp — the decode attention kernels against the CPU implementation of
// SparseDecodeAttention (fresh random decode batches: Q = 1 and 4, G = 16 and 4, shuffled selections, a request
// whose selection is shorter than k): split + combine, the rows kernel and the fused cluster kernel on the same
// batch; split + combine also against SparsePrefillAttention (a varlen batch, its query-outer path for G != 16).
// The tests drive the launches directly, whichever path SparseDecodeAttention would choose for the batch.
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "cuda_test_util.h"
#include "kernels/combine/launch.h"
#include "kernels/decode/launch.h"
#include "test_util.h"

namespace msa {
namespace test {
namespace {

// Q > 0: a decode batch with Q queries per request, checked against SparseDecodeAttention on the CPU. Q = 0: the
// varlen prefill batch nq, checked against SparsePrefillAttention on the CPU.
void check_split_attention(int Q, std::vector<std::int64_t> nq, int Hq, int Hkv, std::vector<std::int64_t> lens,
                           std::uint64_t seed) {
  SCOPED_TRACE(seed_note(seed));  // a failure names its inputs
  ProblemSpec s = spec(Q > 0 ? std::vector<std::int64_t>(lens.size(), Q) : nq, lens, Hq, Hkv);
  s.seed = seed;
  Problem p = testing::make_problem(s);
  poison_cache_tails(p);  // rows past L must never reach O
  ASSERT_TRUE(select(p).ok());  // CPU selection: valid rows, local block last
  shuffle_rows(p);  // any order of valid ids is allowed
  const int k = p.spec.topk;

  // CPU reference.
  if (Q > 0) {
    SparseDecodeAttention cpu;
    SparseDecodePlanArgs plan;
    plan.batch_size = static_cast<int>(lens.size());
    plan.queries_per_request = Q;
    plan.num_q_heads = Hq;
    plan.num_kv_heads = Hkv;
    ASSERT_TRUE(cpu.plan(plan).ok());
    SparseDecodeRunArgs run{p.q_t(), p.k_cache_t(), p.v_cache_t(), p.topk_t(), p.page_table_t(), p.seq_lens_k_t(),
                            p.out_t(), p.lse_t()};
    const Status st = cpu.run(run);
    ASSERT_TRUE(st.ok()) << st.to_string();
  } else {
    const Status st = sparse_prefill(p);
    ASSERT_TRUE(st.ok()) << st.to_string();
  }
  const std::vector<std::uint16_t> out_ref = p.out;
  const std::vector<float> lse_ref = p.lse;

  // GPU: split kernel into a workspace, then combine.
  const std::int64_t T = p.total_q;
  DeviceBuffer<std::uint16_t> q(p.q), kc(p.k_cache), vc(p.v_cache);
  DeviceBuffer<std::int32_t> topk(p.topk), pt(p.page_table), seq(p.seq_lens_k), cu(p.cu_seqlens_q);
  DeviceBuffer<std::uint16_t> out(std::vector<std::uint16_t>(out_ref.size(), 0x7fc1));
  DeviceBuffer<float> lse(std::vector<float>(lse_ref.size(), NAN));
  const std::size_t rows = static_cast<std::size_t>(k) * static_cast<std::size_t>(T) * Hq;
  DeviceBuffer<float> po(std::vector<float>(rows * 128, NAN));
  DeviceBuffer<float> pl(std::vector<float>(rows, NAN));
  DeviceBuffer<std::int32_t> counts(std::vector<std::int32_t>(static_cast<std::size_t>(T * Hkv), -7));
  kernels::DecodeAttentionLaunch a{};
  set_problem_qkv(&a, p, q.ptr, kc.ptr, vc.ptr);
  a.topk = topk.ptr;
  a.topk_stride_h = T * k;
  a.topk_stride_t = k;
  a.topk_stride_s = 1;
  a.page_table = pt.ptr;
  a.pt_stride_b = p.max_pages;
  a.pt_stride_j = 1;
  a.seq_lens_k = seq.ptr;
  a.seq_stride = 1;
  a.cu_seqlens_q = Q > 0 ? nullptr : cu.ptr;
  a.cu_stride = 1;
  a.num_requests = static_cast<int>(lens.size());
  a.total_q = T;
  a.queries_per_request = Q;
  a.num_q_heads = Hq;
  a.num_kv_heads = Hkv;
  a.k = k;
  a.sm_scale = static_cast<float>(1.0 / std::sqrt(128.0));
  a.partial_out = po.ptr;
  a.partial_lse = pl.ptr;
  a.split_counts = counts.ptr;
  ASSERT_TRUE(kernels::launch_decode_attention(a).ok());
  kernels::CombineLaunch cl = kernels::contiguous_combine_launch(po.ptr, pl.ptr, counts.ptr, out.ptr, lse.ptr, T, Hq, Hkv, k);
  cl.partial_fp32 = true;
  ASSERT_TRUE(kernels::launch_combine(cl).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  {
    SCOPED_TRACE("split kernel + combine");
    expect_device_attention_rule(p, out, lse);
  }
  if (Q == 0) return;

  // The kernels that write out / LSE themselves, on the same batch: the rows kernel (one CTA per token and KV head
  // over all its blocks) and the fused cluster kernel (the k CTAs of a (token, KV head) row merge on chip; these
  // batches have enough rows for several waves of clusters). Each with q and the lengths read after and before
  // the kernel's wait (inputs_before_wait, MsaDecode's order; the synchronisation above settles them).
  for (const auto launch : {&kernels::launch_decode_attention_rows, &kernels::launch_decode_attention_fused})
    for (const bool early : {false, true}) {
      a.inputs_before_wait = early;
      DeviceBuffer<std::uint16_t> direct_out(std::vector<std::uint16_t>(out_ref.size(), 0x7fc1));
      DeviceBuffer<float> direct_lse(std::vector<float>(lse_ref.size(), NAN));
      const Status st = launch(a, direct_out.ptr, static_cast<std::int64_t>(Hq) * 128, 128, direct_lse.ptr, Hq, 1);
      ASSERT_TRUE(st.ok()) << st.to_string();
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      SCOPED_TRACE(std::string(launch == &kernels::launch_decode_attention_rows ? "rows kernel" : "fused kernel") +
                   (early ? ", inputs before the wait" : ""));
      expect_device_attention_rule(p, direct_out, direct_lse);
    }
}

TEST(SM90_DecodeAttentionKernel, OneQueryM3Heads) {
  MSA_REQUIRE_SM90();
  check_split_attention(1, {}, 64, 4, {40000, 129, 1000, 2048}, random_seed());
}

TEST(SM90_DecodeAttentionKernel, FourQueriesGroupOfFour) {
  MSA_REQUIRE_SM90();
  check_split_attention(4, {}, 16, 4, {9000, 700, 4}, random_seed());
}

TEST(SM90_DecodeAttentionKernel, VarlenPrefillBatch) {
  MSA_REQUIRE_SM90();
  // Irregular chunks, a zero-length request, chunked prefill over history.
  check_split_attention(0, {129, 0, 40, 300}, 16, 2, {129, 500, 16385, 2600}, random_seed());
}

}  // namespace
}  // namespace test
}  // namespace msa
