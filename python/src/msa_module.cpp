// msa_module.cpp — msa._msa, the Python binding of the C++ ops: every tensor argument is any DLPack-capable array
// (NumPy, PyTorch, CuPy, JAX), passed through as a pointer with its shape and strides, never copied. Errors of the
// core become Python exceptions carrying the core's message: invalid arguments → ValueError, not implemented →
// NotImplementedError, CUDA and internal errors → RuntimeError.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>

#include <cstdint>
#include <string>
#include <vector>

#include "msa/msa.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

// Holds the DLPack views of one call's arguments, so every pointer stays valid until the op returns.
class Args {
 public:
  // A tensor argument: None → absent; a (array, "bf16") pair marks a 2-byte integer array as bf16 bit patterns,
  // (array, "fp8_e4m3") a 1-byte integer array as e4m3 bit patterns (NumPy has neither type); anything else must
  // export DLPack or the buffer protocol.
  msa::Tensor tensor(nb::handle obj, const char* name, std::uintptr_t stream) {
    if (obj.is_none()) return msa::Tensor{};
    std::string bits;  // "", "bf16" or "fp8_e4m3"
    nb::handle array = obj;
    if (nb::isinstance<nb::tuple>(obj)) {
      nb::tuple pair = nb::borrow<nb::tuple>(obj);
      if (pair.size() == 2 && nb::isinstance<nb::str>(pair[1])) bits = nb::cast<std::string>(pair[1]);
      if (bits != "bf16" && bits != "fp8_e4m3")
        throw nb::type_error(
            (std::string(name) + ": a tuple argument must be (array, \"bf16\") or (array, \"fp8_e4m3\")").c_str());
      array = pair[0];
    }
    nb::ndarray<> nd;
    if (!nb::try_cast(array, nd))
      throw nb::type_error((std::string(name) + ": expected an array supporting DLPack or the buffer protocol").c_str());
    views_.push_back(nd);
    msa::Tensor t;
    t.data = nd.data();
    t.ndim = static_cast<int>(nd.ndim());
    if (t.ndim > msa::kMaxTensorDims)
      throw nb::value_error((std::string(name) + ": at most 4 dimensions").c_str());
    for (int d = 0; d < t.ndim; ++d) {
      t.shape[d] = static_cast<std::int64_t>(nd.shape(static_cast<std::size_t>(d)));
      t.stride[d] = static_cast<std::int64_t>(nd.stride(static_cast<std::size_t>(d)));
    }
    t.dtype = dtype_of(nd.dtype(), bits, name);
    if (nd.device_type() == nb::device::cpu::value)
      t.device = msa::Device::cpu();
    else if (nd.device_type() == nb::device::cuda::value)
      t.device = msa::Device::cuda(nd.device_id(), reinterpret_cast<void*>(stream));
    else
      throw nb::value_error((std::string(name) + ": only CPU and CUDA arrays are supported").c_str());
    return t;
  }

  // Any contiguous array as raw scratch memory: (pointer, bytes). The core sees only a pointer, so the binding checks
  // that the memory lies where the op runs: on the device of `like` (the call's first tensor, named like_name; when
  // that one is missing, the core reports it).
  std::pair<void*, std::size_t> workspace(nb::handle obj, const msa::Tensor& like, const char* like_name) {
    if (obj.is_none()) return {nullptr, 0};
    nb::ndarray<> nd;
    if (!nb::try_cast(obj, nd)) throw nb::type_error("workspace: expected an array");
    const bool cuda = nd.device_type() == nb::device::cuda::value;
    if (!cuda && nd.device_type() != nb::device::cpu::value)
      throw nb::value_error("workspace: only CPU and CUDA arrays are supported");
    if (like.present() && (cuda != like.device.is_cuda() || (cuda && nd.device_id() != like.device.index)))
      throw nb::value_error((std::string("workspace: must be on the device of ") + like_name + " (" +
                             device_name(like.device) + "), got " +
                             device_name(cuda ? msa::Device::cuda(nd.device_id()) : msa::Device::cpu()))
                                .c_str());
    std::int64_t expect = 1;  // elements: the core addresses nbytes() from data(), so no gaps may lie in between
    for (std::size_t d = nd.ndim(); nd.size() > 0 && d-- > 0;) {
      if (nd.shape(d) != 1 && nd.stride(d) != expect)
        throw nb::value_error("workspace: must be a contiguous array");
      expect *= static_cast<std::int64_t>(nd.shape(d));
    }
    views_.push_back(nd);
    return {nd.data(), nd.nbytes()};
  }

