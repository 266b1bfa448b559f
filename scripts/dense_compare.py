"""msa end to end against dense attention on one GPU, in one run: PyTorch SDPA dense causal GQA (cuDNN backend, and
the FlashAttention-2 backend as a second line) vs msa's MsaPrefill / MsaDecode layers (index selection -> k2q ->
sparse attention -> combine), M3 shapes (Hq 64, Hkv 4, D 128, k 16, bf16).

Prefill: one causal sequence of N tokens, inputs either random (normal q, k, index q, index k) or clustered (planted
locality: every KV block belongs to one of N / (128 * 24) clusters and the index queries of a 128-token query block
point at one cluster, so the tokens of a query block select from a shared pool of about 24 blocks). Dense at every N
is measured (1M included, once). Decode: B requests x L context x Q queries, msa and dense both replayed from CUDA
graphs, msa's caches read through a shuffled page table (a fragmented pool) and again through one with the pages in
order (contiguous, the layout of dense's K and V), and once more with index_q and the index-K cache in fp8 e4m3
(shuffled pages); dense decode attends every query to all L keys (is_causal would
align top-left; the 7 keys this adds for Q = 8 are negligible work). At 32K the same run checks the GPU layer against
the CPU implementation on the last 256 query tokens (chunked prefill over the full history): selection agreement and
design.md's attention error rule.

Writes dense_compare.json and dense_compare.png into --out. Run from scripts/device.sh or by hand:
  PYTHONPATH=<dir with the msa package> python3 scripts/dense_compare.py --out out [--max-n 1048576]
"""

import argparse
import json
import math
import pathlib
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import msa
import msa.torch  # noqa: F401  (torch.ops.msa, for the CPU check)

HQ, HKV, D, BLOCK, K = 64, 4, 128, 128, 16
DEV = "cuda"


def log(*a):
    print(*a, flush=True)


def elapsed_ms(fn, reps, warmup=True):
    """Median of `reps` timed calls (CUDA events), after one warm-up call unless told otherwise (the dense runs at
    512K and 1M take seconds each and are measured once, cold: their one-time setup is a few ms of that)."""
    if warmup:
        fn()
    times = []
    for _ in range(reps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1))
    return statistics.median(times)


def graph_ms(fn, reps=20, iters=7):
    """Median per-call time of `reps` calls captured in one CUDA graph, replayed `iters` times."""
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn()
    times = []
    for _ in range(iters):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        g.replay()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1) / reps)
    return statistics.median(times)


def paged(x, perm):
    """[L, H, D] (or [L, D]) token-major keys -> a paged cache [pages, H, 128, D] ([pages, 128, D]) whose logical
    block j lives at physical page perm[j]."""
    pages = perm.numel()
    L = x.shape[0]
    pad = pages * BLOCK - L
    if pad:
        x = torch.cat([x, x.new_zeros((pad,) + tuple(x.shape[1:]))])
    if x.dim() == 3:
        blocks = x.view(pages, BLOCK, x.shape[1], D).transpose(1, 2)
    else:
        blocks = x.view(pages, BLOCK, D)
    cache = torch.empty_like(blocks)
    cache[perm] = blocks
    return cache.contiguous()


