"""The scanned layer stack (`model.scan_layers`): the same model as the unrolled one at
every boundary (transformers' logits, the HF export, gradients under remat, the sampler,
initialisation, a training run), with one block in the compiled program."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers as T
from conftest import FAMILIES
from helpers import first_fast
from test_hf_parity import torch_logits

from rlhf_jax.checkpoint import Checkpointer
from rlhf_jax.errors import CheckpointError
from rlhf_jax.models.config import ModelConfig
from rlhf_jax.models.hf import load_hf, save_hf
from rlhf_jax.models.transformer import init_model, stack_layers, unstack_layers, with_remat
from rlhf_jax.sampling import Sampler, SamplingConfig

CFG = ModelConfig(family="llama", vocab_size=64, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, d_ff=64)


def scanned(cfg: ModelConfig) -> ModelConfig:
    return dataclasses.replace(cfg, scan_layers=True)


def max_abs(a, b) -> float:
    return max(float(jnp.abs(x - y).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.mark.parametrize("family", first_fast(FAMILIES))
def test_scanned_logits_equal_transformers_and_the_export_reloads(family, hf_checkpoints, padded_batch, tmp_path):
    directory, hf_model = hf_checkpoints[family]
    tokens, mask = padded_batch
    unrolled_model, unrolled = load_hf(directory)
    model, params = load_hf(directory, scan_layers=True)
    assert model.cfg.scan_layers and params["layers"]["attn_norm"]["scale"].shape == (2, 32)
    assert max_abs(stack_layers(unrolled), params) == 0.0  # the same weights, stacked
    real = mask.astype(bool)
    ours = np.asarray(jax.jit(model.logits)(params, tokens, mask))
    assert np.abs(ours - torch_logits(hf_model, tokens, mask))[real].max() <= 1e-4
    assert np.abs(ours - jax.jit(unrolled_model.logits)(unrolled, tokens, mask))[real].max() <= 1e-5
    save_hf(model, params, str(tmp_path))
    reloaded = T.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    diff = np.abs(torch_logits(reloaded, tokens, mask) - torch_logits(hf_model, tokens, mask))
    assert diff[real].max() <= 1e-6


def test_layouts_convert_both_ways_and_one_seed_gives_one_model():
    _, unrolled = init_model(CFG, seed=5)
    model, params = init_model(scanned(CFG), seed=5)
    assert max_abs(stack_layers(unrolled), params) == 0.0
    assert max_abs(unstack_layers(params), unrolled) == 0.0
    assert sorted(unstack_layers(params)["layers"]) == [0, 1, 2]


@pytest.mark.parametrize("policy", first_fast(["full", "dots", "none"]))
def test_scanned_gradients_equal_the_unrolled_ones_under_remat(policy):
    model, params = init_model(CFG, seed=2)
    scan_model = with_remat(init_model(scanned(CFG))[0], policy)
    tokens = jnp.asarray(np.random.default_rng(0).integers(1, 64, (4, 12)))
    mask = jnp.ones_like(tokens).at[0, :3].set(0)
    grad = lambda m, p: jax.jit(jax.grad(lambda p: m.token_logps(p, tokens, mask).mean()))(p)  # noqa: E731
    plain, scan = grad(model, params), grad(scan_model, stack_layers(params))
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(plain))
    assert max_abs(stack_layers(plain), scan) <= 1e-6 * scale


@pytest.mark.slow  # 5-6 s a depth; the scanned forward's parity runs fast (test_scanned_logits_...)
@pytest.mark.parametrize("n_layers", [1, 3])
def test_the_scanned_sampler_draws_the_unrolled_samples(n_layers):
    cfg = dataclasses.replace(CFG, n_layers=n_layers)
    model, params = init_model(cfg, seed=1)
    scan_model, scan_params = init_model(scanned(cfg), seed=1)
    prompts = np.array([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])
    pmask = (prompts != 0).astype(np.int32)
    for sampling in (SamplingConfig(max_new_tokens=6, greedy=True), SamplingConfig(max_new_tokens=6, n_samples=2)):
        a = Sampler(model, sampling)(params, prompts, pmask, 3)
        b = Sampler(scan_model, sampling)(scan_params, prompts, pmask, 3)
        np.testing.assert_array_equal(a.tokens, b.tokens)
        np.testing.assert_allclose(a.logps, b.logps, atol=1e-5)


def test_the_scanned_program_holds_one_block_whatever_the_depth():
    tokens = jnp.ones((2, 8), jnp.int32)

    def program_size(cfg):
        model, params = init_model(cfg)
        fn = jax.jit(jax.grad(lambda p: model.token_logps(p, tokens, jnp.ones_like(tokens)).sum()))
        return len(fn.lower(params).as_text())

    shallow, deep = (dataclasses.replace(CFG, n_layers=n) for n in (2, 8))
    assert program_size(deep) > 2 * program_size(shallow)  # unrolled: one block per layer
    assert program_size(scanned(deep)) < 1.05 * program_size(scanned(shallow))


def test_a_checkpoint_of_the_other_layout_is_refused_by_name_and_kept(tmp_path):
    _, params = init_model(CFG)
    ckpt = Checkpointer(str(tmp_path / "ckpt"), async_save=False)
    ckpt.save(4, {"params": params}, {"step": 4})
    ckpt.wait()
    _, scan_params = init_model(scanned(CFG))
    with pytest.raises(CheckpointError, match=r"unrolled layer stack.*model.scan_layers=false"):
        ckpt.restore({"params": scan_params})
    assert os.listdir(tmp_path / "ckpt") == ["4"] and not os.path.exists(str(tmp_path / "ckpt") + ".unreadable")
    step, state, _ = ckpt.restore({"params": params})  # the run's own layout still restores
    assert step == 4 and max_abs(state, {"params": params}) == 0.0
