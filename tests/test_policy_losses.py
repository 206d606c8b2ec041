"""Policy-gradient objectives and losses: hand values, the RLOO paper's appendix B form,
PPO = Vanilla PG at ratio 1, padding invariance and a finite-difference gradient check."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import first_fast, tiny_model

from rlhf_jax import rollout as R
from rlhf_jax.batches import Rollout
from rlhf_jax.losses import policy as P


def PPO(cfg):
    return dataclasses.replace(cfg, objective="ppo")


def VPG(cfg):
    return dataclasses.replace(cfg, objective="vanilla_pg")


class PolicyObjectivesTest(chex.TestCase):
    """Each test runs twice, jitted and eagerly (chex.variants)."""

    def call(self, fn, *args, **static):
        """fn(*args, **static) under the variant: jitted with the keyword arguments static."""
        return self.variant(lambda *a: fn(*a, **static))(*args)

    @chex.variants(with_jit=True, without_jit=True)
    def test_reinforce_objective_plain_and_clipped(self):
        seq = jnp.array([-1.0, -2.0])
        adv = jnp.array([1.0, 1.0])
        loss, _ = self.call(P.reinforce_objective, seq, adv)
        np.testing.assert_allclose(loss, 1.5)
        loss, m = self.call(P.reinforce_objective, seq, adv, jnp.array([-1.5, -2.0]), clip_eps=0.2)
        np.testing.assert_allclose(loss, -(1.2 + 1.0) / 2, rtol=1e-6)
        np.testing.assert_allclose(m["clip_frac"], 0.5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_rloo_k2_equals_the_appendix_b_contrastive_form(self):
        R_plus, R_minus, lp_plus, lp_minus = 3.0, 0.5, -4.0, -6.5
        adv = self.call(R.rloo_advantages, jnp.array([R_plus, R_minus]), k=2)
        loss, _ = self.call(P.reinforce_objective, jnp.array([lp_plus, lp_minus]), adv)
        expected = (R_plus - R_minus) / 2 * (-lp_plus + lp_minus)
        np.testing.assert_allclose(loss, expected, rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_ppo_objective_hand_values(self):
        loss, m = self.call(
            P.ppo_objective,
            jnp.array([[-1.0, -2.0]]),
            jnp.array([[-1.2, -2.0]]),
            jnp.array([[1.0, -1.0]]),
            jnp.ones((1, 2)),
            clip_eps=0.1,
        )
        np.testing.assert_allclose(loss, -(1.1 - 1.0) / 2, rtol=1e-5)
        np.testing.assert_allclose(m["clip_frac"], 0.5)
        np.testing.assert_allclose(m["ratio_max"], np.exp(0.2), rtol=1e-6)
        np.testing.assert_allclose(m["approx_kl"], (np.exp(-0.2) - 1 + 0.2) / 2, rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_value_objective_clipped_and_not(self):
        args = (jnp.array([[1.0, 2.0]]), jnp.array([[0.5, 2.0]]), jnp.array([[2.0, 1.0]]), jnp.ones((1, 2)))
        loss, m = self.call(P.value_objective, *args, clip=0.2)
        np.testing.assert_allclose(loss, 0.5 * (1.69 + 1.0) / 2, rtol=1e-6)
        np.testing.assert_allclose(m["value_clip_frac"], 0.5)
        loss, _ = self.call(P.value_objective, *args, clip=None)
        np.testing.assert_allclose(loss, 0.5, rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_vanilla_pg_and_raft_objectives(self):
        loss, _ = self.call(
            P.vanilla_pg_objective, jnp.array([[-1.0, -2.0]]), jnp.array([[2.0, 1.0]]), jnp.ones((1, 2))
        )
        np.testing.assert_allclose(loss, 2.0)
        weights = self.call(R.raft_weights, jnp.array([1.0, 5.0, 3.0, 2.0, 2.0, 0.0]), k=3)
        np.testing.assert_array_equal(weights, [0, 1, 0, 1, 0, 0])
        logps = jnp.array([[-9.0, -9.0], [-1.0, -3.0], [-9.0, -9.0], [-2.0, 0.0], [-9.0, -9.0], [-9.0, -9.0]])
        mask = jnp.array([[1, 1], [1, 1], [1, 1], [1, 0], [1, 1], [1, 1]])
        loss, _ = self.call(P.raft_objective, logps, weights, mask)
        np.testing.assert_allclose(loss, (1.0 + 3.0 + 2.0) / 3)


# ----------------------------------------------------------------------------- with a model


def make_rollout(model, params, k=2, left_pad=0, right_pad=0, seed=0):
    """4 rows (2 prompts x k=2): prompt of 3 tokens, completions of 2..4 tokens."""
    rng = np.random.default_rng(seed)
    B, Tp, Tc = 4, 3, 4
    tokens = rng.integers(1, 32, size=(B, Tp + Tc))
    lengths = np.array([4, 2, 3, 4])
    cmask = np.zeros((B, Tp + Tc), np.int32)
    for i, n in enumerate(lengths):
        cmask[i, Tp : Tp + n] = 1
    mask = cmask.copy()
    mask[:, :Tp] = 1
    tokens = np.where(mask, tokens, 0)
    values = rng.normal(size=tokens.shape).astype(np.float32) * cmask
    pad = lambda x: np.pad(x, ((0, 0), (left_pad, right_pad)))  # noqa: E731
    tokens, mask, cmask, values = pad(tokens), pad(mask), pad(cmask), jnp.asarray(pad(values))
    old = jax.jit(model.token_logps)(params, tokens, mask)
    ref = old - 0.1 * jnp.asarray(cmask)
    scores = jnp.array([1.0, -1.0, 0.5, 2.0])
    rewards_BxT, _ = R.token_kl_rewards(scores, old, ref, cmask, 0.05)
    adv_t, ret = R.gae(rewards_BxT, values, cmask, 1.0, 0.95)
    seq_reward, _ = R.sequence_kl_reward(scores, old, ref, cmask, 0.05)
    rollout = Rollout(
        tokens_BxT=jnp.asarray(tokens),
        mask_BxT=jnp.asarray(mask),
        completion_mask_BxT=jnp.asarray(cmask),
        old_logps_BxT=old,
        ref_logps_BxT=ref,
        scores_B=scores,
        values_BxT=values,
        advantages_B=R.rloo_advantages(seq_reward, k),
        returns_BxT=ret,
        k=k,
    )
    return rollout, adv_t


def with_critic():
    """(policy model, critic, {"policy", "value"} parameters, a rollout with GAE advantages)."""
    model, params = tiny_model()
    value_model, value_params = tiny_model("scalar", seed=1)
    rollout, adv_t = make_rollout(model, params)
    rollout = rollout.replace(advantages_B=None, advantages_BxT=adv_t)
    return model, value_model, {"policy": params, "value": value_params}, rollout


@pytest.mark.slow
def test_ppo_gradient_equals_vanilla_pg_at_ratio_one():
    model, value_model, both, rollout = with_critic()
    cfg = P.PolicyLossConfig(ppo_clip=0.2, vf_coef=0.0)
    g_ppo = jax.jit(jax.grad(lambda p: P.policy_loss(p, rollout, PPO(cfg), model, value_model)[0]))(both)
    g_vpg = jax.jit(jax.grad(lambda p: P.policy_loss(p, rollout, VPG(cfg), model, value_model)[0]))(both)
    for a, b in zip(jax.tree.leaves(g_ppo["policy"]), jax.tree.leaves(g_vpg["policy"]), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(g_ppo["policy"])) > 0
    _, metrics = P.policy_loss(both, rollout, PPO(cfg), model, value_model)
    np.testing.assert_allclose(metrics["clip_frac"], 0.0)
    np.testing.assert_allclose(metrics["ratio_mean"], 1.0, atol=1e-6)


@pytest.mark.parametrize("loss_name", first_fast(["reinforce", "ppo"]))
def test_log_probs_of_the_completion_positions_only_change_nothing(loss_name):
    # The RL loop's completions fill the last 4 positions (after 3 prompt tokens):
    # completion_len=4 runs the head there only, with the same loss, metrics and gradient.
    model, params = tiny_model()
    value_model, value_params = tiny_model("scalar", seed=1)
    rollout, adv_t = make_rollout(model, params)
    out = []
    for completion_len in (0, 4):
        cfg = P.PolicyLossConfig(completion_len=completion_len, ent_coef=0.01, kl_loss_coef=0.1)
        if loss_name == "reinforce":
            fn = lambda p, cfg=cfg: P.policy_loss(p, rollout, cfg, model)  # noqa: E731
            args = params
        else:
            r = rollout.replace(advantages_B=None, advantages_BxT=adv_t)
            fn = lambda p, cfg=cfg, r=r: P.policy_loss(p, r, PPO(cfg), model, value_model)  # noqa: E731
            args = {"policy": params, "value": value_params}
        out.append(jax.jit(jax.value_and_grad(fn, has_aux=True))(args))
    ((l0, m0), g0), ((l1, m1), g1) = out
    np.testing.assert_allclose(l0, l1, atol=1e-6)
    for key in m0:
        np.testing.assert_allclose(m0[key], m1[key], atol=1e-5, err_msg=key)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="completion_len=-1"):
        P.PolicyLossConfig(completion_len=-1)


@pytest.mark.parametrize("loss_name", first_fast(["ppo", "reinforce", "raft"]))
def test_padding_changes_nothing(loss_name):
    model, params = tiny_model()
    value_model, value_params = tiny_model("scalar", seed=1)
    cfg = P.PolicyLossConfig(ent_coef=0.01, kl_loss_coef=0.1)
    losses = []
    for left, right in [(0, 0), (2, 3)]:
        rollout, adv_t = make_rollout(model, params, left_pad=left, right_pad=right)
        if loss_name == "reinforce":
            loss = jax.jit(lambda p, r: P.policy_loss(p, r, cfg, model))
            losses.append(loss(params, rollout))
        elif loss_name == "raft":
            rollout = rollout.replace(advantages_B=R.raft_weights(rollout.scores_B, 2))
            loss = jax.jit(lambda p, r: P.policy_loss(p, r, dataclasses.replace(cfg, objective="raft"), model))
            losses.append(loss(params, rollout))
        else:
            rollout = rollout.replace(advantages_B=None, advantages_BxT=adv_t)
            loss = jax.jit(lambda p, r: P.policy_loss(p, r, PPO(cfg), model, value_model))
            losses.append(loss({"policy": params, "value": value_params}, rollout))
    (l0, m0), (l1, m1) = losses
    np.testing.assert_allclose(l0, l1, atol=1e-5)
    for key in m0:
        np.testing.assert_allclose(m0[key], m1[key], atol=1e-5, err_msg=key)


@pytest.mark.slow
def test_reinforce_loss_gradient_matches_finite_differences():
    model, params = tiny_model()
    rollout, _ = make_rollout(model, params, seed=3)
    cfg = P.PolicyLossConfig(kl_loss_coef=0.1)
    loss = jax.jit(lambda p: P.policy_loss(p, rollout, cfg, model)[0])
    grads = jax.jit(jax.grad(lambda p: P.policy_loss(p, rollout, cfg, model)[0]))(params)
    rng = np.random.default_rng(0)
    direction = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
    norm = np.sqrt(sum(float(jnp.sum(d * d)) for d in jax.tree.leaves(direction)))
    direction = jax.tree.map(lambda d: d / norm, direction)
    eps = 1e-2
    plus = loss(jax.tree.map(lambda p, d: p + eps * d, params, direction))
    minus = loss(jax.tree.map(lambda p, d: p - eps * d, params, direction))
    numeric = (plus - minus) / (2 * eps)
    analytic = sum(
        float(jnp.sum(g * d)) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction), strict=True)
    )
    np.testing.assert_allclose(numeric, analytic, rtol=2e-2)


def test_policy_loss_config_errors():
    with pytest.raises(ValueError, match="ppo_clip"):
        P.PolicyLossConfig(ppo_clip=-0.1)
    with pytest.raises(ValueError, match="kl_estimator"):
        P.PolicyLossConfig(kl_estimator="k9")
    with pytest.raises(ValueError, match="clip_eps"):
        P.PolicyLossConfig(clip_eps=0.0)
    with pytest.raises(ValueError, match="ppo_objective: shapes disagree"):
        P.ppo_objective(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.zeros((2, 4)), jnp.ones((2, 3)), 0.2)


def test_ppo_objective_with_one_advantage_per_completion_is_grpo_per_token():
    # GRPO (DeepSeekMath): the group advantage A_i on every token of completion i, in PPO's
    # clipped per-token surrogate; Rollout.token_advantages broadcasts it.
    model, params = tiny_model()
    rollout, _ = make_rollout(model, params)
    cfg = P.PolicyLossConfig(objective="ppo", ppo_clip=0.2)
    loss_seq, _ = jax.jit(lambda p: P.policy_loss(p, rollout, cfg, model))(params)
    per_token = rollout.advantages_B[:, None] * rollout.completion_mask_BxT
    chex.assert_shape(rollout.token_advantages(), rollout.tokens_BxT.shape)
    chex.assert_trees_all_close(rollout.token_advantages(), per_token)
    by_token = rollout.replace(advantages_B=None, advantages_BxT=per_token)
    loss_tok, _ = jax.jit(lambda p: P.policy_loss(p, by_token, cfg, model))(params)
    chex.assert_trees_all_close(loss_seq, loss_tok, atol=1e-6)
    # at ratio 1 the surrogate is -mean over completion tokens of A_i
    want = -float(jnp.sum(per_token) / jnp.sum(rollout.completion_mask_BxT))
    chex.assert_trees_all_close(float(loss_seq), want, atol=1e-5)


def test_the_value_loss_joins_when_there_is_a_critic():
    model, value_model, both, rollout = with_critic()
    for vf_coef in (0.0, 0.5):
        cfg = P.PolicyLossConfig(objective="ppo", vf_coef=vf_coef)
        loss, m = jax.jit(lambda p, r, cfg=cfg: P.policy_loss(p, r, cfg, model, value_model))(both, rollout)
        chex.assert_tree_all_finite((loss, m))
        chex.assert_trees_all_close(loss, m["policy_loss"] + vf_coef * m["value_loss"], atol=1e-6)
    with pytest.raises(ValueError, match="'ppo' is registered already"):
        P.register_objective("ppo", accepts=("token",))(lambda *a: a)
    with pytest.raises(ValueError, match="objective='a2c'"):
        P.PolicyLossConfig(objective="a2c")


def test_the_rl_section_shares_the_objectives_defaults_and_checks():
    import dataclasses

    from rlhf_jax.experiment import RLSection

    rl, loss = RLSection(), P.PolicyLossConfig()
    shared = {f.name for f in dataclasses.fields(P.PolicyLossConfig)} & {f.name for f in dataclasses.fields(rl)}
    resolved = {"ppo_clip", "clip_high", "aggregation"}  # None / "" in the section: the method's
    assert shared - resolved and all(getattr(rl, n) == getattr(loss, n) for n in shared - resolved), shared
    assert rl.loss_config(7).completion_len == 7 and rl.loss_config().objective == "reinforce"
    bad = (("vf_coef", -1.0, "must be >= 0"), ("value_clip", 0.0, "must be positive or none"),
           ("temperature", 0.0, "must be positive"), ("kl_estimator", "k9", "one of"))  # fmt: skip
    for field, value, words in bad:
        with pytest.raises(ValueError, match=rf"rl.{field}=.*{words}"):
            RLSection(**{field: value})