 private:
  static msa::DType dtype_of(nb::dlpack::dtype dt, const std::string& bits, const char* name) {
    const auto code = static_cast<nb::dlpack::dtype_code>(dt.code);
    const bool integer = code == nb::dlpack::dtype_code::Int || code == nb::dlpack::dtype_code::UInt;
    if (bits == "bf16") {
      if (integer && dt.bits == 16) return msa::DType::kBF16;
      throw nb::type_error((std::string(name) + ": bf16 bits must be a 16-bit integer array").c_str());
    }
    if (bits == "fp8_e4m3") {
      if (integer && dt.bits == 8) return msa::DType::kFP8E4M3;
      throw nb::type_error((std::string(name) + ": fp8_e4m3 bits must be an 8-bit integer array").c_str());
    }
    // DLPack's kDLFloat8_e4m3fn (code 10), e.g. torch.float8_e4m3fn where the framework exports it.
    if (static_cast<int>(dt.code) == 10 && dt.bits == 8) return msa::DType::kFP8E4M3;
    if (code == nb::dlpack::dtype_code::Bfloat && dt.bits == 16) return msa::DType::kBF16;
    if (code == nb::dlpack::dtype_code::Float && dt.bits == 16) return msa::DType::kFP16;
    if (code == nb::dlpack::dtype_code::Float && dt.bits == 32) return msa::DType::kFP32;
    if (code == nb::dlpack::dtype_code::Int && dt.bits == 32) return msa::DType::kInt32;
    throw nb::type_error((std::string(name) + ": unsupported dtype (bf16, fp16, fp32, int32 or fp8_e4m3)").c_str());
  }

  static std::string device_name(const msa::Device& d) {
    return d.is_cuda() ? "cuda:" + std::to_string(d.index) : std::string("cpu");
  }

  std::vector<nb::ndarray<>> views_;
};

void check(const msa::Status& st) {
  if (st.ok()) return;
  switch (st.code()) {
    case msa::StatusCode::kInvalidArgument: throw nb::value_error(st.message().c_str());
    case msa::StatusCode::kNotImplemented:
      PyErr_SetString(PyExc_NotImplementedError, st.message().c_str());
      throw nb::python_error();
    default: throw std::runtime_error(st.to_string());
  }
}

// The prefill schedule by name: "auto", "kv_outer" or "union" (SparsePrefillPlanArgs::schedule).
msa::PrefillSchedule schedule_of(const std::string& name) {
  if (name == "auto") return msa::PrefillSchedule::kAuto;
  if (name == "kv_outer") return msa::PrefillSchedule::kKvOuter;
  if (name == "union") return msa::PrefillSchedule::kUnion;
  throw nb::value_error(("schedule: must be 'auto', 'kv_outer' or 'union', got '" + name + "'").c_str());
}

msa::IndexPrefillArgs prefill_args(Args& a, nb::handle index_q, nb::handle index_k_cache, nb::handle page_table,
                                   nb::handle cu_seqlens_q, nb::handle seq_lens_k, nb::handle topk,
                                   std::uintptr_t stream) {
  msa::IndexPrefillArgs p;
  p.index_q = a.tensor(index_q, "index_q", stream);
  p.index_k_cache = a.tensor(index_k_cache, "index_k_cache", stream);
  p.page_table = a.tensor(page_table, "page_table", stream);
  p.cu_seqlens_q = a.tensor(cu_seqlens_q, "cu_seqlens_q", stream);
  p.seq_lens_k = a.tensor(seq_lens_k, "seq_lens_k", stream);
  p.topk = a.tensor(topk, "topk", stream);
  return p;
}

msa::IndexDecodeArgs decode_args(Args& a, nb::handle index_q, nb::handle index_k_cache, nb::handle page_table,
                                 nb::handle seq_lens_k, nb::handle topk, int queries_per_request,
                                 std::uintptr_t stream) {
  msa::IndexDecodeArgs d;
  d.index_q = a.tensor(index_q, "index_q", stream);
  d.index_k_cache = a.tensor(index_k_cache, "index_k_cache", stream);
  d.page_table = a.tensor(page_table, "page_table", stream);
  d.seq_lens_k = a.tensor(seq_lens_k, "seq_lens_k", stream);
  d.topk = a.tensor(topk, "topk", stream);
  d.queries_per_request = queries_per_request;
  return d;
}

