// device_views.h — views.h's strided test tensors in GPU memory (CUDA builds only), and late inputs: the ops run on
// a non-blocking stream whose inputs land only after a 100 ms host sleep queued on it, so an op whose work does not
// wait for its stream's earlier work reads 0xff bytes (NaN, bad ids) and fails.
#ifndef MSA_TESTS_DEVICE_VIEWS_H_
#define MSA_TESTS_DEVICE_VIEWS_H_

#include <chrono>
#include <initializer_list>
#include <thread>

#include "cuda_test_util.h"
#include "views.h"

namespace msa {
namespace test {

// A view in device memory (CUDA device 0).
class DeviceView final : public StridedView {
 public:
  DeviceView(const void* host, DType dtype, std::vector<std::int64_t> shape, std::vector<std::int64_t> stride,
             std::int64_t offset, std::uint32_t poison)
      : StridedView(host, dtype, std::move(shape), std::move(stride), offset, poison),
        buf_(std::make_unique<DeviceBuffer<unsigned char>>(image_)) {}
  void reset() override { buf_->upload(image_); }

  // Fills the allocation with 0xff bytes (keeping a device copy of the image for restore_on).
  void scramble() {
    if (!pristine_) pristine_ = std::make_unique<DeviceBuffer<unsigned char>>(image_);
    EXPECT_EQ(cudaMemset(buf_->ptr, 0xff, image_.size()), cudaSuccess);
  }
  // Enqueues on `stream` the copy of the image back into the allocation (device to device: in stream order).
  void restore_on(cudaStream_t stream) {
    EXPECT_EQ(cudaMemcpyAsync(buf_->ptr, pristine_->ptr, image_.size(), cudaMemcpyDeviceToDevice, stream), cudaSuccess);
  }

 protected:
  std::vector<unsigned char> fetch() const override {
    std::vector<unsigned char> all(image_.size());
    buf_->download(&all);
    return all;
  }
  unsigned char* base() const override { return buf_->ptr; }
  Device device() const override { return Device::cuda(0); }

 private:
  std::unique_ptr<DeviceBuffer<unsigned char>> buf_, pristine_;
};

// A problem's tensors in device views; with late_inputs the ops run on a non-blocking stream of its own whose inputs
// land late (before_run).
class DeviceViewProblem : public ViewProblem<DeviceView> {
 public:
  DeviceViewProblem(const Problem& p, bool views, std::mt19937_64& rng, bool late_inputs = false)
      : ViewProblem<DeviceView>(p, views, rng) {
    if (late_inputs) {
      cudaStream_t s = nullptr;
      EXPECT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
      stream_ = s;
    }
  }
  ~DeviceViewProblem() {
    if (stream_ != nullptr) cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
  }

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
    const auto s = static_cast<cudaStream_t>(stream_);
    EXPECT_EQ(cudaLaunchHostFunc(s, sleep, nullptr), cudaSuccess);
    for (DeviceView* v : inputs) v->restore_on(s);
  }

  std::string describe() const {
    return (stream_ != nullptr ? "late inputs on a non-blocking stream, " : "") + ViewProblem<DeviceView>::describe();
  }

 private:
  bool delayed_ = false;
};

}  // namespace test
}  // namespace msa

#endif  // MSA_TESTS_DEVICE_VIEWS_H_
