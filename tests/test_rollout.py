"""KL estimators, KL-shaped rewards and advantage estimators: hand-computed values."""

import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import rollout as R


def test_kl_estimators_hand_values(run):
    logps = jnp.array([[-1.0, -2.0]])
    ref = jnp.array([[-1.5, -1.0]])
    np.testing.assert_allclose(run(R.kl_per_token, logps, ref, estimator="k1"), [[0.5, -1.0]], atol=1e-6)
    np.testing.assert_allclose(run(R.kl_per_token, logps, ref, estimator="k2"), [[0.125, 0.5]], atol=1e-6)
    k3 = [[np.exp(-0.5) - 1 + 0.5, np.exp(1.0) - 1 - 1.0]]
    np.testing.assert_allclose(run(R.kl_per_token, logps, ref, estimator="k3"), k3, atol=1e-6)


@pytest.mark.parametrize("estimator", R.KL_ESTIMATORS)
def test_kl_is_zero_when_policy_equals_reference(estimator, run):
    logps = jnp.array([[-0.3, -2.0, -5.0]])
    assert np.all(run(R.kl_per_token, logps, logps, estimator=estimator) == 0)
    scores = jnp.array([1.5])
    reward, kl = run(R.sequence_kl_reward, scores, logps, logps, jnp.ones((1, 3)), 0.5, estimator=estimator)
    assert float(reward[0]) == 1.5 and float(kl[0]) == 0


def test_sequence_and_token_kl_shaped_rewards(run):
    scores = jnp.array([2.0])
    logps = jnp.array([[0.0, -1.0, -2.0, 0.0]])
    ref = jnp.array([[0.0, -1.5, -1.0, 0.0]])
    cmask = jnp.array([[0, 1, 1, 0]])
    reward, kl = run(R.sequence_kl_reward, scores, logps, ref, cmask, 0.1)
    np.testing.assert_allclose(reward, [2.05], atol=1e-6)
    np.testing.assert_allclose(kl, [-0.5], atol=1e-6)
    rewards, kl_t = run(R.token_kl_rewards, scores, logps, ref, cmask, 0.1)
    np.testing.assert_allclose(rewards, [[0.0, -0.05, 2.1, 0.0]], atol=1e-6)
    np.testing.assert_allclose(kl_t, [[0.0, 0.5, -1.0, 0.0]], atol=1e-6)


def test_adaptive_beta_moves_towards_the_target(run):
    np.testing.assert_allclose(run(R.adaptive_beta, 0.1, 12.0, 10, target_kl=6.0, horizon=100.0), 0.102, rtol=1e-6)
    np.testing.assert_allclose(run(R.adaptive_beta, 0.1, 5.7, 10, target_kl=6.0, horizon=100.0), 0.0995, rtol=1e-5)


def test_reinforce_moving_average_baseline(run):
    state = R.BaselineState.init()
    adv, state = run(R.reinforce_ma_advantages, jnp.array([1.0, 3.0]), state)
    np.testing.assert_allclose(adv, [1.0, 3.0])
    adv, state = run(R.reinforce_ma_advantages, jnp.array([5.0, 7.0]), state)
    np.testing.assert_allclose(adv, [3.0, 5.0])  # baseline from before this batch: 2
    np.testing.assert_allclose(state.mean, 4.0)  # (1 + 3 + 5 + 7) / 4
    ema = R.BaselineState.init()
    _, ema = run(R.reinforce_ma_advantages, jnp.array([1.0, 3.0]), ema, decay=0.9)
    _, ema = run(R.reinforce_ma_advantages, jnp.array([5.0, 7.0]), ema, decay=0.9)
    np.testing.assert_allclose(ema.mean, 0.9 * 2 + 0.1 * 6, rtol=1e-6)


