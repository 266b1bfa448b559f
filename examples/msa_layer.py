"""One MiniMax-M3 sparse attention layer in PyTorch on msa's ops: prefill a prompt, then decode tokens.

As the model builds it (docs: msa-spec.md §3): one bias-free fused projection emits [q | k | v | index_q | index_k]
(Hq, Hkv, Hkv = H_idx and 1 heads of 128); per-head Gemma RMSNorm in fp32 (x / rms(x) · (1 + w), eps 1e-6, one
weight vector of 128 per norm); NeoX rotate-half RoPE on the first 64 of 128 channels (θ = 5e6) on q, k, index_q
and index_k, norm first; K and V appended to a paged main cache and index_k to a paged index-K cache; the index
branch selects 16 blocks per (token, KV head); sparse attention over them; o_proj. No index value or output.
With --index-fp8 the index-K cache is kept in fp8 e4m3 (torch.float8_e4m3fn, unscaled) and index_q is cast to it
before the selection, as engines with an fp8 index cache do.

Run it:  python examples/msa_layer.py   (CPU by default; --device cuda on a Hopper GPU)
"""

import argparse
import math

import torch

import msa.torch  # noqa: F401  (registers torch.ops.msa)

ops = torch.ops.msa
PAGE = 128


def gemma_rmsnorm(x, weight, eps=1e-6):
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps) * (1.0 + weight.float())).to(x.dtype)


def partial_rope(x, positions, rot_dim=64, theta=5e6):
    """NeoX (rotate-half) RoPE on the first rot_dim channels of every head; x [T, H, 128], positions [T]."""
    half = rot_dim // 2
    inv_freq = theta ** (-torch.arange(0, half, dtype=torch.float64, device=x.device) / half)
    angles = positions.to(torch.float64)[:, None] * inv_freq[None]
    cos, sin = angles.cos().float()[:, None, :], angles.sin().float()[:, None, :]
    x32 = x.float()
    x1, x2, rest = x32[..., :half], x32[..., half:rot_dim], x32[..., rot_dim:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest), dim=-1).to(x.dtype)


