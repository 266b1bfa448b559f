// views.h — test tensors in strided layouts, on the host or (device_views.h) the GPU. A tensor of a
// testing::Problem is copied into an allocation under strides and an offset drawn at random: padded rows and heads
// (16-byte units for the bulk operands), q and out as views into wider rows (fused projections), K and V interleaved
// in one paged cache in any of four orders, head-major LSE, token-major topk, a column-major page table, every other
// element of the lengths. Everything outside the view holds a poison value: inputs read there show as NaN or wild
// ids, and an output whose op writes outside its view fails `expect_padding_untouched`. Also the op-argument helpers
// shared by every problem type with the q_t() ... lse_t() accessors (ViewProblem, DeviceProblem).
#ifndef MSA_TESTS_VIEWS_H_
#define MSA_TESTS_VIEWS_H_

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "msa/msa.h"
#include "problem.h"
#include "test_util.h"

namespace msa {
namespace test {

using testing::Problem;

// Strides of a view of `shape` whose dimensions lie in memory in `order` (outermost first; the last one innermost,
// stride 1), each outer stride padded by 0-3 units of `unit` elements when `pad`.
inline std::vector<std::int64_t> draw_strides(const std::vector<std::int64_t>& shape, const std::vector<int>& order,
                                              std::int64_t unit, bool pad, std::mt19937_64& rng) {
  std::vector<std::int64_t> stride(shape.size(), 1);
  std::int64_t extent = 1;
  for (int i = static_cast<int>(order.size()) - 1; i >= 0; --i) {
    const int d = order[static_cast<std::size_t>(i)];
    const std::int64_t padding = pad && i + 1 < static_cast<int>(order.size())
                                     ? unit * std::uniform_int_distribution<std::int64_t>(0, 3)(rng) : 0;
    stride[static_cast<std::size_t>(d)] = extent + padding;
    extent = stride[static_cast<std::size_t>(d)] * std::max<std::int64_t>(shape[static_cast<std::size_t>(d)], 1);
  }
  return stride;
}

// One tensor in an allocation: elements at offset + sum(i_d * stride_d), poison everywhere else. The image (the
// allocation's contents as first written) lives here; HostView and DeviceView hold the live allocation.
class StridedView {
 public:
  StridedView(const void* host, DType dtype, std::vector<std::int64_t> shape, std::vector<std::int64_t> stride,
              std::int64_t offset, std::uint32_t poison)
      : dtype_(dtype), esize_(dtype_size(dtype)), shape_(std::move(shape)), stride_(std::move(stride)), offset_(offset) {
    std::int64_t last = offset_;
    for (std::size_t d = 0; d < shape_.size(); ++d)
      last += shape_[d] > 0 ? (shape_[d] - 1) * stride_[d] : 0;
    const std::size_t elems = static_cast<std::size_t>(last + 1);
    image_.resize((elems * esize_ + 15) / 16 * 16);
    for (std::size_t i = 0; i < image_.size(); i += esize_) std::memcpy(&image_[i], &poison, esize_);
    in_view_.assign(image_.size() / esize_, false);
    for_each_row([&](std::size_t host_row, std::size_t at) {  // host == nullptr: an output, poisoned throughout
      if (host != nullptr)
        std::memcpy(&image_[at * esize_], static_cast<const unsigned char*>(host) + host_row * row_bytes(), row_bytes());
      std::fill_n(in_view_.begin() + static_cast<std::ptrdiff_t>(at), row_len(), true);
    });
  }
  virtual ~StridedView() = default;
  StridedView(const StridedView&) = delete;
  StridedView& operator=(const StridedView&) = delete;

  // The descriptor of the view; at most kMaxTensorDims dimensions.
  Tensor tensor() const { return descriptor(-1, 0); }
  // The view with dimension `dim` fixed at `index` (one dimension fewer): K or V of a combined cache.
  Tensor tensor_at(int dim, std::int64_t index) const { return descriptor(dim, index); }

  // The view's elements, gathered into a contiguous host array of its shape.
  template <typename E>
  void download(std::vector<E>* host) const {
    const std::vector<unsigned char> all = fetch();
    host->resize(numel());
    for_each_row([&](std::size_t host_row, std::size_t at) {
      std::memcpy(reinterpret_cast<unsigned char*>(host->data()) + host_row * row_bytes(), &all[at * esize_],
                  row_bytes());
    });
  }

