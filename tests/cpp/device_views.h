// device_views.h — GPU test tensors in strided layouts (CUDA builds only). A tensor of a testing::Problem is copied
// into a device allocation under strides and an offset drawn at random: padded rows and heads (16-byte units for the
// bulk operands), q and out as views into wider rows (fused projections), K and V interleaved in one paged cache in
// any of four orders, head-major LSE, token-major topk, a column-major page table, every other element of the
// lengths. Everything outside the view holds a poison value: inputs read there show as NaN or wild ids, and an
// output whose kernel writes outside its view fails `expect_padding_untouched`.
#ifndef MSA_TESTS_DEVICE_VIEWS_H_
#define MSA_TESTS_DEVICE_VIEWS_H_

#include <chrono>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cuda_test_util.h"

namespace msa {
namespace test {

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

// One tensor in a device allocation: elements at offset + sum(i_d * stride_d), poison everywhere else.
class DeviceView {
 public:
  DeviceView(const void* host, DType dtype, std::vector<std::int64_t> shape, std::vector<std::int64_t> stride,
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
    buf_ = std::make_unique<DeviceBuffer<unsigned char>>(image_);
  }

  // The CUDA descriptor of the view (on device 0); at most kMaxTensorDims dimensions.
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

  // Writes the uploaded image again (outputs poisoned before the next run).
  void reset() { buf_->upload(image_); }

  // Fills the allocation with 0xff bytes (keeping a device copy of the image for restore_on).
  void scramble() {
    if (!pristine_) pristine_ = std::make_unique<DeviceBuffer<unsigned char>>(image_);
    EXPECT_EQ(cudaMemset(buf_->ptr, 0xff, image_.size()), cudaSuccess);
  }
  // Enqueues on `stream` the copy of the image back into the allocation (device to device: in stream order).
  void restore_on(cudaStream_t stream) {
    EXPECT_EQ(cudaMemcpyAsync(buf_->ptr, pristine_->ptr, image_.size(), cudaMemcpyDeviceToDevice, stream), cudaSuccess);
  }

  // Elements outside the view whose bytes changed since the upload.
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

  std::vector<unsigned char> fetch() const {
    std::vector<unsigned char> all(image_.size());
    buf_->download(&all);
    return all;
  }

  Tensor descriptor(int fixed, std::int64_t index) const {
    Tensor t;
    t.dtype = dtype_;
    t.device = Device::cuda(0);
    std::int64_t at = offset_;
    for (int d = 0; d < static_cast<int>(shape_.size()); ++d) {
      if (d == fixed) {
        at += index * stride_[static_cast<std::size_t>(d)];
        continue;
      }
      t.shape[t.ndim] = shape_[static_cast<std::size_t>(d)];
      t.stride[t.ndim++] = stride_[static_cast<std::size_t>(d)];
    }
    t.data = buf_->ptr + at * static_cast<std::int64_t>(esize_);
    return t;
  }

  DType dtype_;
  std::size_t esize_;
  std::vector<std::int64_t> shape_, stride_;
  std::int64_t offset_;
  std::vector<unsigned char> image_;
  std::vector<bool> in_view_;
  std::unique_ptr<DeviceBuffer<unsigned char>> buf_, pristine_;
};

// Every tensor of a problem on the device, each in a layout drawn from rng (all contiguous when `views` is false),
// with DeviceProblem's accessors. Outputs (out, lse, topk_out) start poisoned.
class ViewProblem {
 public:
  // late_inputs: the ops run on a non-blocking stream whose inputs land only after a 100 ms host sleep queued on it
  // (before_run): an op whose work does not wait for its stream's earlier work reads 0xff bytes (NaN, bad ids).
  ViewProblem(const Problem& p, bool views, std::mt19937_64& rng, bool late_inputs = false)
      : views_(views), rng_(rng) {
    if (late_inputs) {
      EXPECT_EQ(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), cudaSuccess);
    }
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
  ~ViewProblem() {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

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

  // Called right before an op's run() (after its plan, which may read the batch metadata): with late inputs, the
  // first time, every input is overwritten and queued to come back after the sleep.
  void before_run() {
    if (stream_ == nullptr || delayed_) return;
    delayed_ = true;
    const std::initializer_list<DeviceView*> inputs = {q_.get(),          kv_.get(),           index_q_.get(),
                                                       index_k_.get(),    page_table_.get(),   cu_seqlens_q_.get(),
                                                       seq_lens_k_.get(), topk_.get()};
    for (DeviceView* v : inputs) v->scramble();
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // the fills are done before the stream's copies can start
    auto sleep = [](void*) { std::this_thread::sleep_for(std::chrono::milliseconds(100)); };
    EXPECT_EQ(cudaLaunchHostFunc(stream_, sleep, nullptr), cudaSuccess);
    for (DeviceView* v : inputs) v->restore_on(stream_);
  }

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
    const std::string late = stream_ != nullptr ? "late inputs on a non-blocking stream, " : "";
    if (!views_) return late + "contiguous";
    return late + "views: q " + q_->layout() + ", kv " + kv_->layout() + ", index_k " + index_k_->layout() + ", page_table " +
           page_table_->layout() + ", seq_lens_k " + seq_lens_k_->layout() + ", topk " + topk_->layout() + ", lse " +
           lse_->layout();
  }

 private:
  // A view of `shape` in one of `orders` (the first when contiguous), outer strides padded in units of `unit`
  // elements, at an offset of 0-2 units.
  std::unique_ptr<DeviceView> make(const void* host, DType dtype, std::vector<std::int64_t> shape,
                                   const std::vector<std::vector<int>>& orders, std::int64_t unit,
                                   std::uint32_t poison) {
    const std::vector<int>& order =
        views_ ? orders[std::uniform_int_distribution<std::size_t>(0, orders.size() - 1)(rng_)] : orders[0];
    std::vector<std::int64_t> stride = draw_strides(shape, order, unit, views_, rng_);
    const std::int64_t offset = views_ ? unit * std::uniform_int_distribution<std::int64_t>(0, 2)(rng_) : 0;
    return std::make_unique<DeviceView>(host, dtype, std::move(shape), std::move(stride), offset, poison);
  }

  // A 1-D int32 array: every element, or (views) every other one of a wider array.
  std::unique_ptr<DeviceView> lengths(const std::vector<std::int32_t>& host, std::uint32_t poison) {
    const bool every_other = views_ && std::uniform_int_distribution<int>(0, 1)(rng_) == 1;
    const std::int64_t offset = views_ ? std::uniform_int_distribution<std::int64_t>(0, 2)(rng_) : 0;
    return std::make_unique<DeviceView>(host.data(), DType::kInt32,
                                        std::vector<std::int64_t>{static_cast<std::int64_t>(host.size())},
                                        std::vector<std::int64_t>{every_other ? 2 : 1}, offset, poison);
  }

  Tensor on_stream(Tensor t) const {
    t.device.stream = stream_;
    return t;
  }

  bool views_, delayed_ = false;
  std::mt19937_64& rng_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<DeviceView> q_, kv_, index_q_, index_k_, page_table_, cu_seqlens_q_, seq_lens_k_, topk_, topk_out_,
      out_, lse_;
};

}  // namespace test
}  // namespace msa

#endif  // MSA_TESTS_DEVICE_VIEWS_H_
