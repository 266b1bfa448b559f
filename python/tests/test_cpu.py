"""The Python binding on the CPU path, with NumPy arrays: results against NumPy models, in-place and strided
outputs, errors. (GPU tests with PyTorch run on the GPU machine: scripts/device.sh.)"""

import numpy as np
import pytest

import msa

D, BLOCK = 128, 128


def to_bf16(x):
    """float32 -> bf16 bit patterns (uint16), round to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def paged(keys_per_request, rng, heads=None):
    """Scatters each request's rows over shuffled pages: (cache, page_table). keys_per_request: list of arrays
    [L, ...]; the cache is [pages, 128, ...] (index keys) or, with heads, [pages, heads, 128, 128]."""
    n_blocks = [(len(k) + BLOCK - 1) // BLOCK for k in keys_per_request]
    total = sum(n_blocks) + 2
    perm = rng.permutation(total)
    tail = keys_per_request[0].shape[1:]
    cache = np.zeros((total, BLOCK) + tail, dtype=keys_per_request[0].dtype)
    table = np.zeros((len(keys_per_request), max(n_blocks)), dtype=np.int32)
    nxt = 0
    for b, keys in enumerate(keys_per_request):
        for j in range(n_blocks[b]):
            page = perm[nxt]
            nxt += 1
            table[b, j] = page
            rows = keys[j * BLOCK:(j + 1) * BLOCK]
            cache[page, :len(rows)] = rows
    if heads is not None:  # [pages, 128, Hkv, 128] -> [pages, Hkv, 128, 128]
        cache = np.ascontiguousarray(cache.transpose(0, 2, 1, 3))
    return cache, table


def expected_topk(scores_by_block, local, k=16):
    """The selection contract: all visible blocks when local + 1 <= k, else the k - 1 best history blocks (score
    descending, smaller id first), then the local block, then -1."""
    if local + 1 <= k:
        return list(range(local + 1)) + [-1] * (k - local - 1)
    order = sorted(range(local), key=lambda j: (-scores_by_block[j], j))[:k - 1]
    return order + [local]


def test_version_and_device_query():
    assert isinstance(msa.version(), str) and msa.version().count(".") == 2
    assert isinstance(msa.sm90_device_available(), bool)


def test_index_select_prefill_planted_scores():
    rng = np.random.default_rng()
    H, lengths = 4, [3000, 700]
    # Every key of block j of request b is v[b][j] * e0, every index query is e0: block j scores exactly v[b][j].
    values = [rng.permutation(np.arange(1, (L + 127) // 128 + 1)).astype(np.float32) / 8 for L in lengths]
    keys = []
    for b, L in enumerate(lengths):
        k = np.zeros((L, D), np.float32)
        k[:, 0] = np.repeat(values[b], BLOCK)[:L]
        keys.append(to_bf16(k))
    cache, table = paged(keys, rng)
    nq = [40, 700]  # a 40-token chunk over 2960 tokens of history, and a full 700-token prefill
    T = sum(nq)
    q = np.zeros((T, H, D), np.float32)
    q[:, :, 0] = 1.0
    cu = np.array([0, nq[0], T], np.int32)
    seq = np.array(lengths, np.int32)
    big = np.full((H, T, 20), 7, np.int32)
    topk = big[:, :, :16]  # a strided view: rows 20 apart; the op writes through it
    msa.index_select_prefill(msa.bf16(to_bf16(q)), msa.bf16(cache), table, cu, seq, topk)
    assert (big[:, :, 16:] == 7).all()
    for b in range(2):
        for i in range(nq[b]):
            t = cu[b] + i
            local = (lengths[b] - nq[b] + i) // BLOCK
            want = expected_topk(values[b], local)
            for h in range(H):
                assert list(topk[h, t]) == want, (b, i, h)


def test_index_select_decode_equals_prefill():
    rng = np.random.default_rng()
    H, Q, lengths = 4, 2, [2600, 5000]
    keys = [to_bf16(rng.standard_normal((L, D)).astype(np.float32)) for L in lengths]
    cache, table = paged(keys, rng)
    q = to_bf16(rng.standard_normal((len(lengths) * Q, H, D)).astype(np.float32))
    seq = np.array(lengths, np.int32)
    decode = np.zeros((H, len(lengths) * Q, 16), np.int32)
    assert msa.index_select_decode_workspace_size(msa.bf16(q), msa.bf16(cache), table, seq, decode, Q) == 0
    msa.index_select_decode(msa.bf16(q), msa.bf16(cache), table, seq, decode, Q)
    prefill = np.zeros_like(decode)
    cu = np.array([0, Q, 2 * Q], np.int32)
    msa.index_select_prefill(msa.bf16(q), msa.bf16(cache), table, cu, seq, prefill)
    np.testing.assert_array_equal(decode, prefill)
    assert (decode[:, :, 15] == np.array([(lengths[b] - Q + i) // BLOCK for b in range(2) for i in range(Q)])).all()


def e4m3_values():
    """The float value of every fp8 e4m3 code 0..255 (NaN for 0x7f and 0xff)."""
    c = np.arange(256)
    e, m = (c >> 3) & 15, c & 7
    v = np.where(e == 0, m / 512.0, (8 + m) * 2.0 ** (e - 10))
    v = np.where(c & 0x80, -v, v)
    v[(c & 0x7F) == 0x7F] = np.nan
    return v.astype(np.float32)


def test_fp8_index_selects_as_its_bf16_values():
    # Every e4m3 value is exact in bf16, and the CPU path sums either dtype in one order: fp8 index tensors select
    # exactly what bf16 tensors holding the same values select.
    rng = np.random.default_rng()
    values = e4m3_values()
    finite = np.flatnonzero(np.isfinite(values) & (np.abs(values) <= 8)).astype(np.uint8)
    H, Q, lengths = 4, 2, [2600, 5000]
    cache8, table = paged([rng.choice(finite, (L, D)) for L in lengths], rng)
    q8 = rng.choice(finite, (len(lengths) * Q, H, D))
    seq, cu, T = np.array(lengths, np.int32), np.array([0, Q, 2 * Q], np.int32), len(lengths) * Q

    def select(qq, kk):
        prefill, decode = np.zeros((H, T, 16), np.int32), np.zeros((H, T, 16), np.int32)
        msa.index_select_prefill(qq, kk, table, cu, seq, prefill)
        msa.index_select_decode(qq, kk, table, seq, decode, Q)
        return prefill, decode

    prefill8, decode8 = select(msa.fp8(q8), msa.fp8(cache8))
    prefill16, decode16 = select(msa.bf16(to_bf16(values[q8])), msa.bf16(to_bf16(values[cache8])))
    np.testing.assert_array_equal(prefill8, prefill16)
    np.testing.assert_array_equal(decode8, decode16)
    np.testing.assert_array_equal(prefill8, decode8)
    topk = decode8
    with pytest.raises(ValueError, match="index_k_cache: dtype must match index_q's"):
        msa.index_select_decode(msa.fp8(q8), msa.bf16(to_bf16(values[cache8])), table, seq, topk, Q)
    with pytest.raises(TypeError, match="fp8_e4m3 bits must be an 8-bit integer array"):
        msa.index_select_decode(msa.fp8(to_bf16(values[q8])), msa.fp8(cache8), table, seq, topk, Q)


def test_combine_matches_numpy():
    rng = np.random.default_rng()
    S, T, Hq, Hkv = 5, 6, 8, 2
    po = rng.standard_normal((S, T, Hq, D)).astype(np.float32)
    pl = rng.uniform(-3, 3, (S, T, Hq)).astype(np.float32)
    counts = rng.integers(0, S + 1, (T, Hkv)).astype(np.int32)
    counts[0, 0] = 0
    out = np.zeros((T, Hq, D), np.uint16)
    lse = np.zeros((T, Hq), np.float32)
    msa.combine(po, pl, counts, msa.bf16(out), lse)
    G = Hq // Hkv
    for t in range(T):
        for h in range(Hq):
            n = counts[t, h // G]
            if n == 0:
                assert lse[t, h] == -np.inf and (out[t, h] == 0).all()
                continue
            ls = pl[:n, t, h].astype(np.float64)
            w = np.exp(ls - ls.max())
            want = (w[:, None] * po[:n, t, h]).sum(0) / w.sum()
            np.testing.assert_allclose(from_bf16(out[t, h]), want, rtol=1e-2, atol=1e-2)
            assert abs(lse[t, h] - (ls.max() + np.log(w.sum()))) < 1e-5


def dense_causal(q, k, v, positions, scale):
    """fp64 dense causal GQA: q [T, Hq, D], k/v [L, Hkv, D]; query t sees keys 0..positions[t]."""
    T, Hq, _ = q.shape
    G = Hq // k.shape[1]
    out = np.zeros((T, Hq, D))
    for t in range(T):
        n = positions[t] + 1
        for h in range(Hq):
            s = (k[:n, h // G].astype(np.float64) @ q[t, h].astype(np.float64)) * scale
            p = np.exp(s - s.max())
            out[t, h] = (p / p.sum()) @ v[:n, h // G].astype(np.float64)
    return out


def test_sparse_prefill_short_rows_equal_dense():
    rng = np.random.default_rng()
    Hq, Hkv, L = 8, 2, 1500  # n_vis <= 12 blocks < 16: the sparse result must equal dense causal attention
    kf = rng.standard_normal((L, Hkv, D)).astype(np.float32)
    vf = rng.standard_normal((L, Hkv, D)).astype(np.float32)
    k_cache, table = paged([to_bf16(kf)], rng, heads=Hkv)
    v_cache, _ = paged([to_bf16(vf)], np.random.default_rng(0), heads=Hkv)
    # Same page order for K and V: rebuild V on K's page table.
    v_cache = np.zeros_like(k_cache)
    vb = to_bf16(vf)
    for j in range(table.shape[1]):
        rows = vb[j * BLOCK:(j + 1) * BLOCK]
        v_cache[table[0, j], :, :len(rows)] = rows.transpose(1, 0, 2)
    T = 300
    qf = rng.standard_normal((T, Hq, D)).astype(np.float32)
    positions = np.arange(L - T, L)
    topk = np.full((Hkv, T, 16), -1, np.int32)
    for t, p in enumerate(positions):
        topk[:, t, : p // BLOCK + 1] = np.arange(p // BLOCK + 1)
    op = msa.SparsePrefillAttention()
    with pytest.raises(ValueError, match="schedule: must be 'auto', 'kv_outer' or 'union', got 'fast'"):
        op.plan(topk, np.array([0, T], np.int32), np.array([L], np.int32), table, num_q_heads=Hq,
                num_kv_heads=Hkv, schedule="fast")
    op.plan(topk, np.array([0, T], np.int32), np.array([L], np.int32), table, num_q_heads=Hq, num_kv_heads=Hkv,
            schedule="kv_outer")  # CPU descriptors: every schedule computes the same reference
    out = np.zeros((T, Hq, D), np.uint16)
    lse = np.zeros((T, Hq), np.float32)
    op.run(msa.bf16(to_bf16(qf)), msa.bf16(k_cache), msa.bf16(v_cache), msa.bf16(out), lse)
    want = dense_causal(from_bf16(to_bf16(qf)), from_bf16(to_bf16(kf)), from_bf16(to_bf16(vf)), positions,
                        1 / np.sqrt(D))
    np.testing.assert_allclose(from_bf16(out), want, atol=2e-2, rtol=2e-2)
    assert np.isfinite(lse).all()


def test_errors_name_the_argument():
    q = np.zeros((4, 4, D), np.uint16)
    cache = np.zeros((2, BLOCK, D), np.uint16)
    table = np.zeros((1, 1), np.int32)
    cu = np.array([0, 4], np.int32)
    seq = np.array([4], np.int32)
    with pytest.raises(ValueError, match="topk: dtype"):  # the core's rule: topk is int32
        msa.index_select_prefill(msa.bf16(q), msa.bf16(cache), table, cu, seq, np.zeros((4, 4, 16), np.float32))
    with pytest.raises(TypeError, match="topk"):  # a dtype msa has no name for
        msa.index_select_prefill(msa.bf16(q), msa.bf16(cache), table, cu, seq, np.zeros((4, 4, 16), np.int64))
    with pytest.raises(TypeError, match="index_q"):  # uint16 without the bf16 mark
        msa.index_select_prefill(q, msa.bf16(cache), table, cu, seq, np.zeros((4, 4, 16), np.int32))
    with pytest.raises(TypeError, match="page_table"):
        msa.index_select_prefill(msa.bf16(q), msa.bf16(cache), "not an array", cu, seq, np.zeros((4, 4, 16), np.int32))
    with pytest.raises(ValueError, match="seq_lens_k"):
        msa.index_select_prefill(msa.bf16(q), msa.bf16(cache), table, cu, np.array([-1], np.int32),
                                 np.zeros((4, 4, 16), np.int32))
    # The core sees a workspace as (pointer, bytes): a strided view would let it write between the view's elements.
    with pytest.raises(ValueError, match="workspace: must be a contiguous array"):
        msa.index_select_prefill(msa.bf16(q), msa.bf16(cache), table, cu, seq, np.zeros((4, 4, 16), np.int32),
                                 workspace=np.zeros((64, 2), np.uint8)[:, 0])
    msa.index_select_prefill(msa.bf16(q), msa.bf16(cache), table, cu, seq, np.zeros((4, 4, 16), np.int32),
                             workspace=np.zeros((64, 1), np.uint8)[:, 0])  # unit dims need no particular stride


def test_layer_prefill_equals_selection_then_attention():
    rng = np.random.default_rng()
    Hq, Hkv, L, T = 8, 2, 2600, 120
    kf = to_bf16(rng.standard_normal((L, Hkv, D)).astype(np.float32))
    vf = to_bf16(rng.standard_normal((L, Hkv, D)).astype(np.float32))
    ik = to_bf16(rng.standard_normal((L, D)).astype(np.float32))
    k_cache, table = paged([kf], rng, heads=Hkv)
    v_cache = np.zeros_like(k_cache)
    index_k = np.zeros((k_cache.shape[0], BLOCK, D), np.uint16)
    for j in range(table.shape[1]):
        rows = slice(j * BLOCK, (j + 1) * BLOCK)
        n = len(vf[rows])
        v_cache[table[0, j], :, :n] = vf[rows].transpose(1, 0, 2)
        index_k[table[0, j], :n] = ik[rows]
    q = to_bf16(rng.standard_normal((T, Hq, D)).astype(np.float32))
    iq = to_bf16(rng.standard_normal((T, Hkv, D)).astype(np.float32))
    cu, seq = np.array([0, T], np.int32), np.array([L], np.int32)
    # Separate ops.
    topk = np.zeros((Hkv, T, 16), np.int32)
    msa.index_select_prefill(msa.bf16(iq), msa.bf16(index_k), table, cu, seq, topk)
    attn = msa.SparsePrefillAttention()
    attn.plan(topk, cu, seq, table, num_q_heads=Hq, num_kv_heads=Hkv)
    want = np.zeros((T, Hq, D), np.uint16)
    attn.run(msa.bf16(q), msa.bf16(k_cache), msa.bf16(v_cache), msa.bf16(want))
    # The layer op, selection in the workspace.
    layer = msa.MsaPrefill()
    layer.plan(cu, seq, table, T, num_q_heads=Hq, num_kv_heads=Hkv)
    out = np.zeros_like(want)
    workspace = np.zeros(layer.workspace_bytes(), np.uint8)
    layer.run(msa.bf16(q), msa.bf16(k_cache), msa.bf16(v_cache), msa.bf16(iq), msa.bf16(index_k), msa.bf16(out),
              workspace=workspace)
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(workspace.view(np.int32).reshape(Hkv, T, 16), topk)
    # The decode layer op on the last 2 tokens as one request with 2 queries equals the prefill rows.
    dec = msa.MsaDecode()
    dec.plan(1, queries_per_request=2, num_q_heads=Hq, num_kv_heads=Hkv)
    out_d = np.zeros((2, Hq, D), np.uint16)
    topk_d = np.zeros((Hkv, 2, 16), np.int32)
    dec.run(msa.bf16(q[-2:].copy()), msa.bf16(k_cache), msa.bf16(v_cache), msa.bf16(iq[-2:].copy()),
            msa.bf16(index_k), table, seq, msa.bf16(out_d), topk=topk_d)
    np.testing.assert_array_equal(topk_d, topk[:, -2:])
    np.testing.assert_array_equal(out_d, want[-2:])
    # The decode attention op alone, on that selection, writes the same rows.
    sd = msa.SparseDecodeAttention()
    sd.plan(1, queries_per_request=2, num_q_heads=Hq, num_kv_heads=Hkv)
    out_s = np.zeros_like(out_d)
    workspace_s = np.zeros(sd.workspace_bytes(), np.uint8)
    sd.run(msa.bf16(q[-2:].copy()), msa.bf16(k_cache), msa.bf16(v_cache), topk_d, table, seq, msa.bf16(out_s),
           workspace=workspace_s)
    np.testing.assert_array_equal(out_s, out_d)