def test_rloo_grpo_remax_advantages(run):
    np.testing.assert_allclose(run(R.rloo_advantages, jnp.array([1.0, 3.0, 0.0, 10.0]), k=2), [-2, 2, -10, 10])
    np.testing.assert_allclose(run(R.rloo_advantages, jnp.array([1.0, 2.0, 6.0]), k=3), [-3, -1.5, 4.5])
    grpo = run(R.grpo_advantages, jnp.array([1.0, 2.0, 6.0]), k=3)
    np.testing.assert_allclose(grpo, np.array([-2.0, -1.0, 3.0]) / (np.sqrt(7.0) + 1e-4), rtol=1e-6)
    centred = run(R.grpo_advantages, jnp.array([1.0, 2.0, 6.0]), k=3, scale=False)
    np.testing.assert_allclose(centred, [-2.0, -1.0, 3.0], rtol=1e-6)
    remax = run(R.remax_advantages, jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.array([1.5, 5.0]), k=2)
    np.testing.assert_allclose(remax, [-0.5, 0.5, -2.0, -1.0])


def test_gae_hand_values(run):
    rewards = jnp.array([[0.0, 0.0, 0.0, 1.0]])
    values = jnp.array([[9.0, 0.5, 0.6, 0.7]])
    mask = jnp.array([[0, 1, 1, 1]])
    adv, ret = run(R.gae, rewards, values, mask, gamma=1.0, lam=0.5)
    np.testing.assert_allclose(adv, [[0.0, 0.225, 0.25, 0.3]], atol=1e-6)
    np.testing.assert_allclose(ret, [[0.0, 0.725, 0.85, 1.0]], atol=1e-6)


def test_gae_lambda_one_is_return_to_go_minus_value_and_lambda_zero_is_td(run):
    rng = np.random.default_rng(0)
    rewards = jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)
    values = jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)
    mask = jnp.array([[0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0]])
    m = np.asarray(mask, bool)
    r, v = np.where(m, rewards, 0), np.where(m, values, 0)
    adv1, _ = run(R.gae, rewards, values, mask, gamma=1.0, lam=1.0)
    to_go = np.cumsum(r[:, ::-1], axis=1)[:, ::-1]
    np.testing.assert_allclose(adv1, np.where(m, to_go - v, 0), atol=1e-5)
    adv0, _ = run(R.gae, rewards, values, mask, gamma=0.9, lam=0.0)
    next_v = np.pad(v[:, 1:], ((0, 0), (0, 1)))
    np.testing.assert_allclose(adv0, np.where(m, r + 0.9 * next_v - v, 0), atol=1e-5)
    vpg, _ = run(R.vanilla_pg_advantages, rewards, values, mask, gamma=1.0)
    np.testing.assert_allclose(vpg, adv1, atol=1e-6)


def test_gae_whitening_has_zero_mean_unit_variance_over_the_mask(run):
    rng = np.random.default_rng(1)
    rewards = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
    mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    adv, _ = run(R.gae, rewards, jnp.zeros((2, 5)), mask, lam=0.9, whiten_advantages=True)
    vals = np.asarray(adv)[np.asarray(mask, bool)]
    np.testing.assert_allclose([vals.mean(), vals.std(ddof=1)], [0.0, 1.0], atol=1e-4)
    assert np.all(np.asarray(adv)[~np.asarray(mask, bool)] == 0)


def test_bad_input_errors():
    with pytest.raises(ValueError, match="k=3 does not divide the batch of 4"):
        R.rloo_advantages(jnp.zeros(4), k=3)
    with pytest.raises(ValueError, match="needs k >= 2"):
        R.rloo_advantages(jnp.zeros(4), k=1)
    with pytest.raises(ValueError, match="beta=-0.1"):
        R.sequence_kl_reward(jnp.zeros(1), jnp.zeros((1, 2)), jnp.zeros((1, 2)), jnp.ones((1, 2)), -0.1)
    with pytest.raises(ValueError, match=r"shapes disagree: logps\(1, 2\), ref_logps\(1, 3\)"):
        R.kl_per_token(jnp.zeros((1, 2)), jnp.zeros((1, 3)))
    with pytest.raises(ValueError, match="gae: shapes disagree"):
        R.gae(jnp.zeros((2, 3)), jnp.zeros((2, 4)), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="kl estimator 'k4'"):
        R.kl_per_token(jnp.zeros((1, 2)), jnp.zeros((1, 2)), "k4")
    with pytest.raises(ValueError, match="2 greedy rewards for 6 rows"):
        R.remax_advantages(jnp.zeros(6), jnp.zeros(2), k=2)