  // Writes the image again (outputs poisoned before the next run).
  virtual void reset() = 0;

  // Elements outside the view whose bytes changed since the image was written.
  std::int64_t padding_written() const {
    const std::vector<unsigned char> all = fetch();
    std::int64_t n = 0;
    for (std::size_t e = 0; e < in_view_.size(); ++e)
      n += !in_view_[e] && std::memcmp(&all[e * esize_], &image_[e * esize_], esize_) != 0;
    return n;
  }

  std::string layout() const {
    std::string s = "strides {";
    for (std::size_t d = 0; d < stride_.size(); ++d) s += (d ? ", " : "") + std::to_string(stride_[d]);
    return s + "} + " + std::to_string(offset_);
  }

 protected:
  virtual std::vector<unsigned char> fetch() const = 0;  // the live allocation's bytes
  virtual unsigned char* base() const = 0;                // its first byte
  virtual Device device() const = 0;

  std::vector<unsigned char> image_;

 private:
  std::size_t numel() const {
    std::size_t n = 1;
    for (std::int64_t s : shape_) n *= static_cast<std::size_t>(s);
    return n;
  }
  // A row is a run of the innermost dimension, or one element when its stride is not 1.
  bool strided_rows() const { return !shape_.empty() && stride_.back() != 1; }
  std::size_t row_len() const { return shape_.empty() || strided_rows() ? 1 : static_cast<std::size_t>(shape_.back()); }
  std::size_t row_bytes() const { return row_len() * esize_; }

  // f(host row, allocation element of the row's first element) over every row of the view, in row-major order.
  template <class F>
  void for_each_row(F f) const {
    if (numel() == 0) return;
    const std::size_t dims = shape_.size() - (strided_rows() ? 0 : 1);
    std::vector<std::int64_t> idx(dims, 0);
    for (std::size_t row = 0;; ++row) {
      std::int64_t at = offset_;
      for (std::size_t d = 0; d < dims; ++d) at += idx[d] * stride_[d];
      f(row, static_cast<std::size_t>(at));
      std::size_t d = dims;
      while (d > 0 && ++idx[d - 1] == shape_[d - 1]) idx[--d] = 0;
      if (d == 0) break;
    }
  }

  Tensor descriptor(int fixed, std::int64_t index) const {
    Tensor t;
    t.dtype = dtype_;
    t.device = device();
    std::int64_t at = offset_;
    for (int d = 0; d < static_cast<int>(shape_.size()); ++d) {
      if (d == fixed) {
        at += index * stride_[static_cast<std::size_t>(d)];
        continue;
      }
      t.shape[t.ndim] = shape_[static_cast<std::size_t>(d)];
      t.stride[t.ndim++] = stride_[static_cast<std::size_t>(d)];
    }
    t.data = base() + at * static_cast<std::int64_t>(esize_);
    return t;
  }

  DType dtype_;
  std::size_t esize_;
  std::vector<std::int64_t> shape_, stride_;
  std::int64_t offset_;
  std::vector<bool> in_view_;
};

// A view in host memory (the allocation 16-byte aligned, as operator new gives it), for CPU descriptors.
class HostView final : public StridedView {
 public:
  HostView(const void* host, DType dtype, std::vector<std::int64_t> shape, std::vector<std::int64_t> stride,
           std::int64_t offset, std::uint32_t poison)
      : StridedView(host, dtype, std::move(shape), std::move(stride), offset, poison), live_(image_) {}
  void reset() override { std::copy(image_.begin(), image_.end(), live_.begin()); }

 protected:
  std::vector<unsigned char> fetch() const override { return live_; }
  unsigned char* base() const override { return const_cast<unsigned char*>(live_.data()); }
  Device device() const override { return Device::cpu(); }

