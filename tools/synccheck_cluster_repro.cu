// synccheck_cluster_repro.cu — a minimal kernel with the fused decode attention's barrier pattern (clusters of 16
// CTAs of 128 threads, 68 KB of dynamic shared memory so that CTAs of one cluster share an SM, cluster barriers
// around a distributed-shared-memory push, then CTA barriers in uniform control flow), to run under
// `compute-sanitizer --tool synccheck`. Every branch before each `__syncthreads()` is uniform over the CTA and
// every `.aligned` cluster barrier (the fused kernel's own, kernels/common/cluster_barrier.cuh) is preceded by
// `__syncwarp()`, so a report here is not a divergent barrier in the program. Exits 1 if the results are wrong
// (the arithmetic is checked on the host).
//
//   synccheck_cluster_repro [--no-cluster | --launch-only] [--one-per-sm] [--launches N]
// --launch-only: launched in clusters of 16, but without cluster barriers or distributed shared memory.
// --one-per-sm: 160 KB of dynamic shared memory per CTA (the kernel still stages 68 KB), so no two CTAs share an SM.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/common/cluster_barrier.cuh"

namespace {

constexpr int kThreads = 128, kCluster = 16, kRows = 4, kDynBytes = 69632;

using msa::kernels::cluster_arrive_relaxed;  // the fused decode attention's barrier phases
using msa::kernels::cluster_arrive_release;
using msa::kernels::cluster_wait;

// CTA (x, s): "live" when s < live(x) (uniform over the CTA; varies by cluster, like a topk row shorter than k).
// A live CTA stages `in` through shared memory with barriers; every CTA then pushes one value per row to the row's
// owner CTA (row % cluster size) and the owners sum their inboxes with two barriers per owned row.
// cluster_size 1: each CTA keeps its value (with or without a cluster launch: --launch-only).
__global__ void __launch_bounds__(kThreads) repro_kernel(const float* in, float* out, int cluster_size) {
  extern __shared__ float4 stage[];
  __shared__ float inbox[kRows][kCluster];
  __shared__ float scratch[kThreads / 32];
  const bool clustered = cluster_size > 1;
  if (clustered) cluster_arrive_relaxed();
  const int x = blockIdx.x, s = blockIdx.y, tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int live = 1 + (x * 7) % kCluster;
  float acc = 0.f;
  if (s < live) {
    for (int round = 0; round < 4; ++round) {
      for (int i = tid; i < kDynBytes / 16; i += kThreads)
        stage[i] = reinterpret_cast<const float4*>(in)[(i + round * 97) % (kDynBytes / 16)];
      __syncthreads();
      const float4 v = stage[(tid * 13 + round) % (kDynBytes / 16)];
      float w = v.x + v.y + v.z + v.w;
      for (int o = 16; o > 0; o >>= 1) w += __shfl_xor_sync(0xffffffffu, w, o);
      acc += w;
      __syncthreads();
    }
  }
  namespace cg = cooperative_groups;
  if (clustered) {
    cg::cluster_group cluster = cg::this_cluster();
    cluster_wait();
    for (int row = tid; row < kRows; row += kThreads) {
      float* dst = cluster.map_shared_rank(&inbox[0][0], row % cluster_size);
      dst[row * kCluster + s] = acc;
    }
    cluster_arrive_release();
    cluster_wait();
  } else {  // without a cluster, CTA s owns row s alone
    if (tid < kRows && tid == s) inbox[s][0] = acc;
    __syncthreads();
  }
  const int slots = clustered ? cluster_size : 1;
  for (int row = s; row < kRows; row += kCluster) {  // at most one row per CTA; uniform over the CTA
    float v = lane < slots ? inbox[row][lane] : 0.f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (tid == 0) out[x * kRows + row] = scratch[0] + scratch[1] + scratch[2] + scratch[3];
    __syncthreads();
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool clustered = true, launch_only = false;
  int dyn_bytes = kDynBytes;
  int launches = 20;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--no-cluster")) clustered = false;
    else if (!std::strcmp(argv[i], "--launch-only")) clustered = false, launch_only = true;
    else if (!std::strcmp(argv[i], "--one-per-sm")) dyn_bytes = 160 * 1024;
    else if (!std::strcmp(argv[i], "--launches") && i + 1 < argc) launches = std::atoi(argv[++i]);
  }
  const int X = 48, cluster = clustered ? kCluster : 1;
  const int floats = kDynBytes / 4;
  std::vector<float> h_in(floats);
  for (int i = 0; i < floats; ++i) h_in[i] = static_cast<float>(i % 7) - 3.f;  // exact sums in fp32
  float *in = nullptr, *out = nullptr;
  if (cudaMalloc(&in, floats * sizeof(float)) != cudaSuccess || cudaMalloc(&out, X * kRows * sizeof(float)) != cudaSuccess) {
    std::fprintf(stderr, "cudaMalloc failed\n");
    return 2;
  }
  cudaMemcpy(in, h_in.data(), floats * sizeof(float), cudaMemcpyHostToDevice);
  cudaError_t e = cudaFuncSetAttribute(repro_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, dyn_bytes);
  if (e == cudaSuccess && (clustered || launch_only)) e = cudaFuncSetAttribute(repro_kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = 1;
  attr.val.clusterDim.y = launch_only ? kCluster : cluster;
  attr.val.clusterDim.z = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(X, kCluster);
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = dyn_bytes;
  cfg.attrs = &attr;
  cfg.numAttrs = clustered || launch_only ? 1 : 0;
  for (int l = 0; l < launches && e == cudaSuccess; ++l) e = cudaLaunchKernelEx(&cfg, repro_kernel, in, out, cluster);
  if (e == cudaSuccess) e = cudaDeviceSynchronize();
  if (e != cudaSuccess) {
    std::fprintf(stderr, "CUDA error: %s\n", cudaGetErrorString(e));
    return 2;
  }
  // Host check: the pushed value of a live CTA is thread 0's acc, the sum over the 4 rounds of warp 0's staged
  // float4 values; each of the 4 warps of the owner adds the row's pushes.
  std::vector<float> h_out(X * kRows);
  cudaMemcpy(h_out.data(), out, h_out.size() * sizeof(float), cudaMemcpyDeviceToHost);
  const int n4 = kDynBytes / 16;
  double A = 0.0;
  for (int round = 0; round < 4; ++round)
    for (int l = 0; l < 32; ++l) {
      const int j = ((l * 13 + round) % n4 + round * 97) % n4;
      for (int c = 0; c < 4; ++c) A += h_in[j * 4 + c];
    }
  int bad = 0;
  for (int x = 0; x < X; ++x) {
    const int live = 1 + (x * 7) % kCluster;
    for (int row = 0; row < kRows; ++row) {
      const double want = 4.0 * (clustered ? live * A : (row < live ? A : 0.0));
      if (static_cast<double>(h_out[x * kRows + row]) != want) ++bad;
    }
  }
  std::printf("%s, %d B of shared memory per CTA, %d launches of %d x %d CTAs: %d of %d outputs wrong\n",
              clustered ? "clusters of 16" : launch_only ? "cluster launch only" : "no cluster", dyn_bytes, launches, X,
              kCluster, bad, X * kRows);
  return bad == 0 ? 0 : 1;
}