class PagedCache:
    """Paged K/V cache [pages, Hkv, 128, 128] and index-K cache [pages, 128, 128] of one request, with append. The
    index-K cache is bf16 or torch.float8_e4m3fn (index_dtype)."""

    def __init__(self, num_kv_heads, max_tokens, device, dtype=torch.bfloat16, index_dtype=torch.bfloat16):
        pages = (max_tokens + PAGE - 1) // PAGE
        self.k = torch.zeros(pages, num_kv_heads, PAGE, 128, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.index_k = torch.zeros(pages, PAGE, 128, dtype=index_dtype, device=device)
        # Pages are handed out in a scrambled order, as a serving engine's allocator would.
        self.page_table = torch.randperm(pages, device="cpu").to(torch.int32)[None].to(device)
        self.length = 0

    def append(self, k, v, index_k):
        """k, v [T, Hkv, 128]; index_k [T, 128] at positions length .. length + T - 1."""
        pos = torch.arange(self.length, self.length + k.shape[0], device=k.device)
        page = self.page_table[0, pos // PAGE].long()
        slot = pos % PAGE
        self.k[page, :, slot] = k
        self.v[page, :, slot] = v
        self.index_k[page, slot] = index_k.to(self.index_k.dtype)
        self.length += k.shape[0]

    def seq_lens(self):
        return torch.tensor([self.length], dtype=torch.int32, device=self.k.device)


class MSAAttention(torch.nn.Module):
    def __init__(self, hidden, num_q_heads=64, num_kv_heads=4, head_dim=128, topk=16):
        super().__init__()
        assert head_dim == 128
        self.hq, self.hkv, self.topk = num_q_heads, num_kv_heads, topk
        self.split = [num_q_heads * 128, num_kv_heads * 128, num_kv_heads * 128, num_kv_heads * 128, 128]
        self.qkvi_proj = torch.nn.Linear(hidden, sum(self.split), bias=False)
        self.o_proj = torch.nn.Linear(num_q_heads * 128, hidden, bias=False)
        self.q_norm, self.k_norm, self.index_q_norm, self.index_k_norm = (
            torch.nn.Parameter(torch.zeros(128)) for _ in range(4))

    def project(self, x, positions):
        """x [T, hidden] -> q [T, Hq, 128], k, v [T, Hkv, 128], index_q [T, H_idx, 128], index_k [T, 128]."""
        T = x.shape[0]
        q, k, v, iq, ik = self.qkvi_proj(x).split(self.split, dim=-1)
        q = partial_rope(gemma_rmsnorm(q.reshape(T, self.hq, 128), self.q_norm), positions)
        k = partial_rope(gemma_rmsnorm(k.reshape(T, self.hkv, 128), self.k_norm), positions)
        iq = partial_rope(gemma_rmsnorm(iq.reshape(T, self.hkv, 128), self.index_q_norm), positions)
        ik = partial_rope(gemma_rmsnorm(ik.reshape(T, 1, 128), self.index_k_norm), positions)[:, 0]
        return q.contiguous(), k.contiguous(), v.reshape(T, self.hkv, 128).contiguous(), iq.contiguous(), ik.contiguous()

    def prefill(self, x, cache):
        """A prompt chunk x [T, hidden] appended after the cache's current tokens; returns [T, hidden]."""
        T = x.shape[0]
        positions = torch.arange(cache.length, cache.length + T, device=x.device)
        q, k, v, iq, ik = self.project(x, positions)
        cache.append(k, v, ik)
        cu = torch.tensor([0, T], dtype=torch.int32, device=x.device)
        seq = cache.seq_lens()
        iq = iq.to(cache.index_k.dtype)
        topk = ops.index_select_prefill(iq, cache.index_k, cache.page_table, cu, seq, self.topk)
        out, _ = ops.sparse_prefill_attention(q, cache.k, cache.v, topk, cu, seq, cache.page_table)
        return self.o_proj(out.reshape(T, -1))

    def decode(self, x, cache):
        """One new token x [1, hidden]; returns [1, hidden]."""
        positions = torch.tensor([cache.length], device=x.device)
        q, k, v, iq, ik = self.project(x, positions)
        cache.append(k, v, ik)
        seq = cache.seq_lens()
        iq = iq.to(cache.index_k.dtype)
        topk = ops.index_select_decode(iq, cache.index_k, cache.page_table, seq, 1, self.topk)
        out, _ = ops.sparse_decode_attention(q, cache.k, cache.v, topk, cache.page_table, seq, 1)
        return self.o_proj(out.reshape(1, -1))

    def dense_reference(self, x):
        """Dense causal GQA over all of x [T, hidden] in fp32 (the same projections): the model without MSA."""
        T = x.shape[0]
        q, k, v, _, _ = self.project(x, torch.arange(T, device=x.device))
        g = self.hq // self.hkv
        qf = q.float().transpose(0, 1)
        kf = k.float().repeat_interleave(g, dim=1).transpose(0, 1)
        vf = v.float().repeat_interleave(g, dim=1).transpose(0, 1)
        out = torch.nn.functional.scaled_dot_product_attention(qf, kf, vf, is_causal=True, scale=1 / math.sqrt(128))
        return self.o_proj(out.transpose(0, 1).reshape(T, -1).to(x.dtype))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prompt", type=int, default=1500)
    parser.add_argument("--new-tokens", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--q-heads", type=int, default=16)
    parser.add_argument("--index-fp8", action="store_true", help="keep the index-K cache in fp8 e4m3")
    args = parser.parse_args()
    torch.manual_seed(0)
    layer = MSAAttention(args.hidden, num_q_heads=args.q_heads).to(args.device, torch.bfloat16)
    tokens = torch.randn(args.prompt + args.new_tokens, args.hidden, device=args.device, dtype=torch.bfloat16)
    cache = PagedCache(layer.hkv, len(tokens), args.device,
                       index_dtype=torch.float8_e4m3fn if args.index_fp8 else torch.bfloat16)
    outs = [layer.prefill(tokens[: args.prompt], cache)]
    outs += [layer.decode(tokens[args.prompt + i: args.prompt + i + 1], cache) for i in range(args.new_tokens)]
    sparse = torch.cat(outs).float()
    dense = layer.dense_reference(tokens).float()
    err = ((sparse - dense).norm() / dense.norm()).item()
    print(f"prefill {args.prompt} tokens + decode {args.new_tokens}: relative L2 difference to dense attention "
          f"{err:.2e} ({'equal within bf16' if err < 2e-2 else 'DIFFERENT'}; prompts under 2048 tokens see every "
          f"block, so MSA equals dense there)")


if __name__ == "__main__":
    main()
