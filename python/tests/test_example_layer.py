"""examples/msa_layer.py: for prompts under 2048 tokens (every block selected) the MSA layer equals dense
attention, in prefill and in the decode steps after it, with a bf16 or an fp8 e4m3 index-K cache. Skipped without
torch."""

import importlib.util
import pathlib

import pytest

torch = pytest.importorskip("torch")


def load_example():
    path = pathlib.Path(__file__).resolve().parents[2] / "examples" / "msa_layer.py"
    spec = importlib.util.spec_from_file_location("msa_layer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hopper():
    import msa
    return torch.cuda.is_available() and msa.sm90_device_available()


@pytest.mark.parametrize("index_dtype", ["bf16", "fp8"])
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not hopper(),
                                                                                     reason="needs a Hopper GPU"))])
def test_layer_equals_dense_below_2048_tokens(device, index_dtype):
    ex = load_example()
    torch.manual_seed(1)
    layer = ex.MSAAttention(256, num_q_heads=16).to(device, torch.bfloat16)
    for w in (layer.q_norm, layer.k_norm, layer.index_q_norm, layer.index_k_norm):
        torch.nn.init.normal_(w, std=0.1)
    prompt, new = 900, 3
    tokens = torch.randn(prompt + new, 256, device=device, dtype=torch.bfloat16)
    cache = ex.PagedCache(layer.hkv, prompt + new, device,
                          index_dtype=torch.float8_e4m3fn if index_dtype == "fp8" else torch.bfloat16)
    first, rest = tokens[:600], tokens[600:prompt]  # a chunked prefill: 600 tokens, then 300 more
    outs = [layer.prefill(first, cache), layer.prefill(rest, cache)]
    outs += [layer.decode(tokens[prompt + i: prompt + i + 1], cache) for i in range(new)]
    sparse = torch.cat(outs).float()
    dense = layer.dense_reference(tokens).float()
    assert sparse.shape == dense.shape
    torch.testing.assert_close(sparse, dense, atol=3e-2, rtol=3e-2)
    assert ((sparse - dense).norm() / dense.norm()).item() < 1e-2
