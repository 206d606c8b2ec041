"""LoRA (`models/lora.py`): the adapted projection's formula, fresh adapters computing the
base, which leaves train, a train step against a hand-written adapter update (the base
untouched, the shared reference alive after donation), optimiser state for the adapters
only and sharded like them, and the HF export merging the adapters (transformers' logits)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import transformers as T
from conftest import FAMILIES
from flax import nnx
from helpers import first_fast
from test_hf_parity import torch_logits

from rlhf_jax import mesh as mesh_lib
from rlhf_jax.models import lora
from rlhf_jax.models.config import ModelConfig
from rlhf_jax.models.hf import load_hf, save_hf
from rlhf_jax.models.layers import Proj
from rlhf_jax.models.transformer import init_model, stack_layers, unstack_layers
from rlhf_jax.train_step import OptimConfig, init_state, make_optimizer, make_train_step, state_shardings

CFG = ModelConfig(family="llama", vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64)
TARGETS = ("q", "v", "gate", "down")


def adapted(cfg=CFG, rank=4, alpha=8.0, seed=0, mesh=None):
    model, params = init_model(cfg, seed=seed, mesh=mesh)
    return (model, params, *lora.add_adapters(model, params, rank, alpha, TARGETS, seed=seed + 1, mesh=mesh))


def randomise_b(params, seed=0):
    """Every lora_b drawn at random (fresh ones are 0), so that the adapters do something."""
    rng = np.random.default_rng(seed)

    def walk(tree):
        if not isinstance(tree, dict):
            return tree
        return {
            k: jnp.asarray(0.05 * rng.standard_normal(v.shape), jnp.float32) if k == "lora_b" else walk(v)
            for k, v in tree.items()
        }

    return walk(params)


def batch(B=3, T=9, seed=0):
    tokens = jnp.asarray(np.random.default_rng(seed).integers(1, 64, (B, T)))
    return tokens, jnp.ones_like(tokens).at[0, :2].set(0)


def test_the_adapted_projection_adds_alpha_over_r_times_x_a_b():
    proj = Proj((2,), (3,), (None,), (None,), False, nnx.Rngs(0), lora_rank=1, lora_alpha=2.0)
    proj.kernel.set_value(jnp.array([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]]))
    proj.lora_a.set_value(jnp.array([[1.0], [3.0]]))
    proj.lora_b.set_value(jnp.array([[1.0, -1.0, 0.5]]))
    y = proj(jnp.array([[1.0, 2.0]]))
    # x W = [1, 2, 2]; x A = 1 + 6 = 7; (alpha / r) x A B = 2 * 7 * [1, -1, 0.5] = [14, -14, 7]
    np.testing.assert_allclose(y, [[15.0, -12.0, 9.0]])


@pytest.mark.parametrize("scan", first_fast([False, True]))
def test_fresh_adapters_compute_the_base_and_merging_gives_the_same_model(scan):
    cfg = dataclasses.replace(CFG, scan_layers=scan)
    model, params, lmodel, lparams = adapted(cfg)
    tokens, mask = batch()
    base = model.logits(params, tokens, mask)
    assert float(jnp.abs(lmodel.logits(lparams, tokens, mask) - base).max()) == 0.0  # B = 0
    trained = randomise_b(lparams)
    out = lmodel.logits(trained, tokens, mask)
    assert float(jnp.abs(out - base).max()) > 1e-3  # the adapters now change the model
    host = jax.tree.map(np.asarray, trained)
    if scan:
        merged = stack_layers(lora.merge(unstack_layers(host), 8.0 / 4))
    else:
        merged = lora.merge(host, 8.0 / 4)
    assert not lora.has_adapters(merged)
    assert float(jnp.abs(model.logits(merged, tokens, mask) - out).max()) <= 1e-5
    # the reference: the same base arrays, adapters off
    ref = lora.without_adapters(trained)
    assert float(jnp.abs(lmodel.logits(ref, tokens, mask) - base).max()) == 0.0
    assert ref["embed"] is trained["embed"]


def test_only_adapters_and_a_score_head_train_in_an_adapted_model():
    _, _, _, policy = adapted()
    scalar_model, scalar = init_model(dataclasses.replace(CFG, lora_rank=2), head="scalar")
    _, plain = init_model(CFG)
    params = {"policy": policy, "value": scalar, "other": plain}
    trainable, frozen = lora.partition(params)
    names = lambda tree: {
        "/".join(str(getattr(k, "key", k)) for k in p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]
    }  # noqa: E731
    train_names, frozen_names = names(trainable), names(frozen)
    assert {n.split("/")[-1] for n in train_names if n.startswith("policy/")} == {"lora_a", "lora_b"}
    assert {n.split("/")[-1] for n in train_names if n.startswith("value/")} == {"lora_a", "lora_b", "score"}
    assert {n for n in train_names if n.startswith("other/")} == {n for n in names(params) if n.startswith("other/")}
    assert "policy/layers/0/attn/q/kernel" in frozen_names and "policy/embed" in frozen_names
    assert "value/final_norm/scale" in frozen_names and not any(n.startswith("other/") for n in frozen_names)
    assert train_names | frozen_names == names(params) and not train_names & frozen_names
    assert jax.tree_util.tree_structure(lora.combine(trainable, frozen)) == jax.tree_util.tree_structure(params)
    assert lora.partition(plain) == (plain, None)


@pytest.mark.slow  # 9 s: a whole RL step
def test_a_lora_step_is_the_hand_written_adapter_update_and_leaves_the_base():
    model, _, lmodel, lparams = adapted()
    tokens, mask = batch()

    def loss_fn(p, b):
        loss = -lmodel.token_logps(p, b, mask).mean()
        return loss, {"loss": loss}

    optimizer = make_optimizer(OptimConfig(learning_rate=1e-2, max_grad_norm=0.5))
    trainable, frozen = lora.partition(lparams)
    # by hand: gradients of the adapters alone, the base a constant; AdamW on them
    adapter_loss = lambda t: loss_fn(lora.combine(t, frozen), tokens)[0]  # noqa: E731
    opt_state = optimizer.init(trainable)
    want = trainable
    for _ in range(2):
        grads = jax.grad(adapter_loss)(want)
        updates, opt_state = optimizer.update(grads, opt_state, want)
        want = optax.apply_updates(want, updates)

    reference = lora.without_adapters(lparams)
    state = init_state(lparams, optimizer)
    assert jax.tree_util.tree_structure(state.opt_state) == jax.tree_util.tree_structure(optimizer.init(trainable))
    step = make_train_step(loss_fn, optimizer)
    for _ in range(2):
        state, metrics = step(state, tokens)
    got, got_frozen = lora.partition(state.params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert all(a is b for a, b in zip(jax.tree.leaves(got_frozen), jax.tree.leaves(frozen), strict=True))
    assert float(metrics["finite"]) == 1.0
    # the frozen base was never donated: the reference that shares it still computes the base
    base = model.logits(lora.merge(jax.tree.map(np.asarray, reference), 2.0), tokens, mask)
    assert float(jnp.abs(lmodel.logits(reference, tokens, mask) - base).max()) == 0.0


def test_adapter_moments_live_in_the_adapters_shardings_on_a_mesh():
    mesh = mesh_lib.make_mesh((2, 2, 2))
    cfg = dataclasses.replace(CFG, d_model=64, n_heads=8, n_kv_heads=8)
    _, _, lmodel, lparams = adapted(cfg, mesh=mesh)
    optimizer = make_optimizer(OptimConfig())
    state = init_state(lparams, optimizer)
    trainable, frozen = lora.partition(lparams)
    moments = [s for s in jax.tree.leaves(state.opt_state, is_leaf=lambda x: hasattr(x, "mu")) if hasattr(s, "mu")]
    assert len(moments) == 1
    same = jax.tree.map(lambda m, p: m.sharding.is_equivalent_to(p.sharding, m.ndim), moments[0].mu, trainable)
    assert all(jax.tree.leaves(same))
    tokens, mask = batch(B=8)

    def loss_fn(p, b):
        loss = -lmodel.token_logps(p, b, mask).mean()
        return loss, {"loss": loss}

    step = make_train_step(loss_fn, optimizer, state_shardings=state_shardings(state))
    with mesh_lib.use_mesh(mesh):
        new, _ = step(state, tokens)
    kept = zip(jax.tree.leaves(lora.partition(new.params)[1]), jax.tree.leaves(frozen), strict=True)
    assert all(a is b for a, b in kept)
    assert not any(x.is_deleted() for x in jax.tree.leaves(frozen))


@pytest.mark.slow  # merging runs fast in test_fresh_adapters_compute_the_base_and_merging_gives_the_same_model
@pytest.mark.parametrize("family", FAMILIES)
def test_the_hf_export_merges_the_adapters(family, hf_checkpoints, padded_batch, tmp_path):
    directory, _ = hf_checkpoints[family]
    tokens, mask = padded_batch
    for scan in (False, True):
        model, params = load_hf(directory, scan_layers=scan)
        targets = ("q", "k", "v", "o", "up", "down") + (("gate",) if model.cfg.gated_mlp else ())
        lmodel, lparams = lora.add_adapters(model, params, 2, 4.0, targets, seed=3)
        lparams = randomise_b(lparams, seed=1)
        ours = np.asarray(lmodel.logits(lparams, tokens, mask))
        out = str(tmp_path / f"scan{scan}")
        save_hf(lmodel, lparams, out)
        reloaded = T.AutoModelForCausalLM.from_pretrained(out).eval()
        real = mask.astype(bool)
        assert np.abs(torch_logits(reloaded, tokens, mask) - ours)[real].max() <= 1e-4
        assert np.abs(ours - np.asarray(model.logits(params, tokens, mask)))[real].max() > 1e-3


def test_lora_settings_are_checked():
    with pytest.raises(ValueError, match="lora_targets"):
        dataclasses.replace(CFG, lora_rank=2, lora_targets=("qq",))
    with pytest.raises(ValueError, match="lora_rank"):
        dataclasses.replace(CFG, lora_rank=-1)
