"""msa.torch — the msa ops registered with torch.library (namespace ``msa``), for eager PyTorch, torch.compile and
CUDA graphs. Importing this module imports torch; ``import msa`` alone never does.

Ops (``torch.ops.msa.*``):
  index_select_prefill(index_q, index_k_cache, page_table, cu_seqlens_q, seq_lens_k, k=16) -> topk
  index_select_prefill_out(index_q, index_k_cache, page_table, cu_seqlens_q, seq_lens_k, topk!) -> ()
  index_select_decode(index_q, index_k_cache, page_table, seq_lens_k, queries_per_request, k=16) -> topk
  combine(partial_out, partial_lse, split_counts) -> (out, lse)
  sparse_prefill_attention(q, k_cache, v_cache, topk, cu_seqlens_q, seq_lens_k, page_table, sm_scale=0.) -> (out, lse)
  sparse_decode_attention(q, k_cache, v_cache, topk, page_table, seq_lens_k, queries_per_request, sm_scale=0.)
      -> (out, lse)
Shapes and dtypes follow the C++ API (include/msa/*.h); every op runs on the current CUDA stream for CUDA tensors.
index_q and index_k_cache may both be torch.float8_e4m3fn (passed to the core as e4m3 bits).
The prefill attention op plans on the host (it reads the batch metadata, so it synchronises); the decode op plans
from shapes only and can be captured in a CUDA graph.
"""

import torch

from . import _index_arg, _msa

__all__ = []  # use torch.ops.msa.*


def _stream(t):
    return torch.cuda.current_stream(t.device).cuda_stream if t.is_cuda else 0


def _check(cond, msg):
    if not cond:
        raise ValueError(msg)


@torch.library.custom_op("msa::index_select_prefill_out", mutates_args=("topk",))
def index_select_prefill_out(index_q: torch.Tensor, index_k_cache: torch.Tensor, page_table: torch.Tensor,
                             cu_seqlens_q: torch.Tensor, seq_lens_k: torch.Tensor, topk: torch.Tensor) -> None:
    _msa.index_select_prefill(_index_arg(index_q), _index_arg(index_k_cache), page_table, cu_seqlens_q, seq_lens_k,
                              topk, None, _stream(topk))


@index_select_prefill_out.register_fake
def _(index_q, index_k_cache, page_table, cu_seqlens_q, seq_lens_k, topk):
    return None


@torch.library.custom_op("msa::index_select_prefill", mutates_args=())
def index_select_prefill(index_q: torch.Tensor, index_k_cache: torch.Tensor, page_table: torch.Tensor,
                         cu_seqlens_q: torch.Tensor, seq_lens_k: torch.Tensor, k: int = 16) -> torch.Tensor:
    topk = torch.empty((index_q.shape[1], index_q.shape[0], k), dtype=torch.int32, device=index_q.device)
    _msa.index_select_prefill(_index_arg(index_q), _index_arg(index_k_cache), page_table, cu_seqlens_q, seq_lens_k,
                              topk, None, _stream(topk))
    return topk


@index_select_prefill.register_fake
def _(index_q, index_k_cache, page_table, cu_seqlens_q, seq_lens_k, k=16):
    return index_q.new_empty((index_q.shape[1], index_q.shape[0], k), dtype=torch.int32)


@torch.library.custom_op("msa::index_select_decode", mutates_args=())
def index_select_decode(index_q: torch.Tensor, index_k_cache: torch.Tensor, page_table: torch.Tensor,
                        seq_lens_k: torch.Tensor, queries_per_request: int, k: int = 16) -> torch.Tensor:
    topk = torch.empty((index_q.shape[1], index_q.shape[0], k), dtype=torch.int32, device=index_q.device)
    index_q, index_k_cache = _index_arg(index_q), _index_arg(index_k_cache)
    nbytes = _msa.index_select_decode_workspace_size(index_q, index_k_cache, page_table, seq_lens_k, topk,
                                                     queries_per_request)
    workspace = torch.empty((max(nbytes, 1),), dtype=torch.uint8, device=topk.device) if nbytes else None
    _msa.index_select_decode(index_q, index_k_cache, page_table, seq_lens_k, topk, queries_per_request, workspace,
                             _stream(topk))
    return topk