def prefill_inputs(n, clustered, gen):
    q = torch.randn(n, HQ, D, device=DEV, dtype=torch.bfloat16, generator=gen)
    k = torch.randn(n, HKV, D, device=DEV, dtype=torch.bfloat16, generator=gen)
    v = torch.randn(n, HKV, D, device=DEV, dtype=torch.bfloat16, generator=gen)
    iq = torch.randn(n, HKV, D, device=DEV, dtype=torch.float32, generator=gen)
    ik = torch.randn(n, D, device=DEV, dtype=torch.float32, generator=gen)
    if clustered:
        blocks = (n + BLOCK - 1) // BLOCK
        clusters = max(1, blocks // 24)
        centers = torch.randn(clusters, D, device=DEV, generator=gen)
        block_cluster = torch.randint(0, clusters, (blocks,), device=DEV, generator=gen)
        query_cluster = torch.randint(0, clusters, (blocks,), device=DEV, generator=gen)
        tok_block = torch.arange(n, device=DEV) // BLOCK
        ik = ik + 4 * centers[block_cluster[tok_block]]
        iq = iq + 4 * centers[query_cluster[tok_block]][:, None, :]
    return q, k, v, iq.bfloat16(), ik.bfloat16()


def msa_prefill(q, k, v, iq, ik, gen, want_topk=False):
    """The MsaPrefill layer over the whole sequence (scattered pages). Returns (time fn, out, topk, caches)."""
    n = q.shape[0]
    pages = (n + BLOCK - 1) // BLOCK
    perm = torch.randperm(pages, device=DEV, generator=gen)
    k_cache, v_cache, ik_cache = paged(k, perm), paged(v, perm), paged(ik, perm)
    table = perm.to(torch.int32)[None].contiguous()
    cu = torch.tensor([0, n], dtype=torch.int32, device=DEV)
    seq = torch.tensor([n], dtype=torch.int32, device=DEV)
    layer = msa.MsaPrefill()
    layer.plan(cu, seq, table, n)
    ws = torch.empty(layer.workspace_bytes(), dtype=torch.uint8, device=DEV)
    out = torch.empty_like(q)
    topk = torch.empty(HKV, n, K, dtype=torch.int32, device=DEV) if want_topk else None

    def run():
        layer.run(q, k_cache, v_cache, iq, ik_cache, out, None, topk, ws)

    return run, out, topk, (k_cache, v_cache, ik_cache, table)


def dense_prefill_fn(q, k, v, backend):
    qd, kd, vd = q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None]

    def run():
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(qd, kd, vd, is_causal=True, enable_gqa=True)

    return run


def check_32k_against_cpu(q, iq, caches, out_gpu, topk_gpu, tail=256):
    """CPU layer on the last `tail` query tokens (a chunk over the full history) vs the GPU run of the sequence."""
    k_cache, v_cache, ik_cache, table = (x.cpu() for x in caches)
    n = q.shape[0]
    qs, iqs = q[-tail:].cpu(), iq[-tail:].cpu()
    cu = torch.tensor([0, tail], dtype=torch.int32)
    seq = torch.tensor([n], dtype=torch.int32)
    topk_cpu = torch.ops.msa.index_select_prefill(iqs, ik_cache, table, cu, seq)
    gpu_rows = topk_gpu[:, -tail:].cpu()
    same = (topk_cpu.sort(-1).values == gpu_rows.sort(-1).values).all(-1).float().mean().item()
    # Attention on the GPU's selection: CPU in fp32 (bf16 P emulation) vs the GPU output.
    out_cpu, _ = torch.ops.msa.sparse_prefill_attention(qs, k_cache, v_cache, gpu_rows.contiguous(), cu, seq, table)
    err = (out_gpu[-tail:].cpu().float() - out_cpu.float()).abs().max().item()
    return same, err


def prefill_case(n, clustered, gen, reps, results):
    name = f"prefill {'clustered' if clustered else 'random'} {n // 1024}K"
    q, k, v, iq, ik = prefill_inputs(n, clustered, gen)
    run, out, topk, caches = msa_prefill(q, k, v, iq, ik, gen, want_topk=(n == 32768))
    t_msa = elapsed_ms(run, reps)
    row = {"case": name, "n": n, "selection": "clustered" if clustered else "random", "msa_ms": t_msa}
    if n == 32768:
        same, err = check_32k_against_cpu(q, iq, caches, out, topk)
        row["cpu_check"] = {"tokens": 256, "selection_rows_identical": same, "max_abs_err_vs_cpu": err,
                            "pass": err <= 2e-2}
        log(f"  32K check vs CPU: {same * 100:.1f} % of selection rows identical, max |out - cpu| = {err:.3e}")
    del run, out, topk, caches
    torch.cuda.empty_cache()
    for label, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash2", SDPBackend.FLASH_ATTENTION)):
        if clustered:
            continue  # dense time does not depend on the values: measured once per N, with the random inputs
        try:
            big = n >= 512 * 1024
            t = elapsed_ms(dense_prefill_fn(q, k, v, backend), 1 if big else reps, warmup=not big)
            row[f"dense_{label}_ms"] = t
            row[f"speedup_vs_{label}"] = t / t_msa
        except RuntimeError as e:  # a backend that does not take this shape
            row[f"dense_{label}_error"] = str(e).splitlines()[0]
        torch.cuda.empty_cache()
    if clustered:
        base = next(r for r in results if r["n"] == n and r["selection"] == "random")
        for key in ("dense_cudnn_ms", "dense_flash2_ms"):
            if key in base and key not in row:
                row[key] = base[key]
                row["speedup_vs_" + key[6:-3]] = base[key] / t_msa
    log(f"{name:28s} msa {t_msa:10.3f} ms | cuDNN {row.get('dense_cudnn_ms', float('nan')):10.3f} ms "
        f"({row.get('speedup_vs_cudnn', float('nan')):5.2f}x) | FA2 {row.get('dense_flash2_ms', float('nan')):10.3f} ms "
        f"({row.get('speedup_vs_flash2', float('nan')):5.2f}x)")
    results.append(row)
    del q, k, v, iq, ik
    torch.cuda.empty_cache()


