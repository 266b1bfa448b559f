// test_sm90_graphs.cpp — CUDA-graph capture of the layer ops. Decode: MsaDecode::run captured once, then replayed
// for 1000 steps while the sequences grow (seq_lens_k), new tokens are written into the K, V and index-K caches,
// the queries change and page-table entries are remapped, all in place between replays; every step's replay must
// equal an eager run bit for bit. Prefill: MsaPrefill::run of a fixed-capacity batch captured and replayed on new
// contents, equal to eager runs.
#include <cuda_runtime.h>

#include <cstring>
#include <random>

#include "cuda_test_util.h"
#include "test_util.h"

namespace msa {
namespace test {
namespace {

struct Stream {
  cudaStream_t s = nullptr;
  Stream() { EXPECT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess); }
  ~Stream() { cudaStreamDestroy(s); }
};

struct Memory {
  void* ptr = nullptr;
  explicit Memory(std::size_t bytes) { EXPECT_EQ(cudaMalloc(&ptr, std::max<std::size_t>(bytes, 1)), cudaSuccess); }
  ~Memory() { cudaFree(ptr); }
};

// Captures fn() on `stream` into an executable graph.
template <typename Fn>
cudaGraphExec_t capture(cudaStream_t stream, Fn fn) {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  EXPECT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  fn();
  EXPECT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  EXPECT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  cudaGraphDestroy(graph);
  return exec;
}

std::vector<std::uint16_t> random_bf16(std::size_t n, std::mt19937_64* rng) {
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<std::uint16_t> v(n);
  for (auto& x : v) x = testing::to_bf16(d(*rng));
  return v;
}

template <typename T>
void upload(T* dst, const std::vector<T>& v, cudaStream_t s) {
  ASSERT_EQ(cudaMemcpyAsync(dst, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice, s), cudaSuccess);
}

// Captures MsaDecode::run once for B (1 or 2) requests x Q queries and replays it for 1000 steps against eager
// runs. `path` says which decode attention kernel the batch is meant to exercise.
void decode_replay(int B, int Q, DecodePath path) {
  const int Hq = 64, Hkv = 4, steps = 1000;
  ASSERT_EQ(decode_path(static_cast<std::int64_t>(B) * Q * Hkv, 16), path);
  const std::vector<std::int64_t> start = B == 1 ? std::vector<std::int64_t>{3000} : std::vector<std::int64_t>{3000, 200};
  // Capacity for the final lengths, plus spare pages to remap blocks into.
  std::vector<std::int64_t> final_lens;
  for (const std::int64_t l : start) final_lens.push_back(l + steps);
  ProblemSpec s = spec(std::vector<std::int64_t>(start.size(), Q), final_lens, Hq, Hkv);
  s.spare_pages = 10;
  Problem p = testing::make_problem(s);
  std::mt19937_64 rng(s.seed);
  std::vector<std::int32_t> lens(start.begin(), start.end());
  p.seq_lens_k = lens;
  DeviceProblem d(p);
  Stream stream;
  const Device dev = Device::cuda(0, stream.s);
  MsaDecodePlanArgs pa;
  pa.batch_size = B;
  pa.queries_per_request = Q;
  pa.device = dev;
  MsaDecode layer;
  ASSERT_TRUE(layer.plan(pa).ok());
  Memory ws_graph(layer.workspace_bytes()), ws_eager(layer.workspace_bytes());
  DeviceBuffer<std::uint16_t> out_eager(std::vector<std::uint16_t>(p.out.size(), 0));
  DeviceBuffer<float> lse_eager(std::vector<float>(p.lse.size(), 0.f));
  DeviceBuffer<std::int32_t> topk_eager(std::vector<std::int32_t>(p.topk.size(), 0));
  auto args = [&](void* out, float* lse, std::int32_t* topk) {
    return MsaDecodeRunArgs{on_device(p.q_t(), d.q.ptr, stream.s),
                            on_device(p.k_cache_t(), d.k_cache.ptr, stream.s),
                            on_device(p.v_cache_t(), d.v_cache.ptr, stream.s),
                            on_device(p.index_q_t(), d.index_q.ptr, stream.s),
                            on_device(p.index_k_cache_t(), d.index_k_cache.ptr, stream.s),
                            on_device(p.page_table_t(), d.page_table.ptr, stream.s),
                            on_device(p.seq_lens_k_t(), d.seq_lens_k.ptr, stream.s),
                            on_device(p.out_t(), out, stream.s),
                            on_device(p.lse_t(), lse, stream.s),
                            on_device(p.topk_t(), topk, stream.s)};
  };
  const MsaDecodeRunArgs graph_args = args(d.out.ptr, d.lse.ptr, d.topk_out.ptr);
  const MsaDecodeRunArgs eager_args = args(out_eager.ptr, lse_eager.ptr, topk_eager.ptr);
  Status captured;
  cudaGraphExec_t exec =
      capture(stream.s, [&] { captured = layer.run(graph_args, ws_graph.ptr, layer.workspace_bytes()); });
  ASSERT_TRUE(captured.ok()) << captured.to_string();

  const std::int64_t page_elems = static_cast<std::int64_t>(Hkv) * 128 * 128, spare0 = p.num_pages - s.spare_pages;
  std::vector<std::uint16_t> got(p.out.size()), want(p.out.size());
  std::vector<float> got_lse(p.lse.size()), want_lse(p.lse.size());
  std::vector<std::int32_t> got_topk(p.topk.size()), want_topk(p.topk.size());
  for (int step = 0; step < steps; ++step) {
    // Append one token per request: its K, V and index-K rows at position L, then L += 1; fresh queries.
    for (int b = 0; b < B; ++b) {
      const std::int32_t L = lens[static_cast<std::size_t>(b)];
      const std::int32_t page = p.page(b, L / 128);
      for (int h = 0; h < Hkv; ++h) {
        const std::size_t row = static_cast<std::size_t>((page * page_elems) + (h * 128 + L % 128) * 128);
        upload(d.k_cache.ptr + row, random_bf16(128, &rng), stream.s);
        upload(d.v_cache.ptr + row, random_bf16(128, &rng), stream.s);
      }
      upload(d.index_k_cache.ptr + static_cast<std::size_t>((page * 128 + L % 128) * 128), random_bf16(128, &rng),
             stream.s);
      lens[static_cast<std::size_t>(b)] = L + 1;
    }
    upload(d.seq_lens_k.ptr, lens, stream.s);
    upload(d.q.ptr, random_bf16(p.q.size(), &rng), stream.s);
    upload(d.index_q.ptr, random_bf16(p.index_q.size(), &rng), stream.s);
    if (step % 100 == 50) {  // remap request 0's block (step / 100) to a spare page: copy it, then point there
      const int j = step / 100, spare = static_cast<int>(spare0 + j);
      const std::int32_t old = p.page(0, j);
      ASSERT_EQ(cudaMemcpyAsync(d.k_cache.ptr + spare * page_elems, d.k_cache.ptr + old * page_elems, page_elems * 2,
                                cudaMemcpyDeviceToDevice, stream.s), cudaSuccess);
      ASSERT_EQ(cudaMemcpyAsync(d.v_cache.ptr + spare * page_elems, d.v_cache.ptr + old * page_elems, page_elems * 2,
                                cudaMemcpyDeviceToDevice, stream.s), cudaSuccess);
      ASSERT_EQ(cudaMemcpyAsync(d.index_k_cache.ptr + spare * 128 * 128, d.index_k_cache.ptr + old * 128 * 128,
                                128 * 128 * 2, cudaMemcpyDeviceToDevice, stream.s), cudaSuccess);
      p.page_table[static_cast<std::size_t>(j)] = spare;
      upload(d.page_table.ptr, p.page_table, stream.s);
    }
    ASSERT_EQ(cudaGraphLaunch(exec, stream.s), cudaSuccess);
    const Status st = layer.run(eager_args, ws_eager.ptr, layer.workspace_bytes());
    ASSERT_TRUE(st.ok()) << st.to_string();
    ASSERT_EQ(cudaStreamSynchronize(stream.s), cudaSuccess);
    d.out.download(&got);
    out_eager.download(&want);
    d.lse.download(&got_lse);
    lse_eager.download(&want_lse);
    d.topk_out.download(&got_topk);
    topk_eager.download(&want_topk);
    ASSERT_EQ(got, want) << "step " << step;
    ASSERT_EQ(0, std::memcmp(got_lse.data(), want_lse.data(), got_lse.size() * sizeof(float))) << "step " << step;
    ASSERT_EQ(got_topk, want_topk) << "step " << step;
    // The selection follows the growth: each request's last query's local block is listed last (or within the
    // first 16).
    for (int b = 0; b < B; ++b) {
      const std::int32_t local = (lens[static_cast<std::size_t>(b)] - 1) / 128;
      const std::int32_t* row = &got_topk[static_cast<std::size_t>((b * Q + Q - 1) * 16)];  // head 0
      ASSERT_TRUE(local < 16 ? row[local] == local : row[15] == local) << "step " << step << " request " << b;
    }
  }
  cudaGraphExecDestroy(exec);
}

TEST(SM90_Graphs, DecodeReplayEqualsEagerFor1000Steps) {
  MSA_REQUIRE_SM90();
  decode_replay(2, 1, DecodePath::kSplitCombine);  // 8 (token, KV head) rows: split kernel + combine
}

TEST(SM90_Graphs, DecodeFusedKernelReplayEqualsEagerFor1000Steps) {
  MSA_REQUIRE_SM90();
  decode_replay(1, 1, DecodePath::kFusedCluster);  // 4 rows: clusters of 16 CTAs merge on chip
}

TEST(SM90_Graphs, DecodeRowsKernelReplayEqualsEagerFor1000Steps) {
  MSA_REQUIRE_SM90();
  decode_replay(2, 16, DecodePath::kRows);  // 128 (token, KV head) rows: one CTA per row, no combine
}

TEST(SM90_Graphs, PrefillReplayEqualsEager) {
  MSA_REQUIRE_SM90();
  ProblemSpec s = spec({300, 0, 129}, {5000, 700, 2049}, 64, 4);
  Problem p = testing::make_problem(s);
  std::mt19937_64 rng(s.seed);
  DeviceProblem d(p);
  Stream stream;
  MsaPrefillPlanArgs pa;
  pa.cu_seqlens_q = on_device(p.cu_seqlens_q_t(), d.cu_seqlens_q.ptr, stream.s);
  pa.seq_lens_k = on_device(p.seq_lens_k_t(), d.seq_lens_k.ptr, stream.s);
  pa.page_table = on_device(p.page_table_t(), d.page_table.ptr, stream.s);
  pa.total_q = p.total_q;
  pa.max_chunk_tokens = 128;  // several chunks inside one graph
  MsaPrefill layer;
  ASSERT_TRUE(layer.plan(pa).ok());
  Memory ws_graph(layer.workspace_bytes()), ws_eager(layer.workspace_bytes());
  DeviceBuffer<std::uint16_t> out_eager(std::vector<std::uint16_t>(p.out.size(), 0));
  auto args = [&](void* out) {
    return MsaPrefillRunArgs{on_device(p.q_t(), d.q.ptr, stream.s),
                             on_device(p.k_cache_t(), d.k_cache.ptr, stream.s),
                             on_device(p.v_cache_t(), d.v_cache.ptr, stream.s),
                             on_device(p.index_q_t(), d.index_q.ptr, stream.s),
                             on_device(p.index_k_cache_t(), d.index_k_cache.ptr, stream.s),
                             on_device(p.out_t(), out, stream.s),
                             Tensor{},
                             Tensor{}};
  };
  const MsaPrefillRunArgs graph_args = args(d.out.ptr), eager_args = args(out_eager.ptr);
  Status captured;
  cudaGraphExec_t exec =
      capture(stream.s, [&] { captured = layer.run(graph_args, ws_graph.ptr, layer.workspace_bytes()); });
  ASSERT_TRUE(captured.ok()) << captured.to_string();
  std::vector<std::uint16_t> got(p.out.size()), want(p.out.size());
  for (int step = 0; step < 5; ++step) {
    upload(d.q.ptr, random_bf16(p.q.size(), &rng), stream.s);
    upload(d.index_q.ptr, random_bf16(p.index_q.size(), &rng), stream.s);
    upload(d.k_cache.ptr, random_bf16(p.k_cache.size(), &rng), stream.s);
    upload(d.index_k_cache.ptr, random_bf16(p.index_k_cache.size(), &rng), stream.s);
    ASSERT_EQ(cudaGraphLaunch(exec, stream.s), cudaSuccess);
    const Status st = layer.run(eager_args, ws_eager.ptr, layer.workspace_bytes());
    ASSERT_TRUE(st.ok()) << st.to_string();
    ASSERT_EQ(cudaStreamSynchronize(stream.s), cudaSuccess);
    d.out.download(&got);
    out_eager.download(&want);
    ASSERT_EQ(got, want) << "step " << step;
  }
  cudaGraphExecDestroy(exec);
}

}  // namespace
}  // namespace test
}  // namespace msa
