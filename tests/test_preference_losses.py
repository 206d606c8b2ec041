"""SFT, reward-model and preference objectives: hand values and their defining properties."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from helpers import tiny_model

from rlhf_jax.batches import PreferenceBatch, SFTBatch
from rlhf_jax.losses import preference as P
from rlhf_jax.losses import reward as RM
from rlhf_jax.losses import sft as S

LOG_SIG = lambda x: -np.log1p(np.exp(-x))  # noqa: E731


class SupervisedAndPreferenceObjectivesTest(chex.TestCase):
    """Each test runs twice, jitted and eagerly (chex.variants)."""

    def call(self, fn, *args, **static):
        """fn(*args, **static) under the variant: jitted with the keyword arguments static."""
        return self.variant(lambda *a: fn(*a, **static))(*args)

    @chex.variants(with_jit=True, without_jit=True)
    def test_sft_token_and_sequence_means(self):
        logps = jnp.array([[0.0, -1.0, -2.0, 0.0], [0.0, -3.0, 0.0, 0.0]])
        cmask = jnp.array([[0, 1, 1, 0], [0, 1, 0, 0]])
        np.testing.assert_allclose(self.call(S.sft_objective, logps, cmask, reduction="token")[0], 2.0)
        np.testing.assert_allclose(self.call(S.sft_objective, logps, cmask, reduction="sequence")[0], 2.25)

    @chex.variants(with_jit=True, without_jit=True)
    def test_sft_prompt_weight_counts_prompt_tokens_but_reports_the_completion_nll(self):
        mask = jnp.array([[1, 1, 1, 1], [0, 1, 1, 1]])  # the second row is left-padded
        cmask = jnp.array([[0, 0, 1, 1], [0, 0, 1, 1]])
        # a prompt token counts when it has a predecessor: not the first real token
        np.testing.assert_array_equal(S.prompt_mask(mask, cmask), [[0, 1, 0, 0], [0, 0, 0, 0]])
        logps = jnp.array([[0.0, -1.0, -2.0, -0.5], [0.0, 0.0, -1.0, -3.0]])
        prompts = S.prompt_mask(mask, cmask)
        loss, metrics = self.call(lambda lp, c, p: S.sft_objective(lp, c, "token", p, 0.5), logps, cmask, prompts)
        np.testing.assert_allclose(loss, (0.5 * 1.0 + 2.0 + 0.5 + 1.0 + 3.0) / 4.5, rtol=1e-6)
        np.testing.assert_allclose(metrics["nll"], (2.0 + 0.5 + 1.0 + 3.0) / 4, rtol=1e-6)
        assert float(self.call(S.sft_objective, logps, cmask, reduction="token")[0]) == 1.625
        with pytest.raises(ValueError, match="prompt_weight=-1"):
            S.sft_objective(logps, cmask, "token", prompts, -1.0)
        with pytest.raises(ValueError, match="reduction='token'"):
            S.sft_objective(logps, cmask, "sequence", prompts, 0.5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_bradley_terry_hand_values(self):
        rc, rr = jnp.array([2.0, 0.0]), jnp.array([1.0, 1.0])
        loss, m = self.call(RM.bradley_terry_objective, rc, rr)
        np.testing.assert_allclose(loss, -(LOG_SIG(1.0) + LOG_SIG(-1.0)) / 2, rtol=1e-6)
        np.testing.assert_allclose(m["accuracy"], 0.5)
        loss, _ = self.call(RM.bradley_terry_objective, rc, rr, jnp.array([0.5, 0.5]))
        np.testing.assert_allclose(loss, -(LOG_SIG(0.5) + LOG_SIG(-1.5)) / 2, rtol=1e-6)
        loss, _ = self.call(RM.bradley_terry_objective, rc, rr, None, center_coef=0.01)
        np.testing.assert_allclose(loss, -(LOG_SIG(1.0) + LOG_SIG(-1.0)) / 2 + 0.01 * (9 + 1) / 2, rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_davidson_ties_hand_values_and_gradients(self):
        # Davidson (1970), pi = e^r: P(c > r) = pi_c / (pi_c + pi_r + nu sqrt(pi_c pi_r)), P(tie) = nu sqrt(.) / (.)
        rc, rr, tie, nu = jnp.array([2.0, 0.0, 0.5]), jnp.array([1.0, 1.0, 0.5]), jnp.array([0.0, 0.0, 1.0]), 0.5

        def transcribed(c, r, t):
            pc, pr = np.exp(c), np.exp(r)
            denom = pc + pr + nu * np.sqrt(pc * pr)
            return np.mean(np.where(t > 0, -np.log(nu * np.sqrt(pc * pr) / denom), -np.log(pc / denom)))

        loss, m = self.call(RM.bradley_terry_objective, rc, rr, tie_B=tie, tie_strength=nu)
        np.testing.assert_allclose(loss, transcribed(np.asarray(rc), np.asarray(rr), np.asarray(tie)), rtol=1e-6)
        np.testing.assert_allclose(m["accuracy"], 0.5)  # of the two pairs that are not ties
        np.testing.assert_allclose(m["ties"], 1 / 3)
        # against the transcription's central differences; a tie at d = 0 is where it is pulled to: no gradient
        grad_c = self.variant(jax.grad(lambda c: RM.bradley_terry_objective(c, rr, tie_B=tie, tie_strength=nu)[0]))(rc)
        eps, num = 1e-3, []
        for i in range(3):
            e = np.eye(3)[i] * eps
            num.append(
                (transcribed(np.asarray(rc) + e, rr, tie) - transcribed(np.asarray(rc) - e, rr, tie)) / (2 * eps)
            )
        np.testing.assert_allclose(grad_c, num, atol=1e-5)
        assert float(grad_c[2]) == 0.0
        # nu -> 0: Bradley-Terry on the pairs that are not ties
        loss_small, _ = self.call(RM.bradley_terry_objective, rc[:2], rr[:2], tie_B=tie[:2], tie_strength=1e-6)
        np.testing.assert_allclose(loss_small, -(LOG_SIG(1.0) + LOG_SIG(-1.0)) / 2, rtol=1e-5)
        with pytest.raises(ValueError, match="tie_strength > 0 and no margin"):
            RM.bradley_terry_objective(rc, rr, jnp.ones(3), 0.0, tie, nu)

    @chex.variants(with_jit=True, without_jit=True)
    def test_orm_hand_values(self):
        loss, m = self.call(RM.orm_objective, jnp.array([0.0, 2.0]), jnp.array([1, 0]))
        np.testing.assert_allclose(loss, (np.log(2) + np.log1p(np.exp(2.0))) / 2, rtol=1e-6)
        assert float(m["accuracy"]) == 0.0

    @chex.variants(with_jit=True, without_jit=True)
    def test_prm_hand_values_and_ignored_steps(self):
        logits = jnp.array([[[0.0, 0.0, 0.0], [0.0, 0.0, np.log(2.0)], [5.0, 1.0, 0.0]]])
        labels = jnp.array([[2, 2, RM.NO_STEP]])
        loss, m = self.call(RM.prm_objective, logits, labels)
        np.testing.assert_allclose(loss, (np.log(3) + np.log(2)) / 2, rtol=1e-6)
        assert int(m["steps"]) == 2
        np.testing.assert_allclose(m["step_accuracy"], 0.5)  # the tie at step 1 argmaxes to class 0

    @chex.variants(with_jit=True, without_jit=True)
    def test_class_balanced_orm_and_prm_weight_each_class_by_its_inverse_frequency(self):
        # 3 wrong, 1 right: w = n / (2 n_c) = (4/6, 4/2); each class then carries weight 2
        assert RM.class_balance_weights([0, 0, 0, 1], 2) == (4 / 6, 2.0)
        assert RM.class_balance_weights([[0, 2, RM.NO_STEP], [2, 2, RM.NO_STEP]], 3) == (4 / 3, 0.0, 4 / 9)
        # 2 neutral steps among 102: 102 / 6 = 17 would be 25.5x the positives' 102 / 150; capped at 10x
        rare = RM.class_balance_weights([0] * 50 + [1] * 2 + [2] * 50, 3)
        assert rare == pytest.approx((102 / 150, 10 * 102 / 150, 102 / 150))
        logits, labels, w = jnp.array([0.0, 1.0, -1.0, 2.0]), jnp.array([0, 0, 0, 1]), (4 / 6, 2.0)
        ce = np.array([np.log(2), np.log1p(np.e), np.log1p(np.exp(-1.0)), np.log1p(np.exp(-2.0))])
        loss, _ = self.call(RM.orm_objective, logits, labels, class_weights=w)
        np.testing.assert_allclose(loss, (w[0] * ce[:3].sum() + w[1] * ce[3]) / (3 * w[0] + w[1]), rtol=1e-6)
        loss, _ = self.call(RM.orm_objective, logits, labels, class_weights=(1.0, 1.0))
        np.testing.assert_allclose(loss, ce.mean(), rtol=1e-6)  # equal weights: the plain mean
        step_logits = jnp.array([[[0.0, 0.0, 0.0], [0.0, 0.0, np.log(2.0)], [5.0, 1.0, 0.0]]])
        step_labels = jnp.array([[0, 2, RM.NO_STEP]])
        loss, _ = self.call(RM.prm_objective, step_logits, step_labels, class_weights=(3.0, 0.0, 1.0))
        np.testing.assert_allclose(loss, (3.0 * np.log(3) + 1.0 * np.log(2)) / 4.0, rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_prm_aggregation_by_product_and_min(self):
        probs = jnp.array([[0.9, 0.5, 0.8], [0.2, 0.99, 0.99]])
        valid = jnp.array([[1, 1, 0], [1, 1, 1]])
        np.testing.assert_allclose(
            self.call(RM.prm_aggregate, probs, valid, how="product"), [0.45, 0.2 * 0.99 * 0.99], rtol=1e-6
        )
        np.testing.assert_allclose(self.call(RM.prm_aggregate, probs, valid, how="min"), [0.5, 0.2], rtol=1e-6)
        logits = jnp.log(jnp.array([[[0.2, 0.3, 0.5]]]))
        np.testing.assert_allclose(self.call(RM.prm_step_probs, logits), [[0.5]], rtol=1e-6)
        np.testing.assert_allclose(self.call(RM.prm_step_probs, logits, neutral_is_good=True), [[0.8]], rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_dpo_is_log2_when_policy_equals_reference_and_hand_values(self):
        x = jnp.array([-3.0, -7.0])
        loss, m = self.call(P.dpo_objective, x, x - 1, x, x - 1, beta=0.1)
        np.testing.assert_allclose(loss, np.log(2.0), rtol=1e-6)
        assert float(m["rewards_margin"]) == 0.0
        args = (jnp.array([-1.0]), jnp.array([-2.0]), jnp.array([-1.5]), jnp.array([-1.5]))
        np.testing.assert_allclose(self.call(P.dpo_objective, *args, beta=0.5)[0], -LOG_SIG(0.5), rtol=1e-6)
        smoothed = self.call(P.dpo_objective, *args, beta=0.5, label_smoothing=0.1)[0]
        np.testing.assert_allclose(smoothed, -0.9 * LOG_SIG(0.5) - 0.1 * LOG_SIG(-0.5), rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*[0.1, 0.5, 2.0])
    def test_ipo_minimiser_sits_at_margin_one_over_two_beta(self, beta):
        def loss_at(h):
            return P.ipo_objective(h[None], jnp.zeros(1), jnp.zeros(1), jnp.zeros(1), beta)[0]

        h_star = 1.0 / (2.0 * beta)
        np.testing.assert_allclose(self.call(jax.grad(loss_at), jnp.asarray(h_star)), 0.0, atol=1e-6)
        assert float(loss_at(jnp.asarray(h_star))) == 0.0
        assert float(loss_at(jnp.asarray(h_star + 0.1))) > 0 and float(loss_at(jnp.asarray(h_star - 0.1))) > 0

    @chex.variants(with_jit=True, without_jit=True)
    def test_cpo_orpo_simpo_hand_values(self):
        loss, _ = self.call(
            P.cpo_objective, jnp.array([-1.0]), jnp.array([-2.0]), jnp.asarray(0.7), beta=1.0, alpha=1.0
        )
        np.testing.assert_allclose(loss, -LOG_SIG(1.0) + 0.7, rtol=1e-6)
        mc, mr = jnp.log(jnp.array([0.5])), jnp.log(jnp.array([0.25]))
        loss, m = self.call(P.orpo_objective, mc, mr, jnp.asarray(0.7), lam=0.5)
        np.testing.assert_allclose(m["log_odds_ratio"], np.log(3.0), rtol=1e-5)
        np.testing.assert_allclose(loss, 0.7 + 0.5 * np.log(4.0 / 3.0), rtol=1e-5)
        loss, _ = self.call(P.simpo_objective, jnp.array([-1.0]), jnp.array([-2.0]), beta=2.0, gamma=0.5)
        np.testing.assert_allclose(loss, -LOG_SIG(1.5), rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_kto_hand_values_and_reference_point(self):
        pi, ref, good = jnp.array([-1.0, -1.0]), jnp.array([-2.0, -2.0]), jnp.array([True, False])
        loss, m = self.call(P.kto_objective, pi, ref, good, jnp.asarray(0.5), beta=1.0)
        sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
        np.testing.assert_allclose(loss, ((1 - sig(0.5)) + (1 - sig(-0.5))) / 2, rtol=1e-6)
        # z0 = max(0, mean KL estimate): clipped at 0, and no gradient flows through it
        assert float(self.call(P.kto_reference_point, jnp.array([-3.0]), jnp.array([-1.0]))) == 0.0
        np.testing.assert_allclose(
            self.call(P.kto_reference_point, jnp.array([-1.0, -2.0]), jnp.array([-2.0, -2.0])), 0.5
        )
        g = jax.grad(lambda k: P.kto_reference_point(k, jnp.array([-2.0, -2.0])))(jnp.array([-1.0, -2.0]))
        assert np.all(g == 0)
        # a higher reference point makes desirable examples costlier and undesirable ones cheaper
        lo = (
            P.kto_objective(pi[:1], ref[:1], good[:1], 0.0, 1.0)[0],
            P.kto_objective(pi[1:], ref[1:], good[1:], 0.0, 1.0)[0],
        )
        hi = (
            P.kto_objective(pi[:1], ref[:1], good[:1], 1.0, 1.0)[0],
            P.kto_objective(pi[1:], ref[1:], good[1:], 1.0, 1.0)[0],
        )
        assert hi[0] > lo[0] and hi[1] < lo[1]


def test_best_of_n_and_majority_vote():
    np.testing.assert_array_equal(RM.best_of_n(jnp.array([[0.1, 0.9, 0.3], [2.0, 1.0, 2.0]])), [1, 0])
    answers = [["4", "5", "5"], ["7", "8", "9"]]
    assert RM.majority_vote(answers).tolist() == ["5", "7"]
    weighted = RM.majority_vote(answers, weights_PxN=[[0.9, 0.2, 0.3], [0.1, 0.5, 0.2]])
    assert weighted.tolist() == ["4", "8"]


# ----------------------------------------------------------------------------- with a model


def preference_batch(seed=0, ref_shift=0.0):
    rng = np.random.default_rng(seed)
    tokens = lambda: jnp.asarray(rng.integers(1, 32, size=(2, 6)))  # noqa: E731
    mask = jnp.ones((2, 6), jnp.int32)
    cmask = jnp.array([[0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1]])
    return PreferenceBatch(
        chosen_tokens_BxT=tokens(),
        chosen_mask_BxT=mask,
        chosen_completion_mask_BxT=cmask,
        rejected_tokens_BxT=tokens(),
        rejected_mask_BxT=mask,
        rejected_completion_mask_BxT=cmask,
        ref_chosen_logps_B=jnp.full((2,), -10.0 + ref_shift),
        ref_rejected_logps_B=jnp.full((2,), -12.0 - ref_shift),
    )


@pytest.mark.parametrize("objective", P.REFERENCE_FREE)
def test_reference_free_objectives_do_not_read_the_reference(objective):
    model, params = tiny_model()
    cfg = P.PreferenceConfig(objective=objective)
    a = jax.jit(lambda b: P.preference_loss(params, b, cfg, model)[0])(preference_batch(ref_shift=0.0))
    b = jax.jit(lambda b: P.preference_loss(params, b, cfg, model)[0])(preference_batch(ref_shift=5.0))
    assert float(a) == float(b)


@pytest.mark.slow
def test_orpo_reduces_to_sft_when_the_odds_ratio_weight_is_zero():
    model, params = tiny_model()
    batch = preference_batch()
    orpo = P.preference_loss(params, batch, P.PreferenceConfig(objective="orpo", orpo_lambda=0.0), model)[0]
    sft_batch = SFTBatch(batch.chosen_tokens_BxT, batch.chosen_mask_BxT, batch.chosen_completion_mask_BxT)
    sft = S.sft_loss(params, sft_batch, model)[0]
    np.testing.assert_allclose(orpo, sft, rtol=1e-6)


def test_dpo_with_the_policy_as_its_own_reference_is_log2():
    model, params = tiny_model()
    batch = preference_batch()
    seq = jax.jit(lambda *a: P.completion_logps(model, params, *a)[0])
    c = seq(batch.chosen_tokens_BxT, batch.chosen_mask_BxT, batch.chosen_completion_mask_BxT)
    r = seq(batch.rejected_tokens_BxT, batch.rejected_mask_BxT, batch.rejected_completion_mask_BxT)
    batch = batch.replace(ref_chosen_logps_B=c, ref_rejected_logps_B=r)
    loss, _ = jax.jit(lambda p: P.preference_loss(p, batch, P.PreferenceConfig(objective="dpo"), model))(params)
    np.testing.assert_allclose(loss, np.log(2.0), rtol=1e-5)


def test_reward_model_pair_loss_prm_logits_and_orm():
    model, params = tiny_model("scalar", seed=2)
    batch = preference_batch()
    loss, m = jax.jit(lambda p, b: RM.pair_loss(p, b, model))(params, batch)
    r = jax.jit(model.rewards)(
        params, jnp.concatenate([batch.chosen_tokens_BxT, batch.rejected_tokens_BxT]), jnp.ones((4, 6))
    )
    expected = -np.mean(LOG_SIG(np.asarray(r[:2] - r[2:], np.float64)))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    lm, lm_params = tiny_model()
    tokens = batch.chosen_tokens_BxT
    step_logits = jax.jit(lambda p, t, m, e: RM.prm_step_logits(p, t, m, e, (5, 6, 7), lm))(
        lm_params, tokens, jnp.ones((2, 6)), jnp.array([[2, 4], [3, 5]])
    )
    full = jax.jit(lm.logits)(lm_params, tokens, jnp.ones((2, 6)))
    np.testing.assert_allclose(step_logits[1, 0], full[1, 3, jnp.array([5, 6, 7])], rtol=1e-6)


def test_bad_input_errors():
    with pytest.raises(ValueError, match=r"labels has values \[2\] outside the classes 0..1"):
        RM.orm_objective(jnp.zeros(2), jnp.array([1, 2]))
    with pytest.raises(ValueError, match=r"step_labels has values \[5\]"):
        RM.prm_objective(jnp.zeros((1, 2, 3)), jnp.array([[5, RM.NO_STEP]]))
    with pytest.raises(ValueError, match=r"completion_mask is empty in rows \[1\]"):
        S.sft_objective(jnp.zeros((2, 3)), jnp.array([[0, 1, 1], [0, 0, 0]]))
    with pytest.raises(ValueError, match="completion_mask is empty"):
        model, params = tiny_model()
        batch = preference_batch()
        empty = batch.replace(rejected_completion_mask_BxT=jnp.zeros((2, 6), jnp.int32))
        P.preference_loss(params, empty, P.PreferenceConfig(), model)
    with pytest.raises(ValueError, match="shapes disagree"):
        P.dpo_objective(jnp.zeros(2), jnp.zeros(3), jnp.zeros(2), jnp.zeros(2), 0.1)
    with pytest.raises(ValueError, match="bradley_terry_objective: shapes disagree"):
        RM.bradley_terry_objective(jnp.zeros(2), jnp.zeros(3))
    with pytest.raises(ValueError, match="objective='xpo'"):
        P.PreferenceConfig(objective="xpo")
    with pytest.raises(ValueError, match="beta=0"):
        P.PreferenceConfig(beta=0)
    with pytest.raises(ValueError, match="prm aggregation 'mean'"):
        RM.prm_aggregate(jnp.ones((1, 2)), jnp.ones((1, 2)), how="mean")
