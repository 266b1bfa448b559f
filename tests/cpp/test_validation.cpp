// test_validation.cpp — every bad input is rejected with a message naming the argument, and nothing is written.
//
// Each case starts from a valid problem, breaks one rule, calls one op, and checks the status code, a substring of
// the message, and that the op's outputs still hold their poison values.
#include <cmath>
#include <functional>
#include <ostream>
#include <string>

#include "test_util.h"

namespace msa {
namespace test {
namespace {

enum class Op { kIndexPrefill, kIndexDecode, kPrefillAttention, kDecodeAttention, kCombine, kIndexPrefillWs, kIndexDecodeWs };

struct Case {
  const char* name;
  Op op;
  std::function<void(Problem&, IndexPrefillArgs&, IndexDecodeArgs&, SparsePrefillPlanArgs&, SparsePrefillRunArgs&,
                     SparseDecodePlanArgs&, SparseDecodeRunArgs&, CombineArgs&)>
      mutate;
  StatusCode code;
  const char* message_part;
};

// Valid state for all five ops on one problem (2 requests, G = 8, decode with Q = 2).
struct Fixture {
  Problem p = testing::make_problem(spec({2, 2}, {2200, 300}));
  std::vector<float> po, pl;
  std::vector<std::int32_t> counts;
  IndexPrefillArgs ip;
  IndexDecodeArgs id;
  SparsePrefillPlanArgs pp;
  SparsePrefillRunArgs pr;
  SparseDecodePlanArgs dp;
  SparseDecodeRunArgs dr;
  CombineArgs ca;

