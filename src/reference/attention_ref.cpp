// attention_ref.cpp — CPU main branch: dense, sparse and per-block (KV-outer partial) attention.
//
// One work item = one (query token, KV head). The keys it may see are gathered into float buffers once and reused
// by the group's G query heads. Valid block ids are visited in ascending order whatever their order in topk, so
// the result does not depend on the selection's order, and a selection of all visible blocks reproduces dense
// attention bit for bit. Softmax is exact (max, exp, sum over the whole key set), in float or double.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "msa/params.h"
#include "reference/numeric.h"
#include "reference/parallel.h"
#include "reference/reference_impl.h"

namespace msa {
namespace ref {

void load_row(const Tensor& t, std::int64_t off, float* dst) {
  switch (t.dtype) {
    case DType::kBF16: {
      const auto* p = static_cast<const std::uint16_t*>(t.data) + off;
      for (int d = 0; d < kHeadDim; ++d) dst[d] = bf16_to_float(p[d]);
      break;
    }
    case DType::kFP16: {
      const auto* p = static_cast<const std::uint16_t*>(t.data) + off;
      for (int d = 0; d < kHeadDim; ++d) dst[d] = fp16_to_float(p[d]);
      break;
    }
    case DType::kFP8E4M3: {
      const auto* p = static_cast<const std::uint8_t*>(t.data) + off;
      for (int d = 0; d < kHeadDim; ++d) dst[d] = fp8_e4m3_to_float(p[d]);
      break;
    }
    default:
      std::memcpy(dst, static_cast<const float*>(t.data) + off, sizeof(float) * kHeadDim);
  }
}

void store_row(const Tensor& t, std::int64_t off, const float* src) {
  switch (t.dtype) {
    case DType::kBF16: {
      auto* p = static_cast<std::uint16_t*>(t.data) + off;
      for (int d = 0; d < kHeadDim; ++d) p[d] = float_to_bf16(src[d]);
      break;
    }
    case DType::kFP16: {
      auto* p = static_cast<std::uint16_t*>(t.data) + off;
      for (int d = 0; d < kHeadDim; ++d) p[d] = float_to_fp16(src[d]);
      break;
    }
    default:
      std::memcpy(static_cast<float*>(t.data) + off, src, sizeof(float) * kHeadDim);
  }
}

namespace {

// Softmax attention of one query row over n gathered keys. o receives the normalised output; returns the LSE.
template <typename Acc>
double attend(const float* q, const float* K, const float* V, std::int64_t n, const reference::AttentionOptions& opt,
              double scale, std::vector<Acc>* z, float* o) {
  if (n == 0) {
    std::fill(o, o + kHeadDim, 0.0f);
    return -std::numeric_limits<double>::infinity();
  }
  z->resize(static_cast<std::size_t>(n));
  Acc m = -std::numeric_limits<Acc>::infinity();
  for (std::int64_t t = 0; t < n; ++t) {
    const Acc v = static_cast<Acc>(scale) * dot128<Acc>(q, K + t * kHeadDim);
    (*z)[static_cast<std::size_t>(t)] = v;
    if (v > m) m = v;
  }
  Acc l = 0;
  Acc acc[kHeadDim] = {};
  for (std::int64_t t = 0; t < n; ++t) {
    Acc p = std::exp((*z)[static_cast<std::size_t>(t)] - m);
    l += p;
    if (opt.round_p_to_bf16) p = static_cast<Acc>(round_to_bf16(static_cast<float>(p)));
    const float* v = V + t * kHeadDim;
    for (int d = 0; d < kHeadDim; ++d) acc[d] += p * static_cast<Acc>(v[d]);
  }
  for (int d = 0; d < kHeadDim; ++d) o[d] = static_cast<float>(acc[d] / l);
  return static_cast<double>(m) + std::log(static_cast<double>(l));
}

struct Span {
  std::int64_t first_key, n;  // range in the gathered buffers
};

}  // namespace

void attention(AttnMode mode, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& topk,
               const Tensor& page_table, const BatchInfo& batch, const AttnOutputs& io,
               const reference::AttentionOptions& options) {
  const std::int64_t T = q.shape[0], Hq = q.shape[1], Hkv = k_cache.shape[1], G = Hq / Hkv;
  const double scale = options.sm_scale > 0 ? options.sm_scale : kDefaultSmScale;
  std::vector<std::int32_t> token_batch(static_cast<std::size_t>(T));
  for (std::int64_t b = 0; b < batch.num_requests(); ++b)
    for (std::int64_t t = batch.q_start[b]; t < batch.q_start[b + 1]; ++t)
      token_batch[static_cast<std::size_t>(t)] = static_cast<std::int32_t>(b);

  parallel_for(T * Hkv, [&](std::int64_t item) {
    const std::int64_t t = item / Hkv, g = item % Hkv;
    const std::int64_t b = token_batch[static_cast<std::size_t>(t)];
    const std::int64_t p = batch.position(b, t - batch.q_start[b]);
    const std::int64_t local = p / kBlockSize;

    std::vector<std::int64_t> blocks;
    if (mode == AttnMode::kDense) {
      for (std::int64_t j = 0; j <= local; ++j) blocks.push_back(j);
    } else {
      for (std::int64_t s = 0; s < topk.shape[2]; ++s) {
        const std::int32_t id = detail::i32_at(topk, g, t, s);
        if (id >= 0) blocks.push_back(id);
      }
      std::sort(blocks.begin(), blocks.end());
    }

    // Gather the visible keys of each block: t' <= p (only the local block is cut) and t' < L_b.
    std::vector<Span> spans;
    std::vector<float> K, V;
    for (std::int64_t j : blocks) {
      const std::int64_t page = detail::i32_at(page_table, b, j);
      const std::int64_t end = std::min<std::int64_t>(kBlockSize, p + 1 - j * kBlockSize);
      const std::int64_t first = static_cast<std::int64_t>(K.size()) / kHeadDim;
      K.resize(static_cast<std::size_t>((first + end) * kHeadDim));
      V.resize(K.size());
      for (std::int64_t r = 0; r < end; ++r) {
        const std::int64_t off = page * k_cache.stride[0] + g * k_cache.stride[1] + r * k_cache.stride[2];
        const std::int64_t voff = page * v_cache.stride[0] + g * v_cache.stride[1] + r * v_cache.stride[2];
        load_row(k_cache, off, &K[static_cast<std::size_t>((first + r) * kHeadDim)]);
        load_row(v_cache, voff, &V[static_cast<std::size_t>((first + r) * kHeadDim)]);
      }
      spans.push_back({first, end});
    }
    const std::int64_t n_keys = static_cast<std::int64_t>(K.size()) / kHeadDim;

    std::vector<float> qrow(kHeadDim), orow(kHeadDim);
    std::vector<float> zf;
    std::vector<double> zd;
    auto run = [&](std::int64_t first, std::int64_t n) {
      const float* Kp = K.data() + first * kHeadDim;
      const float* Vp = V.data() + first * kHeadDim;
      return options.fp64 ? attend<double>(qrow.data(), Kp, Vp, n, options, scale, &zd, orow.data())
                          : attend<float>(qrow.data(), Kp, Vp, n, options, scale, &zf, orow.data());
    };
    for (std::int64_t h = g * G; h < (g + 1) * G; ++h) {
      load_row(q, t * q.stride[0] + h * q.stride[1], qrow.data());
      if (mode == AttnMode::kPartials) {
        for (std::size_t s = 0; s < spans.size(); ++s) {
          const double lse = run(spans[s].first_key, spans[s].n);
          const Tensor& po = io.partial_out;
          store_row(po, static_cast<std::int64_t>(s) * po.stride[0] + t * po.stride[1] + h * po.stride[2],
                    orow.data());
          const Tensor& pl = io.partial_lse;
          static_cast<float*>(pl.data)[static_cast<std::int64_t>(s) * pl.stride[0] + t * pl.stride[1] +
                                       h * pl.stride[2]] = static_cast<float>(lse);
        }
        continue;
      }
      const double lse = run(0, n_keys);
      store_row(io.out, t * io.out.stride[0] + h * io.out.stride[1], orow.data());
      if (io.lse.present())
        static_cast<float*>(io.lse.data)[t * io.lse.stride[0] + h * io.lse.stride[1]] = static_cast<float>(lse);
    }
    if (mode == AttnMode::kPartials) {
      const Tensor& sc = io.split_counts;
      static_cast<std::int32_t*>(sc.data)[t * sc.stride[0] + g * sc.stride[1]] =
          static_cast<std::int32_t>(spans.size());
    }
  });
}

void combine(const CombineArgs& a) {
  const std::int64_t T = a.out.shape[0], Hq = a.out.shape[1];
  const std::int64_t G = Hq / a.split_counts.shape[1];
  parallel_for(T, [&](std::int64_t t) {
    std::vector<float> row(kHeadDim), o(kHeadDim);
    for (std::int64_t h = 0; h < Hq; ++h) {
      const std::int64_t n = detail::i32_at(a.split_counts, t, h / G);
      auto lse_at = [&](std::int64_t s) {
        const Tensor& pl = a.partial_lse;
        return static_cast<double>(
            static_cast<const float*>(pl.data)[s * pl.stride[0] + t * pl.stride[1] + h * pl.stride[2]]);
      };
      double M = -std::numeric_limits<double>::infinity();
      for (std::int64_t s = 0; s < n; ++s)
        if (std::isfinite(lse_at(s))) M = std::max(M, lse_at(s));
      std::vector<double> acc(kHeadDim, 0.0);
      double wsum = 0.0;
      if (std::isfinite(M)) {
        for (std::int64_t s = 0; s < n; ++s) {
          if (!std::isfinite(lse_at(s))) continue;  // non-finite stats carry no weight
          const double w = std::exp(lse_at(s) - M);
          const Tensor& po = a.partial_out;
          load_row(po, s * po.stride[0] + t * po.stride[1] + h * po.stride[2], row.data());
          for (int d = 0; d < kHeadDim; ++d) acc[static_cast<std::size_t>(d)] += w * row[static_cast<std::size_t>(d)];
          wsum += w;
        }
      }
      const bool empty = wsum <= 0.0;
      for (int d = 0; d < kHeadDim; ++d)
        o[static_cast<std::size_t>(d)] = empty ? 0.0f : static_cast<float>(acc[static_cast<std::size_t>(d)] / wsum);
      store_row(a.out, t * a.out.stride[0] + h * a.out.stride[1], o.data());
      if (a.lse.present())
        static_cast<float*>(a.lse.data)[t * a.lse.stride[0] + h * a.lse.stride[1]] =
            empty ? -std::numeric_limits<float>::infinity() : static_cast<float>(M + std::log(wsum));
    }
  });
}

}  // namespace ref
}  // namespace msa
