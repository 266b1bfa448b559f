#!/usr/bin/env python3
"""Where the time of a decode step goes: `msa bench --mode decode` (MsaDecode, graph replays: selection kernel ->
merge kernel -> fused cluster attention at 1 x 1M x 1) on copies of the tree in which a kernel returns early.

Each variant is the tree (HEAD by default, or the working tree with --worktree) with a few lines inserted after
fixed anchors in the kernel sources; an anchor that is not found exactly once stops the script (the sources moved:
update the anchors). The variants build side by side and run in alternation (--reps rounds), so drift hits all
alike; the table gives each variant's end-to-end range and what its cut removes against the full chain. Needs a
Hopper GPU; run it on the device machine:

  python3 scripts/decode_breakdown.py --out $OUT [--reps 3] [--worktree]

The method behind docs/performance.md ("Decode 1 x 1M end to end: where the time goes").
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

ATT = "src/kernels/decode/decode_attention.cu"
MERGE = "src/kernels/sm90/indexer/merge_splits.cu"
WAIT = "    pdl_wait();  // topk (the selection) and the caches come from earlier kernels of the run\n"
HANDOFF = "    page = handoff_page(e);\n"  # MsaDecode's fused kernel behind a merging selection: the entry is its wait
V_COMMIT = ("  load_block_rows<kThreads>(vs, vg, a.kv_stride_t, rows_valid);\n"
            "  asm volatile(\"cp.async.commit_group;\\n\" ::);\n")
TRIGGER = "  pdl_launch_dependents();\n"

# The fused kernel arrives on its cluster barrier at its start: a cut waits on it before returning.
CUT = "  if constexpr (kFused) {\n    cluster_wait();\n    return;\n  }\n"
ATT_AFTER_WAIT = [(ATT, WAIT, CUT), (ATT, HANDOFF, CUT)]
ATT_AFTER_KV = (ATT, V_COMMIT, "  if constexpr (kFused) {\n    asm volatile(\"cp.async.wait_group 0;\\n\" ::: \"memory\");\n"
                "    __syncthreads();\n    cluster_wait();\n    return;\n  }\n")
# The merge still clears the pool words (the next selection's split pool needs them) before it returns.
MERGE_AFTER_WAIT = (MERGE, TRIGGER, "  if (blockIdx.x == 0)\n    for (int i = threadIdx.x; i < tiles; i += kMergeThreads) "
                    "*pool_word(a, i) = kPoolTag;\n  if (a.k > 0) return;\n")

VARIANTS = [
    ("full chain", []),
    ("attention returns after its wait (or handoff entry)", ATT_AFTER_WAIT),
    ("attention returns once its K and V landed", [ATT_AFTER_KV]),
    ("merge and attention return after their waits", [MERGE_AFTER_WAIT] + ATT_AFTER_WAIT),
]


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, **kw)


def make_tree(root, dst, worktree, edits):
    if os.path.exists(dst):
        shutil.rmtree(dst)
    os.makedirs(dst)
    if worktree:
        sh(f"tar --exclude='./build*' --exclude='./out' --exclude='./.git' --exclude='./scratch' -cf - . "
           f"| tar -xf - -C {dst}", cwd=root)
    else:
        sh(f"git archive HEAD | tar -x -C {dst}", cwd=root)
    for path, anchor, insert in edits:
        p = os.path.join(dst, path)
        with open(p) as f:
            text = f.read()
        if text.count(anchor) != 1:
            sys.exit(f"decode_breakdown: the anchor in {path} occurs {text.count(anchor)} times, not once:\n{anchor}")
        with open(p, "w") as f:
            f.write(text.replace(anchor, anchor + insert))


def build(dst, jobs):
    log = os.path.join(dst, "build.log")
    with open(log, "w") as f:
        sh(f"cmake -S {dst} -B {dst}/b -G Ninja -DCMAKE_BUILD_TYPE=Release -DMSA_BUILD_TESTS=OFF && "
           f"cmake --build {dst}/b --target msa -j {jobs}", stdout=f, stderr=subprocess.STDOUT)


def bench(dst, out_json):
    sh(f"{dst}/b/msa bench --mode decode --json {out_json}", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(out_json) as f:
        return json.load(f)["total_ms"] * 1000.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="out")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--worktree", action="store_true", help="copy the working tree instead of HEAD")
    ap.add_argument("--work", default="/tmp/msa_decode_breakdown")
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.makedirs(args.out, exist_ok=True)
    dirs = [os.path.join(args.work, f"v{i}") for i in range(len(VARIANTS))]
    for d, (_, edits) in zip(dirs, VARIANTS):
        make_tree(root, d, args.worktree, edits)
    jobs = max(1, (os.cpu_count() or 4) // len(VARIANTS))
    with ThreadPoolExecutor(len(VARIANTS)) as pool:
        list(pool.map(lambda d: build(d, jobs), dirs))
    times = [[] for _ in VARIANTS]
    for r in range(args.reps):
        for i, d in enumerate(dirs):
            times[i].append(bench(d, os.path.join(args.out, f"decode_breakdown_v{i}_r{r}.json")))
    full = min(times[0])
    print(f"{'variant':48s} {'end to end (us)':>18s} {'removed (us)':>13s}")
    for (name, _), t in zip(VARIANTS, times):
        print(f"{name:48s} {min(t):8.1f} - {max(t):6.1f} {full - min(t):13.1f}")
    with open(os.path.join(args.out, "decode_breakdown.json"), "w") as f:
        json.dump({name: t for (name, _), t in zip(VARIANTS, times)}, f, indent=1)


if __name__ == "__main__":
    main()