def decode_case(b, L, Q, gen, results):
    name = f"decode {b} x {L // 1024}K x {Q}"
    T = b * Q
    pages_per = (L + BLOCK - 1) // BLOCK
    perm = torch.randperm(b * pages_per, device=DEV, generator=gen)
    k_cache = torch.randn(b * pages_per, HKV, BLOCK, D, device=DEV, dtype=torch.bfloat16, generator=gen)
    v_cache = torch.randn(b * pages_per, HKV, BLOCK, D, device=DEV, dtype=torch.bfloat16, generator=gen)
    ik_cache = torch.randn(b * pages_per, BLOCK, D, device=DEV, dtype=torch.bfloat16, generator=gen)
    table = perm.to(torch.int32).view(b, pages_per).contiguous()
    seq = torch.full((b,), L, dtype=torch.int32, device=DEV)
    q = torch.randn(T, HQ, D, device=DEV, dtype=torch.bfloat16, generator=gen)
    iq = torch.randn(T, HKV, D, device=DEV, dtype=torch.bfloat16, generator=gen)
    layer = msa.MsaDecode()
    layer.plan(b, Q, cuda_device=torch.cuda.current_device())
    ws = torch.empty(layer.workspace_bytes(), dtype=torch.uint8, device=DEV)
    out = torch.empty_like(q)
    t_msa = graph_ms(lambda: layer.run(q, k_cache, v_cache, iq, ik_cache, table, seq, out, workspace=ws))
    # The same caches read through a table with the pages in order: every request's blocks contiguous, the layout
    # of the dense K and V below (the shuffled table above is a fragmented page pool; the page order alone costs a
    # plain reader of the 268 MB index-K of 1M tokens ~2.5 us, bench_read).
    ordered = torch.arange(b * pages_per, device=DEV, dtype=torch.int32).view(b, pages_per).contiguous()
    t_ordered = graph_ms(lambda: layer.run(q, k_cache, v_cache, iq, ik_cache, ordered, seq, out, workspace=ws))
    # The same step with the index tensors in fp8 e4m3 (half the index-K bytes), shuffled pages.
    iq8, ik8 = iq.to(torch.float8_e4m3fn), ik_cache.to(torch.float8_e4m3fn)
    t_fp8 = graph_ms(lambda: layer.run(q, k_cache, v_cache, iq8, ik8, table, seq, out, workspace=ws))
    del k_cache, v_cache, ik_cache, iq8, ik8
    torch.cuda.empty_cache()
    row = {"case": name, "batch": b, "context": L, "queries": Q, "msa_us": t_msa * 1e3,
           "msa_pages_ordered_us": t_ordered * 1e3, "msa_fp8_index_us": t_fp8 * 1e3}
    kd = torch.randn(b, HKV, L, D, device=DEV, dtype=torch.bfloat16, generator=gen)
    vd = torch.randn(b, HKV, L, D, device=DEV, dtype=torch.bfloat16, generator=gen)
    qd = q.view(b, Q, HQ, D).transpose(1, 2)
    for label, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash2", SDPBackend.FLASH_ATTENTION)):
        def run(backend=backend):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(qd, kd, vd, enable_gqa=True)
        try:
            t = graph_ms(run)
            row[f"dense_{label}_us"] = t * 1e3
            row[f"speedup_vs_{label}"] = t / t_msa
            row[f"speedup_pages_ordered_vs_{label}"] = t / t_ordered
            row[f"speedup_fp8_index_vs_{label}"] = t / t_fp8
        except RuntimeError as e:
            row[f"dense_{label}_error"] = str(e).splitlines()[0]
    log(f"{name:28s} msa {row['msa_us']:10.1f} us (pages in order {t_ordered * 1e3:.1f}) | cuDNN "
        f"{row.get('dense_cudnn_us', float('nan')):10.1f} us ({row.get('speedup_vs_cudnn', float('nan')):5.2f}x; "
        f"{row.get('speedup_pages_ordered_vs_cudnn', float('nan')):5.2f}x) | FA2 "
        f"{row.get('dense_flash2_us', float('nan')):10.1f} us ({row.get('speedup_vs_flash2', float('nan')):5.2f}x) | "
        f"fp8 index {t_fp8 * 1e3:.1f} us ({row.get('speedup_fp8_index_vs_cudnn', float('nan')):5.2f}x cuDNN)")
    results.append(row)
    del kd, vd, q, iq
    torch.cuda.empty_cache()


