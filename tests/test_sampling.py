"""The compiled sampler: HF greedy parity, cache correctness, the sampled distribution,
truncation, EOS handling, independence, compilation count, bad input, sharded and bf16
sampling."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import FAMILIES
from helpers import first_fast
from scipy import stats

from rlhf_jax import mesh as mesh_lib
from rlhf_jax.compiles import CompileCounter
from rlhf_jax.models.attention import attention
from rlhf_jax.models.config import ModelConfig
from rlhf_jax.models.hf import load_hf
from rlhf_jax.models.kv_cache import KVCache
from rlhf_jax.models.transformer import init_model, with_dtype
from rlhf_jax.sampling import Sampler, SamplingConfig, cache_bounds, inverse_cdf_draw

PROMPTS = np.array([[0, 0, 0, 5, 6, 7], [8, 9, 10, 11, 12, 13], [0, 14, 15, 16, 17, 18]])
PROMPT_MASK = (PROMPTS != 0).astype(np.int32)
SMALL_VOCAB = ModelConfig(family="llama", vocab_size=8, d_model=16, n_layers=1, n_heads=2, d_ff=32)


@pytest.mark.parametrize("family", first_fast(FAMILIES))
def test_greedy_is_token_identical_to_transformers_generate(family, hf_checkpoints):
    directory, hf_model = hf_checkpoints[family]
    model, params = load_hf(directory)
    cfg = SamplingConfig(max_new_tokens=8, greedy=True, eos_ids=(2,), pad_id=0)
    out = Sampler(model, cfg)(params, PROMPTS, PROMPT_MASK, 0)
    with torch.no_grad():
        ref = hf_model.generate(
            input_ids=torch.tensor(PROMPTS),
            attention_mask=torch.tensor(PROMPT_MASK),
            do_sample=False,
            max_new_tokens=8,
            eos_token_id=2,
            pad_token_id=0,
        )
    ref = ref[:, PROMPTS.shape[1] :].numpy()
    ref = np.pad(ref, ((0, 0), (0, 8 - ref.shape[1])))  # HF stops when every row has ended
    np.testing.assert_array_equal(out.tokens, ref)


@pytest.mark.parametrize("family", first_fast(["gpt2", "llama"]))
def test_cached_logits_equal_a_full_forward_at_every_step(family, hf_checkpoints):
    model, params = load_hf(hf_checkpoints[family][0])
    cfg = SamplingConfig(max_new_tokens=6, temperature=0.8, return_logits=True)
    out = Sampler(model, cfg)(params, PROMPTS, PROMPT_MASK, 3)
    tokens, mask, completion = out.sequences()
    full = jax.jit(model.logits)(params, tokens, mask)
    P = PROMPTS.shape[1]
    for i in range(cfg.max_new_tokens):
        np.testing.assert_allclose(out.logits[:, i], full[:, P - 1 + i], atol=1e-4, err_msg=f"step {i}")
    # the returned log-probs are those of the temperature-T policy on the sampled tokens
    logps = jax.jit(model.token_logps, static_argnums=3)(params, tokens, mask, 0.8)
    np.testing.assert_allclose(out.logps, (logps * completion)[:, P:], atol=1e-5)


def test_sampled_tokens_follow_softmax_of_logits_over_temperature():
    model, params = init_model(SMALL_VOCAB, seed=1)
    prompt, mask = np.array([[3, 1, 4]]), np.ones((1, 3), np.int32)
    temperature = 0.7
    cfg = SamplingConfig(max_new_tokens=1, temperature=temperature, n_samples=6000)
    out = Sampler(model, cfg)(params, prompt, mask, 0)
    logits = np.asarray(model.logits(params, prompt, mask)[0, -1], np.float64) / temperature
    expected = np.exp(logits - logits.max())
    expected /= expected.sum()
    counts = np.bincount(np.asarray(out.tokens[:, 0]), minlength=8)
    _, p_value = stats.chisquare(counts, expected * counts.sum())
    assert p_value > 1e-3, (counts, expected)


def test_inverse_cdf_draw_returns_the_log_normaliser_and_follows_the_softmax():
    # V = 300 is not a multiple of the 128-token block: the padded tail must not be drawn
    logits_BxV = jax.random.normal(jax.random.key(0), (4, 300)) * 3.0
    tokens, log_z = jax.jit(jax.vmap(inverse_cdf_draw, in_axes=(0, None)))(
        jax.random.split(jax.random.key(1), 5000), logits_BxV
    )
    np.testing.assert_allclose(log_z[0], jax.nn.logsumexp(logits_BxV, axis=-1), rtol=1e-6)
    assert int(tokens.max()) < 300
    probs = np.asarray(jax.nn.softmax(logits_BxV, axis=-1), np.float64)
    for row in range(4):
        counts = np.bincount(np.asarray(tokens[:, row]), minlength=300)
        top = np.argsort(probs[row])[::-1][:5]  # the likeliest tokens, each with enough draws to test
        expected = probs[row, top] * 5000
        assert np.all(np.abs(counts[top] - expected) < 5 * np.sqrt(expected) + 5), (counts[top], expected)


def test_top_k_and_top_p_never_emit_excluded_tokens():
    model, params = init_model(
        ModelConfig(family="gpt2", vocab_size=32, d_model=16, n_layers=1, n_heads=2, d_ff=32), seed=2
    )
    prompt, mask = np.array([[3, 1, 4, 1]]), np.ones((1, 4), np.int32)
    for cfg in [
        SamplingConfig(max_new_tokens=5, top_k=3, n_samples=200, temperature=2.0, return_logits=True),
        SamplingConfig(max_new_tokens=5, top_p=0.3, n_samples=200, temperature=2.0, return_logits=True),
    ]:
        out = Sampler(model, cfg)(params, prompt, mask, 1)
        logits = np.asarray(out.logits, np.float64) / cfg.temperature  # [N, L, V]
        chosen = np.take_along_axis(logits, np.asarray(out.tokens)[..., None], axis=-1)[..., 0]
        # the log-probs are those of the untruncated temperature-T policy
        log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        np.testing.assert_allclose(out.logps, chosen - log_z, atol=1e-5)
        if cfg.top_k:
            rank = (logits > chosen[..., None]).sum(-1)
            assert rank.max() < cfg.top_k
        else:
            probs = np.exp(logits - logits.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            mass_above = np.where(logits > chosen[..., None], probs, 0).sum(-1)
            assert mass_above.max() < cfg.top_p
            assert len(np.unique(out.tokens)) > 1


def test_rows_that_reach_eos_stop_and_are_padded():
    model, params = init_model(SMALL_VOCAB, seed=3)
    cfg = SamplingConfig(max_new_tokens=12, eos_ids=(2, 5), pad_id=7, n_samples=50)
    out = Sampler(model, cfg)(params, np.array([[1, 3]]), np.ones((1, 2), np.int32), 0)
    tokens, mask, logps = (np.asarray(x) for x in (out.tokens, out.mask, out.logps))
    ended = 0
    for row_t, row_m, row_l in zip(tokens, mask, logps, strict=True):
        hits = np.flatnonzero(np.isin(row_t, [2, 5]))
        n = hits[0] + 1 if hits.size else cfg.max_new_tokens
        ended += bool(hits.size)
        assert row_m[:n].all() and not row_m[n:].any()
        assert (row_t[n:] == 7).all() and (row_l[n:] == 0).all() and (row_l[:n] < 0).all()
    assert ended > 25  # most rows end early with a vocabulary of 8


def test_the_n_samples_of_a_prompt_differ_and_are_independent():
    model, params = init_model(SMALL_VOCAB, seed=4)
    prompts = np.tile(np.array([[3, 1, 4]]), (1500, 1))
    out = Sampler(model, SamplingConfig(max_new_tokens=3, n_samples=2))(params, prompts, np.ones_like(prompts), 7)
    pairs = np.asarray(out.tokens[:, 0]).reshape(-1, 2)
    assert (pairs[:, 0] != pairs[:, 1]).mean() > 0.3
    table = np.zeros((8, 8))
    np.add.at(table, (pairs[:, 0], pairs[:, 1]), 1)
    table = table[table.sum(1) > 0][:, table.sum(0) > 0]
    assert stats.chi2_contingency(table)[1] > 1e-3
    seqs = np.asarray(out.tokens).reshape(1500, 2, 3)
    assert (seqs[:, 0] != seqs[:, 1]).any(-1).mean() > 0.5


def test_a_second_call_with_the_same_shapes_compiles_nothing():
    model, params = init_model(SMALL_VOCAB, seed=5)
    sampler = Sampler(model, SamplingConfig(max_new_tokens=4, n_samples=2))
    other = jax.tree.map(lambda x: x + 0.01, params)
    with CompileCounter() as compiles:
        sampler(params, PROMPTS % 8, PROMPT_MASK, 0)
        assert compiles.take() >= 1
        sampler(other, (PROMPTS + 1) % 8, PROMPT_MASK, 1)
        sampler(params, PROMPTS % 8, PROMPT_MASK, jax.random.key(9))
        assert compiles.take() == 0


def test_a_program_compiled_ahead_serves_the_first_call():
    model, params = init_model(SMALL_VOCAB, seed=5)
    sampler = Sampler(model, SamplingConfig(max_new_tokens=3))
    with CompileCounter() as compiles:
        sampler.compile(params, PROMPTS % 8, PROMPT_MASK)
        assert compiles.take() >= 1
        sampler(params, PROMPTS % 8, PROMPT_MASK, 4)
        assert compiles.take() == 0


@pytest.mark.slow
def test_sharded_sampling_equals_single_device(hf_checkpoints):
    directory = hf_checkpoints["llama"][0]
    model, params = load_hf(directory)
    cfg = SamplingConfig(max_new_tokens=5, n_samples=2)
    prompts = np.tile(PROMPTS, (4, 1))[:8]
    mask = (prompts != 0).astype(np.int32)
    expected = Sampler(model, cfg)(params, prompts, mask, 0)
    mesh = mesh_lib.make_mesh((2, 2, 2))
    _, sharded = load_hf(directory, mesh=mesh, rules=mesh_lib.SAMPLE_RULES)
    out = Sampler(model, cfg, mesh=mesh)(sharded, prompts, mask, 0)
    np.testing.assert_array_equal(out.tokens, expected.tokens)
    np.testing.assert_allclose(out.logps, expected.logps, atol=1e-5)


def test_bad_input_errors():
    model, params = init_model(
        ModelConfig(family="gpt2", vocab_size=8, d_model=8, n_layers=1, n_heads=2, d_ff=8, max_positions=10)
    )
    with pytest.raises(ValueError, match="exceeds the cache limit 10"):
        Sampler(model, SamplingConfig(max_new_tokens=5))(params, np.ones((1, 6), int), np.ones((1, 6), int), 0)
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        SamplingConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="top_p=1.5"):
        SamplingConfig(max_new_tokens=2, top_p=1.5)
    with pytest.raises(ValueError, match="top_p=0"):
        SamplingConfig(max_new_tokens=2, top_p=0)
    with pytest.raises(ValueError, match="cache_chunks=0"):
        SamplingConfig(max_new_tokens=2, cache_chunks=0)
    sampler = Sampler(model, SamplingConfig(max_new_tokens=2))
    with pytest.raises(ValueError, match=r"prompt rows \[1\] are empty"):
        sampler(params, np.ones((2, 3), int), np.array([[1, 1, 1], [0, 0, 0]]), 0)
    with pytest.raises(ValueError, match="left-padded"):
        sampler(params, np.ones((1, 3), int), np.array([[1, 1, 0]]), 0)


def test_cache_chunk_bounds():
    assert cache_bounds(6, 8, 4) == (0, 6, 8, 10, 12, 14)
    assert cache_bounds(6, 7, 4) == (0, 6, 8, 10, 12, 13)  # ceil(7 / 4) = 2 slots, the last chunk shorter
    assert cache_bounds(6, 2, 4) == (0, 6, 7, 8)  # fewer chunks than asked when L is small
    assert cache_bounds(6, 8, 1) == (0, 6, 14)


@pytest.mark.slow
def test_chunked_cache_attention_equals_one_softmax():
    """A decode step's per-chunk online softmax, with unfilled chunks skipped, equals one
    softmax over all the slots filled so far; and a write lands in its chunk only."""
    rng = np.random.default_rng(0)
    B, K, H, E, bounds = 2, 2, 4, 8, (0, 5, 8, 11, 12)
    S = bounds[-1]
    cache = KVCache.zeros(B, K, E, bounds, jnp.float32)
    keys, values = rng.normal(size=(2, B, K, S, E)).astype(np.float32)
    for slot in range(S):  # fill every slot through traced writes
        cache = jax.jit(lambda c, k, v, i: c.write(k, v, i))(
            cache, keys[:, :, slot : slot + 1], values[:, :, slot : slot + 1], jnp.int32(slot)
        )
    np.testing.assert_array_equal(np.concatenate(cache.k, axis=2), keys)
    np.testing.assert_array_equal(np.concatenate(cache.v, axis=2), values)
    q = rng.normal(size=(B, 1, H, E)).astype(np.float32)
    for index in range(bounds[1], S):  # a step at `index` sees slots 0..index (row 1: slot 0 is padding)
        mask = np.zeros((B, 1, S), bool)
        mask[:, :, : index + 1] = True
        mask[1, :, 0] = False
        got = jax.jit(lambda c, q, m, i: c.attend(q, m, i))(cache, q, mask, jnp.int32(index))
        want = attention(q, keys[:, :, : index + 1], values[:, :, : index + 1], mask[..., : index + 1])
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"index {index}")
    with pytest.raises(ValueError, match="cross the chunk boundary 5"):
        cache.write(keys[:, :, :6], values[:, :, :6], 0)


@pytest.mark.slow
def test_cache_chunk_count_does_not_change_the_samples(hf_checkpoints):
    model, params = load_hf(hf_checkpoints["llama"][0])
    outs = [
        Sampler(model, SamplingConfig(max_new_tokens=7, temperature=0.9, cache_chunks=c))(
            params, PROMPTS, PROMPT_MASK, 5
        )
        for c in (1, 3, 7)
    ]
    for out in outs[1:]:
        np.testing.assert_array_equal(out.tokens, outs[0].tokens)
        np.testing.assert_allclose(out.logps, outs[0].logps, atol=1e-5)


@pytest.mark.slow  # 5 s: two samplers compiled on the 8-device mesh
def test_sampling_from_sharded_weights_draws_the_same_samples_and_gathers_a_layer_at_a_time():
    # rl.sampler_weights="sharded": the trained shardings (TRAIN_RULES) instead of a whole copy
    # per device; with the scanned stack each layer is gathered inside the loop as it is used
    cfg = ModelConfig(family="llama", vocab_size=512, d_model=128, n_layers=8, n_heads=4, d_ff=512, max_positions=48,
                      scan_layers=True)  # fmt: skip
    mesh = mesh_lib.make_mesh((1, 8, 1))
    prompts = np.tile(PROMPTS, (3, 1))[:8]
    mask = (prompts != 0).astype(np.int32)
    out, per_device = {}, {}
    for name, rules in (("whole", mesh_lib.SAMPLE_RULES), ("sharded", mesh_lib.TRAIN_RULES)):
        model, params = init_model(cfg, mesh=mesh, rules=rules)
        sampler = Sampler(model, SamplingConfig(max_new_tokens=8, n_samples=2), mesh, rules)
        out[name] = sampler(params, prompts, mask, 0)
        with mesh_lib.use_mesh(mesh, rules):
            memory = sampler._fn.lower(*sampler._inputs(params, prompts, mask, 0)).compile().memory_analysis()
        per_device[name] = memory.argument_size_in_bytes + memory.temp_size_in_bytes
    np.testing.assert_array_equal(out["whole"].tokens, out["sharded"].tokens)
    np.testing.assert_allclose(out["whole"].logps, out["sharded"].logps, atol=1e-5)
    assert per_device["sharded"] < 0.5 * per_device["whole"], per_device


@pytest.mark.slow  # 3 s; bf16 sampling also runs in tests/test_rl_loop.py
def test_bfloat16_sampling_draws_from_the_float32_policy_to_bf16_precision_with_a_bf16_cache():
    # rl.sample_dtype=bfloat16: the same float32 weights computing in bf16, the KV cache in bf16
    # (this CPU's compiler widens bf16 buffers, so what it saves is shown on a TPU: test_aot.py)
    cfg = ModelConfig(family="llama", vocab_size=512, d_model=128, n_layers=4, n_heads=4, d_ff=512, max_positions=64,
                      scan_layers=True)  # fmt: skip
    model, params = init_model(cfg, seed=3)
    half = with_dtype(model, "bfloat16")
    sampling = SamplingConfig(max_new_tokens=40, n_samples=8)
    sampler = Sampler(half, sampling)
    program = sampler._fn.lower(*sampler._inputs(params, PROMPTS, PROMPT_MASK, 0)).as_text()
    N, S, E = 3 * 8, PROMPTS.shape[1] + 40, cfg.head_dim
    caches = re.findall(rf"tensor<{cfg.n_layers}x{N}x{cfg.n_kv_heads}x\d+x{E}x(\w+)>", program)  # layers, rows, heads
    assert caches and set(caches) == {"bf16"}, set(caches)
    out = sampler(params, PROMPTS, PROMPT_MASK, 0)
    tokens, mask, completion = out.sequences()
    full = jax.jit(model.token_logps, static_argnums=3)(params, tokens, mask, 1.0)  # the float32 policy
    assert tokens.shape == (N, S)
    P = PROMPTS.shape[1]
    np.testing.assert_allclose(out.logps, (full * completion)[:, P:], atol=0.05)
    assert np.abs(out.logps - (full * completion)[:, P:]).max() > 1e-6  # computed in bf16 indeed
