"""Evaluation metrics on hand-made inputs, and the LM judge's prompts and parsing."""

import itertools

import numpy as np
import pytest

from rlhf_jax.eval import metrics
from rlhf_jax.eval.judges import LMJudge, judge_prompt, parse_verdict


def test_win_rate_counts_ties_half():
    assert metrics.win_rate([1, 2, 3, 0], [0, 2, 4, 0]) == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    assert metrics.win_rate([5.0], [1.0]) == 1.0
    with pytest.raises(ValueError, match="win_rate"):
        metrics.win_rate([1, 2], [1])


def test_distinct_n_by_hand():
    seqs = [[1, 2, 3, 1, 2], [1, 2]]
    # unigrams: 1,2,3,1,2,1,2 -> 3 unique of 7; bigrams: 12,23,31,12,12 -> 3 unique of 5
    assert metrics.distinct_n(seqs, 1) == pytest.approx(3 / 7)
    assert metrics.distinct_n(seqs, 2) == pytest.approx(3 / 5)
    assert metrics.distinct_n([[4]], 2) == 0.0
    assert metrics.distinct_n("a b c".split(" "), 1) == 1.0


def test_reward_stats_and_length():
    stats = metrics.reward_stats([1.0, 3.0])
    assert stats == {"mean": 2.0, "variance": 1.0}
    assert metrics.mean_length([[1, 1, 0], [1, 0, 0]]) == 1.5


def test_perplexity_of_a_known_distribution():
    # tokens drawn from a uniform distribution over 8 symbols: perplexity 8
    logps = np.full((2, 5), np.log(1 / 8))
    mask = np.array([[0, 1, 1, 1, 1], [0, 0, 1, 1, 0]])
    assert metrics.perplexity(logps, mask) == pytest.approx(8.0)
    # masked positions do not count, whatever they hold
    assert metrics.perplexity(np.where(mask, logps, -100.0), mask) == pytest.approx(8.0)
    with pytest.raises(ValueError, match="no token"):
        metrics.perplexity(logps, np.zeros_like(mask))


def test_entropy_is_normalised_by_log_vocabulary():
    V = 16
    uniform = np.zeros((1, 1, V))
    point = np.full((1, 1, V), -1e9)
    point[..., 3] = 0.0
    two = np.full((1, 1, V), -1e9)
    two[..., :2] = 0.0
    assert float(metrics.normalised_entropy(uniform)[0, 0]) == pytest.approx(1.0, abs=1e-6)
    assert float(metrics.normalised_entropy(point)[0, 0]) == pytest.approx(0.0, abs=1e-6)
    assert float(metrics.normalised_entropy(two)[0, 0]) == pytest.approx(np.log(2) / np.log(V), abs=1e-6)


def test_top_k_mass_by_hand():
    probs = np.array([0.5, 0.25, 0.125, 0.0625, 0.0625])
    mass = metrics.top_k_mass(np.log(probs)[None, None], ks=(1, 2, 3, 64))
    assert float(mass[1][0, 0]) == pytest.approx(0.5)
    assert float(mass[2][0, 0]) == pytest.approx(0.75)
    assert float(mass[3][0, 0]) == pytest.approx(0.875)
    assert float(mass[64][0, 0]) == pytest.approx(1.0)  # k beyond the vocabulary: all of it


def test_per_step_mean_uses_only_rows_still_generating():
    values = np.array([[1.0, 2.0, 3.0], [3.0, 10.0, 10.0]])
    mask = np.array([[1, 1, 1], [1, 0, 0]])
    out = metrics.per_step_mean(values, mask)
    np.testing.assert_allclose(out, [2.0, 2.0, 3.0])
    assert np.isnan(metrics.per_step_mean(values, np.zeros_like(mask))).all()


def test_sequence_kl_sums_over_the_completion_and_averages_rows():
    logps = np.array([[0.0, -1.0, -1.0], [0.0, -2.0, -9.0]])
    ref = np.array([[0.0, -2.0, -1.5], [0.0, -1.0, 0.0]])
    mask = np.array([[0, 1, 1], [0, 1, 0]])
    assert metrics.sequence_kl(logps, ref, mask) == pytest.approx(((1.0 + 0.5) + (-1.0)) / 2)


def test_judge_prompts_follow_the_papers_templates():
    p = judge_prompt("tldr", "POST TEXT", "first", "second")
    assert "Post:\nPOST TEXT" in p and "Summary (A):\nfirst" in p and "Summary (B):\nsecond" in p
    assert p.rstrip().endswith('Preferred: <"Summary (A)" or "Summary (B)">')
    h = judge_prompt("hh", "How do I?", "x", "y")
    assert "Query: How do I?" in h and "Response (A):\nx" in h and '"Neither"' in h
    with pytest.raises(ValueError, match="template 'gsm'"):
        judge_prompt("gsm", "", "", "")


