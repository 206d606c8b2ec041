"""Fused attention (`models/attention.py`) against the einsum reference: XLA's fused op
and Pallas splash attention (in Pallas' interpreter, so on CPU) give every real query's
output and the gradients of q, k and v to 1e-5 in float32 and to bfloat16's precision, with
grouped-query heads, left padding and a length that is not a multiple of splash's block; a
whole model with `model.attention=xla` has the einsum's logits, gradients and greedy
samples; `auto` compiles to the einsum on CPU; bad settings are refused by name."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import mesh as mesh_lib
from rlhf_jax.experiment import ModelSection
from rlhf_jax.models import attention
from rlhf_jax.models.config import ModelConfig
from rlhf_jax.models.transformer import causal_mask, init_model, run_as
from rlhf_jax.sampling import Sampler, SamplingConfig

B, T, H, K, E = 3, 20, 4, 2, 8


def inputs(dtype):
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(B, T, n, E)), dtype) for n in (H, K, K))
    real_BxT = np.ones((B, T), bool)
    real_BxT[0, :5] = False  # left padding, as prompts have it
    real_BxT[2, :1] = False
    return q, k, v, jnp.asarray(real_BxT)


def attend(impl, q, k, v, real_BxT):
    return attention.self_attention(q, k, v, causal_mask(real_BxT), impl, interpret=True)


@pytest.mark.parametrize("impl", ["xla", "splash"])
def test_fused_attention_equals_the_einsum_in_value_and_gradient(impl):
    q, k, v, real = inputs(jnp.float32)
    w = jnp.asarray(np.random.default_rng(1).normal(size=(B, T, H, E)), jnp.float32) * real[:, :, None, None]

    def loss(impl, q, k, v):  # padding queries' outputs feed nothing: weight 0
        return jnp.sum(attend(impl, q, k, v, real) * w)

    ref_out, out = attend("einsum", q, k, v, real), attend(impl, q, k, v, real)
    np.testing.assert_allclose(out * real[:, :, None, None], ref_out * real[:, :, None, None], atol=1e-5)
    ref_grads = jax.grad(loss, argnums=(1, 2, 3))("einsum", q, k, v)
    grads = jax.grad(loss, argnums=(1, 2, 3))(impl, q, k, v)
    for g, ref in zip(grads, ref_grads, strict=True):
        assert np.abs(ref).max() > 1e-3
        np.testing.assert_allclose(g, ref, atol=1e-5)


@pytest.mark.parametrize("impl", ["xla", "splash"])
def test_fused_attention_in_bfloat16_is_within_bfloat16s_precision(impl):
    q, k, v, real = inputs(jnp.bfloat16)
    ref = attend("einsum", *(x.astype(jnp.float32) for x in (q, k, v)), real)
    out = attend(impl, q, k, v, real)
    assert out.dtype == jnp.bfloat16
    err = np.abs(np.asarray((out.astype(jnp.float32) - ref) * real[:, :, None, None])).max()
    assert err < 3e-2, err  # bf16 keeps 8 bits: values of size ~1 to about 1/128, twice over (q k, then p v)


@pytest.mark.slow  # 10 s: two models' forwards, backwards and samplers compiled
def test_a_model_with_xla_attention_has_the_einsums_logits_gradients_and_samples():
    cfg = ModelConfig(family="llama", vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64)
    model, params = init_model(cfg, seed=3)
    fused = run_as(model, attention="xla")
    tokens = jnp.asarray(np.random.default_rng(2).integers(1, 64, size=(2, 12)))
    mask = jnp.asarray(np.arange(12)[None] >= np.array([[0], [4]]), jnp.int32)  # the second row left-padded

    def nll(model, params):
        return -jnp.sum(model.token_logps(params, tokens, mask))

    real = mask[:, :, None]  # a padding position's logits are read by nothing (and differ: see the module)
    np.testing.assert_allclose(fused.logits(params, tokens, mask) * real, model.logits(params, tokens, mask) * real,
                               atol=1e-5)  # fmt: skip
    ref_g, g = jax.grad(nll, argnums=1)(model, params), jax.grad(nll, argnums=1)(fused, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), g, ref_g)
    sampling = SamplingConfig(max_new_tokens=6, greedy=True, max_cache_len=18)
    ref_s, s = (Sampler(m, sampling)(params, tokens[:, :12], mask, 0) for m in (model, fused))
    np.testing.assert_array_equal(s.tokens, ref_s.tokens)  # the prefill fused, the decode steps the einsum's


def test_splash_runs_per_device_inside_a_mesh():
    # the kernel cannot be partitioned by XLA: under a (2, 2, 2) mesh it runs on each device's
    # rows (data, fsdp) and heads (tensor) through shard_map, with the same result
    q, k, v, real = inputs(jnp.float32)
    q, k, v, real = (jnp.concatenate([x, x[:1]]) for x in (q, k, v, real))  # 4 rows: 2 x 2 data shards
    with mesh_lib.use_mesh(mesh_lib.make_mesh((2, 2, 2))):
        out = jax.jit(functools.partial(attend, "splash"))(q, k, v, real)
    ref = attend("einsum", q, k, v, real)
    np.testing.assert_allclose(out * real[:, :, None, None], ref * real[:, :, None, None], atol=1e-5)


def test_auto_is_the_einsum_on_cpu_and_bad_settings_are_refused():
    q, k, v, real = inputs(jnp.float32)
    np.testing.assert_array_equal(attend("auto", q, k, v, real), attend("einsum", q, k, v, real))
    with pytest.raises(ValueError, match=r"model\.attention='flash'.*einsum"):
        ModelSection(attention="flash")
    with pytest.raises(ValueError, match="cudnn.*bfloat16"):
        attend("cudnn", q, k, v, real)
    section = ModelSection(attention="xla", remat="full")
    assert dataclasses.asdict(section.model_config(64))["attention"] == "xla"