  Fixture() {
    EXPECT_TRUE(select(p).ok());
    ip = index_args(p);
    id.index_q = p.index_q_t();
    id.index_k_cache = p.index_k_cache_t();
    id.page_table = p.page_table_t();
    id.seq_lens_k = p.seq_lens_k_t();
    id.queries_per_request = 2;
    id.topk = p.topk_t();
    pp.topk = p.topk_t();
    pp.cu_seqlens_q = p.cu_seqlens_q_t();
    pp.seq_lens_k = p.seq_lens_k_t();
    pp.page_table = p.page_table_t();
    pp.num_q_heads = 16;
    pp.num_kv_heads = 2;
    pr = {p.q_t(), p.k_cache_t(), p.v_cache_t(), p.out_t(), p.lse_t()};
    dp.batch_size = 2;
    dp.queries_per_request = 2;
    dp.num_q_heads = 16;
    dp.num_kv_heads = 2;
    dr = {p.q_t(), p.k_cache_t(), p.v_cache_t(), p.topk_t(), p.page_table_t(), p.seq_lens_k_t(), p.out_t(), p.lse_t()};
    const std::int64_t T = p.total_q;
    po.assign(static_cast<std::size_t>(16 * T * 16 * 128), 0.5f);
    pl.assign(static_cast<std::size_t>(16 * T * 16), 0.0f);
    counts.assign(static_cast<std::size_t>(T * 2), 1);
    ca = {make_tensor(po.data(), DType::kFP32, {16, T, 16, 128}), make_tensor(pl.data(), DType::kFP32, {16, T, 16}),
          make_tensor(counts.data(), DType::kInt32, {T, 2}), p.out_t(), p.lse_t()};
  }
};

Status run_op(Op op, Fixture& f) {
  switch (op) {
    case Op::kIndexPrefill: return index_select_prefill(f.ip);
    case Op::kIndexDecode: return index_select_decode(f.id);
    case Op::kPrefillAttention: {
      SparsePrefillAttention a;
      MSA_RETURN_IF_ERROR(a.plan(f.pp));
      return a.run(f.pr);
    }
    case Op::kDecodeAttention: {
      SparseDecodeAttention a;
      MSA_RETURN_IF_ERROR(a.plan(f.dp));
      return a.run(f.dr);
    }
    case Op::kCombine: return combine(f.ca);
    case Op::kIndexPrefillWs: {  // the workspace-size queries check what run() checks, short of the contents
      std::size_t bytes = 0;
      return index_select_prefill_workspace_size(f.ip, &bytes);
    }
    case Op::kIndexDecodeWs: {
      std::size_t bytes = 0;
      return index_select_decode_workspace_size(f.id, &bytes);
    }
  }
  return Status::Internal("unknown op");
}

#define MUT [](Problem & p, IndexPrefillArgs & ip, IndexDecodeArgs & id, SparsePrefillPlanArgs & pp, \
               SparsePrefillRunArgs & pr, SparseDecodePlanArgs & dp, SparseDecodeRunArgs & dr, CombineArgs & ca)
#define UNUSED (void)p, (void)ip, (void)id, (void)pp, (void)pr, (void)dp, (void)dr, (void)ca

const StatusCode kBad = StatusCode::kInvalidArgument;

const Case kCases[] = {
    // index selection: tensors
    {"null index_q data", Op::kIndexPrefill, MUT { UNUSED; ip.index_q.data = nullptr; }, kBad, "index_q: null data"},
    {"index_q 2-D", Op::kIndexPrefill, MUT { UNUSED; ip.index_q.ndim = 2; }, kBad, "index_q: expected 3 dimensions"},
    {"index_q fp32", Op::kIndexPrefill, MUT { UNUSED; ip.index_q.dtype = DType::kFP32; }, kBad, "index_q: dtype must be bf16"},
    {"index_k fp8, index_q bf16", Op::kIndexPrefill, MUT { UNUSED; ip.index_k_cache.dtype = DType::kFP8E4M3; },
     kBad, "index_k_cache: dtype must match index_q's (bf16), got fp8_e4m3"},
    {"index_q fp8, index_k bf16", Op::kIndexDecode, MUT { UNUSED; id.index_q.dtype = DType::kFP8E4M3; }, kBad,
     "index_k_cache: dtype must match index_q's (fp8_e4m3), got bf16"},
    {"q fp8", Op::kPrefillAttention, MUT { UNUSED; pr.q.dtype = DType::kFP8E4M3; }, StatusCode::kNotImplemented,
     "q: fp8_e4m3 is not supported for this tensor (only index_q and index_k_cache take it"},
    {"index head dim 64", Op::kIndexPrefill, MUT { UNUSED; ip.index_q.shape[2] = 64; }, kBad, "index_q: dimension 2 must be the index head dim"},
    {"index page size 64", Op::kIndexPrefill, MUT { UNUSED; ip.index_k_cache.shape[1] = 64; }, kBad, "index_k_cache: dimension 1 must be the page size"},
    {"H_idx != topk heads", Op::kIndexPrefill, MUT { UNUSED; ip.topk.shape[0] = 3; }, kBad, "topk: dimension 0 must be the number of KV (index) heads"},
    {"topk k = 17", Op::kIndexPrefill, MUT { UNUSED; ip.topk.shape[2] = 17; }, kBad, "topk: k (dimension 2) must be in [1, 16]"},
    {"topk k = 0", Op::kIndexPrefill, MUT { UNUSED; ip.topk.shape[2] = 0; }, kBad, "topk: k (dimension 2)"},
    {"topk int as fp32", Op::kIndexPrefill, MUT { UNUSED; ip.topk.dtype = DType::kFP32; }, kBad, "topk: dtype must be int32"},
    {"index_q inner stride 2", Op::kIndexPrefill, MUT { UNUSED; ip.index_q.stride[2] = 2; }, kBad, "index_q: innermost stride must be 1"},
    {"index_k misaligned base", Op::kIndexPrefill,
     MUT { UNUSED; ip.index_k_cache.data = static_cast<char*>(ip.index_k_cache.data) + 2; }, kBad, "index_k_cache: data pointer must be 16-byte aligned"},
    {"index_q row stride 120 elems", Op::kIndexPrefill, MUT { UNUSED; ip.index_q.stride[1] = 132; }, kBad, "index_q: stride of dimension 1"},
    {"negative stride", Op::kIndexPrefill, MUT { UNUSED; ip.page_table.stride[1] = -1; }, kBad, "page_table: negative stride"},
    {"shape/stride lists differ", Op::kIndexPrefill, MUT { UNUSED; ip.seq_lens_k.ndim = -1; }, kBad, "seq_lens_k: shape and stride lists"},
    {"page_table rows != B", Op::kIndexPrefill, MUT { UNUSED; ip.page_table.shape[0] = 3; }, kBad, "page_table: dimension 0 must be the batch size"},
    {"cu_seqlens wrong length", Op::kIndexPrefill, MUT { UNUSED; ip.cu_seqlens_q.shape[0] = 2; }, kBad, "cu_seqlens_q: dimension 0 must be B + 1"},
    {"mixed devices", Op::kIndexPrefill, MUT { UNUSED; ip.topk.device = Device::cuda(); }, kBad, "topk: is on cuda:0 but index_q is on cpu"},
    // index selection: content
    {"cu_seqlens[0] != 0", Op::kIndexPrefill, MUT { UNUSED; p.cu_seqlens_q[0] = 1; }, kBad, "cu_seqlens_q[0]: must be 0"},
    {"cu_seqlens decreasing", Op::kIndexPrefill, MUT { UNUSED; p.cu_seqlens_q[1] = 5; }, kBad, "cu_seqlens_q: must be non-decreasing"},
    {"cu_seqlens total != T", Op::kIndexPrefill, MUT { UNUSED; p.cu_seqlens_q[2] = 3; p.cu_seqlens_q[1] = 1; }, kBad, "but the query tensor has T = 4"},
    {"seq_lens_k < queries", Op::kIndexPrefill, MUT { UNUSED; p.seq_lens_k[1] = 1; }, kBad, "seq_lens_k[1]: = 1 must be >= the request's query count 2"},
    {"seq_lens_k negative", Op::kIndexPrefill, MUT { UNUSED; p.cu_seqlens_q = {0, 0, 4}; p.seq_lens_k[0] = -3; }, kBad, "seq_lens_k[0]: must be >= 0"},
    {"too many pages for table", Op::kIndexPrefill, MUT { UNUSED; p.seq_lens_k[1] = 2200 + 128 * 20; }, kBad, "pages but page_table has max_pages"},
    {"page id outside cache", Op::kIndexPrefill, MUT { UNUSED; p.page_table[3] = static_cast<std::int32_t>(p.num_pages); }, kBad, "page_table[0, 3]: = "},
    {"negative page id", Op::kIndexPrefill, MUT { UNUSED; p.page_table[static_cast<std::size_t>(p.max_pages)] = -1; }, kBad, "page_table[1, 0]: = -1 is outside"},
    // decode index selection
    {"decode Q = 0", Op::kIndexDecode, MUT { UNUSED; id.queries_per_request = 0; }, kBad, "queries_per_request: must be in [1, 16]"},
    {"decode Q = 17", Op::kIndexDecode, MUT { UNUSED; id.queries_per_request = 17; }, kBad, "queries_per_request: must be in [1, 16]"},
    {"decode workspace Q = 0", Op::kIndexDecodeWs, MUT { UNUSED; id.queries_per_request = 0; }, kBad, "queries_per_request: must be in [1, 16]"},
    {"decode workspace T != B * Q", Op::kIndexDecodeWs, MUT { UNUSED; id.queries_per_request = 1; }, kBad, "index_q: dimension 0 must be B * Q = 2, got 4"},
    {"decode workspace mixed devices", Op::kIndexDecodeWs, MUT { UNUSED; id.page_table.device = Device::cuda(); }, kBad, "page_table: is on cuda:0 but index_q is on cpu"},
    {"prefill workspace mixed devices", Op::kIndexPrefillWs, MUT { UNUSED; ip.topk.device = Device::cuda(); }, kBad, "topk: is on cuda:0 but index_q is on cpu"},
    {"prefill workspace topk k = 17", Op::kIndexPrefillWs, MUT { UNUSED; ip.topk.shape[2] = 17; }, kBad, "topk: k (dimension 2) must be in [1, 16]"},
    {"decode T != B*Q", Op::kIndexDecode, MUT { UNUSED; id.queries_per_request = 1; }, kBad, "index_q: dimension 0 must be B * Q = 2"},
    // prefill attention: plan
    {"Hq % Hkv != 0", Op::kPrefillAttention, MUT { UNUSED; pp.num_q_heads = 15; }, kBad, "num_q_heads: must be a multiple of num_kv_heads"},
    {"num_kv_heads 0", Op::kPrefillAttention, MUT { UNUSED; pp.num_kv_heads = 0; }, kBad, "num_kv_heads: must be >= 1"},
    {"sm_scale negative", Op::kPrefillAttention, MUT { UNUSED; pp.sm_scale = -1.0; }, kBad, "sm_scale: must be finite"},
    {"sm_scale NaN", Op::kPrefillAttention, MUT { UNUSED; pp.sm_scale = NAN; }, kBad, "sm_scale: must be finite"},
    {"schedule out of range", Op::kPrefillAttention, MUT { UNUSED; pp.schedule = static_cast<PrefillSchedule>(7); }, kBad, "schedule: must be kAuto, kKvOuter or kUnion, got 7"},
    {"topk id >= n_vis", Op::kPrefillAttention, MUT { UNUSED; p.topk[0] = 18; }, kBad, "topk[0, 0, 0]: block id 18 >= n_vis 18"},
    {"topk duplicate id", Op::kPrefillAttention, MUT { UNUSED; p.topk[1] = p.topk[0]; }, kBad, "appears twice in the row"},
    {"topk missing local", Op::kPrefillAttention, MUT { UNUSED; p.topk[15] = -1; }, kBad, "topk[0, 0]: local block 17 is missing"},
    {"topk id < -1", Op::kPrefillAttention, MUT { UNUSED; p.topk[3] = -2; }, kBad, "block id -2 is invalid"},
    {"topk id after -1", Op::kPrefillAttention, MUT { UNUSED; p.topk[2 * 16 + 1] = -1; }, kBad, "topk[0, 2, 2]: valid id after a -1"},
    {"topk heads != Hkv", Op::kPrefillAttention, MUT { UNUSED; pp.num_q_heads = 8; pp.num_kv_heads = 1; }, kBad, "topk: dimension 0 must be the number of KV (index) heads = 1"},
    // prefill attention: run
    {"q head dim 64", Op::kPrefillAttention, MUT { UNUSED; pr.q.shape[2] = 64; }, kBad, "q: dimension 2 must be the head dim"},
    {"q tokens != planned T", Op::kPrefillAttention, MUT { UNUSED; pr.q.shape[0] = 3; }, kBad, "q: dimension 0 must be the planned number of query tokens"},
    {"q heads != planned", Op::kPrefillAttention, MUT { UNUSED; pr.q.shape[1] = 8; pr.out.shape[1] = 8; }, kBad, "q: dimension 1 must be the planned num_q_heads"},
    {"k/v shapes differ", Op::kPrefillAttention, MUT { UNUSED; pr.v_cache.shape[0] -= 1; }, kBad, "v_cache: shape"},
    {"k_cache page 64", Op::kPrefillAttention, MUT { UNUSED; pr.k_cache.shape[2] = 64; pr.v_cache.shape[2] = 64; }, kBad, "k_cache: dimension 2 must be the page size"},
    {"k_cache fp16", Op::kPrefillAttention, MUT { UNUSED; pr.k_cache.dtype = DType::kFP16; }, kBad, "k_cache: dtype must be bf16"},
    {"out fp32", Op::kPrefillAttention, MUT { UNUSED; pr.out.dtype = DType::kFP32; }, kBad, "out: dtype must be bf16"},
    {"out wrong tokens", Op::kPrefillAttention, MUT { UNUSED; pr.out.shape[0] = 5; }, kBad, "out: dimension 0 must be the number of query tokens"},
    {"lse wrong heads", Op::kPrefillAttention, MUT { UNUSED; pr.lse.shape[1] = 4; }, kBad, "lse: dimension 1 must be the number of query heads"},
    {"lse bf16", Op::kPrefillAttention, MUT { UNUSED; pr.lse.dtype = DType::kBF16; }, kBad, "lse: dtype must be fp32"},
    {"cache smaller than page table", Op::kPrefillAttention,
     MUT { UNUSED; pr.k_cache.shape[0] = 2; pr.v_cache.shape[0] = 2; }, kBad, "is outside the cache's pages [0, 2)"},
    {"run tensors on another device", Op::kPrefillAttention, MUT { UNUSED; pr.out.device = Device::cuda(1); }, kBad, "out: is on cuda:1"},
    // decode attention
    {"decode batch over capacity", Op::kDecodeAttention, MUT { UNUSED; dp.batch_size = 1; }, kBad, "exceeds the planned batch_size"},
    {"decode plan Q = 20", Op::kDecodeAttention, MUT { UNUSED; dp.queries_per_request = 20; }, kBad, "queries_per_request: must be in [1, 16]"},
    {"decode topk != planned", Op::kDecodeAttention, MUT { UNUSED; dp.topk = 8; }, kBad, "topk: dimension 2 must be the planned topk"},
    {"decode missing topk", Op::kDecodeAttention, MUT { UNUSED; dr.topk = Tensor{}; }, kBad, "topk: required tensor is missing"},
    {"decode seq_lens < Q", Op::kDecodeAttention, MUT { UNUSED; p.seq_lens_k[0] = 1; }, kBad, "seq_lens_k[0]: = 1 must be >="},
    // combine
    {"combine count > S", Op::kCombine, MUT { UNUSED; ca.split_counts.data = ca.split_counts.data; static_cast<std::int32_t*>(ca.split_counts.data)[3] = 17; }, kBad, "split_counts[1, 1]: 17 is outside [0, S = 16]"},
    {"combine lse shape", Op::kCombine, MUT { UNUSED; ca.partial_lse.shape[0] = 15; }, kBad, "partial_lse: dimension 0"},
    {"combine heads", Op::kCombine, MUT { UNUSED; ca.split_counts.shape[1] = 3; }, kBad, "num_q_heads: must be a multiple of num_kv_heads"},
    {"combine partial dtype", Op::kCombine, MUT { UNUSED; ca.partial_out.dtype = DType::kInt32; }, kBad, "partial_out: dtype must be bf16 or fp32"},
    {"combine missing out", Op::kCombine, MUT { UNUSED; ca.out = Tensor{}; }, kBad, "out: required tensor is missing"},
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class CPU_Validation : public ::testing::TestWithParam<Case> {};

TEST_P(CPU_Validation, RejectedWithNamedRuleAndNothingWritten) {
  const Case& c = GetParam();
  Fixture f;
  // Poison the outputs; a rejected call must leave them untouched.
  std::fill(f.p.out.begin(), f.p.out.end(), 0x7fc1);
  std::fill(f.p.lse.begin(), f.p.lse.end(), 42.0f);
  const std::vector<std::int32_t> topk_before = f.p.topk;
  c.mutate(f.p, f.ip, f.id, f.pp, f.pr, f.dp, f.dr, f.ca);
  const std::vector<std::int32_t> topk_mutated = f.p.topk;
  const Status st = run_op(c.op, f);
  EXPECT_EQ(st.code(), c.code) << st.to_string();
  EXPECT_NE(st.message().find(c.message_part), std::string::npos)
      << "message: '" << st.message() << "'\nexpected to contain: '" << c.message_part << "'";
  for (auto v : f.p.out) ASSERT_EQ(v, 0x7fc1);
  for (auto v : f.p.lse) ASSERT_EQ(v, 42.0f);
  EXPECT_EQ(f.p.topk, topk_mutated);
  (void)topk_before;
}

TEST(CPU_ValidationBaseline, FixtureIsValidForEveryOp) {
  for (Op op : {Op::kIndexPrefill, Op::kIndexDecode, Op::kPrefillAttention, Op::kDecodeAttention, Op::kCombine,
                Op::kIndexPrefillWs, Op::kIndexDecodeWs}) {
    Fixture f;
    const Status st = run_op(op, f);
    EXPECT_TRUE(st.ok()) << static_cast<int>(op) << ": " << st.to_string();
  }
}

TEST(CPU_ValidationBaseline, RunBeforePlanIsRejected) {
  Fixture f;
  SparsePrefillAttention a;
  EXPECT_EQ(a.run(f.pr).code(), StatusCode::kInvalidArgument);
  SparseDecodeAttention d;
  EXPECT_EQ(d.run(f.dr).code(), StatusCode::kInvalidArgument);
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  std::string s;
  for (const char* c = info.param.name; *c; ++c) s += std::isalnum(static_cast<unsigned char>(*c)) ? *c : '_';
  return s + "_" + std::to_string(info.index);
}

INSTANTIATE_TEST_SUITE_P(BadInputs, CPU_Validation, ::testing::ValuesIn(kCases), case_name);

}  // namespace
}  // namespace test
}  // namespace msa