 private:
  std::vector<unsigned char> live_;
};

// The views themselves: a round trip through four memory orders of a 3-D view, and a write outside a view (one
// element before its first, by poke(address)) caught by padding_written().
template <class View, class Poke>
void expect_views_round_trip(std::mt19937_64& rng, Poke poke) {
  std::vector<std::int32_t> host(3 * 5 * 7);
  for (std::size_t i = 0; i < host.size(); ++i) host[i] = static_cast<std::int32_t>(i);
  for (const std::vector<int>& order : std::vector<std::vector<int>>{{0, 1, 2}, {1, 0, 2}, {2, 1, 0}, {1, 2, 0}}) {
    const std::vector<std::int64_t> stride = draw_strides({3, 5, 7}, order, 4, true, rng);
    View v(host.data(), DType::kInt32, {3, 5, 7}, stride, 4, 0x7eadbeef);
    SCOPED_TRACE(v.layout());
    std::vector<std::int32_t> back;
    v.download(&back);
    EXPECT_EQ(back, host);
    EXPECT_EQ(v.padding_written(), 0);
    poke(static_cast<std::int32_t*>(v.tensor().data) - 1);
    EXPECT_EQ(v.padding_written(), 1);
  }
}

// Every tensor of a problem in View allocations (HostView or DeviceView), each in a layout drawn from rng (all
// contiguous when `views` is false), with the accessors the helpers below take. Outputs (out, lse, topk_out) start
// poisoned.
template <class View>
class ViewProblem {
 public:
  ViewProblem(const Problem& p, bool views, std::mt19937_64& rng) : views_(views), rng_(rng) {
    const std::int64_t T = p.total_q, Hq = p.spec.num_q_heads, Hkv = p.spec.num_kv_heads, k = p.spec.topk;
    const std::int64_t B = p.num_requests(), pages = p.num_pages;
    const std::uint32_t bf16_nan = 0x7fc1, f32_nan = 0x7fc00000u, wild = 0x7eadbeef;
    q_ = make(p.q.data(), DType::kBF16, {T, Hq, 128}, {{0, 1, 2}}, 8, bf16_nan);
    out_ = make(nullptr, DType::kBF16, {T, Hq, 128}, {{0, 1, 2}}, 8, bf16_nan);
    // K and V as one cache [pages, 2, Hkv, 128, 128]: two halves, or K / V interleaved per page, head or token.
    std::vector<std::uint16_t> kv(p.k_cache.size() * 2);
    const std::size_t page_elems = static_cast<std::size_t>(Hkv) * 128 * 128;
    for (std::size_t pg = 0; pg < static_cast<std::size_t>(pages); ++pg) {
      std::copy_n(p.k_cache.begin() + pg * page_elems, page_elems, kv.begin() + 2 * pg * page_elems);
      std::copy_n(p.v_cache.begin() + pg * page_elems, page_elems, kv.begin() + (2 * pg + 1) * page_elems);
    }
    kv_ = make(kv.data(), DType::kBF16, {pages, 2, Hkv, 128, 128},
               {{0, 1, 2, 3, 4}, {1, 0, 2, 3, 4}, {0, 2, 1, 3, 4}, {0, 2, 3, 1, 4}}, 8, bf16_nan);
    const bool fp8 = !p.index_q8.empty();
    const DType idt = fp8 ? DType::kFP8E4M3 : DType::kBF16;
    const std::int64_t iunit = fp8 ? 16 : 8;  // 16 bytes
    const std::uint32_t inan = fp8 ? 0x7f : bf16_nan;
    index_q_ = make(fp8 ? static_cast<const void*>(p.index_q8.data()) : p.index_q.data(), idt, {T, Hkv, 128},
                    {{0, 1, 2}}, iunit, inan);
    index_k_ = make(fp8 ? static_cast<const void*>(p.index_k_cache8.data()) : p.index_k_cache.data(), idt,
                    {pages, 128, 128}, {{0, 1, 2}}, iunit, inan);
    page_table_ = make(p.page_table.data(), DType::kInt32, {B, p.max_pages}, {{0, 1}, {1, 0}}, 1, wild);
    cu_seqlens_q_ = lengths(p.cu_seqlens_q, wild);
    seq_lens_k_ = lengths(p.seq_lens_k, wild);
    topk_ = make(p.topk.data(), DType::kInt32, {Hkv, T, k}, {{0, 1, 2}, {1, 0, 2}}, 1, wild);
    topk_out_ = make(nullptr, DType::kInt32, {Hkv, T, k}, {{0, 1, 2}, {1, 0, 2}}, 1, wild);
    lse_ = make(nullptr, DType::kFP32, {T, Hq}, {{0, 1}, {1, 0}}, 1, f32_nan);
  }

