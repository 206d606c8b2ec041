"""The GRPO family, each formula against an independent numpy transcription of its paper's
equation on hand-made log-probs (values and gradients with respect to the log-probs),
jitted and eager: the loss-aggregation modes on rows of different lengths, the decoupled
and dual clip, GSPO's sequence ratio and GSPO-token, CISPO, and the estimators of Dr. GRPO
and REINFORCE++."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import rollout as R
from rlhf_jax import rollout_corrections as C
from rlhf_jax.experiment import METHODS, RLSection
from rlhf_jax.losses import common
from rlhf_jax.losses import policy as P

# two rows of 4 positions: row 0 has 3 completion tokens, row 1 has 1 (rows of different lengths)
MASK = np.array([[1, 1, 1, 0], [0, 0, 0, 1]], np.float32)
LOGPS = np.array([[-1.0, -0.5, -2.0, -9.0], [-9.0, -9.0, -9.0, -0.3]], np.float32)
OLD = np.array([[-1.2, -0.4, -1.0, -9.0], [-9.0, -9.0, -9.0, -0.8]], np.float32)
ADV_T = np.array([[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, -2.0]], np.float32)


def np_aggregate(x, mask, mode, L=4.0):
    """Transcribed: DAPO token-level, GRPO sample-level, Dr. GRPO constant, a plain sum."""
    rows = [x[i][mask[i] > 0] for i in range(len(x))]
    if mode == "token_mean":
        return np.concatenate(rows).sum() / sum(len(r) for r in rows)
    if mode == "seq_mean_token_mean":
        return np.mean([r.mean() for r in rows])
    if mode == "seq_mean_token_sum_norm":
        return np.mean([r.sum() / L for r in rows])
    return np.mean([r.sum() for r in rows])


def np_ppo(logps, old, adv, mask, low, high, dual=None, mode="token_mean"):
    r = np.exp(logps - old)
    s = np.minimum(r * adv, np.clip(r, 1 - low, 1 + high) * adv)
    if dual is not None:
        s = np.where(adv < 0, np.maximum(s, dual * adv), s)
    return -np_aggregate(s, mask, mode)


class FormulasTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_each_aggregation_mode_on_rows_of_different_lengths(self):
        x = np.array([[1.0, 2.0, 3.0, 50.0], [7.0, 7.0, 7.0, 4.0]], np.float32)
        got = {m: self.variant(lambda a, b, m=m: common.aggregate(a, b, m, 4.0))(x, MASK) for m in common.AGGREGATIONS}
        want = {"token_mean": 10 / 4, "seq_mean_token_mean": (2 + 4) / 2,
                "seq_mean_token_sum_norm": (6 / 4 + 4 / 4) / 2, "seq_mean_token_sum": (6 + 4) / 2}  # fmt: skip
        for m in common.AGGREGATIONS:
            assert float(got[m]) == pytest.approx(want[m]) == pytest.approx(np_aggregate(x, MASK, m))
        assert len(set(want.values())) == 4  # they differ where rows differ in length

    @chex.variants(with_jit=True, without_jit=True)
    def test_ppo_with_decoupled_and_dual_clip_equals_the_transcription_value_and_gradient(self):
        cases = ((0.2, 0.2, None, "token_mean"), (0.2, 0.28, None, "seq_mean_token_mean"),
                 (0.2, 0.2, 3.0, "token_mean"), (0.1, 0.5, 1.5, "seq_mean_token_sum_norm"))  # fmt: skip
        for low, high, dual, mode in cases:

            def loss(lp, low=low, high=high, dual=dual, mode=mode):
                return P.ppo_objective(lp, OLD, ADV_T, MASK, low, high, dual, mode, 4.0)[0]

            value, grad = self.variant(jax.value_and_grad(loss))(jnp.asarray(LOGPS))
            assert float(value) == pytest.approx(np_ppo(LOGPS, OLD, ADV_T, MASK, low, high, dual, mode), rel=1e-5)
            eps = 1e-3  # central differences of the transcription, coordinate by coordinate
            for i, t in zip(*np.nonzero(MASK), strict=True):
                up, down = LOGPS.copy(), LOGPS.copy()
                up[i, t] += eps
                down[i, t] -= eps
                args = (OLD, ADV_T, MASK, low, high, dual, mode)
                fd = (np_ppo(up, *args) - np_ppo(down, *args)) / (2 * eps)
                assert float(grad[i, t]) == pytest.approx(fd, abs=2e-3), (low, high, dual, mode, i, t)

    def test_dual_clip_bounds_a_negative_advantage_with_a_large_ratio(self):
        # ratio e^2 = 7.39 on A = -1: PPO's surrogate min(-7.39, -1.2) = -7.39; dual clip c = 3 lifts it to -3
        lp, old = jnp.array([[0.0]]), jnp.array([[-2.0]])
        adv, m = jnp.array([[-1.0]]), jnp.ones((1, 1))
        plain, _ = P.ppo_objective(lp, old, adv, m, 0.2)
        dual, metrics = P.ppo_objective(lp, old, adv, m, 0.2, dual_clip=3.0)
        assert float(plain) == pytest.approx(np.exp(2.0)) and float(dual) == pytest.approx(3.0)
        assert float(metrics["dual_clip_frac"]) == 1.0
        grad = jax.grad(lambda x: P.ppo_objective(x, old, adv, m, 0.2, dual_clip=3.0)[0])(lp)
        assert float(grad[0, 0]) == 0.0  # bounded: no gradient
        # a positive advantage is untouched by the dual clip
        assert float(P.ppo_objective(lp, old, -adv, m, 0.2, dual_clip=3.0)[0]) == pytest.approx(-1.2)

    @chex.variants(with_jit=True, without_jit=True)
    def test_gspo_sequence_ratio_on_hand_values_and_gspo_token_agrees_on_constant_advantages(self):
        adv_B = np.array([1.0, -2.0], np.float32)
        # s_0 = exp(mean(0.2, -0.1, -1.0)) = exp(-0.3); s_1 = exp(0.5); clip (0.2, 0.2) keeps s_0, clips s_1 on A < 0
        s = np.exp(np.array([-0.3, 0.5]))
        want = -np.mean(np.minimum(s * adv_B, np.clip(s, 0.8, 1.2) * adv_B))
        f = self.variant(lambda lp: P.gspo_objective(lp, OLD, adv_B, MASK, 0.2, 0.2)[0])
        assert float(f(jnp.asarray(LOGPS))) == pytest.approx(want, rel=1e-5)
        g = jax.grad(lambda lp: P.gspo_objective(lp, OLD, adv_B, MASK, 0.2, 0.2)[0])(jnp.asarray(LOGPS))
        # row 0 unclipped: d/dlp_t of -(1/2) s_0 A_0 = -(1/2) A_0 s_0 / 3; row 1 clipped (s_1 = 1.65 > 1.2, A < 0): its
        # min is s_1 A_1 (the unclipped term, smaller), so the gradient is -(1/2) A_1 s_1 / 1
        np.testing.assert_allclose(np.asarray(g)[0, :3], -0.5 * 1.0 * s[0] / 3, rtol=1e-5)
        np.testing.assert_allclose(float(g[1, 3]), -0.5 * -2.0 * s[1], rtol=1e-5)
        token = lambda lp: P.gspo_token_objective(lp, OLD, adv_B[:, None] * MASK, MASK, 0.2, 0.2)[0]  # noqa: E731
        seq = lambda lp: P.gspo_objective(lp, OLD, adv_B, MASK, 0.2, 0.2)[0]  # noqa: E731
        chex.assert_trees_all_close(
            jax.value_and_grad(token)(jnp.asarray(LOGPS)), jax.value_and_grad(seq)(jnp.asarray(LOGPS)), atol=1e-6
        )

    @chex.variants(with_jit=True, without_jit=True)
    def test_cispo_weights_are_clipped_and_stopped_and_every_token_keeps_its_gradient(self):
        r = np.exp(LOGPS - OLD)
        w = np.clip(r, 1 - 1.0, 1 + 0.28)  # no lower bound, the upper at 1.28
        f = self.variant(jax.value_and_grad(lambda lp: P.cispo_objective(lp, OLD, ADV_T, MASK, 1.0, 0.28)[0]))
        value, grad = f(jnp.asarray(LOGPS))
        want = -np_aggregate(w * ADV_T * LOGPS, MASK, "token_mean")
        assert float(value) == pytest.approx(want, rel=1e-5)
        np.testing.assert_allclose(np.asarray(grad), -(w * ADV_T * MASK) / MASK.sum(), rtol=1e-5, atol=1e-7)
        # a token with ratio e = 2.7 > 1.28 and A > 0: PPO's clip zeroes its gradient, CISPO keeps it (weight 1.28)
        lp, old, adv, m = jnp.zeros((1, 1)), -jnp.ones((1, 1)), jnp.ones((1, 1)), jnp.ones((1, 1))
        assert float(jax.grad(lambda x: P.cispo_objective(x, old, adv, m, 1.0, 0.28)[0])(lp)[0, 0]) == pytest.approx(
            -1.28
        )
        assert float(jax.grad(lambda x: P.ppo_objective(x, old, adv, m, 0.2, 0.28)[0])(lp)[0, 0]) == 0.0


class EstimatorsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_dr_grpo_centres_without_scaling_and_reinforce_pp_normalises_over_the_batch(self):
        rewards = jnp.array([1.0, 3.0, 0.0, 4.0])
        dr = self.variant(lambda r: R.grpo_advantages(r, 2, scale=False))(rewards)
        np.testing.assert_allclose(np.asarray(dr), [-1.0, 1.0, -2.0, 2.0])
        base = self.variant(lambda r: R.reinforce_pp_baseline_advantages(r, 2))(rewards)
        c = np.array([-1.0, 1.0, -2.0, 2.0])
        np.testing.assert_allclose(np.asarray(base), (c - c.mean()) / np.sqrt(c.var(ddof=1) + 1e-8), rtol=1e-5)
        token_rewards = jnp.array([[-0.1, -0.1, 1.0], [-0.2, 0.5, 0.0]])
        mask = jnp.array([[1, 1, 1], [1, 1, 0]])
        to_go = np.array([0.8, 0.9, 1.0, 0.3, 0.5])  # (-0.1 - 0.1 + 1, -0.1 + 1, 1), (-0.2 + 0.5, 0.5)
        got = self.variant(lambda r, m: R.reinforce_pp_advantages(r, m))(token_rewards, mask)
        want = (to_go - to_go.mean()) / np.sqrt(to_go.var(ddof=1) + 1e-8)
        np.testing.assert_allclose(np.asarray(got)[np.asarray(mask) > 0], want, rtol=1e-5)
        assert float(got[1, 2]) == 0.0


def test_the_named_methods_and_their_defaults():
    assert RLSection(method="gspo").clip == (3e-4, 4e-4) and RLSection(method="cispo").clip == (1.0, 0.28)
    assert RLSection(method="ppo").clip == (0.2, 0.2) and RLSection(method="ppo", ppo_clip=0.1).clip == (0.1, 0.1)
    assert RLSection(method="grpo", clip_high=0.28).clip == (0.2, 0.28)  # DAPO's clip-higher on GRPO
    assert RLSection(method="dr_grpo").loss_aggregation == "seq_mean_token_sum_norm"
    assert RLSection(method="grpo").loss_aggregation == "seq_mean_token_mean"
    assert RLSection(method="grpo", aggregation="token_mean").loss_aggregation == "token_mean"
    for name in ("dr_grpo", "gspo", "cispo", "reinforce_pp"):
        assert name in METHODS
    with pytest.raises(ValueError, match="rl.dual_clip=0.5: must be > 1"):
        RLSection(method="ppo", dual_clip=0.5)
    with pytest.raises(ValueError, match="rl.aggregation='mean'"):
        RLSection(aggregation="mean")
    with pytest.raises(ValueError, match="rl.loss='gspo' takes sequence-level advantages"):
        RLSection(method="ppo", loss="gspo")


class MismatchTest(chex.TestCase):
    # trainer and sampler log-probs of 2 rows x 3 tokens (row 1 has 2 completion tokens)
    TRAIN = np.array([[-1.0, -2.0, -0.5], [-1.0, -1.0, 0.0]], np.float32)
    SAMPLER = np.array([[-1.0, -3.0, -0.4], [-1.5, -1.0, 0.0]], np.float32)
    MASK = np.array([[1, 1, 1], [1, 1, 0]], np.float32)

    @chex.variants(with_jit=True, without_jit=True)
    def test_truncated_and_masked_weights_at_and_past_the_cap(self):
        log_w = (self.TRAIN - self.SAMPLER) * self.MASK  # (0, 1, -0.1), (0.5, 0, 0)
        w_tok = np.exp(log_w)  # (1, 2.718, 0.905), (1.649, 1, 1)
        cap = float(np.exp(0.5))  # row 1's first token sits exactly at the cap
        f = lambda mode: self.variant(lambda a, b, m: C.importance_weights(a, b, m, mode, cap))  # noqa: E731
        tis, tm = f("tis_token")(self.TRAIN, self.SAMPLER, self.MASK)
        np.testing.assert_allclose(np.asarray(tis), np.minimum(w_tok, cap) * self.MASK, rtol=1e-6)
        assert float(tm["is_capped_frac"]) == pytest.approx(1 / 5)  # only e^1 is past the cap
        mis, mm = f("mis_token")(self.TRAIN, self.SAMPLER, self.MASK)
        np.testing.assert_allclose(np.asarray(mis), np.where(w_tok > cap, 0.0, w_tok) * self.MASK, rtol=1e-6)
        assert float(mm["is_masked_frac"]) == pytest.approx(1 / 5) and float(mis[1, 0]) == pytest.approx(cap)
        w_seq = np.exp(log_w.sum(-1))  # exp(0.9) = 2.46 past the cap, exp(0.5) at it
        tis_s, _ = f("tis_seq")(self.TRAIN, self.SAMPLER, self.MASK)
        np.testing.assert_allclose(np.asarray(tis_s), np.minimum(w_seq, cap), rtol=1e-6)
        mis_s, _ = f("mis_seq")(self.TRAIN, self.SAMPLER, self.MASK)
        np.testing.assert_allclose(np.asarray(mis_s), [0.0, cap], rtol=1e-6)

    def test_the_mismatch_metric_on_hand_values(self):
        got = C.sampler_mismatch(jnp.asarray(self.TRAIN), jnp.asarray(self.SAMPLER), jnp.asarray(self.MASK))
        # gaps over the 5 completion tokens: 0, 1, 0.1, 0.5, 0
        assert float(got["mismatch_mean"]) == pytest.approx(1.6 / 5, rel=1e-5)
        assert float(got["mismatch_max"]) == pytest.approx(1.0)
        assert float(got["mismatch_frac"]) == pytest.approx(2 / 5)  # 1 and 0.5 are above the threshold 0.1
        same = C.sampler_mismatch(jnp.asarray(self.TRAIN), jnp.asarray(self.TRAIN), jnp.asarray(self.MASK))
        assert float(same["mismatch_mean"]) == 0.0 and float(same["mismatch_frac"]) == 0.0

    def test_weights_scale_the_advantages_so_every_objective_is_corrected(self):
        # the PPO surrogate is linear in A: w min(r A, clip(r) A) = min(r wA, clip(r) wA) for w >= 0
        w = jnp.array([[0.5, 2.0, 1.0], [1.5, 0.0, 0.0]])
        a = P.ppo_objective(jnp.asarray(self.TRAIN), jnp.asarray(self.SAMPLER), w * 3.0, self.MASK, 0.2)[0]
        parts = jnp.minimum(jnp.exp(self.TRAIN - self.SAMPLER) * 3.0, jnp.clip(jnp.exp(self.TRAIN - self.SAMPLER),
                                                                              0.8, 1.2) * 3.0)  # fmt: skip
        assert float(a) == pytest.approx(-float(common.masked_mean(w * parts, self.MASK)), rel=1e-6)


def test_importance_settings_are_checked():
    with pytest.raises(ValueError, match="rl.is_correction='tis'"):
        RLSection(is_correction="tis")
    with pytest.raises(ValueError, match="per-token weights need an objective that takes token advantages"):
        RLSection(method="rloo", is_correction="tis_token")
    RLSection(method="rloo", is_correction="tis_seq")
    RLSection(method="grpo", is_correction="mis_token", sample_dtype="bfloat16")  # the correction admits bf16
    with pytest.raises(ValueError, match="rl.is_correction"):
        RLSection(method="grpo", sample_dtype="bfloat16")


def test_dynamic_sampling_keeps_the_groups_with_a_signal_and_refills_in_draw_order():
    # k = 2: groups (1, 1) (0, 1) (2, 2) (3, 0) (5, 5); only groups 1 and 3 carry a signal
    scores = np.array([1, 1, 0, 1, 2, 2, 3, 0, 5, 5], np.float32)
    groups, n_signal = C.dynamic_sampling_groups(scores, 2, 2)
    assert groups.tolist() == [1, 3] and n_signal == 2
    groups, _ = C.dynamic_sampling_groups(scores, 2, 4)  # too few with a signal: the first signal-free ones refill
    assert groups.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="6 groups asked of 5 drawn"):
        C.dynamic_sampling_groups(scores, 2, 6)


def test_the_overlong_penalty_at_and_past_its_boundary():
    # L_max 10, L_cache 4: free up to 6 tokens, then -1/4 a token down to -1 at the limit
    got = C.overlong_penalty(jnp.array([5, 6, 7, 9, 10, 12]), 10, 4)
    np.testing.assert_allclose(np.asarray(got), [0.0, 0.0, -0.25, -0.75, -1.0, -1.0])
    assert float(C.overlong_penalty(jnp.array([10]), 10, 0)[0]) == 0.0


def test_the_dapo_method_and_its_defaults():
    dapo = RLSection(method="dapo", k=4)
    assert dapo.clip == (0.2, 0.28) and dapo.loss_aggregation == "token_mean" and dapo.draws == 3
    assert dapo.overlong_tokens(20) == 4 and RLSection(method="dapo", overlong_buffer=0).overlong_tokens(20) == 0
    assert RLSection(method="grpo").draws == 1 and RLSection(method="grpo", dynamic_sampling=2).draws == 2
    with pytest.raises(ValueError, match="needs groups, rl.k >= 2"):
        RLSection(method="reinforce", k=1, dynamic_sampling=2)
