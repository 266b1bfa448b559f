// validate.cpp — see validate.h.
#include "api/validate.h"

#include <cmath>
#include <cstdint>
#include <sstream>

#include "msa/params.h"

namespace msa {
namespace detail {
namespace {

std::string device_str(const Device& d) {
  return d.is_cuda() ? "cuda:" + std::to_string(d.index) : std::string("cpu");
}

Status invalid(const std::string& name, const std::string& rule) { return Status::InvalidArgument(name + ": " + rule); }

}  // namespace

std::string shape_str(const Tensor& t) {
  std::ostringstream os;
  os << "[";
  for (int d = 0; d < t.ndim; ++d) os << (d ? ", " : "") << t.shape[d];
  os << "]";
  return os.str();
}

std::int32_t i32_at(const Tensor& t, std::int64_t i0, std::int64_t i1, std::int64_t i2) {
  const std::int64_t off = i0 * t.stride[0] + (t.ndim > 1 ? i1 * t.stride[1] : 0) + (t.ndim > 2 ? i2 * t.stride[2] : 0);
  return static_cast<const std::int32_t*>(t.data)[off];
}

Status check_tensor(const Tensor& t, const char* name, const char* layout, int ndim,
                    std::initializer_list<DType> dtypes, bool optional) {
  if (!t.present()) {
    if (t.ndim < 0) return invalid(name, "shape and stride lists have different lengths");
    if (optional) return Status::Ok();
    return invalid(name, std::string("required tensor is missing (expected ") + layout + ")");
  }
  if (t.ndim != ndim)
    return invalid(name, "expected " + std::to_string(ndim) + " dimensions " + layout + ", got shape " + shape_str(t));
  bool dtype_ok = false;
  std::string allowed;
  for (DType d : dtypes) {
    dtype_ok = dtype_ok || d == t.dtype;
    allowed += (allowed.empty() ? "" : " or ") + std::string(dtype_name(d));
  }
  if (!dtype_ok) {
    if (t.dtype == DType::kFP8E4M3)
      return Status::NotImplemented(std::string(name) + ": fp8_e4m3 is not supported for this tensor (only index_q "
                                    "and index_k_cache take it; use " + allowed + ")");
    return invalid(name, "dtype must be " + allowed + ", got " + dtype_name(t.dtype));
  }
  for (int d = 0; d < ndim; ++d) {
    if (t.shape[d] < 0) return invalid(name, "negative size in shape " + shape_str(t));
    if (t.stride[d] < 0) return invalid(name, "negative stride in dimension " + std::to_string(d));
  }
  if (t.numel() > 0 && t.data == nullptr) return invalid(name, "null data pointer for a non-empty tensor");
  if (reinterpret_cast<std::uintptr_t>(t.data) % dtype_size(t.dtype) != 0)
    return invalid(name, "data pointer is not aligned to its element size");
  return Status::Ok();
}

Status check_dim(const Tensor& t, const char* name, int dim, std::int64_t expected, const char* meaning) {
  if (t.shape[dim] != expected)
    return invalid(name, "dimension " + std::to_string(dim) + " must be " + meaning + " = " +
                             std::to_string(expected) + ", got shape " + shape_str(t));
  return Status::Ok();
}

Status check_bulk_operand(const Tensor& t, const char* name) {
  if (!t.present() || t.numel() == 0) return Status::Ok();
  const int last = t.ndim - 1;
  if (t.stride[last] != 1 && t.shape[last] > 1)
    return invalid(name, "innermost stride must be 1 (got " + std::to_string(t.stride[last]) + ")");
  if (reinterpret_cast<std::uintptr_t>(t.data) % 16 != 0)
    return invalid(name, "data pointer must be 16-byte aligned (bulk-copy rule)");
  const std::int64_t esize = static_cast<std::int64_t>(dtype_size(t.dtype));
  for (int d = 0; d < last; ++d)
    if (t.shape[d] > 1 && (t.stride[d] * esize) % 16 != 0)
      return invalid(name, "stride of dimension " + std::to_string(d) + " (" + std::to_string(t.stride[d] * esize) +
                               " bytes) must be a multiple of 16 bytes (bulk-copy rule)");
  return Status::Ok();
}

Status check_same_device(std::initializer_list<std::pair<const char*, const Tensor*>> tensors) {
  const char* first_name = nullptr;
  Device first{};
  for (const auto& nt : tensors) {
    if (!nt.second->present()) continue;
    const Device& d = nt.second->device;
    if (first_name == nullptr) {
      first_name = nt.first;
      first = d;
      continue;
    }
    if (d.type != first.type || (d.is_cuda() && d.index != first.index))
      return invalid(nt.first, "is on " + device_str(d) + " but " + first_name + " is on " + device_str(first) +
                                   " (all tensors of one call must share a device)");
  }
  return Status::Ok();
}

Status check_heads(std::int64_t num_q_heads, std::int64_t num_kv_heads) {
  if (num_kv_heads < 1) return invalid("num_kv_heads", "must be >= 1, got " + std::to_string(num_kv_heads));
  if (num_q_heads < 1) return invalid("num_q_heads", "must be >= 1, got " + std::to_string(num_q_heads));
  if (num_q_heads % num_kv_heads != 0)
    return invalid("num_q_heads", "must be a multiple of num_kv_heads (Hq % Hkv == 0), got Hq = " +
                                      std::to_string(num_q_heads) + ", Hkv = " + std::to_string(num_kv_heads));
  return Status::Ok();
}

Status check_prefill_schedule(PrefillSchedule schedule) {
  if (schedule == PrefillSchedule::kAuto || schedule == PrefillSchedule::kKvOuter || schedule == PrefillSchedule::kUnion)
    return Status::Ok();
  return Status::InvalidArgument("schedule: must be kAuto, kKvOuter or kUnion, got " +
                                 std::to_string(static_cast<int>(schedule)));
}

Status check_sm_scale(double sm_scale) {
  if (!std::isfinite(sm_scale) || sm_scale < 0.0)
    return invalid("sm_scale", "must be finite and > 0 (or 0 for 1/sqrt(128)), got " + std::to_string(sm_scale));
  return Status::Ok();
}

Status read_batch(const Tensor* cu_seqlens_q, std::int64_t queries_per_request, const Tensor& seq_lens_k,
                  std::int64_t total_q, BatchInfo* batch) {
  const std::int64_t B = seq_lens_k.shape[0];
  batch->q_start.assign(static_cast<std::size_t>(B + 1), 0);
  batch->kv_len.assign(static_cast<std::size_t>(B), 0);
  for (std::int64_t b = 0; b <= B; ++b) {
    std::int64_t v = b * queries_per_request;
    if (cu_seqlens_q != nullptr) {
      v = i32_at(*cu_seqlens_q, b);
      if (b == 0 && v != 0) return invalid("cu_seqlens_q[0]", "must be 0, got " + std::to_string(v));
      if (b > 0 && v < batch->q_start[b - 1])
        return invalid("cu_seqlens_q", "must be non-decreasing, but cu_seqlens_q[" + std::to_string(b) +
                                           "] = " + std::to_string(v) + " < cu_seqlens_q[" + std::to_string(b - 1) +
                                           "] = " + std::to_string(batch->q_start[b - 1]));
    }
    batch->q_start[b] = v;
  }
  if (batch->q_start[B] != total_q)
    return invalid(cu_seqlens_q ? "cu_seqlens_q" : "queries_per_request",
                   "implies " + std::to_string(batch->q_start[B]) + " query tokens but the query tensor has T = " +
                       std::to_string(total_q));
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t L = i32_at(seq_lens_k, b);
    const std::string name = "seq_lens_k[" + std::to_string(b) + "]";
    if (L < 0) return invalid(name, "must be >= 0, got " + std::to_string(L));
    if (L < batch->nq(b))
      return invalid(name, "= " + std::to_string(L) + " must be >= the request's query count " +
                               std::to_string(batch->nq(b)) + " (KV length includes the new tokens)");
    batch->kv_len[b] = L;
  }
  return Status::Ok();
}

Status check_page_table(const Tensor& page_table, const BatchInfo& batch, std::int64_t num_pages) {
  if (page_table.shape[0] != batch.num_requests())
    return invalid("page_table", "dimension 0 must be the batch size B = " + std::to_string(batch.num_requests()) +
                                     ", got shape " + shape_str(page_table));
  const std::int64_t max_pages = page_table.shape[1];
  for (std::int64_t b = 0; b < batch.num_requests(); ++b) {
    const std::int64_t pages = ceil_div(batch.kv_len[b], kPageSize);
    if (pages > max_pages)
      return invalid("seq_lens_k[" + std::to_string(b) + "]",
                     "= " + std::to_string(batch.kv_len[b]) + " needs " + std::to_string(pages) +
                         " pages but page_table has max_pages = " + std::to_string(max_pages));
    for (std::int64_t j = 0; j < pages; ++j) {
      const std::int64_t p = i32_at(page_table, b, j);
      if (p < 0 || p >= num_pages)
        return invalid("page_table[" + std::to_string(b) + ", " + std::to_string(j) + "]",
                       "= " + std::to_string(p) + " is outside the cache's pages [0, " + std::to_string(num_pages) +
                           ")");
    }
  }
  return Status::Ok();
}

Status check_topk_rows(const Tensor& topk, const BatchInfo& batch) {
  const std::int64_t H = topk.shape[0], k = topk.shape[2];
  for (std::int64_t b = 0; b < batch.num_requests(); ++b) {
    for (std::int64_t i = 0; i < batch.nq(b); ++i) {
      const std::int64_t t = batch.q_start[b] + i;
      const std::int64_t local = batch.position(b, i) / kBlockSize;
      for (std::int64_t g = 0; g < H; ++g) {
        const std::string row = "topk[" + std::to_string(g) + ", " + std::to_string(t) + "]";
        std::int64_t count = 0;
        bool has_local = false;
        for (std::int64_t s = 0; s < k; ++s) {
          const std::int64_t id = i32_at(topk, g, t, s);
          if (id == -1) continue;
          const std::string at = "topk[" + std::to_string(g) + ", " + std::to_string(t) + ", " + std::to_string(s) + "]";
          if (id < -1) return invalid(at, "block id " + std::to_string(id) + " is invalid (ids are >= 0, or -1 padding)");
          if (count != s) return invalid(at, "valid id after a -1 (valid ids must form a prefix, -1 pads the tail)");
          if (id > local)
            return invalid(at, "block id " + std::to_string(id) + " >= n_vis " + std::to_string(local + 1) +
                                   " (not causally visible)");
          for (std::int64_t r = 0; r < s; ++r)
            if (i32_at(topk, g, t, r) == id)
              return invalid(at, "block id " + std::to_string(id) + " appears twice in the row");
          has_local = has_local || id == local;
          ++count;
        }
        if (count > 0 && !has_local)
          return invalid(row, "local block " + std::to_string(local) +
                                  " is missing (a non-padding row must select the query's own block)");
      }
    }
  }
  return Status::Ok();
}

}  // namespace detail
}  // namespace msa