  ViewProblem(const ViewProblem&) = delete;
  ViewProblem& operator=(const ViewProblem&) = delete;

  Tensor q_t() const { return on_stream(q_->tensor()); }
  Tensor k_cache_t() const { return on_stream(kv_->tensor_at(1, 0)); }
  Tensor v_cache_t() const { return on_stream(kv_->tensor_at(1, 1)); }
  Tensor index_q_t() const { return on_stream(index_q_->tensor()); }
  Tensor index_k_cache_t() const { return on_stream(index_k_->tensor()); }
  Tensor page_table_t() const { return on_stream(page_table_->tensor()); }
  Tensor cu_seqlens_q_t() const { return on_stream(cu_seqlens_q_->tensor()); }
  Tensor seq_lens_k_t() const { return on_stream(seq_lens_k_->tensor()); }
  Tensor topk_t() const { return on_stream(topk_->tensor()); }
  Tensor topk_out_t() const { return on_stream(topk_out_->tensor()); }
  Tensor out_t() const { return on_stream(out_->tensor()); }
  Tensor lse_t() const { return on_stream(lse_->tensor()); }

  void before_run() {}  // the inputs are in place (DeviceViewProblem may delay them)

  void download(Problem& p, std::vector<std::uint16_t>* o, std::vector<float>* l, bool selection) const {
    out_->download(o);
    lse_->download(l);
    if (selection) topk_out_->download(&p.topk);
  }

  void expect_padding_untouched() const {
    EXPECT_EQ(out_->padding_written(), 0) << "out elements written outside the view";
    EXPECT_EQ(lse_->padding_written(), 0) << "lse elements written outside the view";
    EXPECT_EQ(topk_out_->padding_written(), 0) << "topk elements written outside the view";
  }

  // Poisons the outputs again, padding included.
  void reset_outputs() {
    out_->reset();
    lse_->reset();
    topk_out_->reset();
  }

  std::string describe() const {
    if (!views_) return "contiguous";
    return "views: q " + q_->layout() + ", kv " + kv_->layout() + ", index_k " + index_k_->layout() + ", page_table " +
           page_table_->layout() + ", seq_lens_k " + seq_lens_k_->layout() + ", topk " + topk_->layout() + ", lse " +
           lse_->layout();
  }

 protected:
  // A view of `shape` in one of `orders` (the first when contiguous), outer strides padded in units of `unit`
  // elements, at an offset of 0-2 units.
  std::unique_ptr<View> make(const void* host, DType dtype, std::vector<std::int64_t> shape,
                             const std::vector<std::vector<int>>& orders, std::int64_t unit, std::uint32_t poison) {
    const std::vector<int>& order =
        views_ ? orders[std::uniform_int_distribution<std::size_t>(0, orders.size() - 1)(rng_)] : orders[0];
    std::vector<std::int64_t> stride = draw_strides(shape, order, unit, views_, rng_);
    const std::int64_t offset = views_ ? unit * std::uniform_int_distribution<std::int64_t>(0, 2)(rng_) : 0;
    return std::make_unique<View>(host, dtype, std::move(shape), std::move(stride), offset, poison);
  }

  // A 1-D int32 array: every element, or (views) every other one of a wider array.
  std::unique_ptr<View> lengths(const std::vector<std::int32_t>& host, std::uint32_t poison) {
    const bool every_other = views_ && std::uniform_int_distribution<int>(0, 1)(rng_) == 1;
    const std::int64_t offset = views_ ? std::uniform_int_distribution<std::int64_t>(0, 2)(rng_) : 0;
    return std::make_unique<View>(host.data(), DType::kInt32,
                                  std::vector<std::int64_t>{static_cast<std::int64_t>(host.size())},
                                  std::vector<std::int64_t>{every_other ? 2 : 1}, offset, poison);
  }