def plot(prefill, decode, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for sel, marker in (("random", "o"), ("clustered", "s")):
        rows = [r for r in prefill if r["selection"] == sel]
        for label, style in (("cudnn", "-"), ("flash2", "--")):
            pts = [(r["n"], r[f"speedup_vs_{label}"]) for r in rows if f"speedup_vs_{label}" in r]
            if pts:
                a.plot([p[0] for p in pts], [p[1] for p in pts], style, marker=marker,
                       label=f"{sel} inputs vs {'cuDNN' if label == 'cudnn' else 'FlashAttention-2'}")
    a.set_xscale("log", base=2)
    a.set_xticks([r["n"] for r in prefill if r["selection"] == "random"])
    a.set_xticklabels([f"{r['n'] // 1024}K" for r in prefill if r["selection"] == "random"])
    a.set_xlabel("context length (one sequence)")
    a.set_ylabel("speedup over dense SDPA")
    a.set_title("prefill, end to end")
    a.grid(alpha=0.3)
    a.legend(fontsize=8)
    names = [r["case"].replace("decode ", "") for r in decode]
    x = range(len(decode))
    bars = (("speedup_vs_cudnn", "vs cuDNN, shuffled pages"),
            ("speedup_pages_ordered_vs_cudnn", "vs cuDNN, pages in order"),
            ("speedup_vs_flash2", "vs FlashAttention-2, shuffled pages"))
    for j, (key, label) in enumerate(bars):
        b.bar([i + (j - 1) * 0.27 for i in x], [r.get(key, 0) for r in decode], width=0.27, label=label)
    b.set_xticks(list(x))
    b.set_xticklabels(names)
    b.set_ylabel("speedup over dense SDPA")
    b.set_title("decode, one step (B x context x queries)")
    b.grid(alpha=0.3, axis="y")
    b.legend(fontsize=8)
    fig.suptitle(f"msa vs dense attention, M3 shapes, {torch.cuda.get_device_name()}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="out")
    ap.add_argument("--max-n", type=int, default=1 << 20)
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not (torch.cuda.is_available() and msa.sm90_device_available()):
        log("dense_compare: needs a Hopper GPU")
        return 1
    gen = torch.Generator(device=DEV).manual_seed(1)
    log(f"msa vs dense SDPA on {torch.cuda.get_device_name()}, torch {torch.__version__}")
    prefill, decode = [], []
    t0 = time.time()
    for n in (1 << 15, 1 << 17, 1 << 19, 1 << 20):
        if n > args.max_n:
            break
        for clustered in (False, True):
            prefill_case(n, clustered, gen, 5 if n <= 1 << 17 else 2, prefill)
    for b, L, Q in ((1, 1 << 17, 1), (1, 1 << 20, 1), (8, 1 << 17, 8)):
        decode_case(b, L, Q, gen, decode)
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "prefill": prefill,
              "decode": decode, "seconds": time.time() - t0}
    (out / "dense_compare.json").write_text(json.dumps(result, indent=1))
    plot(prefill, decode, out / "dense_compare.png")
    checks = [r["cpu_check"]["pass"] for r in prefill if "cpu_check" in r]
    log(f"wrote {out / 'dense_compare.json'} and {out / 'dense_compare.png'}; 32K CPU check: "
        f"{'pass' if checks and all(checks) else 'FAIL'}")
    return 0 if checks and all(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
