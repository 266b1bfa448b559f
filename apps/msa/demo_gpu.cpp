// demo_gpu.cpp — the GPU leg of `msa demo`: the problem's tensors go to the device, index selection and sparse
// attention run there through the public ops (CUDA descriptors), and the selection, output and LSE come back into
// the host problem, where the demo checks them exactly as it checks the CPU run. Builds without CUDA get a stub.
#include "cli.h"
#include "msa/msa.h"
#include "problem.h"

#ifdef MSA_CLI_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace msa {
namespace cli {

#ifndef MSA_CLI_WITH_CUDA
bool gpu_pipeline_available() { return false; }
Status run_pipeline_gpu(testing::Problem&, double*, double*) {
  return Status::NotImplemented("this build has no CUDA");
}
#else
namespace {

struct DeviceCopy {
  void* ptr = nullptr;
  std::size_t bytes = 0;
  Status upload(const void* host, std::size_t n) {
    bytes = n;
    if (cudaMalloc(&ptr, std::max<std::size_t>(n, 256)) != cudaSuccess) return Status::CudaError("cudaMalloc failed");
    return cudaMemcpy(ptr, host, n, cudaMemcpyHostToDevice) == cudaSuccess ? Status::Ok()
                                                                           : Status::CudaError("cudaMemcpy failed");
  }
  Status download(void* host) const {
    return cudaMemcpy(host, ptr, bytes, cudaMemcpyDeviceToHost) == cudaSuccess ? Status::Ok()
                                                                               : Status::CudaError("cudaMemcpy failed");
  }
  ~DeviceCopy() { cudaFree(ptr); }
};

Tensor on(Tensor t, const DeviceCopy& d) {
  t.data = d.ptr;
  t.device = Device::cuda(0);
  return t;
}

template <typename T>
std::size_t bytes_of(const std::vector<T>& v) {
  return v.size() * sizeof(T);
}

}  // namespace

bool gpu_pipeline_available() { return sm90_device_available(); }

Status run_pipeline_gpu(testing::Problem& p, double* t_index, double* t_attn) {
  DeviceCopy q, kc, vc, iq, ikc, pt, cu, seq, topk, out, lse;
  MSA_RETURN_IF_ERROR(q.upload(p.q.data(), bytes_of(p.q)));
  MSA_RETURN_IF_ERROR(kc.upload(p.k_cache.data(), bytes_of(p.k_cache)));
  MSA_RETURN_IF_ERROR(vc.upload(p.v_cache.data(), bytes_of(p.v_cache)));
  MSA_RETURN_IF_ERROR(iq.upload(p.index_q.data(), bytes_of(p.index_q)));
  MSA_RETURN_IF_ERROR(ikc.upload(p.index_k_cache.data(), bytes_of(p.index_k_cache)));
  MSA_RETURN_IF_ERROR(pt.upload(p.page_table.data(), bytes_of(p.page_table)));
  MSA_RETURN_IF_ERROR(cu.upload(p.cu_seqlens_q.data(), bytes_of(p.cu_seqlens_q)));
  MSA_RETURN_IF_ERROR(seq.upload(p.seq_lens_k.data(), bytes_of(p.seq_lens_k)));
  MSA_RETURN_IF_ERROR(topk.upload(p.topk.data(), bytes_of(p.topk)));
  MSA_RETURN_IF_ERROR(out.upload(p.out.data(), bytes_of(p.out)));
  MSA_RETURN_IF_ERROR(lse.upload(p.lse.data(), bytes_of(p.lse)));

  IndexPrefillArgs sel{on(p.index_q_t(), iq),      on(p.index_k_cache_t(), ikc), on(p.page_table_t(), pt),
                       on(p.cu_seqlens_q_t(), cu), on(p.seq_lens_k_t(), seq),    on(p.topk_t(), topk)};
  auto t0 = std::chrono::steady_clock::now();
  MSA_RETURN_IF_ERROR(index_select_prefill(sel));
  if (cudaDeviceSynchronize() != cudaSuccess) return Status::CudaError("index selection failed on the device");
  *t_index = seconds_since(t0);

  t0 = std::chrono::steady_clock::now();
  SparsePrefillAttention attn;
  MSA_RETURN_IF_ERROR(attn.plan({sel.topk, sel.cu_seqlens_q, sel.seq_lens_k, sel.page_table, p.spec.num_q_heads,
                                 p.spec.num_kv_heads}));
  DeviceCopy ws;
  if (cudaMalloc(&ws.ptr, std::max<std::size_t>(attn.workspace_bytes(), 256)) != cudaSuccess)
    return Status::CudaError("cudaMalloc of the attention workspace failed");
  MSA_RETURN_IF_ERROR(attn.run({on(p.q_t(), q), on(p.k_cache_t(), kc), on(p.v_cache_t(), vc), on(p.out_t(), out),
                                on(p.lse_t(), lse)},
                               ws.ptr, attn.workspace_bytes()));
  if (cudaDeviceSynchronize() != cudaSuccess) return Status::CudaError("sparse attention failed on the device");
  *t_attn = seconds_since(t0);
  MSA_RETURN_IF_ERROR(topk.download(p.topk.data()));
  MSA_RETURN_IF_ERROR(out.download(p.out.data()));
  return lse.download(p.lse.data());
}
#endif

}  // namespace cli
}  // namespace msa
