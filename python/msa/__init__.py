"""msa — MiniMax Sparse Attention for NVIDIA Hopper, with a CPU implementation of every op.

Every tensor argument is any array that exports DLPack or the buffer protocol (NumPy, PyTorch, CuPy, JAX); it is
passed to the C++ core as a pointer with its shape and strides, never copied. Outputs are written in place.
NumPy has no bfloat16: pass ``bf16(array)`` for a uint16/int16 array holding bf16 bit patterns, and ``fp8(array)`` for
a uint8/int8 array holding fp8 e4m3 bit patterns (index_q and the index-K cache may be e4m3, both or neither). A
``workspace`` is any contiguous array of at least ``workspace_bytes()`` bytes on the device of the op's tensors (else
ValueError).

CUDA work goes on ``stream`` (a ``cudaStream_t`` as an int). When it is None, the stream is the current one of the
framework that owns the CUDA arrays (PyTorch, CuPy), else the legacy default stream. Errors of the core raise
ValueError (a broken contract; the message names the argument and rule), NotImplementedError, or RuntimeError.
"""

from . import _msa

__all__ = [
    "version",
    "sm90_device_available",
    "bf16",
    "fp8",
    "index_select_prefill",
    "index_select_decode",
    "index_select_decode_workspace_size",
    "combine",
    "SparsePrefillAttention",
    "SparseDecodeAttention",
    "MsaPrefill",
    "MsaDecode",
]

version = _msa.version
sm90_device_available = _msa.sm90_device_available


def bf16(array):
    """Marks a 16-bit integer array as bf16 bit patterns (for NumPy, which has no bfloat16 dtype)."""
    return (array, "bf16")


def fp8(array):
    """Marks an 8-bit integer array as fp8 e4m3 bit patterns (OCP "e4m3fn": index_q and index_k_cache only)."""
    return (array, "fp8_e4m3")


def _index_arg(x):
    """A torch.float8_e4m3fn tensor as its bits, fp8(x.view(torch.uint8)), since not every torch version exports
    fp8 through DLPack; anything else unchanged."""
    if type(x).__module__.startswith("torch") and str(getattr(x, "dtype", "")) == "torch.float8_e4m3fn":
        import torch

        return fp8(x.view(torch.uint8))
    return x


def _unwrap(x):
    return x[0] if isinstance(x, tuple) else x


def _current_stream(*arrays):
    """The current stream of the framework owning the first CUDA array, or 0 (the legacy default stream)."""
    for x in map(_unwrap, arrays):
        module = type(x).__module__
        if module.startswith("torch") and getattr(x, "is_cuda", False):
            import torch

            return torch.cuda.current_stream(x.device).cuda_stream
        if module.startswith("cupy"):
            import cupy

            return cupy.cuda.get_current_stream().ptr
    return 0


def _stream(stream, *arrays):
    return _current_stream(*arrays) if stream is None else int(stream)


def index_select_prefill(index_q, index_k_cache, page_table, cu_seqlens_q, seq_lens_k, topk, workspace=None,
                         stream=None):
    """Top-k block selection for a varlen batch of query chunks; writes topk [H_idx, T, k] int32 in place."""
    _msa.index_select_prefill(_index_arg(index_q), _index_arg(index_k_cache), page_table, cu_seqlens_q, seq_lens_k,
                              topk, workspace, _stream(stream, index_q, topk))


def index_select_decode_workspace_size(index_q, index_k_cache, page_table, seq_lens_k, topk, queries_per_request):
    """Bytes of scratch memory index_select_decode needs for these shapes (0 on the CPU)."""
    return _msa.index_select_decode_workspace_size(_index_arg(index_q), _index_arg(index_k_cache), page_table,
                                                   seq_lens_k, topk, queries_per_request)


def index_select_decode(index_q, index_k_cache, page_table, seq_lens_k, topk, queries_per_request, workspace=None,
                        stream=None):
    """Top-k block selection for B requests with queries_per_request (1..16) query tokens each."""
    _msa.index_select_decode(_index_arg(index_q), _index_arg(index_k_cache), page_table, seq_lens_k, topk,
                             queries_per_request, workspace, _stream(stream, index_q, topk))


def combine(partial_out, partial_lse, split_counts, out, lse=None, stream=None):
    """LSE-merge of split_counts[t, h // G] partial outputs per (token, head) into out (and lse)."""
    _msa.combine(partial_out, partial_lse, split_counts, out, lse, _stream(stream, out))


