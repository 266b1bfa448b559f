// cuda_test_util.h — helpers of the GPU suites (CUDA builds only): skip without an sm_90 device, device buffers.
#ifndef MSA_TESTS_CUDA_TEST_UTIL_H_
#define MSA_TESTS_CUDA_TEST_UTIL_H_

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/decode/launch.h"
#include "kernels/k2q/launch.h"
#include "msa/msa.h"
#include "problem.h"
#include "test_util.h"
#include "views.h"

#define MSA_REQUIRE_SM90()                                              \
  do {                                                                  \
    if (!msa::sm90_device_available()) GTEST_SKIP() << "no sm_90 GPU"; \
  } while (0)

namespace msa {
namespace test {

// A device copy of a host vector (at least one element, so empty inputs still get a valid pointer).
template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  explicit DeviceBuffer(const std::vector<T>& host) {
    EXPECT_EQ(cudaMalloc(&ptr, std::max<std::size_t>(host.size(), 1) * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(ptr); }
  void upload(const std::vector<T>& host) {  // host.size() <= the buffer's size
    EXPECT_EQ(cudaMemcpy(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  void download(std::vector<T>* host) const {
    EXPECT_EQ(cudaMemcpy(host->data(), ptr, host->size() * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  }
};

// The SM count of CUDA device 0.
inline int device0_sms() {
  int sms = 0;
  EXPECT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  return sms;
}

// Which kernel SparseDecodeAttention takes for `rows` (token, KV head) pairs and k on device 0.
using DecodePath = kernels::DecodeKernel;
inline DecodePath decode_path(std::int64_t rows, int k) { return kernels::decode_kernel_for(rows, k, device0_sms()); }

// The descriptor t (shape and strides kept) moved to device memory ptr on CUDA device 0.
inline Tensor on_device(Tensor t, void* ptr, void* stream = nullptr) {
  t.data = ptr;
  t.device = Device::cuda(0, stream);
  return t;
}

// p's index_q (keys = false) or index-K cache as its descriptor describes it (bf16, or fp8 after use_fp8_index), as
// raw bytes, each 128-element row followed by pad elements of NaN bits (which a kernel reading past dim 127 would
// pick up).
inline std::vector<std::uint8_t> index_bytes(const testing::Problem& p, bool keys, int pad = 0) {
  const bool fp8 = !p.index_q8.empty();
  const std::vector<std::uint16_t>& bf16 = keys ? p.index_k_cache : p.index_q;
  const std::size_t rows = bf16.size() / 128, esize = fp8 ? 1 : 2, w = (128 + static_cast<std::size_t>(pad)) * esize;
  const auto* src = fp8 ? (keys ? p.index_k_cache8.data() : p.index_q8.data())
                        : reinterpret_cast<const std::uint8_t*>(bf16.data());
  std::vector<std::uint8_t> out(std::max<std::size_t>(rows * w, 1));
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = fp8 ? 0x7f : (i % 2 ? 0x7f : 0xc0);  // e4m3 / bf16 NaN
  for (std::size_t r = 0; r < rows; ++r) std::copy_n(src + r * 128 * esize, 128 * esize, out.begin() + r * w);
  return out;
}

// The same bytes (unpadded) in 16-bit words, for DeviceProblem's buffers.
inline std::vector<std::uint16_t> index_words(const testing::Problem& p, bool keys) {
  const std::vector<std::uint8_t> bytes = index_bytes(p, keys);
  std::vector<std::uint16_t> w((bytes.size() + 1) / 2, 0);
  std::memcpy(w.data(), bytes.data(), bytes.size());
  return w;
}

// Device copies of every tensor of a problem, with CUDA descriptors of the same shapes. Outputs (out, lse, topk)
// start poisoned (NaN / 0x7eadbeef) so unwritten elements show. The descriptor accessors (q_t() ... lse_t()),
// download() and expect_padding_untouched() are shared with ViewProblem (device_views.h), the same tensors in
// strided layouts, so the helpers below take either.
struct DeviceProblem {
  DeviceBuffer<std::uint16_t> q, k_cache, v_cache, index_q, index_k_cache, out;
  DeviceBuffer<std::int32_t> page_table, cu_seqlens_q, seq_lens_k, topk, topk_out;
  DeviceBuffer<float> lse;
  explicit DeviceProblem(testing::Problem& p)
      : q(p.q), k_cache(p.k_cache), v_cache(p.v_cache), index_q(index_words(p, false)),
        index_k_cache(index_words(p, true)),
        out(std::vector<std::uint16_t>(p.out.size(), 0x7fc1)), page_table(p.page_table), cu_seqlens_q(p.cu_seqlens_q),
        seq_lens_k(p.seq_lens_k), topk(p.topk), topk_out(std::vector<std::int32_t>(p.topk.size(), 0x7eadbeef)),
        lse(std::vector<float>(p.lse.size(), NAN)),
        host_{p.q_t(),           p.k_cache_t(),    p.v_cache_t(),   p.index_q_t(), p.index_k_cache_t(),
              p.page_table_t(),  p.cu_seqlens_q_t(), p.seq_lens_k_t(), p.topk_t(),    p.out_t(),
              p.lse_t()} {}

  Tensor q_t() const { return on_device(host_.q, q.ptr); }
  Tensor k_cache_t() const { return on_device(host_.k, k_cache.ptr); }
  Tensor v_cache_t() const { return on_device(host_.v, v_cache.ptr); }
  Tensor index_q_t() const { return on_device(host_.iq, index_q.ptr); }
  Tensor index_k_cache_t() const { return on_device(host_.ik, index_k_cache.ptr); }
  Tensor page_table_t() const { return on_device(host_.pt, page_table.ptr); }
  Tensor cu_seqlens_q_t() const { return on_device(host_.cu, cu_seqlens_q.ptr); }
  Tensor seq_lens_k_t() const { return on_device(host_.seq, seq_lens_k.ptr); }
  Tensor topk_t() const { return on_device(host_.topk, topk.ptr); }  // the input selection
  Tensor topk_out_t() const { return on_device(host_.topk, topk_out.ptr); }
  Tensor out_t() const { return on_device(host_.out, out.ptr); }
  Tensor lse_t() const { return on_device(host_.lse, lse.ptr); }

  // The outputs into p's layouts (the selection into p.topk when `selection`).
  void download(testing::Problem& p, std::vector<std::uint16_t>* o, std::vector<float>* l, bool selection) const {
    o->resize(p.out.size());
    l->resize(p.lse.size());
    out.download(o);
    lse.download(l);
    if (selection) topk_out.download(&p.topk);
  }
  void expect_padding_untouched() const {}  // contiguous: no padding
  void before_run() {}                       // inputs in place since construction

 private:
  struct Host {
    Tensor q, k, v, iq, ik, pt, cu, seq, topk, out, lse;
  } host_;
};

// Q, K and V fields of an attention launch (PagedPrefillInputs or DecodeAttentionLaunch) for p's contiguous layouts,
// already on the device.
template <class Launch>
void set_problem_qkv(Launch* l, const testing::Problem& p, const void* q, const void* k_cache, const void* v_cache) {
  const std::int64_t Hq = p.spec.num_q_heads, Hkv = p.spec.num_kv_heads;
  l->q = q;
  l->q_stride_t = Hq * 128;
  l->q_stride_h = 128;
  l->k_cache = k_cache;
  l->v_cache = v_cache;
  l->kv_stride_page = Hkv * 128 * 128;
  l->kv_stride_h = 128 * 128;
  l->kv_stride_t = 128;
}

// Downloads an attention output out [T, Hq, 128] and lse [T, Hq] and judges them against p by design.md's error rule
// (bf16_partials: see expect_attention_rule).
inline void expect_device_attention_rule(Problem& p, const DeviceBuffer<std::uint16_t>& out,
                                         const DeviceBuffer<float>& lse, bool bf16_partials = false) {
  std::vector<std::uint16_t> got(p.out.size());
  std::vector<float> got_lse(p.lse.size());
  out.download(&got);
  lse.download(&got_lse);
  expect_attention_rule(p, got, got_lse, 0.0, bf16_partials);
}

// The device k2q arguments for p's contiguous topk [Hkv, T, k] and batch metadata, already on the device.
inline kernels::K2qBuildArgs k2q_args(const testing::Problem& p, const std::int32_t* topk, const std::int32_t* cu,
                                      const std::int32_t* seq, int max_q_per_item) {
  kernels::K2qBuildArgs a{};
  a.topk = topk;
  a.topk_stride_h = p.total_q * p.spec.topk;
  a.topk_stride_t = p.spec.topk;
  a.topk_stride_s = 1;
  a.cu_seqlens_q = cu;
  a.cu_stride = 1;
  a.seq_lens_k = seq;
  a.seq_stride = 1;
  a.num_heads = p.spec.num_kv_heads;
  a.k = p.spec.topk;
  a.num_requests = static_cast<int>(p.num_requests());
  a.total_q = p.total_q;
  a.max_blocks = static_cast<int>(p.max_pages);
  a.max_q_per_item = max_q_per_item;
  return a;
}

// Device memory of at least one byte, freed with the object.
struct DeviceMemory {
  void* ptr = nullptr;
  explicit DeviceMemory(std::size_t bytes) { EXPECT_EQ(cudaMalloc(&ptr, std::max<std::size_t>(bytes, 1)), cudaSuccess); }
  ~DeviceMemory() { cudaFree(ptr); }
};

// Runs a planned layer op (MsaPrefill or MsaDecode) once, then checks its topk output by the selection contract and
// its out / LSE by the error rule on that selection (bf16_partials: see expect_attention_rule); returns out.
template <typename Layer, typename RunArgs, typename D>
std::vector<std::uint16_t> run_layer_and_check(Layer& layer, const RunArgs& ra, const DeviceMemory& ws, Problem& p,
                                               D& d, bool bf16_partials = false, double sm_scale = 0.0) {
  d.before_run();
  const Status st = layer.run(ra, ws.ptr, layer.workspace_bytes());
  EXPECT_TRUE(st.ok()) << st.to_string();
  if (!st.ok()) return std::vector<std::uint16_t>(p.out.size());
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return check_layer_outputs(p, d, bf16_partials, sm_scale);
}

// Public SparsePrefillAttention on d's tensors with the given chunk size, schedule and scale (0: 1/sqrt(128));
// returns out and lse.
template <typename D>
void run_prefill_op(Problem& p, D& d, std::int64_t chunk, PrefillSchedule schedule,
                    std::vector<std::uint16_t>* out, std::vector<float>* lse, double sm_scale = 0.0) {
  SparsePrefillPlanArgs pa = prefill_plan_args(p, d);
  pa.max_chunk_tokens = chunk;
  pa.schedule = schedule;
  pa.sm_scale = sm_scale;
  SparsePrefillAttention attn;
  Status st = attn.plan(pa);
  ASSERT_TRUE(st.ok()) << st.to_string();
  const SparsePrefillRunArgs ra{d.q_t(), d.k_cache_t(), d.v_cache_t(), d.out_t(), d.lse_t()};
  DeviceMemory ws(attn.workspace_bytes());
  if (attn.workspace_bytes() > 0) {
    st = attn.run(ra, ws.ptr, attn.workspace_bytes() - 1);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find("workspace"), std::string::npos) << st.message();
  }
  d.before_run();
  st = attn.run(ra, ws.ptr, attn.workspace_bytes());
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  d.download(p, out, lse, false);
  d.expect_padding_untouched();
}

// The same on a fresh contiguous device copy of p.
inline void run_prefill_op(Problem& p, std::int64_t chunk, PrefillSchedule schedule, std::vector<std::uint16_t>* out,
                           std::vector<float>* lse) {
  DeviceProblem d(p);
  run_prefill_op(p, d, chunk, schedule, out, lse);
}

}  // namespace test
}  // namespace msa

#endif  // MSA_TESTS_CUDA_TEST_UTIL_H_
