"""msa.torch: the torch.library ops — results, opcheck, torch.compile(fullgraph=True), and on a Hopper GPU the CUDA
path (equal to the CPU path on planted inputs) and CUDA-graph capture of the decode selection. Skipped without
torch (the CI machine has none; scripts/device.sh runs them on the GPU machine)."""

import pytest

torch = pytest.importorskip("torch")

import msa  # noqa: E402
import msa.torch  # noqa: E402,F401  (registers torch.ops.msa)

D, BLOCK = 128, 128
ops = torch.ops.msa


def planted(lengths, nq, heads=4, seed=0, fp8=False):
    """Index inputs whose block scores are distinct planted values (so every correct selection is identical). fp8:
    float8_e4m3fn tensors whose planted values are distinct e4m3 values (at most 126 blocks per request)."""
    g = torch.Generator().manual_seed(seed)
    e4m3 = torch.arange(1, 127, dtype=torch.uint8).view(torch.float8_e4m3fn).float()  # the positive finite values
    blocks = [(L + BLOCK - 1) // BLOCK for L in lengths]
    total = sum(blocks) + 1
    perm = torch.randperm(total, generator=g)
    cache = torch.zeros(total, BLOCK, D)
    table = torch.zeros(len(lengths), max(blocks), dtype=torch.int32)
    nxt = 0
    for b, n in enumerate(blocks):
        values = e4m3[torch.randperm(126, generator=g)[:n]] if fp8 else (torch.randperm(n, generator=g).float() + 1) / 8
        for j in range(n):
            table[b, j] = perm[nxt]
            cache[perm[nxt], :, 0] = values[j]
            nxt += 1
    T = sum(nq)
    q = torch.zeros(T, heads, D)
    q[:, :, 0] = 1
    cu = torch.tensor([0] + list(torch.tensor(nq).cumsum(0)), dtype=torch.int32)
    dtype = torch.float8_e4m3fn if fp8 else torch.bfloat16
    return q.to(dtype), cache.to(dtype), table, cu, torch.tensor(lengths, dtype=torch.int32)


def attention_inputs(L, T, Hq=8, Hkv=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    pages = (L + BLOCK - 1) // BLOCK
    k_cache = torch.randn(pages + 1, Hkv, BLOCK, D, generator=g).bfloat16()
    v_cache = torch.randn(pages + 1, Hkv, BLOCK, D, generator=g).bfloat16()
    table = torch.randperm(pages + 1, generator=g)[:pages].to(torch.int32)[None]
    q = torch.randn(T, Hq, D, generator=g).bfloat16()
    pos = torch.arange(L - T, L)
    topk = torch.full((Hkv, T, 16), -1, dtype=torch.int32)
    for t, p in enumerate(pos.tolist()):
        topk[:, t, : p // BLOCK + 1] = torch.arange(p // BLOCK + 1, dtype=torch.int32)
    return q, k_cache, v_cache, topk, table, pos


def test_ops_match_the_binding():
    q, cache, table, cu, seq = planted([3000, 700], [40, 700])
    topk = ops.index_select_prefill(q, cache, table, cu, seq)
    direct = torch.empty_like(topk)
    msa.index_select_prefill(q, cache, table, cu, seq, direct)
    assert torch.equal(topk, direct)
    out = torch.full_like(topk, 7)
    ops.index_select_prefill_out(q, cache, table, cu, seq, out)
    assert torch.equal(out, topk)
    # Decode with 2 queries per request equals the prefill path on the same tokens.
    qd, cache_d, table_d, _, seq_d = planted([2600, 5000], [2, 2], seed=1)
    dec = ops.index_select_decode(qd, cache_d, table_d, seq_d, 2)
    pre = ops.index_select_prefill(qd, cache_d, table_d, torch.tensor([0, 2, 4], dtype=torch.int32), seq_d)
    assert torch.equal(dec, pre)


def test_fp8_tensor_through_dlpack():
    # The binding's own path for DLPack's float8_e4m3fn code: the tensor handed over as it is, not as its uint8 bits
    # (which msa's wrappers pass, since not every torch exports fp8 through DLPack).
    q, cache, table, cu, seq = planted([3000, 700], [40, 700], fp8=True)
    try:
        torch.utils.dlpack.to_dlpack(q)
    except Exception as e:  # noqa: BLE001 (any refusal: this torch does not export the type)
        pytest.skip(f"torch {torch.__version__} does not export float8_e4m3fn through DLPack: {e}")
    want = torch.empty(4, 740, 16, dtype=torch.int32)
    msa.index_select_prefill(q, cache, table, cu, seq, want)
    got = torch.full_like(want, -7)
    msa._msa.index_select_prefill(q, cache, table, cu, seq, got, None, 0)
    assert torch.equal(got, want)
    assert torch.equal(want, ops.index_select_prefill(q.bfloat16(), cache.bfloat16(), table, cu, seq))


def test_sparse_attention_ops_short_rows_equal_dense():
    L, T = 1500, 200
    q, k_cache, v_cache, topk, table, pos = attention_inputs(L, T)
    cu, seq = torch.tensor([0, T], dtype=torch.int32), torch.tensor([L], dtype=torch.int32)
    out, lse = ops.sparse_prefill_attention(q, k_cache, v_cache, topk, cu, seq, table)
    # Dense causal GQA in fp64 over the same (paged) keys.
    k = k_cache[table[0].long()].transpose(1, 2).reshape(-1, 2, D)[:L].double()
    v = v_cache[table[0].long()].transpose(1, 2).reshape(-1, 2, D)[:L].double()
    qq = q.double()
    mask = torch.arange(L)[None, :] <= pos[:, None]
    s = torch.einsum("thd,lhd->htl", qq, k.repeat_interleave(4, dim=1)) / D**0.5
    p = torch.softmax(s.masked_fill(~mask[None], float("-inf")), dim=-1)
    want = torch.einsum("htl,lhd->thd", p, v.repeat_interleave(4, dim=1))
    torch.testing.assert_close(out.double(), want, atol=2e-2, rtol=2e-2)
    # The decode op on the last 2 tokens equals the prefill op's rows for them.
    dq = q[-2:].contiguous()
    d_out, d_lse = ops.sparse_decode_attention(dq, k_cache, v_cache, topk[:, -2:].contiguous(), table, seq, 2)
    assert torch.equal(d_out, out[-2:]) and torch.equal(d_lse, lse[-2:])


def test_bad_arguments_raise_errors_that_name_them():
    L, T = 700, 4
    q, k_cache, v_cache, topk, table, _ = attention_inputs(L, T)
    seq = torch.tensor([L], dtype=torch.int32)
    with pytest.raises(ValueError, match="queries_per_request: must be >= 1, got 0"):
        ops.sparse_decode_attention(q, k_cache, v_cache, topk, table, seq, 0)
    with pytest.raises(ValueError, match="q: T = 4 must be a multiple of queries_per_request = 3"):
        ops.sparse_decode_attention(q, k_cache, v_cache, topk, table, seq, 3)
    with pytest.raises(ValueError, match="queries_per_request"):
        ops.index_select_decode(q[:, :2].contiguous(), k_cache[:, 0].contiguous(), table, seq, 0)


def test_opcheck():
    q, cache, table, cu, seq = planted([600], [300])
    torch.library.opcheck(ops.index_select_prefill, (q, cache, table, cu, seq))
    torch.library.opcheck(ops.index_select_prefill_out,
                          (q, cache, table, cu, seq, torch.empty(4, 300, 16, dtype=torch.int32)))
    torch.library.opcheck(ops.index_select_decode, (q[:2], cache, table, seq, 2))
    S, T, Hq, Hkv = 3, 5, 8, 2
    counts = torch.randint(0, S + 1, (T, Hkv), dtype=torch.int32)
    torch.library.opcheck(ops.combine, (torch.randn(S, T, Hq, D), torch.randn(S, T, Hq), counts))
    L, Tq = 700, 50
    aq, k_cache, v_cache, topk, table_a, _ = attention_inputs(L, Tq)
    seq_a = torch.tensor([L], dtype=torch.int32)
    torch.library.opcheck(ops.sparse_prefill_attention,
                          (aq, k_cache, v_cache, topk, torch.tensor([0, Tq], dtype=torch.int32), seq_a, table_a))
    torch.library.opcheck(ops.sparse_decode_attention,
                          (aq[-1:].contiguous(), k_cache, v_cache, topk[:, -1:].contiguous(), table_a, seq_a, 1))


def test_torch_compile_fullgraph():
    class Select(torch.nn.Module):
        def forward(self, q, cache, table, cu, seq):
            topk = ops.index_select_prefill(q, cache, table, cu, seq)
            return topk[:, :, :15].sum(dim=-1)  # some torch work after the op

    q, cache, table, cu, seq = planted([3000], [100])
    eager = Select()(q, cache, table, cu, seq)
    for backend in ("aot_eager", "inductor"):  # fake tensors + functionalisation, then generated code around the op
        compiled = torch.compile(Select(), fullgraph=True, backend=backend)(q, cache, table, cu, seq)
        assert torch.equal(eager, compiled), backend


cuda_sm90 = pytest.mark.skipif(not (torch.cuda.is_available() and msa.sm90_device_available()),
                               reason="needs a Hopper GPU")


@cuda_sm90
def test_cuda_selection_equals_cpu():
    q, cache, table, cu, seq = planted([30000, 700], [40, 700])
    cpu = ops.index_select_prefill(q, cache, table, cu, seq)
    gpu = ops.index_select_prefill(q.cuda(), cache.cuda(), table.cuda(), cu.cuda(), seq.cuda())
    assert torch.equal(gpu.cpu(), cpu)
    qd, cache_d, table_d, _, seq_d = planted([200000, 5000], [4, 4], seed=2)
    cpu_d = ops.index_select_decode(qd, cache_d, table_d, seq_d, 4)
    gpu_d = ops.index_select_decode(qd.cuda(), cache_d.cuda(), table_d.cuda(), seq_d.cuda(), 4)
    assert torch.equal(gpu_d.cpu(), cpu_d)


@cuda_sm90
def test_cuda_fp8_selection_equals_cpu():
    # One nonzero product per key: the fp8 tensor cores score the planted e4m3 values exactly.
    q, cache, table, cu, seq = planted([15000, 700], [40, 700], fp8=True)
    assert q.dtype == cache.dtype == torch.float8_e4m3fn
    cpu = ops.index_select_prefill(q, cache, table, cu, seq)
    gpu = ops.index_select_prefill(q.cuda(), cache.cuda(), table.cuda(), cu.cuda(), seq.cuda())
    assert torch.equal(gpu.cpu(), cpu)
    q16, cache16 = q.bfloat16(), cache.bfloat16()
    assert torch.equal(ops.index_select_prefill(q16, cache16, table, cu, seq), cpu)
    qd, cache_d, table_d, _, seq_d = planted([16000, 5000], [4, 4], seed=2, fp8=True)
    cpu_d = ops.index_select_decode(qd, cache_d, table_d, seq_d, 4)
    gpu_d = ops.index_select_decode(qd.cuda(), cache_d.cuda(), table_d.cuda(), seq_d.cuda(), 4)
    assert torch.equal(gpu_d.cpu(), cpu_d)


@cuda_sm90
def test_cuda_combine_close_to_cpu():
    S, T, Hq, Hkv = 16, 33, 16, 2
    po, pl = torch.randn(S, T, Hq, D), torch.randn(S, T, Hq)
    counts = torch.randint(0, S + 1, (T, Hkv), dtype=torch.int32)
    out_c, lse_c = ops.combine(po, pl, counts)
    out_g, lse_g = ops.combine(po.cuda(), pl.cuda(), counts.cuda())
    torch.testing.assert_close(out_g.cpu().float(), out_c.float(), atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(lse_g.cpu(), lse_c, atol=1e-5, rtol=1e-5)


@cuda_sm90
def test_cuda_graph_capture_of_decode_selection():
    q, cache, table, _, seq = planted([100000, 3000], [1, 1], seed=3)
    q, cache, table, seq = q.cuda(), cache.cuda(), table.cuda(), seq.cuda()
    ops.index_select_decode(q, cache, table, seq, 1)  # warm-up outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        topk = ops.index_select_decode(q, cache, table, seq, 1)
    for step in range(5):  # grow the sequences in place between replays; every replay equals an eager run
        seq += 1
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(topk, ops.index_select_decode(q, cache, table, seq, 1)), step


@cuda_sm90
@pytest.mark.parametrize("hq,hkv", [(32, 2), (8, 2)])  # G = 16 (KV-outer kernel) and G = 4 (split kernel)
def test_cuda_sparse_attention_equals_cpu(hq, hkv):
    L, T = 2000, 300
    q, k_cache, v_cache, topk, table, _ = attention_inputs(L, T, Hq=hq, Hkv=hkv)
    cu, seq = torch.tensor([0, T], dtype=torch.int32), torch.tensor([L], dtype=torch.int32)
    out_c, lse_c = ops.sparse_prefill_attention(q, k_cache, v_cache, topk, cu, seq, table)
    out_g, lse_g = ops.sparse_prefill_attention(*(x.cuda() for x in (q, k_cache, v_cache, topk, cu, seq, table)))
    torch.testing.assert_close(out_g.cpu().float(), out_c.float(), atol=1.5e-2, rtol=1e-2)
    torch.testing.assert_close(lse_g.cpu(), lse_c, atol=1e-3, rtol=1e-4)
    # Decode: the last 4 tokens as one request with 4 queries.
    qd, topk_d = q[-4:].contiguous(), topk[:, -4:].contiguous()
    out_c, lse_c = ops.sparse_decode_attention(qd, k_cache, v_cache, topk_d, table, seq, 4)
    out_g, lse_g = ops.sparse_decode_attention(*(x.cuda() for x in (qd, k_cache, v_cache, topk_d, table, seq)), 4)
    torch.testing.assert_close(out_g.cpu().float(), out_c.float(), atol=1.5e-2, rtol=1e-2)
    torch.testing.assert_close(lse_g.cpu(), lse_c, atol=1e-3, rtol=1e-4)


@cuda_sm90
def test_workspace_on_another_device_raises():
    """The core takes a workspace as a bare pointer; the binding rejects one that is not on the op's device."""
    q, k_cache, v_cache, topk, table, _ = attention_inputs(2000, 1, Hq=64, Hkv=4, seed=5)
    q, k_cache, v_cache, topk, table = (x.cuda() for x in (q, k_cache, v_cache, topk, table))
    seq = torch.tensor([2000], dtype=torch.int32, device="cuda")
    op = msa.SparseDecodeAttention()
    op.plan(1, cuda_device=q.device.index)
    out = torch.empty_like(q)
    with pytest.raises(ValueError, match=r"workspace: must be on the device of q \(cuda:\d+\), got cpu"):
        op.run(q, k_cache, v_cache, topk, table, seq, out, workspace=torch.empty(op.workspace_bytes(), dtype=torch.uint8))
    workspace = torch.empty(op.workspace_bytes(), dtype=torch.uint8, device=q.device)
    op.run(q, k_cache, v_cache, topk, table, seq, out, workspace=workspace)
    want, _ = ops.sparse_decode_attention(q, k_cache, v_cache, topk, table, seq, 1)
    assert torch.equal(out, want)


@cuda_sm90
def test_cuda_graph_capture_of_decode_attention():
    q, k_cache, v_cache, topk, table, _ = attention_inputs(2000, 1, Hq=64, Hkv=4, seed=4)
    q, k_cache, v_cache, topk, table = (x.cuda() for x in (q, k_cache, v_cache, topk, table))
    seq = torch.tensor([2000], dtype=torch.int32, device="cuda")
    ops.sparse_decode_attention(q, k_cache, v_cache, topk, table, seq, 1)  # warm-up outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, lse = ops.sparse_decode_attention(q, k_cache, v_cache, topk, table, seq, 1)
    for step in range(5):  # new query values in place between replays; every replay equals an eager run
        q.normal_()
        graph.replay()
        torch.cuda.synchronize()
        want, want_lse = ops.sparse_decode_attention(q, k_cache, v_cache, topk, table, seq, 1)
        assert torch.equal(out, want) and torch.equal(lse, want_lse), step
