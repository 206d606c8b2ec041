"""Best-of-N curves (`eval.best_of_n`) on hand-made pools: ties, majority voting, the
N = 1 and N = pool ends, and pass@N against its closed form."""

import math

import numpy as np
import pytest

from rlhf_jax.eval import best_of_n as B


def test_ties_among_the_best_count_as_their_mean_and_the_whole_pool_is_one_subset():
    correct = [[1, 0, 1, 0]]
    out = B.curves(correct, [[3, 4, 3, 4]], [3], {"rm": np.array([[1.0, 3.0, 3.0, 0.0]])}, ns=[4])
    assert out["rm"][4] == 0.5  # solutions 1 and 2 tie at the top: one right, one wrong
    assert out["majority"][4] == 0.5  # answers 3 and 4 tie two votes each
    assert out["random"][4] == 0.5 and out["pass@N"][4] == 1.0


def test_majority_ignores_missing_answers_and_a_subset_without_answers_is_wrong():
    ids, right = B.answer_ids([[5, 5, None, 7], [None, None, None, None]], [7, 1])
    np.testing.assert_array_equal(ids, [[0, 0, -1, 1], [-1, -1, -1, -1]])
    np.testing.assert_array_equal(right, [1, -1])
    acc = B.majority_accuracy(ids[:, None, :], right)
    np.testing.assert_allclose(acc, [0.0, 0.0])  # 5 wins two votes to one; the second problem gives no answer
    acc = B.majority_accuracy(np.array([[[-1, 1, -1, -1]]]), np.array([1]))
    np.testing.assert_allclose(acc, [1.0])  # one vote is a majority


def test_the_weighted_vote_sums_each_answers_weights_and_refuses_negative_ones():
    ids, right = np.array([[[0, 0, 1]]]), np.array([1])
    np.testing.assert_allclose(B.majority_accuracy(ids, right), [0.0])  # two votes for answer 0
    np.testing.assert_allclose(B.majority_accuracy(ids, right, np.array([[[0.1, 0.1, 0.9]]])), [1.0])  # 0.2 < 0.9
    np.testing.assert_allclose(B.majority_accuracy(ids, right, np.array([[[0.4, 0.5, 0.9]]])), [0.5])  # a tie
    with pytest.raises(ValueError, match="weights must be >= 0"):
        B.majority_accuracy(ids, right, np.array([[[-1.0, 0.1, 0.9]]]))
    out = B.curves([[0, 0, 1]], [[5, 5, 7]], [7], {}, ns=[3], vote_weights={"rm": np.array([[0.1, 0.1, 0.9]])})
    assert out["rm+vote"][3] == 1.0 and out["majority"][3] == 0.0


def test_at_n_1_every_selector_is_the_pool_accuracy_and_a_perfect_verifier_is_pass_at_n():
    rng = np.random.default_rng(0)
    P, M = 30, 16
    correct = rng.random((P, M)) < 0.3
    truth = list(range(P))
    answers = [[p if c else int(rng.integers(100, 103)) for c in row] for p, row in enumerate(correct)]
    # the study's selection code: a perfect verifier picks a right solution whenever the subset
    # holds one (pass@N); the same scores inverted pick a wrong one whenever it holds one
    scores = {"noise": rng.normal(size=(P, M)), "oracle": correct + 0.0, "inverted": -(correct + 0.0)}
    out = B.curves(correct, answers, truth, scores, ns=[1, 2, 4, 16], draws=300, seed=1)
    k = correct.sum(1)
    for n in (4, 16):  # inverted: right only when every solution drawn is right, C(k, N) / C(M, N)
        all_right = np.mean([math.comb(int(kp), n) / math.comb(M, n) for kp in k])
        assert out["inverted"][n] == pytest.approx(all_right, abs=0.02) and out["inverted"][n] < out["random"][n]
    for name in ("noise", "oracle", "inverted", "majority", "pass@N"):
        assert out[name][1] == pytest.approx(out["random"][1], abs=1e-12)
    for n in (2, 4, 16):
        assert out["oracle"][n] == pytest.approx(out["pass@N"][n], abs=1e-12)
        assert out["random"][n] == pytest.approx(correct.mean(), abs=0.03)
    # pass@N = 1 - C(M - k, N) / C(M, N), averaged over problems
    exact = np.mean([1 - math.comb(M - int(kp), 4) / math.comb(M, 4) for kp in k])
    assert out["pass@N"][4] == pytest.approx(exact, abs=0.02)


def test_subsets_are_distinct_indices_and_bad_n_or_shapes_are_refused():
    idx = B.subsets(np.random.default_rng(0), 5, 10, 4, draws=7)
    assert idx.shape == (5, 7, 4)
    assert all(len(set(row)) == 4 for row in idx.reshape(-1, 4))
    with pytest.raises(ValueError, match="N=11 must be in 1..10"):
        B.subsets(np.random.default_rng(0), 5, 10, 11, draws=1)
    with pytest.raises(ValueError, match="scores 'rm' have shape"):
        B.curves([[1, 0]], [[1, 2]], [1], {"rm": np.zeros((1, 3))}, ns=[1])


def test_a_verifier_right_on_average_picks_below_random_from_a_large_pool_of_distinct_slips():
    """The process study's pools: a right answer is written one way (its copies share one
    score) while each slip is its own text. A verifier that ranks a right solution above 80%
    of the wrong ones (within-problem AUROC 0.8) still picks wrong from a large pool, since
    one of the wrong 20% is almost always drawn; best-of-N rises above random at small N and
    falls below it as N grows: the selection reads the top of the pool, not its average."""
    from rlhf_jax.eval.metrics import auroc_within_groups
    from rlhf_jax.studies.verifier_diagnosis import readings

    P, M, k = 20, 40, 15  # 15 right copies and 25 distinct wrong texts per problem
    W, above = M - k, 5  # 5 of the 25 wrong texts score above the right text
    wrong_scores = np.linspace(0.0, 1.0, W)  # 0, 1/24, ..., 1: the top 5 above 0.81
    correct = np.zeros((P, M), bool)
    correct[:, :k] = True
    scores = np.tile(np.r_[np.full(k, 0.81), wrong_scores], (P, 1))
    texts = [f"p{p} right" if c else f"p{p} slip {i}" for p in range(P) for i, c in enumerate(correct[p])]
    answers = [[0 if c else 1 + i for i, c in enumerate(row)] for row in correct]
    assert auroc_within_groups(scores, correct) == pytest.approx(1 - above / W)
    out = B.curves(correct, answers, [0] * P, {"rm": scores}, ns=[2, 8, 40], draws=4000, seed=0)

    def exact(n):  # right iff none of the 5 high slips is drawn and a right copy is
        return (math.comb(M - above, n) - math.comb(M - above - k, n)) / math.comb(M, n)

    for n in (2, 8):
        assert out["rm"][n] == pytest.approx(exact(n), abs=0.01)
    assert out["rm"][2] > out["random"][2] and out["rm"][8] < out["random"][8]
    assert out["rm"][40] == 0.0 and out["majority"][40] == 1.0  # 15 votes against 25 single ones
    voted = B.curves(correct, answers, [0] * P, {}, ns=[40], vote_weights={"rm": scores})
    assert voted["rm+vote"][40] == 1.0  # the right answer's 15 x 0.81 against one slip's 1.0
    r = readings(scores.ravel(), correct.ravel(), np.full(P * M, 3), P, texts=texts)
    assert r["right_on_top"] == 0.0 and r["pick_copies"] == 1.0 and r["top_margin"] > 0