@pytest.mark.parametrize(
    "answer,verdict",
    [
        ("Comparison: A is shorter.\nPreferred: Summary (A)", "A"),
        ('Comparison: B covers more.\nPreferred: "Summary (B)"', "B"),
        ("Comparison: x\nPreferred: B", "B"),
        ("Comparison: both vague.\nPreferred: Neither", "Neither"),
        ("Comparison: x\nPreferred: Response (A)\n...\nPreferred: Response (B)", "B"),
        ("I like the first one.", None),
    ],
)
def test_verdicts_are_parsed(answer, verdict):
    assert parse_verdict(answer) == verdict


def test_lm_judge_undoes_the_random_order():
    # a judge that always prefers the output containing "good", wherever it is shown
    def generate(prompts):
        out = []
        for p in prompts:
            a = p.split("Summary (A):\n")[1].split("\n")[0]
            out.append("Comparison: .\nPreferred: " + ("Summary (A)" if "good" in a else "Summary (B)"))
        return out

    judge = LMJudge(generate, "tldr")
    result = judge.compare(["p"] * 40, ["good"] * 20 + ["bad"] * 20, ["bad"] * 20 + ["good"] * 20, seed=3)
    np.testing.assert_array_equal(result, [1.0] * 20 + [0.0] * 20)
    unparsable = LMJudge(lambda ps: ["no idea"] * len(ps)).compare(["p"], ["a"], ["b"])
    assert np.isnan(unparsable).all()


def test_auroc_by_hand_with_ties_and_the_diagnosis_of_a_length_biased_verifier():
    from rlhf_jax.eval.metrics import auroc, auroc_within_groups
    from rlhf_jax.studies import verifier_diagnosis as D

    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75  # 3 of the 4 (positive, negative) pairs ordered
    assert auroc([1, 1, 1, 1], [0, 1, 0, 1]) == 0.5 and auroc([2, 1], [1, 0]) == 1.0 and np.isnan(auroc([1], [1]))
    # 2 problems x 4 solutions: right solutions are the long ones; a verifier that prefers short ones
    steps = np.array([2, 2, 4, 4, 2, 4, 4, 2])
    correct = np.array([0, 0, 1, 0, 0, 1, 0, 0], bool)
    scores = -steps + 0.01 * np.array([0, 1, 1, 0, 1, 0, 1, 0])  # within a length: random w.r.t. correctness
    r = D.readings(scores.astype(float), correct, steps, 2)
    # ranks right solutions low (1/6), follows length (rank correlation -2/3 with ties), picks 2-step ones
    assert r["auroc"] == pytest.approx(1 / 6) and r["corr_steps"] == pytest.approx(-2 / 3)
    assert r["pick_steps"] == 2.0 and r["pick_accuracy"] == 0.0
    assert r["auroc_by_steps"] == 0.5  # within the 4-step solutions: no better than chance
    # problem 0's right solution (index 2) outscores 1 of its 3 wrong ones, problem 1's (index 5) none
    assert r["auroc_within_problems"] == pytest.approx((1 / 3 + 0) / 2)
    # a problem whose pool is all wrong (or all right) has no ranking to judge: left out, not 0.5
    S, Y = np.array([[3.0, 1.0, 2.0], [1.0, 2.0, 3.0], [5.0, 4.0, 6.0]]), np.array([[1, 0, 0], [0, 0, 0], [0, 1, 1]])
    assert auroc_within_groups(S, Y) == pytest.approx((1.0 + 0.5) / 2)
    assert np.isnan(auroc_within_groups(S[1:2], Y[1:2]))


def test_pass_at_k_is_the_unbiased_estimator_by_hand_and_by_enumeration():
    assert metrics.pass_at_k(2, 1, 1) == pytest.approx(0.5)
    assert metrics.pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3, 2) / C(4, 2)
    assert metrics.pass_at_k(5, 0, 3) == 0.0 and metrics.pass_at_k(5, 5, 1) == 1.0
    assert metrics.pass_at_k(8, 2, 7) == 1.0  # fewer wrong samples than k: a right one is always drawn
    for n, c, k in [(8, 3, 4), (6, 2, 3), (10, 1, 5)]:
        subsets = list(itertools.combinations(range(n), k))  # samples 0 .. c-1 are the right ones
        expected = sum(any(i < c for i in s) for s in subsets) / len(subsets)
        assert metrics.pass_at_k(n, c, k) == pytest.approx(expected)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        metrics.pass_at_k(4, 1, 5)