@index_select_decode.register_fake
def _(index_q, index_k_cache, page_table, seq_lens_k, queries_per_request, k=16):
    return index_q.new_empty((index_q.shape[1], index_q.shape[0], k), dtype=torch.int32)


@torch.library.custom_op("msa::combine", mutates_args=())
def combine(partial_out: torch.Tensor, partial_lse: torch.Tensor,
            split_counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.empty(partial_out.shape[1:], dtype=torch.bfloat16, device=partial_out.device)
    lse = torch.empty(partial_out.shape[1:3], dtype=torch.float32, device=partial_out.device)
    _msa.combine(partial_out, partial_lse, split_counts, out, lse, _stream(out))
    return out, lse


@combine.register_fake
def _(partial_out, partial_lse, split_counts):
    return (partial_out.new_empty(partial_out.shape[1:], dtype=torch.bfloat16),
            partial_out.new_empty(partial_out.shape[1:3], dtype=torch.float32))


@torch.library.custom_op("msa::sparse_prefill_attention", mutates_args=())
def sparse_prefill_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, topk: torch.Tensor,
                             cu_seqlens_q: torch.Tensor, seq_lens_k: torch.Tensor, page_table: torch.Tensor,
                             sm_scale: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    op = _msa.SparsePrefillAttention()
    op.plan(topk, cu_seqlens_q, seq_lens_k, page_table, q.shape[1], k_cache.shape[1], sm_scale)
    out = torch.empty(q.shape, dtype=torch.bfloat16, device=q.device)
    lse = torch.empty(q.shape[:2], dtype=torch.float32, device=q.device)
    nbytes = op.workspace_bytes()
    workspace = torch.empty((nbytes,), dtype=torch.uint8, device=q.device) if nbytes else None
    op.run(q, k_cache, v_cache, out, lse, workspace, _stream(q))
    return out, lse


@sparse_prefill_attention.register_fake
def _(q, k_cache, v_cache, topk, cu_seqlens_q, seq_lens_k, page_table, sm_scale=0.0):
    return q.new_empty(q.shape, dtype=torch.bfloat16), q.new_empty(q.shape[:2], dtype=torch.float32)


@torch.library.custom_op("msa::sparse_decode_attention", mutates_args=())
def sparse_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, topk: torch.Tensor,
                            page_table: torch.Tensor, seq_lens_k: torch.Tensor, queries_per_request: int,
                            sm_scale: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    op = _msa.SparseDecodeAttention()
    _check(queries_per_request >= 1, f"queries_per_request: must be >= 1, got {queries_per_request}")
    _check(q.shape[0] % queries_per_request == 0,
           f"q: T = {q.shape[0]} must be a multiple of queries_per_request = {queries_per_request}")
    op.plan(q.shape[0] // queries_per_request, queries_per_request, q.shape[1], k_cache.shape[1], topk.shape[2],
            sm_scale, q.device.index if q.is_cuda else -1)
    out = torch.empty(q.shape, dtype=torch.bfloat16, device=q.device)
    lse = torch.empty(q.shape[:2], dtype=torch.float32, device=q.device)
    nbytes = op.workspace_bytes()
    workspace = torch.empty((nbytes,), dtype=torch.uint8, device=q.device) if nbytes else None
    op.run(q, k_cache, v_cache, topk, page_table, seq_lens_k, out, lse, workspace, _stream(q))
    return out, lse


@sparse_decode_attention.register_fake
def _(q, k_cache, v_cache, topk, page_table, seq_lens_k, queries_per_request, sm_scale=0.0):
    return q.new_empty(q.shape, dtype=torch.bfloat16), q.new_empty(q.shape[:2], dtype=torch.float32)