// plan() and workspace_bytes() of SparseDecodeAttention and MsaDecode, which take the same decode capacities;
// cuda_device < 0 means the CPU.
template <class Op>
void def_decode_plan(nb::class_<Op>& cls) {
  cls.def(
         "plan",
         [](Op& self, int batch_size, int queries_per_request, int num_q_heads, int num_kv_heads, int topk,
            double sm_scale, int cuda_device) {
           msa::SparseDecodePlanArgs p;
           p.batch_size = batch_size;
           p.queries_per_request = queries_per_request;
           p.num_q_heads = num_q_heads;
           p.num_kv_heads = num_kv_heads;
           p.topk = topk;
           p.sm_scale = sm_scale;
           p.device = cuda_device < 0 ? msa::Device::cpu() : msa::Device::cuda(cuda_device);
           check(self.plan(p));
         },
         "batch_size"_a, "queries_per_request"_a = 1, "num_q_heads"_a = msa::kM3NumQHeads,
         "num_kv_heads"_a = msa::kM3NumKVHeads, "topk"_a = msa::kDefaultTopK, "sm_scale"_a = 0.0,
         "cuda_device"_a = -1)
      .def("workspace_bytes", &Op::workspace_bytes);
}

}  // namespace

NB_MODULE(_msa, m) {
  m.doc() = "msa: MiniMax Sparse Attention kernels (C++ core binding)";
  m.def("version", [] { return std::string(msa::version()); });
  m.def("sm90_device_available", [] { return msa::sm90_device_available(); });

  m.def(
      "index_select_prefill",
      [](nb::handle index_q, nb::handle index_k_cache, nb::handle page_table, nb::handle cu_seqlens_q,
         nb::handle seq_lens_k, nb::handle topk, nb::handle workspace, std::uintptr_t stream) {
        Args a;
        const msa::IndexPrefillArgs p =
            prefill_args(a, index_q, index_k_cache, page_table, cu_seqlens_q, seq_lens_k, topk, stream);
        const auto ws = a.workspace(workspace, p.index_q, "index_q");
        check(msa::index_select_prefill(p, ws.first, ws.second));
      },
      "index_q"_a, "index_k_cache"_a, "page_table"_a, "cu_seqlens_q"_a, "seq_lens_k"_a, "topk"_a,
      "workspace"_a = nb::none(), "stream"_a = 0);
  m.def(
      "index_select_decode_workspace_size",
      [](nb::handle index_q, nb::handle index_k_cache, nb::handle page_table, nb::handle seq_lens_k, nb::handle topk,
         int queries_per_request) {
        Args a;
        const msa::IndexDecodeArgs d =
            decode_args(a, index_q, index_k_cache, page_table, seq_lens_k, topk, queries_per_request, 0);
        std::size_t bytes = 0;
        check(msa::index_select_decode_workspace_size(d, &bytes));
        return bytes;
      },
      "index_q"_a, "index_k_cache"_a, "page_table"_a, "seq_lens_k"_a, "topk"_a, "queries_per_request"_a);
  m.def(
      "index_select_decode",
      [](nb::handle index_q, nb::handle index_k_cache, nb::handle page_table, nb::handle seq_lens_k, nb::handle topk,
         int queries_per_request, nb::handle workspace, std::uintptr_t stream) {
        Args a;
        const msa::IndexDecodeArgs d =
            decode_args(a, index_q, index_k_cache, page_table, seq_lens_k, topk, queries_per_request, stream);
        const auto ws = a.workspace(workspace, d.index_q, "index_q");
        check(msa::index_select_decode(d, ws.first, ws.second));
      },
      "index_q"_a, "index_k_cache"_a, "page_table"_a, "seq_lens_k"_a, "topk"_a, "queries_per_request"_a,
      "workspace"_a = nb::none(), "stream"_a = 0);
  m.def(
      "combine",
      [](nb::handle partial_out, nb::handle partial_lse, nb::handle split_counts, nb::handle out, nb::handle lse,
         std::uintptr_t stream) {
        Args a;
        msa::CombineArgs c;
        c.partial_out = a.tensor(partial_out, "partial_out", stream);
        c.partial_lse = a.tensor(partial_lse, "partial_lse", stream);
        c.split_counts = a.tensor(split_counts, "split_counts", stream);
        c.out = a.tensor(out, "out", stream);
        c.lse = a.tensor(lse, "lse", stream);
        check(msa::combine(c));
      },
      "partial_out"_a, "partial_lse"_a, "split_counts"_a, "out"_a, "lse"_a = nb::none(), "stream"_a = 0);

  nb::class_<msa::SparsePrefillAttention>(m, "SparsePrefillAttention")
      .def(nb::init<>())
      .def(
          "plan",
          [](msa::SparsePrefillAttention& self, nb::handle topk, nb::handle cu_seqlens_q, nb::handle seq_lens_k,
             nb::handle page_table, int num_q_heads, int num_kv_heads, double sm_scale, std::int64_t max_chunk_tokens,
             const std::string& schedule) {
            Args a;
            msa::SparsePrefillPlanArgs p;
            p.schedule = schedule_of(schedule);
            p.topk = a.tensor(topk, "topk", 0);
            p.cu_seqlens_q = a.tensor(cu_seqlens_q, "cu_seqlens_q", 0);
            p.seq_lens_k = a.tensor(seq_lens_k, "seq_lens_k", 0);
            p.page_table = a.tensor(page_table, "page_table", 0);
            p.num_q_heads = num_q_heads;
            p.num_kv_heads = num_kv_heads;
            p.sm_scale = sm_scale;
            p.max_chunk_tokens = max_chunk_tokens;
            check(self.plan(p));
          },
          "topk"_a, "cu_seqlens_q"_a, "seq_lens_k"_a, "page_table"_a, "num_q_heads"_a = msa::kM3NumQHeads,
          "num_kv_heads"_a = msa::kM3NumKVHeads, "sm_scale"_a = 0.0, "max_chunk_tokens"_a = 0, "schedule"_a = "auto")
      .def("workspace_bytes", &msa::SparsePrefillAttention::workspace_bytes)
      .def(
          "run",
          [](msa::SparsePrefillAttention& self, nb::handle q, nb::handle k_cache, nb::handle v_cache, nb::handle out,
             nb::handle lse, nb::handle workspace, std::uintptr_t stream) {
            Args a;
            msa::SparsePrefillRunArgs r;
            r.q = a.tensor(q, "q", stream);
            r.k_cache = a.tensor(k_cache, "k_cache", stream);
            r.v_cache = a.tensor(v_cache, "v_cache", stream);
            r.out = a.tensor(out, "out", stream);
            r.lse = a.tensor(lse, "lse", stream);
            const auto ws = a.workspace(workspace, r.q, "q");
            check(self.run(r, ws.first, ws.second));
          },
          "q"_a, "k_cache"_a, "v_cache"_a, "out"_a, "lse"_a = nb::none(), "workspace"_a = nb::none(), "stream"_a = 0);

  nb::class_<msa::MsaPrefill>(m, "MsaPrefill")
      .def(nb::init<>())
      .def(
          "plan",
          [](msa::MsaPrefill& self, nb::handle cu_seqlens_q, nb::handle seq_lens_k, nb::handle page_table,
             std::int64_t total_q, int num_q_heads, int num_kv_heads, int topk, double sm_scale,
             std::int64_t max_chunk_tokens, const std::string& schedule) {
            Args a;
            msa::MsaPrefillPlanArgs p;
            p.schedule = schedule_of(schedule);
            p.cu_seqlens_q = a.tensor(cu_seqlens_q, "cu_seqlens_q", 0);
            p.seq_lens_k = a.tensor(seq_lens_k, "seq_lens_k", 0);
            p.page_table = a.tensor(page_table, "page_table", 0);
            p.total_q = total_q;
            p.num_q_heads = num_q_heads;
            p.num_kv_heads = num_kv_heads;
            p.topk = topk;
            p.sm_scale = sm_scale;
            p.max_chunk_tokens = max_chunk_tokens;
            check(self.plan(p));
          },
          "cu_seqlens_q"_a, "seq_lens_k"_a, "page_table"_a, "total_q"_a, "num_q_heads"_a = msa::kM3NumQHeads,
          "num_kv_heads"_a = msa::kM3NumKVHeads, "topk"_a = msa::kDefaultTopK, "sm_scale"_a = 0.0,
          "max_chunk_tokens"_a = 0, "schedule"_a = "auto")
      .def("workspace_bytes", &msa::MsaPrefill::workspace_bytes)
      .def(
          "run",
          [](msa::MsaPrefill& self, nb::handle q, nb::handle k_cache, nb::handle v_cache, nb::handle index_q,
             nb::handle index_k_cache, nb::handle out, nb::handle lse, nb::handle topk, nb::handle workspace,
             std::uintptr_t stream) {
            Args a;
            msa::MsaPrefillRunArgs r;
            r.q = a.tensor(q, "q", stream);
            r.k_cache = a.tensor(k_cache, "k_cache", stream);
            r.v_cache = a.tensor(v_cache, "v_cache", stream);
            r.index_q = a.tensor(index_q, "index_q", stream);
            r.index_k_cache = a.tensor(index_k_cache, "index_k_cache", stream);
            r.out = a.tensor(out, "out", stream);
            r.lse = a.tensor(lse, "lse", stream);
            r.topk = a.tensor(topk, "topk", stream);
            const auto ws = a.workspace(workspace, r.q, "q");
            check(self.run(r, ws.first, ws.second));
          },
          "q"_a, "k_cache"_a, "v_cache"_a, "index_q"_a, "index_k_cache"_a, "out"_a, "lse"_a = nb::none(),
          "topk"_a = nb::none(), "workspace"_a = nb::none(), "stream"_a = 0);

  auto decode = nb::class_<msa::MsaDecode>(m, "MsaDecode");
  decode.def(nb::init<>());
  def_decode_plan(decode);
  decode
      .def(
          "run",
          [](msa::MsaDecode& self, nb::handle q, nb::handle k_cache, nb::handle v_cache, nb::handle index_q,
             nb::handle index_k_cache, nb::handle page_table, nb::handle seq_lens_k, nb::handle out, nb::handle lse,
             nb::handle topk, nb::handle workspace, std::uintptr_t stream) {
            Args a;
            msa::MsaDecodeRunArgs r;
            r.q = a.tensor(q, "q", stream);
            r.k_cache = a.tensor(k_cache, "k_cache", stream);
            r.v_cache = a.tensor(v_cache, "v_cache", stream);
            r.index_q = a.tensor(index_q, "index_q", stream);
            r.index_k_cache = a.tensor(index_k_cache, "index_k_cache", stream);
            r.page_table = a.tensor(page_table, "page_table", stream);
            r.seq_lens_k = a.tensor(seq_lens_k, "seq_lens_k", stream);
            r.out = a.tensor(out, "out", stream);
            r.lse = a.tensor(lse, "lse", stream);
            r.topk = a.tensor(topk, "topk", stream);
            const auto ws = a.workspace(workspace, r.q, "q");
            check(self.run(r, ws.first, ws.second));
          },
          "q"_a, "k_cache"_a, "v_cache"_a, "index_q"_a, "index_k_cache"_a, "page_table"_a, "seq_lens_k"_a, "out"_a,
          "lse"_a = nb::none(), "topk"_a = nb::none(), "workspace"_a = nb::none(), "stream"_a = 0);

  auto sparse_decode = nb::class_<msa::SparseDecodeAttention>(m, "SparseDecodeAttention");
  sparse_decode.def(nb::init<>());
  def_decode_plan(sparse_decode);
  sparse_decode
      .def(
          "run",
          [](msa::SparseDecodeAttention& self, nb::handle q, nb::handle k_cache, nb::handle v_cache, nb::handle topk,
             nb::handle page_table, nb::handle seq_lens_k, nb::handle out, nb::handle lse, nb::handle workspace,
             std::uintptr_t stream) {
            Args a;
            msa::SparseDecodeRunArgs r;
            r.q = a.tensor(q, "q", stream);
            r.k_cache = a.tensor(k_cache, "k_cache", stream);
            r.v_cache = a.tensor(v_cache, "v_cache", stream);
            r.topk = a.tensor(topk, "topk", stream);
            r.page_table = a.tensor(page_table, "page_table", stream);
            r.seq_lens_k = a.tensor(seq_lens_k, "seq_lens_k", stream);
            r.out = a.tensor(out, "out", stream);
            r.lse = a.tensor(lse, "lse", stream);
            const auto ws = a.workspace(workspace, r.q, "q");
            check(self.run(r, ws.first, ws.second));
          },
          "q"_a, "k_cache"_a, "v_cache"_a, "topk"_a, "page_table"_a, "seq_lens_k"_a, "out"_a, "lse"_a = nb::none(),
          "workspace"_a = nb::none(), "stream"_a = 0);
}
