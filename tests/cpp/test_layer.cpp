// test_layer.cpp — the layer-level ops (msa/layer.h) on CPU descriptors: they equal index selection followed by
// sparse attention bit for bit (with the selection in the caller's tensor or in the workspace), write nothing on a
// bad input, and refuse CUDA descriptors until the attention kernels are verified.
#include <cmath>
#include <cstring>

#include "test_util.h"

namespace msa {
namespace test {
namespace {

MsaPrefillRunArgs prefill_run(Problem& p, std::vector<std::uint16_t>* out, std::vector<float>* lse) {
  MsaPrefillRunArgs r;
  r.q = p.q_t();
  r.k_cache = p.k_cache_t();
  r.v_cache = p.v_cache_t();
  r.index_q = p.index_q_t();
  r.index_k_cache = p.index_k_cache_t();
  r.out = make_tensor(out->data(), DType::kBF16, {p.total_q, p.spec.num_q_heads, 128});
  r.lse = make_tensor(lse->data(), DType::kFP32, {p.total_q, p.spec.num_q_heads});
  return r;
}

TEST(CPU_Layer, PrefillEqualsSelectionThenAttention) {
  Problem p = testing::make_problem(spec({200, 0, 40, 129}, {2600, 300, 16385, 129}, 16, 2));
  ASSERT_TRUE(select(p).ok());
  ASSERT_TRUE(sparse_prefill(p).ok());
  const std::vector<std::int32_t> want_topk = p.topk;
  const std::vector<std::uint16_t> want_out = p.out;
  const std::vector<float> want_lse = p.lse;

  MsaPrefill layer;
  ASSERT_TRUE(layer.plan(prefill_layer_plan_args(p, p)).ok());
  EXPECT_EQ(layer.workspace_bytes(), static_cast<std::size_t>(2 * p.total_q * 16 * 4));
  // Selection into the caller's tensor.
  std::vector<std::uint16_t> out(want_out.size(), 0x7fc1);
  std::vector<float> lse(want_lse.size(), NAN);
  std::vector<std::int32_t> topk(want_topk.size(), 0x7eadbeef);
  MsaPrefillRunArgs r = prefill_run(p, &out, &lse);
  r.topk = make_tensor(topk.data(), DType::kInt32, {2, p.total_q, 16});
  ASSERT_TRUE(layer.run(r).ok());
  EXPECT_EQ(topk, want_topk);
  EXPECT_EQ(out, want_out);
  EXPECT_EQ(std::memcmp(lse.data(), want_lse.data(), lse.size() * sizeof(float)), 0);
  // Selection in the workspace.
  std::fill(out.begin(), out.end(), 0x7fc1);
  std::vector<char> ws(layer.workspace_bytes());
  r.topk = Tensor{};
  ASSERT_TRUE(layer.run(r, ws.data(), ws.size()).ok());
  EXPECT_EQ(out, want_out);
}

TEST(CPU_Layer, DecodeEqualsSelectionThenAttention) {
  const int Q = 2;
  Problem p = testing::make_problem(spec({Q, Q, Q}, {5000, 129, 2}, 16, 2));
  ASSERT_TRUE(select(p).ok());  // prefill selection of the same tokens equals the decode selection
  SparseDecodeAttention attn;
  SparseDecodePlanArgs ap;
  ap.batch_size = 3;
  ap.queries_per_request = Q;
  ap.num_q_heads = 16;
  ap.num_kv_heads = 2;
  ASSERT_TRUE(attn.plan(ap).ok());
  ASSERT_TRUE(attn.run({p.q_t(), p.k_cache_t(), p.v_cache_t(), p.topk_t(), p.page_table_t(), p.seq_lens_k_t(),
                        p.out_t(), p.lse_t()})
                  .ok());
  MsaDecode layer;
  MsaDecodePlanArgs lp;
  lp.batch_size = 3;
  lp.queries_per_request = Q;
  lp.num_q_heads = 16;
  lp.num_kv_heads = 2;
  ASSERT_TRUE(layer.plan(lp).ok());
  std::vector<std::uint16_t> out(p.out.size(), 0x7fc1);
  std::vector<char> ws(layer.workspace_bytes());
  MsaDecodeRunArgs r;
  r.q = p.q_t();
  r.k_cache = p.k_cache_t();
  r.v_cache = p.v_cache_t();
  r.index_q = p.index_q_t();
  r.index_k_cache = p.index_k_cache_t();
  r.page_table = p.page_table_t();
  r.seq_lens_k = p.seq_lens_k_t();
  r.out = make_tensor(out.data(), DType::kBF16, {p.total_q, 16, 128});
  ASSERT_TRUE(layer.run(r, ws.data(), ws.size()).ok());
  EXPECT_EQ(out, p.out);
}

TEST(CPU_Layer, BadInputsWriteNothing) {
  Problem p = testing::make_problem(spec({100}, {3000}, 16, 2));
  MsaPrefill layer;
  ASSERT_TRUE(layer.plan(prefill_layer_plan_args(p, p)).ok());
  std::vector<std::uint16_t> out(p.out.size(), 0x7fc1);
  std::vector<float> lse(p.lse.size(), NAN);
  std::vector<std::int32_t> topk(p.topk.size(), 0x7eadbeef);
  MsaPrefillRunArgs r = prefill_run(p, &out, &lse);
  r.topk = make_tensor(topk.data(), DType::kInt32, {2, p.total_q, 16});
  r.out.shape[1] = 8;  // wrong head count
  Status st = layer.run(r);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("out"), std::string::npos) << st.message();
  EXPECT_TRUE(std::all_of(topk.begin(), topk.end(), [](std::int32_t v) { return v == 0x7eadbeef; }));
  r.out.shape[1] = 16;
  r.topk = Tensor{};
  st = layer.run(r, nullptr, 0);  // no topk output and no workspace
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("workspace"), std::string::npos) << st.message();
  EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](std::uint16_t v) { return v == 0x7fc1; }));
  MsaPrefill unplanned;
  EXPECT_EQ(unplanned.run(r).code(), StatusCode::kInvalidArgument);
  MsaPrefillPlanArgs bad = prefill_layer_plan_args(p, p);
  bad.schedule = static_cast<PrefillSchedule>(3);
  st = unplanned.plan(bad);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("schedule: must be kAuto, kKvOuter or kUnion"), std::string::npos) << st.message();
}

TEST(CPU_Layer, CudaPlanWithoutHopperFails) {
  if (sm90_device_available()) GTEST_SKIP() << "an sm_90 GPU is present (the GPU suites cover CUDA plans)";
  MsaDecode layer;
  MsaDecodePlanArgs lp;
  lp.device = Device::cuda(0);
  const Status st = layer.plan(lp);
  EXPECT_EQ(st.code(), StatusCode::kNotImplemented);
  EXPECT_NE(st.message().find("CUDA"), std::string::npos) << st.message();
  EXPECT_EQ(layer.workspace_bytes(), 0u);
}

}  // namespace
}  // namespace test
}  // namespace msa
