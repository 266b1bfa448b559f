#!/usr/bin/env python3
"""Kernel-level timeline of one sparse prefill run: for each kernel of the KV-outer chain and of kAuto's union side,
the start of every launch (CTA 0, after its pdl_wait) and, for the whole-batch kernels and KV-outer attention, the
end of the last CTA, in ms from the first stamped start; `bench_prefill_attention`'s variants (KV-outer, kAuto,
kAuto's fronts, kAuto without its union kernel, kAuto without its KV-outer chain), each run once eagerly and once
as a CUDA graph replay (the second of two runs is printed, with its CUDA-event time).

A copy of the working tree gets `%globaltimer` stamps inserted after fixed anchors in the kernel sources (an anchor
that is not found exactly once stops the script) and a stamped run at the end of each benchmark case (env STAMPS=1).
Stamps cost one atomic per CTA at most; the stamped binary's own benchmark lines matched a plain build's within their
run-to-run spread (H100, 1M random).
Needs a Hopper GPU; run it on the device machine:

  python3 scripts/prefill_timeline.py [--dest /tmp/prefill_tl] [-- bench arguments]
  python3 scripts/prefill_timeline.py --build-only     (any machine with nvcc: checks the anchors and builds)

e.g. `-- --pattern random --min-n 1048576 --chunks 65536` (the default) or `-- --pattern clustered --min-n 131072
--max-n 131072`. The method behind docs/performance.md ("kAuto's union side on random selections").
"""
import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from decode_breakdown import make_tree, sh  # noqa: E402

HEADER = "src/kernels/common/stamps.cuh"
# Per translation unit (no relocatable device code): each source with stamps gets its own store and a pair of host
# functions, stamps::reset_<tu> / stamps::read_<tu>, that the benchmark calls.
STAMPS_CUH = r'''#pragma once
#include <cuda_runtime.h>
namespace stamps {
constexpr int kTypes = 8, kMax = 80;
struct Store {
  unsigned long long start[kTypes][kMax];
  unsigned long long end[kTypes];
  int seq[kTypes];
};
static __device__ Store g_store;
__device__ __forceinline__ unsigned long long now() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ void start(int type) {
  if (threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0) {
    const int i = atomicAdd(&g_store.seq[type], 1);
    if (i < kMax) g_store.start[type][i] = now();
  }
}
struct EndGuard {  // the end of every warpgroup's thread 0, whatever return it leaves by
  int type;
  __device__ ~EndGuard() {
    if (threadIdx.x % 128 == 0) atomicMax(&g_store.end[type], now());
  }
};
static inline void reset_tu() {
  static Store zero{};
  cudaMemcpyToSymbol(g_store, &zero, sizeof zero);
}
static inline void read_tu(Store* s) { cudaMemcpyFromSymbol(s, g_store, sizeof *s); }
}  // namespace stamps
#define STAMP_START(type) stamps::start(type)
#define STAMP(type)    \
  stamps::start(type); \
  stamps::EndGuard stamp_guard_{type}
'''
# Type 0 is the token groups launch, which under kAuto also makes the union mask (one launch); type 1 is unused.
TYPES = ["groups+mask", "-", "list", "union", "k2q first", "k2q last", "kv_outer", "combine"]
# source: (translation unit name, [(anchor, stamp inserted after it)]). STAMP: start and end; STAMP_START: start
# only (kernels with many CTAs per launch, where an atomic per CTA on one address would cost time).
SOURCES = {
    "src/kernels/sm90/attention/token_groups.cu": ("groups", [
        ("  pdl_wait();  // topk comes from the selection\n", "  STAMP(0);\n")]),
    "src/kernels/sm90/attention/union_blocks.cu": ("union", [
        ("  pdl_wait();  // the mask launch's flags\n", "  STAMP(2);\n"),
        ("  pdl_wait();  // the selection and the caches come from earlier kernels of the run\n", "  STAMP(3);\n")]),
    "src/kernels/k2q/k2q.cu": ("k2q", [
        ("__global__ void rows_kernel(const K2qBuildArgs a, const K2qBuildOutputs o, std::int32_t* row_of) {\n",
         "  STAMP_START(4);\n"),
        ("                                    std::int64_t capacity) {\n", "  STAMP_START(5);\n")]),
    "src/kernels/sm90/attention/kv_outer.cu": ("kvo", [
        ("  pdl_wait();  // the k2q lists and the caches come from earlier kernels of the run\n", "  STAMP(6);\n")]),
    "src/kernels/combine/combine.cu": ("comb", [
        ("combine_kernel(const CombineLaunch a) {\n  pdl_wait();  // the partials come from the attention kernel just before\n",
         "  STAMP_START(7);\n"),
        ("combine16_kernel(const CombineLaunch a) {\n  pdl_wait();  // the partials come from the attention kernel just before\n",
         "  STAMP_START(7);\n")]),
}
BENCH = "bench/bench_prefill_attention.cu"
# The stamped runs go after the timed replays, before the buffers are freed.
BENCH_ANCHOR = "           t[3], time_union ? t[7] : 0.0, t[4], t[5], t[6]};\n"


