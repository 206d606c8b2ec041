"""Properties of the transformer: causality, padding invariance, log-probs, full-size shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import first_fast

from rlhf_jax.models.config import ModelConfig
from rlhf_jax.models.kv_cache import KVCache
from rlhf_jax.models.presets import preset
from rlhf_jax.models.transformer import abstract_model, causal_mask, count_params, init_model, positions_from_mask

TINY = {
    "gpt2": ModelConfig(family="gpt2", vocab_size=64, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_positions=32),
    "gpt_neox": ModelConfig(
        family="gpt_neox", vocab_size=64, d_model=32, n_layers=2, n_heads=4, d_ff=64, rotary_pct=0.25
    ),
    "llama": ModelConfig(family="llama", vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64),
    "qwen2": ModelConfig(family="qwen2", vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=1, d_ff=64),
}


@pytest.mark.parametrize("family", first_fast(TINY))
def test_causality_gradient_of_earlier_logits_wrt_later_inputs_is_zero(family):
    model, params = init_model(TINY[family], seed=1)
    tokens = jnp.arange(8)[None] % 64
    mask = jnp.ones_like(tokens)
    module = model.module(params)
    embeds = jnp.take(params["embed"], tokens, axis=0)
    t = 3

    def logits_at_t(embeds_1xTxD):
        hidden, _ = module(tokens, positions_from_mask(mask), causal_mask(mask), embeds_BxTxD=embeds_1xTxD)
        return module.readout(hidden)[0, t].sum()

    grad_TxD = jax.jit(jax.grad(logits_at_t))(embeds)[0]
    assert np.abs(grad_TxD[t + 1 :]).max() == 0.0
    assert np.abs(grad_TxD[: t + 1]).max() > 0.0


@pytest.mark.parametrize("family", first_fast(TINY))
def test_left_padding_does_not_change_real_token_logits(family):
    model, params = init_model(TINY[family], seed=2)
    logits = jax.jit(model.logits)
    row = jnp.array([[5, 9, 17, 33, 2]])
    alone = logits(params, row, jnp.ones_like(row))
    padded = jnp.concatenate([jnp.zeros((1, 3), int), row], axis=1)
    mask = jnp.concatenate([jnp.zeros((1, 3), int), jnp.ones_like(row)], axis=1)
    np.testing.assert_allclose(logits(params, padded, mask)[:, 3:], alone, atol=1e-5)


@pytest.mark.parametrize("family", first_fast(TINY))
def test_last_only_gives_the_last_position_and_caches_every_key(family):
    # the sampler's prefill: the final block runs for the last position alone
    cfg = TINY[family]
    model, params = init_model(cfg, seed=4)
    tokens = jnp.array([[0, 0, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6]])
    mask = (tokens != 0).astype(jnp.int32).at[1, 0].set(1)
    module = model.module(params)
    full, _ = jax.jit(lambda: module(tokens, positions_from_mask(mask), causal_mask(mask)))()
    bounds = (0, 6, 8)
    caches = [KVCache.zeros(2, cfg.n_kv_heads, cfg.head_dim, bounds, jnp.float32) for _ in range(cfg.n_layers)]
    mask_BxTxS = jnp.pad(causal_mask(mask), ((0, 0), (0, 0), (0, 2)))
    last, caches = jax.jit(lambda c: module(tokens, positions_from_mask(mask), mask_BxTxS, c, 0, last_only=True))(
        caches
    )
    assert last.shape == (2, 1, cfg.d_model)
    np.testing.assert_allclose(last[:, 0], full[:, -1], atol=1e-5)
    _, full_caches = jax.jit(lambda c: module(tokens, positions_from_mask(mask), mask_BxTxS, c, 0))(caches)
    for got, want in zip(caches, full_caches, strict=True):
        np.testing.assert_array_equal(got.k[0], want.k[0])
        np.testing.assert_array_equal(got.v[0], want.v[0])


def test_token_logps_are_the_log_softmax_of_the_previous_position():
    model, params = init_model(TINY["llama"], seed=3)
    tokens = jnp.array([[0, 0, 7, 8, 9], [4, 5, 6, 7, 8]])
    mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    logps = jax.jit(model.token_logps)(params, tokens, mask)
    logits = np.asarray(jax.jit(model.logits)(params, tokens, mask), np.float64)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    assert logps.dtype == jnp.float32
    np.testing.assert_allclose(logps[1, 3], log_softmax[1, 2, 7], atol=1e-5)
    np.testing.assert_allclose(logps[0, 4], log_softmax[0, 3, 9], atol=1e-5)
    # no prediction for the first token, nor for the first real token after padding
    assert logps[1, 0] == 0 and logps[0, 2] == 0 and logps[0, 0] == 0
    # temperature T divides the logits
    hot = jax.jit(model.token_logps, static_argnums=3)(params, tokens, mask, 2.0)
    scaled = log_softmax_np(logits[1, 2] / 2.0)
    np.testing.assert_allclose(hot[1, 3], scaled[7], atol=1e-5)


def test_token_logps_of_the_last_k_positions_skip_the_rest_of_the_head():
    model, params = init_model(TINY["gpt2"], seed=3)
    tokens = jnp.array([[0, 0, 7, 8, 9, 3], [4, 5, 6, 7, 8, 2]])
    mask = jnp.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    full = jax.jit(model.token_logps)(params, tokens, mask)
    last3 = jax.jit(model.token_logps, static_argnums=(3, 4))(params, tokens, mask, 1.0, 3)
    np.testing.assert_allclose(last3[:, 3:], full[:, 3:], atol=1e-6)
    np.testing.assert_array_equal(last3[:, :3], 0.0)
    assert last3[1, 5] == 0  # padding stays 0
    for bad in (-1, 6):
        with pytest.raises(ValueError, match=f"keep_last={bad}"):
            model.token_logps(params, tokens, mask, 1.0, bad)


def log_softmax_np(x):
    return x - np.log(np.exp(x - x.max()).sum()) - x.max()


def test_reward_reads_the_last_real_token_and_values_are_zero_at_padding():
    model, params = init_model(TINY["gpt2"], head="scalar", seed=4)
    row = jnp.array([[5, 9, 17]])
    alone = jax.jit(model.values)(params, row, jnp.ones_like(row))
    tokens = jnp.array([[0, 5, 9, 17], [5, 9, 17, 0]])
    mask = jnp.array([[0, 1, 1, 1], [1, 1, 1, 0]])  # left and right padding
    rewards = jax.jit(model.rewards)(params, tokens, mask)
    np.testing.assert_allclose(rewards, [alone[0, 2], alone[0, 2]], atol=1e-5)
    values = jax.jit(model.values)(params, tokens, mask)
    assert values[0, 0] == 0 and values[1, 3] == 0


@pytest.mark.parametrize(
    "name,published",
    [("pythia-1b", 1_011_781_632), ("pythia-6.9b", 6_857_302_016), ("llama-7b", 6_738_415_616)],
)
def test_full_size_parameter_counts_equal_the_published_ones(name, published):
    model, shapes, axes = abstract_model(preset(name))
    assert count_params(shapes) == published
    out = jax.eval_shape(model.logits, shapes, jax.ShapeDtypeStruct((2, 16), jnp.int32), jnp.ones((2, 16), jnp.int32))
    assert out.shape == (2, 16, preset(name).vocab_size)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="family"):
        ModelConfig(family="bert", vocab_size=8, d_model=8, n_layers=1, n_heads=2, d_ff=8)
    with pytest.raises(ValueError, match="n_kv_heads"):
        ModelConfig(family="llama", vocab_size=8, d_model=8, n_layers=1, n_heads=4, n_kv_heads=3, d_ff=8)
    with pytest.raises(ValueError, match="d_model"):
        ModelConfig(family="llama", vocab_size=8, d_model=10, n_layers=1, n_heads=4, d_ff=8)
    with pytest.raises(ValueError, match="vocab_size"):
        ModelConfig(family="gpt2", vocab_size=0, d_model=8, n_layers=1, n_heads=2, d_ff=8)
    with pytest.raises(ValueError, match="head"):
        init_model(TINY["gpt2"], head="classifier")


@pytest.mark.parametrize(
    "family, policy", [("gpt2", "full"), ("llama", "full"), ("llama", "dots"), ("llama", "dots_no_batch")]
)
@pytest.mark.slow  # remat's gradients run fast in tests/test_scanned_layers.py
def test_remat_changes_no_gradient(family, policy):
    from rlhf_jax.models.transformer import with_remat

    model, params = init_model(TINY[family], seed=2)
    tokens = jnp.asarray(np.random.default_rng(0).integers(1, 64, (4, 16)))
    mask = jnp.ones_like(tokens).at[0, :3].set(0)
    grad = lambda m: jax.jit(jax.grad(lambda p: m.token_logps(p, tokens, mask).mean()))(params)  # noqa: E731
    plain, remat = grad(model), grad(with_remat(model, policy))
    assert with_remat(model, policy).cfg.remat == policy and model.cfg.remat == "none"
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(plain))
    for a, b in zip(jax.tree.leaves(remat), jax.tree.leaves(plain), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6 * scale, rtol=0)


@pytest.mark.slow
def test_remat_lowers_the_compiled_backward_memory():
    from rlhf_jax.models.transformer import with_remat

    cfg = ModelConfig(family="llama", vocab_size=256, d_model=128, n_layers=4, n_heads=4, d_ff=512, max_positions=128)
    model, params = init_model(cfg, seed=0)
    tokens = jnp.ones((8, 128), jnp.int32)

    def temp_bytes(m):
        fn = jax.jit(jax.grad(lambda p: m.token_logps(p, tokens, jnp.ones_like(tokens)).sum()))
        return fn.lower(params).compile().memory_analysis().temp_size_in_bytes

    assert temp_bytes(with_remat(model, "full")) < temp_bytes(model)


def test_remat_is_not_part_of_the_checkpoint(tmp_path):
    from rlhf_jax.models.config import to_hf_config
    from rlhf_jax.models.transformer import with_remat

    model = with_remat(init_model(TINY["llama"])[0], "full")
    assert "remat" not in str(to_hf_config(model.cfg))
    with pytest.raises(ValueError, match="remat"):
        ModelConfig(family="llama", vocab_size=8, d_model=8, n_layers=1, n_heads=2, d_ff=8, remat="some")
