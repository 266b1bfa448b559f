#!/usr/bin/env python3
"""Per-CTA timeline of one decode step: `%globaltimer` stamps at each phase of every CTA of the selection, merge and
fused attention kernels in the last MsaDecode call of `msa bench --mode decode` (1 x 1M x 1 by default), printed as
microseconds from the first selection CTA's start (median and range per phase).

A copy of the tree (HEAD, or the working tree with --worktree) gets the stamps inserted after fixed anchors in the
three kernel sources and a dump at the end of `msa bench` (decode_breakdown.py's method: an anchor that is not
found exactly once stops the script). Needs a Hopper GPU; run it on the device machine:

  python3 scripts/decode_timeline.py --out $OUT --worktree [--runs 2] [--tokens 1048576] [--pages shuffled]
  python3 scripts/decode_timeline.py --build-only --worktree   (any machine with nvcc: checks the anchors and builds)

(--worktree there: the device machine's copy of the tree may carry no usable git metadata.)

The method behind docs/performance.md ("Per-CTA timeline"). Stamps cost a global store each; the instrumented step
measured within ~0.5 us of the plain one (H100, 1 x 1M).
"""
import argparse
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from decode_breakdown import build, make_tree  # noqa: E402

SEL = "src/kernels/sm90/indexer/index_select.cu"
MERGE = "src/kernels/sm90/indexer/merge_splits.cu"
ATT = "src/kernels/decode/decode_attention.cu"
BENCH = "apps/msa/bench.cpp"
HEADER = "src/kernels/common/timeline.cuh"

# One module-local stamp array per source (no relocatable device code): CTA c's slot i at g_tl[16 c + i]; selection
# CTAs 0.., merge CTAs 200.., attention CTAs 300... Slot 8 holds the SM id.
TIMELINE_CUH = r'''#pragma once
#include <cuda_runtime.h>
#include <cstdio>
namespace tl {
static __device__ unsigned long long g_tl[512 * 16];
__device__ __forceinline__ unsigned long long now() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ unsigned smid() {
  unsigned s;
  asm volatile("mov.u32 %0, %smid;" : "=r"(s));
  return s;
}
__device__ __forceinline__ void stamp(int cta, int i) { g_tl[cta * 16 + i] = now(); }
__device__ __forceinline__ void put(int cta, int i, unsigned long long v) { g_tl[cta * 16 + i] = v; }
inline void dump(const char* name) {
  static unsigned long long h[512 * 16];
  cudaDeviceSynchronize();
  cudaMemcpyFromSymbol(h, g_tl, sizeof(h));
  for (int c = 0; c < 512; ++c) {
    std::printf("TL %s %d", name, c);
    for (int i = 0; i < 16; ++i) std::printf(" %llu", h[c * 16 + i]);
    std::printf("\n");
  }
}
}  // namespace tl
'''
INCLUDE = ('#include "kernels/common/pdl.cuh"\n', '#include "kernels/common/timeline.cuh"\n')


def dump_fn(name):
    return f'extern "C" __attribute__((visibility("default"))) void msa_tl_dump_{name}() {{ tl::dump("{name}"); }}\n'


