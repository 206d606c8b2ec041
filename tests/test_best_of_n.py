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