def bench_code(tus):
    resets = "".join(f"        stamps::reset_{t}();\n" for t in tus)
    reads = "".join(f"      stamps::read_{t}(&st[{i}]);\n" for i, t in enumerate(tus))
    types = ", ".join(f'"{t}"' for t in TYPES)
    return f'''  if (std::getenv("STAMPS") != nullptr) {{
    const char* names[] = {{"KV-outer", "kAuto", "kAuto fronts", "kAuto w/o union", "kAuto w/o KV-outer"}};
    const int which[] = {{2, 3, 4, 5, 6}};  // indices into variants
    const char* types[] = {{{types}}};
    for (int mode = 0; mode < 2; ++mode)
      for (int v = 0; v < 5; ++v) {{
        cudaGraphExec_t gx = nullptr;
        if (mode == 1) {{
          cudaGraph_t gr;
          CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
          variants[which[v]]();
          CHECK_CUDA(cudaStreamEndCapture(stream, &gr));
          CHECK_CUDA(cudaGraphInstantiate(&gx, gr, 0));
          CHECK_CUDA(cudaGraphDestroy(gr));
        }}
        float ms = 0;
        for (int rep = 0; rep < 2; ++rep) {{  // the second run is printed
{resets}          CHECK_CUDA(cudaDeviceSynchronize());
          cudaEvent_t e0, e1;
          CHECK_CUDA(cudaEventCreate(&e0));
          CHECK_CUDA(cudaEventCreate(&e1));
          CHECK_CUDA(cudaEventRecord(e0, stream));
          if (mode == 1) CHECK_CUDA(cudaGraphLaunch(gx, stream));
          else variants[which[v]]();
          CHECK_CUDA(cudaEventRecord(e1, stream));
          CHECK_CUDA(cudaDeviceSynchronize());
          CHECK_CUDA(cudaEventElapsedTime(&ms, e0, e1));
          cudaEventDestroy(e0);
          cudaEventDestroy(e1);
        }}
        if (gx != nullptr) cudaGraphExecDestroy(gx);
        std::vector<stamps::Store> st({len(tus)});
{reads}        unsigned long long t0 = ~0ull;
        for (auto& x : st)
          for (int ty = 0; ty < stamps::kTypes; ++ty)
            if (x.seq[ty] > 0) t0 = std::min(t0, x.start[ty][0]);
        std::printf("STAMPS %s | %s %s, events %.3f ms (stamps: ms from the first stamped start)\\n", name.c_str(),
                    names[v], mode ? "graph" : "eager", ms);
        for (int ty = 0; ty < stamps::kTypes; ++ty)
          for (auto& x : st) {{
            const int n = std::min(x.seq[ty], stamps::kMax);
            if (n == 0) continue;
            std::printf("  %-10s x%-3d starts:", types[ty], x.seq[ty]);
            for (int i = 0; i < n; ++i)
              if (i < 4 || i >= n - 2) std::printf(" %.3f", (x.start[ty][i] - t0) * 1e-6);
              else if (i == 4) std::printf(" ...");
            if (x.end[ty] > 0) std::printf(" | end %.3f", (x.end[ty] - t0) * 1e-6);
            std::printf("\\n");
          }}
      }}
  }}
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dest", default="/tmp/prefill_tl")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 4)
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("bench_args", nargs="*")
    a = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tus = [tu for tu, _ in SOURCES.values()]
    include = f'#include "{HEADER[4:]}"\n'
    edits = []
    for path, (tu, stamps) in SOURCES.items():  # the header, the host side of the source's store, its stamps
        host = (f"namespace stamps {{\nvoid reset_{tu}() {{ reset_tu(); }}\nvoid read_{tu}(Store* s) {{ read_tu(s); }}\n"
                "}  // namespace stamps\n")
        edits.append((path, "#include <cuda_runtime.h>\n", include + host))
        edits += [(path, anchor, insert) for anchor, insert in stamps]
    edits.append((BENCH, "#include <cuda_runtime.h>\n", include + "#include <cstdlib>\nnamespace stamps {\n" +
                  "".join(f"void reset_{t}();\nvoid read_{t}(Store* s);\n" for t in tus) + "}  // namespace stamps\n"))
    edits.append((BENCH, BENCH_ANCHOR, bench_code(tus)))
    make_tree(root, a.dest, True, edits)
    with open(os.path.join(a.dest, HEADER), "w") as f:
        f.write(STAMPS_CUH)
    with open(os.path.join(a.dest, "build.log"), "w") as log:
        sh(f"cmake -S {a.dest} -B {a.dest}/b -G Ninja -DCMAKE_BUILD_TYPE=Release -DMSA_BUILD_TESTS=OFF && "
           f"cmake --build {a.dest}/b --target bench_prefill_attention -j {a.jobs}", stdout=log, stderr=subprocess.STDOUT)
    if a.build_only:
        print(f"built {a.dest}/b/bench/bench_prefill_attention")
        return
    args = a.bench_args or ["--pattern", "random", "--min-n", "1048576", "--chunks", "65536"]
    sh(f"STAMPS=1 {a.dest}/b/bench/bench_prefill_attention {' '.join(args)}")


if __name__ == "__main__":
    main()