EDITS = [
    (SEL, *INCLUDE),
    (SEL, "  auto* stage_words = reinterpret_cast<volatile int*>(smem + P::kWordOff);\n",
     "  const int tlc = blockIdx.y;\n  if (P::kPool && threadIdx.x == 0) { tl::stamp(tlc, 0); tl::put(tlc, 8, tl::smid()); }\n"),
    (SEL, "  pdl_wait();  // see launch(): the previous kernel's writes are visible\n",
     "  if (P::kPool && threadIdx.x == 0) tl::stamp(tlc, 1);\n"),
    (SEL, "    int wa = word(0);  // block of iteration it, in acc0\n", "    if (threadIdx.x == 128) tl::stamp(tlc, 2);\n"),
    (SEL, "      reduce(acc0, it, j0 + it * splits);\n    }\n    rank();\n  }\n",
     "  if (P::kPool && threadIdx.x == 128) tl::stamp(tlc, 3);\n"),
    (SEL, "      *reinterpret_cast<int4*>(part.id + 4 * c) = make_int4(c == 0 ? local : l.id[0], l.id[1], l.id[2], l.id[3]);\n    }\n",
     "    if (threadIdx.x == 128) tl::stamp(tlc, 4);\n"),
    (SEL, "}  // namespace msa\n", dump_fn("sel")),
    (MERGE, *INCLUDE),
    (MERGE, "  const PartialList part = partial_list(a, tiles, row, splits, 0);\n",
     "  const int tlc = 200 + static_cast<int>(row);\n  if (tid == 0) { tl::stamp(tlc, 0); tl::put(tlc, 8, tl::smid()); }\n"),
    (MERGE, "      __syncthreads();  // the rehearsal is done with the shared arrays\n", "      if (tid == 0) tl::stamp(tlc, 6);\n"),
    (MERGE, "      pdl_wait();  // the selection grid's partial lists are complete\n", "      if (tid == 0) tl::stamp(tlc, 1);\n"),
    (MERGE, "    const int local = local_sm;\n", "    if (real && tid == 0) tl::stamp(tlc, 2);\n"),
    (MERGE, "      rank_warp_best(warp_best, (splits + 31) / 32, cap, &tau_sc, &tau_id);\n    }\n    __syncthreads();\n",
     "    if (real && tid == 0) tl::stamp(tlc, 3);\n"),
    (MERGE, "        if (keep[i][e]) kept[pos++] = pack(elem(v[i], e), elem(w[i], e));\n    __syncthreads();\n",
     "    if (real && tid == 0) tl::stamp(tlc, 4);\n"),
    (MERGE, "      if (handoff) handoff_store(a.handoff + row * a.k + tid, handoff_pack(id, id >= 0 ? local_page : 0));\n    }\n",
     "    if (real) {\n      __syncthreads();\n      if (tid == 0) tl::stamp(tlc, 5);\n    }\n"),
    (MERGE, "}  // namespace msa\n", dump_fn("merge")),
    (ATT, *INCLUDE),
    (ATT, "  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, r = lane / 4, c = lane % 4;\n",
     "  const int tlc = 300 + blockIdx.x * gridDim.y + blockIdx.y;\n"
     "  if (kFused && tid == 0) { tl::stamp(tlc, 0); tl::put(tlc, 8, tl::smid()); }\n"),
    (ATT, "    page = handoff_page(e);\n", "    if (tid == 0) {\n      tl::stamp(tlc, 1);\n      tl::stamp(tlc, 2);\n    }\n"),
    (ATT, "    pdl_wait();  // topk (the selection) and the caches come from earlier kernels of the run\n",
     "    if (kFused && tid == 0) tl::stamp(tlc, 1);\n"),
    (ATT, "      page = a.page_table[static_cast<std::int64_t>(place.request) * a.pt_stride_b + block * a.pt_stride_j];\n",
     "      if (kFused && tid == 0) tl::stamp(tlc, 2);\n"),
    (ATT, "  __syncthreads();                                         // everyone's\n", "  if (kFused && tid == 0) tl::stamp(tlc, 3);\n"),
    (ATT, "  __syncthreads();  // everyone's V, P and row sums\n",
     "  if (kFused && tid == 0) tl::stamp(tlc, 7);\n"),
    (ATT, "  for (int ks = 0; ks < kKeys / 16; ++ks) pv_16keys(out, pfrag[ks * 32 + lane], vs, ks * 16, warp * 32);\n",
     "  if (kFused && tid == 0) tl::stamp(tlc, 4);\n"),
    (ATT, "    push_partial(a, G, s, &out, [&](int row, float* m, float* l) { *m = block_max(row), *l = block_sum(row); });\n",
     "    if (tid == 0) tl::stamp(tlc, 5);\n"),
    (ATT, "    merge_inbox(a, o, t, g, G, s, scratch);  // every warp's P V was done before the cluster barrier\n", "    if (tid == 0) tl::stamp(tlc, 6);\n"),
    (ATT, "  ClusterInbox& inbox = cluster_inbox();\n  cluster_wait();\n",
     "  const int tlc = 300 + blockIdx.x * gridDim.y + blockIdx.y;\n  if (threadIdx.x == 0) tl::stamp(tlc, 10);\n"),
    (ATT, "    dst->l[inbox_entry(row, a.k, s)] = l;\n  }\n", "  if (threadIdx.x == 0) tl::stamp(tlc, 11);\n"),
    (ATT, "}  // namespace msa\n", dump_fn("attn")),
    (BENCH, '#include "api/attention_cuda.h"\n',
     'extern "C" void msa_tl_dump_sel();\nextern "C" void msa_tl_dump_merge();\nextern "C" void msa_tl_dump_attn();\n'),
    (BENCH, "    std::fclose(f);\n  }\n",
     '  if (mode == "decode") {\n    msa_tl_dump_sel();\n    msa_tl_dump_merge();\n    msa_tl_dump_attn();\n  }\n'),
]

