"""The jitted train step: loss falls, accumulation equals one big batch, schedules,
donation, and the same step on a (2, 2, 2) mesh."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import TINY_LLAMA

from rlhf_jax import mesh as mesh_lib
from rlhf_jax.batches import SFTBatch
from rlhf_jax.losses.sft import sft_loss
from rlhf_jax.models.transformer import init_model, param_shardings
from rlhf_jax.train_step import (
    OptimConfig,
    init_state,
    make_optimizer,
    make_schedule,
    make_train_step,
    state_shardings,
)


def copy_batch(n=8, T=8, seed=0):
    """Prompt = 4 random tokens, completion = the same 4 again: learnable by attention."""
    rng = np.random.default_rng(seed)
    prompt = rng.integers(1, 32, size=(n, T // 2))
    tokens = np.concatenate([prompt, prompt], axis=1)
    cmask = np.zeros((n, T), np.int32)
    cmask[:, T // 2 :] = 1
    return SFTBatch(jnp.asarray(tokens), jnp.ones((n, T), jnp.int32), jnp.asarray(cmask))


def test_sft_loss_falls():
    model, params = init_model(TINY_LLAMA, seed=0)
    cfg = OptimConfig(learning_rate=3e-3, warmup_steps=5, total_steps=60)
    opt = make_optimizer(cfg)
    step = make_train_step(functools.partial(sft_loss, model=model), opt, schedule=make_schedule(cfg))
    state = init_state(params, opt)
    batch = copy_batch(32)
    losses = []
    for _ in range(60):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.5 * losses[0]
    assert int(state.step) == 60 and float(metrics["grad_norm"]) > 0


@pytest.mark.slow
def test_gradient_accumulation_equals_one_big_batch():
    model, params = init_model(TINY_LLAMA, seed=1)
    opt = make_optimizer(OptimConfig(learning_rate=1e-2, max_grad_norm=0.0))
    loss = functools.partial(sft_loss, model=model)
    batch = copy_batch(8)
    fresh = lambda: init_state(jax.tree.map(jnp.copy, params), opt)  # noqa: E731 - each step donates its state
    one, m1 = make_train_step(loss, opt)(fresh(), batch)
    acc, m4 = make_train_step(loss, opt, accum_steps=4)(fresh(), batch)
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(acc.params), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-6)
    with pytest.raises(ValueError, match="not divisible by 3"):
        make_train_step(loss, opt, accum_steps=3)(fresh(), batch)


def test_schedules():
    warm = make_schedule(OptimConfig(learning_rate=1.0, warmup_steps=10, total_steps=110, schedule="cosine"))
    np.testing.assert_allclose([warm(0), warm(5), warm(10), warm(60), warm(110)], [0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)
    lin = make_schedule(OptimConfig(learning_rate=2.0, total_steps=100, schedule="linear", end_lr_ratio=0.5))
    np.testing.assert_allclose([lin(0), lin(50), lin(100)], [2.0, 1.5, 1.0], atol=1e-6)
    with pytest.raises(ValueError, match="schedule='step'"):
        OptimConfig(schedule="step")
    with pytest.raises(ValueError, match="warmup_steps=20"):
        OptimConfig(warmup_steps=20, total_steps=10)


def test_the_state_is_donated():
    model, params = init_model(TINY_LLAMA, seed=2)
    opt = optax.sgd(0.1)
    step = make_train_step(functools.partial(sft_loss, model=model), opt)
    state = init_state(jax.tree.map(jnp.copy, params), opt)
    new_state, _ = step(state, copy_batch(4))
    assert jax.tree.leaves(state.params)[0].is_deleted()
    assert not jax.tree.leaves(new_state.params)[0].is_deleted()


@pytest.mark.slow
def test_sharded_step_equals_single_device():
    model, params = init_model(TINY_LLAMA, seed=3)
    opt = make_optimizer(OptimConfig(learning_rate=1e-2))
    loss = functools.partial(sft_loss, model=model)
    batch = copy_batch(8)
    single, m_single = make_train_step(loss, opt)(init_state(jax.tree.map(jnp.copy, params), opt), batch)

    mesh = mesh_lib.make_mesh((2, 2, 2))
    _, sharded_params = init_model(TINY_LLAMA, seed=3, mesh=mesh)
    state = init_state(sharded_params, opt)
    p_shard = param_shardings(TINY_LLAMA, "lm", mesh)
    assert state_shardings(state).params == p_shard
    batch_sharding = jax.tree.map(lambda _: mesh_lib.batch_sharding(mesh), batch)
    step = make_train_step(loss, opt, state_shardings=state_shardings(state), batch_shardings=batch_sharding)
    with mesh_lib.use_mesh(mesh):
        out, m_sharded = step(state, batch)
    np.testing.assert_allclose(m_sharded["loss"], m_single["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(out.params), jax.tree.leaves(single.params), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert (
        out.params["layers"][0]["mlp"]["up"]["kernel"].sharding.spec == p_shard["layers"][0]["mlp"]["up"]["kernel"].spec
    )


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_optimiser_moments_are_sharded_like_their_parameters(weight_decay):
    # Adam's moments of every parameter (a policy and a critic, as PPO trains them) live in
    # the parameter's own sharding (the train step pins its output to the state's shardings).
    mesh = mesh_lib.make_mesh((2, 2, 2))
    _, policy = init_model(TINY_LLAMA, seed=0, mesh=mesh)
    _, critic = init_model(TINY_LLAMA, head="scalar", seed=1, mesh=mesh)
    params = {"policy": policy, "value": critic}
    optimizer = make_optimizer(OptimConfig(weight_decay=weight_decay))
    state = init_state(params, optimizer)
    moments = [s for s in jax.tree.leaves(state.opt_state, is_leaf=lambda x: hasattr(x, "mu")) if hasattr(s, "mu")]
    assert len(moments) == 1
    want = jax.tree.map(lambda p: p.sharding, params)
    for tree in (moments[0].mu, moments[0].nu):
        same = jax.tree.map(lambda m, s: m.sharding.is_equivalent_to(s, m.ndim), tree, want)
        assert all(jax.tree.leaves(same)), same
    assert any(len(m.sharding.device_set) == 8 and not m.sharding.is_fully_replicated for m in jax.tree.leaves(tree))
    assert moments[0].count.sharding.is_fully_replicated and moments[0].count.sharding.mesh == mesh
