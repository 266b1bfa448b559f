"""DLPack interop beyond NumPy: JAX arrays (native bfloat16, read-only) and CuPy device arrays as inputs give the
same selection as the same bits passed from NumPy. Skipped where JAX (or CuPy and a Hopper GPU) is missing."""

import numpy as np
import pytest

import msa

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")


def test_jax_inputs_equal_numpy_inputs():
    rng = np.random.default_rng()
    T, H, L = 300, 4, 3000
    pages = (L + 127) // 128
    q_bits = (rng.standard_normal((T, H, 128)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    k_bits = (rng.standard_normal((pages + 1, 128, 128)).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    table = rng.permutation(pages + 1)[:pages].astype(np.int32)[None]
    cu, seq = np.array([0, T], np.int32), np.array([L], np.int32)
    from_numpy = np.zeros((H, T, 16), np.int32)
    msa.index_select_prefill(msa.bf16(q_bits), msa.bf16(k_bits), table, cu, seq, from_numpy)
    cpu = jax.devices("cpu")[0]  # JAX may default to a GPU; the output here is a host (NumPy) array
    put = lambda x: jax.device_put(jnp.asarray(x), cpu)  # noqa: E731
    q_jax = put(q_bits).view(jnp.bfloat16)
    k_jax = put(k_bits).view(jnp.bfloat16)
    from_jax = np.zeros_like(from_numpy)
    msa.index_select_prefill(q_jax, k_jax, put(table), put(cu), put(seq), from_jax)
    np.testing.assert_array_equal(from_jax, from_numpy)
    assert (from_jax[:, :, 15] == (np.arange(L - T, L) // 128)[None]).all()


def test_cupy_cuda_arrays_equal_numpy_inputs():
    """CuPy device arrays (DLPack, CUDA, the current CuPy stream) give the NumPy selection; skipped without CuPy or
    a Hopper GPU."""
    cp = pytest.importorskip("cupy")
    if not msa.sm90_device_available():
        pytest.skip("needs a Hopper GPU")
    rng = np.random.default_rng()
    T, H, L = 200, 4, 5000
    pages = (L + 127) // 128
    planted = np.zeros((pages + 1, 128, 128), np.float32)
    values = rng.permutation(pages).astype(np.float32) / 8 + 1  # distinct block scores: one correct selection
    table = rng.permutation(pages + 1)[:pages].astype(np.int32)[None]
    for j in range(pages):
        planted[table[0, j], :, 0] = values[j]
    k_bits = (planted.view(np.uint32) >> 16).astype(np.uint16)
    q = np.zeros((T, H, 128), np.float32)
    q[:, :, 0] = 1
    q_bits = (q.view(np.uint32) >> 16).astype(np.uint16)
    cu, seq = np.array([0, T], np.int32), np.array([L], np.int32)
    want = np.zeros((H, T, 16), np.int32)
    msa.index_select_prefill(msa.bf16(q_bits), msa.bf16(k_bits), table, cu, seq, want)
    got = cp.zeros((H, T, 16), cp.int32)
    msa.index_select_prefill(msa.bf16(cp.asarray(q_bits)), msa.bf16(cp.asarray(k_bits)), cp.asarray(table),
                             cp.asarray(cu), cp.asarray(seq), got)
    cp.cuda.get_current_stream().synchronize()
    np.testing.assert_array_equal(cp.asnumpy(got), want)
