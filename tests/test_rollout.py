"""KL estimators, KL-shaped rewards and advantage estimators: hand-computed values."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from rlhf_jax import rollout as R
from rlhf_jax.losses.common import KL_ESTIMATORS, kl_per_token


class RolloutMathTest(chex.TestCase):
    """Each test runs twice, jitted and eagerly (chex.variants)."""

    def call(self, fn, *args, **static):
        """fn(*args, **static) under the variant: jitted with the keyword arguments static."""
        return self.variant(lambda *a: fn(*a, **static))(*args)

    @chex.variants(with_jit=True, without_jit=True)
    def test_kl_estimators_hand_values(self):
        logps = jnp.array([[-1.0, -2.0]])
        ref = jnp.array([[-1.5, -1.0]])
        np.testing.assert_allclose(self.call(kl_per_token, logps, ref, estimator="k1"), [[0.5, -1.0]], atol=1e-6)
        np.testing.assert_allclose(self.call(kl_per_token, logps, ref, estimator="k2"), [[0.125, 0.5]], atol=1e-6)
        k3 = [[np.exp(-0.5) - 1 + 0.5, np.exp(1.0) - 1 - 1.0]]
        np.testing.assert_allclose(self.call(kl_per_token, logps, ref, estimator="k3"), k3, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*KL_ESTIMATORS)
    def test_kl_is_zero_when_policy_equals_reference(self, estimator):
        logps = jnp.array([[-0.3, -2.0, -5.0]])
        assert np.all(self.call(kl_per_token, logps, logps, estimator=estimator) == 0)
        scores = jnp.array([1.5])
        reward, kl = self.call(R.sequence_kl_reward, scores, logps, logps, jnp.ones((1, 3)), 0.5, estimator=estimator)
        assert float(reward[0]) == 1.5 and float(kl[0]) == 0

    @chex.variants(with_jit=True, without_jit=True)
    def test_sequence_and_token_kl_shaped_rewards(self):
        scores = jnp.array([2.0])
        logps = jnp.array([[0.0, -1.0, -2.0, 0.0]])
        ref = jnp.array([[0.0, -1.5, -1.0, 0.0]])
        cmask = jnp.array([[0, 1, 1, 0]])
        reward, kl = self.call(R.sequence_kl_reward, scores, logps, ref, cmask, 0.1)
        np.testing.assert_allclose(reward, [2.05], atol=1e-6)
        np.testing.assert_allclose(kl, [-0.5], atol=1e-6)
        rewards, kl_t = self.call(R.token_kl_rewards, scores, logps, ref, cmask, 0.1)
        np.testing.assert_allclose(rewards, [[0.0, -0.05, 2.1, 0.0]], atol=1e-6)
        np.testing.assert_allclose(kl_t, [[0.0, 0.5, -1.0, 0.0]], atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_adaptive_beta_moves_towards_the_target(self):
        np.testing.assert_allclose(
            self.call(R.adaptive_beta, 0.1, 12.0, 10, target_kl=6.0, horizon=100.0), 0.102, rtol=1e-6
        )
        np.testing.assert_allclose(
            self.call(R.adaptive_beta, 0.1, 5.7, 10, target_kl=6.0, horizon=100.0), 0.0995, rtol=1e-5
        )

    @chex.variants(with_jit=True, without_jit=True)
    def test_reinforce_moving_average_baseline(self):
        state = R.BaselineState.init()
        adv, state = self.call(R.reinforce_ma_advantages, jnp.array([1.0, 3.0]), state)
        np.testing.assert_allclose(adv, [1.0, 3.0])
        adv, state = self.call(R.reinforce_ma_advantages, jnp.array([5.0, 7.0]), state)
        np.testing.assert_allclose(adv, [3.0, 5.0])  # baseline from before this batch: 2
        np.testing.assert_allclose(state.mean, 4.0)  # (1 + 3 + 5 + 7) / 4
        ema = R.BaselineState.init()
        _, ema = self.call(R.reinforce_ma_advantages, jnp.array([1.0, 3.0]), ema, decay=0.9)
        _, ema = self.call(R.reinforce_ma_advantages, jnp.array([5.0, 7.0]), ema, decay=0.9)
        np.testing.assert_allclose(ema.mean, 0.9 * 2 + 0.1 * 6, rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_rloo_grpo_remax_advantages(self):
        np.testing.assert_allclose(
            self.call(R.rloo_advantages, jnp.array([1.0, 3.0, 0.0, 10.0]), k=2), [-2, 2, -10, 10]
        )
        np.testing.assert_allclose(self.call(R.rloo_advantages, jnp.array([1.0, 2.0, 6.0]), k=3), [-3, -1.5, 4.5])
        grpo = self.call(R.grpo_advantages, jnp.array([1.0, 2.0, 6.0]), k=3)
        np.testing.assert_allclose(grpo, np.array([-2.0, -1.0, 3.0]) / (np.sqrt(7.0) + 1e-4), rtol=1e-6)
        centred = self.call(R.grpo_advantages, jnp.array([1.0, 2.0, 6.0]), k=3, scale=False)
        np.testing.assert_allclose(centred, [-2.0, -1.0, 3.0], rtol=1e-6)
        remax = self.call(R.remax_advantages, jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.array([1.5, 5.0]), k=2)
        np.testing.assert_allclose(remax, [-0.5, 0.5, -2.0, -1.0])

    @chex.variants(with_jit=True, without_jit=True)
    def test_gae_hand_values(self):
        rewards = jnp.array([[0.0, 0.0, 0.0, 1.0]])
        values = jnp.array([[9.0, 0.5, 0.6, 0.7]])
        mask = jnp.array([[0, 1, 1, 1]])
        adv, ret = self.call(R.gae, rewards, values, mask, gamma=1.0, lam=0.5)
        np.testing.assert_allclose(adv, [[0.0, 0.225, 0.25, 0.3]], atol=1e-6)
        np.testing.assert_allclose(ret, [[0.0, 0.725, 0.85, 1.0]], atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_gae_lambda_one_is_return_to_go_minus_value_and_lambda_zero_is_td(self):
        rng = np.random.default_rng(0)
        rewards = jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)
        values = jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)
        mask = jnp.array([[0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0]])
        m = np.asarray(mask, bool)
        r, v = np.where(m, rewards, 0), np.where(m, values, 0)
        adv1, _ = self.call(R.gae, rewards, values, mask, gamma=1.0, lam=1.0)
        to_go = np.cumsum(r[:, ::-1], axis=1)[:, ::-1]
        np.testing.assert_allclose(adv1, np.where(m, to_go - v, 0), atol=1e-5)
        adv0, _ = self.call(R.gae, rewards, values, mask, gamma=0.9, lam=0.0)
        next_v = np.pad(v[:, 1:], ((0, 0), (0, 1)))
        np.testing.assert_allclose(adv0, np.where(m, r + 0.9 * next_v - v, 0), atol=1e-5)
        vpg, _ = self.call(R.vanilla_pg_advantages, rewards, values, mask, gamma=1.0)
        np.testing.assert_allclose(vpg, adv1, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_gae_whitening_has_zero_mean_unit_variance_over_the_mask(self):
        rng = np.random.default_rng(1)
        rewards = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
        mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
        adv, _ = self.call(R.gae, rewards, jnp.zeros((2, 5)), mask, lam=0.9, whiten_advantages=True)
        vals = np.asarray(adv)[np.asarray(mask, bool)]
        np.testing.assert_allclose([vals.mean(), vals.std(ddof=1)], [0.0, 1.0], atol=1e-4)
        assert np.all(np.asarray(adv)[~np.asarray(mask, bool)] == 0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_estimate_runs_each_registered_estimator_on_the_kl_shaped_reward(self):
        # 2 prompts x k=2; scores and log-probs by hand; beta = 0.5, k1.
        scores = jnp.array([1.0, 3.0, 0.0, 2.0])
        logps = jnp.array([[0.0, -1.0, -1.0], [0.0, -2.0, 0.0], [0.0, -1.0, 0.0], [0.0, -3.0, -1.0]])
        ref = logps - jnp.array([[0.0, 0.2, 0.2], [0.0, 0.4, 0.0], [0.0, 0.0, 0.0], [0.0, 0.2, 0.0]])
        cmask = jnp.array([[0, 1, 1], [0, 1, 0], [0, 1, 0], [0, 1, 1]])
        R_B = np.array([1.0 - 0.5 * 0.4, 3.0 - 0.5 * 0.4, 0.0, 2.0 - 0.5 * 0.2])
        values = jnp.full((4, 3), 0.5) * cmask
        greedy = jnp.array([1.5, 0.5])
        expected = {
            "rloo": R_B - R_B.reshape(2, 2)[:, ::-1].reshape(-1),
            "moving_average": R_B,  # the baseline starts at 0
            "grpo": np.asarray(R.grpo_advantages(jnp.asarray(R_B), 2)),
            "remax": R_B - np.repeat(np.asarray(greedy), 2),
            "best_of_k": np.array([0.0, 1.0, 0.0, 1.0]),
        }
        for name, want in expected.items():
            out = self.call(functools.partial(R.estimate, name), scores, logps, ref, cmask, beta=0.5, k=2,
                baseline=R.BaselineState.init(), greedy_rewards_P=greedy, values_BxT=values,
            )  # fmt: skip
            chex.assert_shape(out.advantages_B, (4,))
            assert out.advantages_BxT is None and out.returns_BxT is None, name
            chex.assert_trees_all_close(out.advantages_B, jnp.asarray(want, jnp.float32), atol=1e-5)
            chex.assert_trees_all_close(out.rewards_B, jnp.asarray(R_B, jnp.float32), atol=1e-6)
            assert (out.baseline is not None) == (name == "moving_average"), name
        token_rewards, _ = R.token_kl_rewards(scores, logps, ref, cmask, 0.5)
        for name, lam in (("gae", 0.95), ("reward_to_go", 1.0)):
            out = self.call(
                functools.partial(R.estimate, name),
                scores,
                logps,
                ref,
                cmask,
                beta=0.5,
                k=2,
                values_BxT=values,
                lam=0.95,
            )
            chex.assert_shape([out.advantages_BxT, out.returns_BxT], (4, 3))
            assert out.advantages_B is None, name
            want_adv, want_ret = R.gae(token_rewards, values, cmask, 1.0, lam)
            chex.assert_trees_all_close((out.advantages_BxT, out.returns_BxT), (want_adv, want_ret), atol=1e-6)
            chex.assert_trees_all_close(out.rewards_B, jnp.asarray(R_B, jnp.float32), atol=1e-6)
            chex.assert_tree_all_finite(out.advantages_BxT)

    @chex.variants(with_jit=True, without_jit=True)
    def test_rloo_to_go_hand_values_and_rloo_when_the_reward_is_terminal(self):
        # one prompt, k = 2: per-token rewards by hand on 3 completion tokens
        rewards = jnp.array([[0.0, 1.0, -0.5, 2.0], [0.0, 0.5, 0.5, 0.0]])
        cmask = jnp.array([[0, 1, 1, 1], [0, 1, 1, 0]])
        adv = self.call(R.rloo_to_go_advantages, rewards, cmask, k=2)
        # totals 2.5 and 1.0: each row's baseline is the other's total
        np.testing.assert_allclose(adv, [[0.0, 2.5 - 1.0, 1.5 - 1.0, 2.0 - 1.0], [0.0, 1.0 - 2.5, 0.5 - 2.5, 0.0]])
        terminal = jnp.array([[0.0, 0.0, 3.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 5.0]])
        mask = jnp.array([[0, 1, 1], [0, 1, 0], [0, 1, 1], [0, 1, 1]])
        rloo = R.rloo_advantages(terminal.sum(-1), 2)
        np.testing.assert_allclose(self.call(R.rloo_to_go_advantages, terminal, mask, k=2), rloo[:, None] * mask)

    @chex.variants(with_jit=True, without_jit=True)
    def test_a_token_level_score_arrives_where_it_is_spread_and_the_rest_at_the_end(self):
        scores = jnp.array([1.0])  # the spread sums to 0.75; the other 0.25 (noise, a penalty) at the last token
        logps, ref = jnp.zeros((1, 4)), jnp.zeros((1, 4))
        cmask = jnp.array([[0, 1, 1, 1]])
        spread = jnp.array([[9.0, 0.5, 0.0, 0.25]])  # outside the completion: ignored
        rewards, _ = self.call(R.token_kl_rewards, scores, logps, ref, cmask, 0.1, token_scores_BxT=spread)
        np.testing.assert_allclose(rewards, [[0.0, 0.5, 0.0, 0.25 + 0.25]], atol=1e-6)
        out = R.estimate("rloo", jnp.array([1.0, 0.0]), jnp.zeros((2, 4)), jnp.zeros((2, 4)), jnp.ones((2, 4)),
                         beta=0.1, k=2, token_scores_BxT=jnp.ones((2, 4)))  # fmt: skip
        np.testing.assert_allclose(out.advantages_B, [1.0, -1.0])  # a sequence level sees only the scores

    @chex.variants(with_jit=True, without_jit=True)
    def test_whitening_follows_the_estimators_level(self):
        rng = np.random.default_rng(2)
        scores = jnp.asarray(rng.normal(size=8), jnp.float32)
        logps = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)
        cmask = jnp.asarray(rng.integers(0, 2, size=(8, 4))).at[:, 0].set(1)
        kw = dict(beta=0.1, k=4, values_BxT=jnp.zeros((8, 4)), whiten_advantages=True)
        seq = self.call(functools.partial(R.estimate, "rloo"), scores, logps, logps, cmask, **kw).advantages_B
        chex.assert_trees_all_close((seq.mean(), seq.std()), (0.0, 1.0), atol=1e-5)
        tok = self.call(functools.partial(R.estimate, "gae"), scores, logps, logps, cmask, **kw).advantages_BxT
        vals = np.asarray(tok)[np.asarray(cmask, bool)]
        np.testing.assert_allclose([vals.mean(), vals.std(ddof=1)], [0.0, 1.0], atol=1e-4)
        picked = self.call(functools.partial(R.estimate, "best_of_k"), scores, logps, logps, cmask, **kw).advantages_B
        assert sorted(np.asarray(picked).tolist()) == [0.0] * 6 + [1.0] * 2  # weights, never whitened

    @chex.variants(with_jit=True, without_jit=True)
    def test_raft_weights_pick_the_best_of_each_group(self):
        weights = self.call(R.raft_weights, jnp.array([1.0, 5.0, 3.0, 2.0, 2.0, 0.0]), k=3)
        chex.assert_trees_all_close(weights, jnp.array([0.0, 1.0, 0.0, 1.0, 0.0, 0.0]))

    @chex.variants(with_jit=True, without_jit=True)
    def test_reward_noise_is_scaled_by_the_batchs_score_std_or_not(self):
        scores = jnp.array([1.0, 3.0, 1.0, 3.0])  # std 1
        key = jax.random.PRNGKey(0)
        eps = jax.random.normal(key, (4,))
        absolute = self.call(R.noisy_scores, scores * 10, key=key, sigma=2.0, scale="absolute")
        chex.assert_trees_all_close(absolute, scores * 10 + 2.0 * eps, atol=1e-5)
        relative = self.call(R.noisy_scores, scores * 10, key=key, sigma=2.0, scale="score_std")
        chex.assert_trees_all_close(relative, scores * 10 + 2.0 * 10.0 * eps, atol=1e-4)  # std of 10 x scores: 10
        flat = self.call(R.noisy_scores, jnp.full((4,), 5.0), key=key, sigma=3.0, scale="score_std")
        chex.assert_trees_all_close(flat, jnp.full((4,), 5.0))  # no spread, no noise
        chex.assert_trees_all_close(self.call(R.noisy_scores, scores, key=key, sigma=0.0, scale="absolute"), scores)

    @chex.variants(with_jit=True, without_jit=True)
    def test_flip_noise_turns_a_verifiable_reward_over_with_its_probability(self):
        right = jnp.array([1.0, 0.0] * 5000)
        key = jax.random.PRNGKey(3)
        flipped = self.call(R.noisy_scores, right, key=key, sigma=0.3, scale="flip")
        changed = np.asarray(flipped != right)
        assert set(np.unique(np.asarray(flipped)).tolist()) == {0.0, 1.0}  # still a verifiable reward
        assert abs(changed.mean() - 0.3) < 0.015  # 10,000 draws: sd 0.0046
        assert abs(changed[0::2].mean() - changed[1::2].mean()) < 0.03  # right and wrong alike
        chex.assert_trees_all_close(self.call(R.noisy_scores, right, key=key, sigma=1.0, scale="flip"), 1.0 - right)
        chex.assert_trees_all_close(self.call(R.noisy_scores, right, key=key, sigma=0.0, scale="flip"), right)


def test_the_estimator_registry_refuses_duplicates_and_unknown_levels():
    with pytest.raises(ValueError, match="'rloo' is registered already"):
        R.register_estimator("rloo", level="sequence")(lambda x: x)
    with pytest.raises(ValueError, match="level 'batch'"):
        R.register_estimator("new", level="batch")
    with pytest.raises(ValueError, match="advantage estimator 'a2c': expected one of"):
        R.estimate("a2c", jnp.zeros(2), jnp.zeros((2, 2)), jnp.zeros((2, 2)), jnp.ones((2, 2)), beta=0.0, k=1)
    with pytest.raises(ValueError, match="rloo: k=1 samples per prompt; needs k >= 2"):
        R.estimate("rloo", jnp.zeros(2), jnp.zeros((2, 2)), jnp.zeros((2, 2)), jnp.ones((2, 2)), beta=0.0, k=1)


def test_bad_input_errors():
    with pytest.raises(ValueError, match="reward noise scale 'batch'"):
        R.noisy_scores(jnp.zeros(2), 1.0, "batch", jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="k=3 does not divide the batch of 4"):
        R.rloo_advantages(jnp.zeros(4), k=3)
    with pytest.raises(ValueError, match="needs k >= 2"):
        R.rloo_advantages(jnp.zeros(4), k=1)
    with pytest.raises(ValueError, match="beta=-0.1"):
        R.sequence_kl_reward(jnp.zeros(1), jnp.zeros((1, 2)), jnp.zeros((1, 2)), jnp.ones((1, 2)), -0.1)
    with pytest.raises(ValueError, match=r"shapes disagree: logps\(1, 2\), ref_logps\(1, 3\)"):
        kl_per_token(jnp.zeros((1, 2)), jnp.zeros((1, 3)))
    with pytest.raises(ValueError, match="gae: shapes disagree"):
        R.gae(jnp.zeros((2, 3)), jnp.zeros((2, 4)), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="kl estimator 'k4'"):
        kl_per_token(jnp.zeros((1, 2)), jnp.zeros((1, 2)), "k4")
    with pytest.raises(ValueError, match="2 greedy rewards for 6 rows"):
        R.remax_advantages(jnp.zeros(6), jnp.zeros(2), k=2)