  Tensor on_stream(Tensor t) const {
    t.device.stream = stream_;
    return t;
  }

  bool views_;
  std::mt19937_64& rng_;
  void* stream_ = nullptr;  // every descriptor's stream (a cudaStream_t)
  std::unique_ptr<View> q_, kv_, index_q_, index_k_, page_table_, cu_seqlens_q_, seq_lens_k_, topk_, topk_out_,
      out_, lse_;
};

// After a layer op (MsaPrefill or MsaDecode) ran on d's tensors: its topk output by the selection contract, its out /
// LSE by the error rule on that selection (bf16_partials: see expect_attention_rule), no write outside an output's
// view; returns out. sm_scale: the op's (0: 1/sqrt(128)).
template <typename D>
std::vector<std::uint16_t> check_layer_outputs(Problem& p, const D& d, bool bf16_partials = false,
                                               double sm_scale = 0.0) {
  // fp8 index tensors: the contract with the fp8 tolerance of test_sm90_indexer.cpp (reduced-precision sums).
  const double selection_tol = p.index_q8.empty() ? 1e-3 : 1e-2;
  std::vector<std::uint16_t> out;
  std::vector<float> lse;
  d.download(p, &out, &lse, true);
  d.expect_padding_untouched();
  expect_selection_contract(p, selection_tol);
  expect_attention_rule(p, out, lse, sm_scale, bf16_partials);
  return out;
}

// A layer op's run arguments without the optional outputs a round drew to leave out: the LSE, and the topk output
// (the selection then lives in the workspace).
template <typename RunArgs>
RunArgs without_optional_outputs(RunArgs ra, bool drop_lse, bool drop_topk) {
  if (drop_lse) ra.lse = Tensor{};
  if (drop_topk) ra.topk = Tensor{};
  return ra;
}

// Runs a planned layer op once more on d's reset outputs, the LSE and the topk output left out at random (sync()
// waits for the run): out equal to `out` bit for bit, the selection (unless left out) equal to p.topk's, nothing
// written outside the views.
template <typename Layer, typename RunArgs, typename D, typename Sync>
void expect_rerun_without_optional_outputs(Layer& layer, const RunArgs& ra, void* ws, std::size_t ws_bytes, Problem& p,
                                           D& d, const std::vector<std::uint16_t>& out, std::mt19937_64& rng,
                                           Sync sync) {
  const std::vector<std::int32_t> topk = p.topk;
  const bool drop_lse = std::uniform_int_distribution<int>(0, 1)(rng) == 1;
  const bool drop_topk = std::uniform_int_distribution<int>(0, 1)(rng) == 1;
  SCOPED_TRACE(std::string("second run") + (drop_lse ? " without lse" : "") + (drop_topk ? " without topk" : ""));
  d.reset_outputs();
  const Status st = layer.run(without_optional_outputs(ra, drop_lse, drop_topk), ws, ws_bytes);
  ASSERT_TRUE(st.ok()) << st.to_string();
  sync();
  std::vector<std::uint16_t> again;
  std::vector<float> lse;
  d.download(p, &again, &lse, !drop_topk);
  d.expect_padding_untouched();
  EXPECT_EQ(out, again);
  EXPECT_EQ(topk, p.topk);  // unchanged when the topk output was left out
}

// MsaPrefill's run arguments over a problem's device tensors (the selection into topk_out).
template <typename D>
MsaPrefillRunArgs prefill_layer_args(const D& d) {
  return {d.q_t(),   d.k_cache_t(), d.v_cache_t(), d.index_q_t(), d.index_k_cache_t(),
          d.out_t(), d.lse_t(),     d.topk_out_t()};
}

// MsaDecode's run arguments over a problem's device tensors (the selection into topk_out).
template <typename D>
MsaDecodeRunArgs decode_layer_args(const D& d) {
  return {d.q_t(),          d.k_cache_t(),  d.v_cache_t(), d.index_q_t(), d.index_k_cache_t(),
          d.page_table_t(), d.seq_lens_k_t(), d.out_t(),     d.lse_t(),     d.topk_out_t()};
}

}  // namespace test
}  // namespace msa

#endif  // MSA_TESTS_VIEWS_H_