class SparsePrefillAttention:
    """Sparse attention of a prefill batch over the selected blocks: plan() once per batch, then run()."""

    def __init__(self):
        self._op = _msa.SparsePrefillAttention()

    def plan(self, topk, cu_seqlens_q, seq_lens_k, page_table, num_q_heads=64, num_kv_heads=4, sm_scale=0.0,
             max_chunk_tokens=0, schedule="auto"):
        """CUDA: max_chunk_tokens bounds the workspace (query tokens per chunk; 0 = 16384). schedule (Hq / Hkv = 16;
        with 8, 4, 2 or 1 "auto" is KV-outer and "union" raises NotImplementedError):
        "auto" (per tile of 8 tokens, the union-of-blocks kernel where the selections overlap, KV-outer elsewhere),
        "kv_outer" (bf16 per-block partials: on small chunks of short rows they can exceed the attention error rule
        by a few percent; "auto" computes such rows with the union kernel) or "union"."""
        self._op.plan(topk, cu_seqlens_q, seq_lens_k, page_table, num_q_heads, num_kv_heads, sm_scale,
                      max_chunk_tokens, schedule)

    def workspace_bytes(self):
        return self._op.workspace_bytes()

    def run(self, q, k_cache, v_cache, out, lse=None, workspace=None, stream=None):
        self._op.run(q, k_cache, v_cache, out, lse, workspace, _stream(stream, q, out))


class SparseDecodeAttention:
    """Sparse attention of decode steps (1..16 queries per request): plan() with capacities once, then run()."""

    def __init__(self):
        self._op = _msa.SparseDecodeAttention()

    def plan(self, batch_size, queries_per_request=1, num_q_heads=64, num_kv_heads=4, topk=16, sm_scale=0.0,
             cuda_device=-1):
        self._op.plan(batch_size, queries_per_request, num_q_heads, num_kv_heads, topk, sm_scale, cuda_device)

    def workspace_bytes(self):
        return self._op.workspace_bytes()

    def run(self, q, k_cache, v_cache, topk, page_table, seq_lens_k, out, lse=None, workspace=None, stream=None):
        self._op.run(q, k_cache, v_cache, topk, page_table, seq_lens_k, out, lse, workspace, _stream(stream, q, out))


class MsaPrefill:
    """One sparse layer of a prefill batch: index selection then sparse attention. plan() once per batch, then run();
    the selection goes to ``topk`` when given, else to ``workspace`` (workspace_bytes() bytes)."""

    def __init__(self):
        self._op = _msa.MsaPrefill()

    def plan(self, cu_seqlens_q, seq_lens_k, page_table, total_q, num_q_heads=64, num_kv_heads=4, topk=16,
             sm_scale=0.0, max_chunk_tokens=0, schedule="auto"):
        """max_chunk_tokens and schedule: as for SparsePrefillAttention.plan."""
        self._op.plan(cu_seqlens_q, seq_lens_k, page_table, total_q, num_q_heads, num_kv_heads, topk, sm_scale,
                      max_chunk_tokens, schedule)

    def workspace_bytes(self):
        return self._op.workspace_bytes()

    def run(self, q, k_cache, v_cache, index_q, index_k_cache, out, lse=None, topk=None, workspace=None,
            stream=None):
        self._op.run(q, k_cache, v_cache, _index_arg(index_q), _index_arg(index_k_cache), out, lse, topk, workspace,
                     _stream(stream, q, out))


class MsaDecode:
    """One sparse layer of decode steps (1..16 queries per request): selection then sparse attention."""

    def __init__(self):
        self._op = _msa.MsaDecode()

    def plan(self, batch_size, queries_per_request=1, num_q_heads=64, num_kv_heads=4, topk=16, sm_scale=0.0,
             cuda_device=-1):
        self._op.plan(batch_size, queries_per_request, num_q_heads, num_kv_heads, topk, sm_scale, cuda_device)

    def workspace_bytes(self):
        return self._op.workspace_bytes()

    def run(self, q, k_cache, v_cache, index_q, index_k_cache, page_table, seq_lens_k, out, lse=None, topk=None,
            workspace=None, stream=None):
        self._op.run(q, k_cache, v_cache, _index_arg(index_q), _index_arg(index_k_cache), page_table, seq_lens_k, out,
                     lse, topk, workspace, _stream(stream, q, out))
