"""The fused vocabulary head: log-probs, entropies and their gradients equal autodiff
through the plain log-softmax, whatever the chunking; the model's tied and untied heads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import first_fast

from rlhf_jax.models import head_logps as head_lib
from rlhf_jax.models.config import ModelConfig
from rlhf_jax.models.transformer import init_model


def plain(h_BxKxD, w_VxD, y_BxK, temperature):
    z = jnp.einsum("bkd,vd->bkv", h_BxKxD, w_VxD) / temperature
    log_z = jax.nn.logsumexp(z, axis=-1)
    logp = jnp.take_along_axis(z, y_BxK[..., None], axis=-1)[..., 0] - log_z
    entropy = -jnp.sum(jax.nn.softmax(z, axis=-1) * jax.nn.log_softmax(z, axis=-1), axis=-1)
    return logp, entropy


def test_chunk_positions_is_the_largest_divisor_within_the_row_budget():
    assert head_lib.chunk_positions(64, 64) == 8  # 512 rows
    assert head_lib.chunk_positions(4, 6, rows=8) == 2
    assert head_lib.chunk_positions(3, 7) == 7  # the whole of K fits
    assert head_lib.chunk_positions(1000, 7) == 1  # at least one position per chunk
    assert head_lib.chunk_positions(5, 12, rows=31) == 6


@pytest.mark.parametrize("rows", [8, 512])  # three chunks of 2 positions; one chunk
def test_values_and_gradients_equal_autodiff_of_the_plain_log_softmax(monkeypatch, rows):
    monkeypatch.setattr(head_lib, "CHUNK_ROWS", rows)
    rng = np.random.default_rng(0)
    B, K, D, V, T = 4, 6, 8, 40, 0.7
    h = jnp.asarray(rng.standard_normal((B, K, D)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((V, D)), jnp.float32)
    y = jnp.asarray(rng.integers(0, V, (B, K)), jnp.int32)
    a, b = (jnp.asarray(rng.standard_normal((B, K)), jnp.float32) for _ in range(2))

    def loss(fn):  # both outputs carry a cotangent, so both VJP terms are checked
        def weighted(h, w):
            logp, entropy = fn(h, w)
            return jnp.sum(a * logp + b * entropy)

        return weighted

    fused = lambda h, w: head_lib.head_logps(h, w, y, T)  # noqa: E731
    ref = lambda h, w: plain(h, w, y, T)  # noqa: E731
    for got, want in zip(jax.jit(fused)(h, w), ref(h, w), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    got = jax.jit(jax.grad(loss(fused), argnums=(0, 1)))(h, w)
    want = jax.jit(jax.grad(loss(ref), argnums=(0, 1)))(h, w)  # jitted too: a different program
    for g, r in zip(got, want, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)
    # hand check of one position: H = log Z - sum p z
    z = np.asarray(h[1, 2] @ w.T, np.float64) / T
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(fused(h, w)[1][1, 2], -(p * np.log(p)).sum(), rtol=1e-5)


@pytest.mark.parametrize("tied", first_fast([False, True]))
def test_model_gradients_through_the_fused_head_equal_those_through_the_logits(tied):
    cfg = ModelConfig(family="llama", vocab_size=48, d_model=16, n_layers=1, n_heads=2, d_ff=32, tie_embeddings=tied)
    model, params = init_model(cfg, seed=1)
    tokens = jnp.array([[0, 3, 7, 8, 9, 5], [4, 5, 6, 7, 8, 2]])
    mask = jnp.array([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    weights = jnp.array([[0.0, 0.0, 0.0, 1.0, -2.0, 0.5], [0.0, 0.0, 0.0, 0.3, 1.0, 1.0]])

    def fused(params):
        logps, entropy = model.token_logps_and_entropy(params, tokens, mask, 1.3, 3)
        return jnp.sum(weights * logps) + 0.1 * jnp.sum(weights * entropy)

    def through_logits(params):
        z = model.logits(params, tokens, mask)[:, 2:5] / 1.3
        logps = jnp.take_along_axis(jax.nn.log_softmax(z), tokens[:, 3:, None], axis=-1)[..., 0]
        entropy = -jnp.sum(jax.nn.softmax(z) * jax.nn.log_softmax(z), axis=-1)
        return jnp.sum(weights[:, 3:] * logps) + 0.1 * jnp.sum(weights[:, 3:] * entropy)

    np.testing.assert_allclose(jax.jit(fused)(params), jax.jit(through_logits)(params), rtol=1e-5)
    got, want = jax.jit(jax.grad(fused))(params), jax.jit(jax.grad(through_logits))(params)
    assert ("lm_head" in params) != tied
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6)