PHASES = {
    "sel": [(0, "selection: start"), (1, "selection: wait returns"), (2, "selection: first page landed"),
            (3, "selection: last block ranked"), (4, "selection: partial lists written")],
    "merge": [(0, "merge: start (resident)"), (6, "merge: rehearsal done"), (1, "merge: wait returns"),
              (2, "merge: lists loaded"), (3, "merge: step (1), tau"), (4, "merge: step (2), kept"),
              (5, "merge: topk rows written")],
    "attn": [(0, "attention: start (resident)"), (1, "attention: wait returns (handoff: entry seen)"),
             (2, "attention: page id known"),
             (3, "attention: K landed"), (7, "attention: V landed, row sums"), (4, "attention: P.V done"), (10, "attention: first cluster wait passed"),
             (11, "attention: pushes issued"), (5, "attention: pushed, cluster barrier passed"),
             (6, "attention: inbox merged, end")],
}
CTAS = {"sel": range(0, 200), "merge": range(200, 300), "attn": range(300, 512)}


def parse(text):
    stamps = {k: {} for k in PHASES}
    for line in text.splitlines():
        if line.startswith("TL "):
            _, name, cta, *vals = line.split()
            if int(cta) in CTAS[name] and int(vals[0]) > 0:
                stamps[name][int(cta)] = [int(v) for v in vals]
    return stamps


def report(stamps):
    t0 = min(v[0] for v in stamps["sel"].values())
    rows = []
    for name, phases in PHASES.items():
        for slot, label in phases:
            xs = sorted((v[slot] - t0) / 1000.0 for v in stamps[name].values() if v[slot] > 0)
            if xs:
                rows.append((label, statistics.median(xs), xs[0], xs[-1], len(xs)))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="out")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=1 << 20)
    ap.add_argument("--pages", default="",
                    help="msa bench's --pages, comma-separated (strided, ordered, shuffled): --runs runs of each")
    ap.add_argument("--worktree", action="store_true", help="copy the working tree instead of HEAD")
    ap.add_argument("--work", default="/tmp/msa_decode_timeline")
    ap.add_argument("--build-only", action="store_true", help="patch and build, do not run (no GPU needed)")
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.makedirs(args.out, exist_ok=True)
    make_tree(root, args.work, args.worktree, EDITS)
    with open(os.path.join(args.work, HEADER), "w") as f:
        f.write(TIMELINE_CUH)
    build(args.work, os.cpu_count() or 4)
    if args.build_only:
        return
    for pages in args.pages.split(","):
        for r in range(args.runs):
            run_once(args, pages, r)


def run_once(args, pages, r):
    cmd = [f"{args.work}/b/msa", "bench", "--mode", "decode", "--tokens", str(args.tokens)]
    cmd += ["--pages", pages] if pages else []
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    with open(os.path.join(args.out, f"decode_timeline_{pages or 'default'}_{r}.txt"), "w") as f:
        f.write(text)
    total = [line for line in text.splitlines() if "end to end" in line]
    print(f"run {r}{' (pages ' + pages + ')' if pages else ''}: {total[0].strip() if total else ''}")
    print(f"  {'phase':44s} {'median':>8s} {'min':>8s} {'max':>8s}  CTAs  (us from the first selection CTA)")
    for label, med, lo, hi, n in report(parse(text)):
        print(f"  {label:44s} {med:8.2f} {lo:8.2f} {hi:8.2f}  {n}")


if __name__ == "__main__":
    main()
