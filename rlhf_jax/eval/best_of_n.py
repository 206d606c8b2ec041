"""Best-of-N accuracy curves, estimated the way Lightman et al. (2023) do: from a pool of M
solutions per problem, draw many subsets of N, let a selector pick one answer from each
subset, and average whether it is right; N runs up to M.

Selectors, for a problem's subset S (solutions i with score s_i, final answer a_i,
correct c_i):

    reward model  argmax_i s_i; a tie among the best is broken at random, so its
                  expected accuracy is the tied solutions' mean c_i
    majority      the answer most of S gives (solutions without an answer do not vote;
                  a subset with no answer at all is wrong); ties as above
    weighted vote the answer whose solutions' verifier weights w_i >= 0 (a probability of
                  being right) sum highest: Uesato et al. (2022)'s RM-weighted decoding, Li
                  et al. (2023)'s verifier voting; majority is every w_i = 1
    random        a uniform pick: E = mean_S c_i, the pool's accuracy at every N
    pass@N        the ceiling: 1 if any c_i (a perfect verifier)

Every estimate is exact in the tie-breaking and Monte-Carlo in the subsets: for each N
the same `draws` subsets of every problem serve every selector, so selectors are
compared on the same samples. Host-side numpy; no model.
"""

from __future__ import annotations

import numpy as np


def subsets(rng: np.random.Generator, n_problems: int, pool: int, n: int, draws: int) -> np.ndarray:
    """[P, D, N] indices: for each problem, `draws` subsets of n distinct pool solutions
    (one subset, the whole pool, when n == pool)."""
    if not 1 <= n <= pool:
        raise ValueError(f"best-of-N: N={n} must be in 1..{pool} (the pool per problem)")
    if n == pool:
        return np.broadcast_to(np.arange(pool), (n_problems, 1, pool))
    return np.argsort(rng.random((n_problems, draws, pool)), axis=-1)[..., :n]


def argmax_accuracy(scores_PxDxN: np.ndarray, correct_PxDxN: np.ndarray) -> np.ndarray:
    """[P] expected accuracy of picking each subset's best score (ties: their mean c),
    averaged over the D subsets."""
    best = scores_PxDxN == scores_PxDxN.max(axis=-1, keepdims=True)
    return ((best * correct_PxDxN).sum(-1) / best.sum(-1)).mean(-1)


def majority_accuracy(
    answer_ids_PxDxN: np.ndarray, right_id_P: np.ndarray, weights_PxDxN: np.ndarray | None = None
) -> np.ndarray:
    """[P] expected accuracy of the majority answer (ids >= 0; -1: no answer, no vote;
    ties: the mean over the tied answers of being the right one); with `weights`, each
    solution's vote counts its weight (>= 0), the weighted vote."""
    P, D, _ = answer_ids_PxDxN.shape
    K = int(answer_ids_PxDxN.max(initial=-1)) + 1
    votes = np.zeros((P, D, max(K, 1)))
    p, d, _ = np.indices(answer_ids_PxDxN.shape)
    has = answer_ids_PxDxN >= 0
    w = np.ones(answer_ids_PxDxN.shape) if weights_PxDxN is None else np.asarray(weights_PxDxN, np.float64)
    if (w < 0).any():
        raise ValueError("weighted vote: weights must be >= 0 (a verifier's probability, not its logit)")
    np.add.at(votes, (p[has], d[has], answer_ids_PxDxN[has]), w[has])
    top = votes.max(-1, keepdims=True)
    winners = (votes == top) & (top > 0)
    right = np.zeros_like(winners)
    ok = right_id_P >= 0
    right[ok, :, right_id_P[ok]] = True
    n_winners = winners.sum(-1)
    acc = np.where(n_winners > 0, (winners & right).sum(-1) / np.maximum(n_winners, 1), 0.0)
    return acc.mean(-1)


def answer_ids(answers_PxM, truth_P) -> tuple[np.ndarray, np.ndarray]:
    """Answers as small ints per problem ([P, M], -1 for None) and the id of each
    problem's right answer (-1 when no solution gives it)."""
    answers = np.asarray(answers_PxM, dtype=object)
    ids = np.full(answers.shape, -1, np.int64)
    right = np.full(len(answers), -1, np.int64)
    for p, row in enumerate(answers):
        seen: dict = {}
        for m, a in enumerate(row):
            if a is not None:
                ids[p, m] = seen.setdefault(a, len(seen))
        right[p] = seen.get(truth_P[p], -1)
    return ids, right


def curves(
    correct_PxM,
    answers_PxM,
    truth_P,
    scores: dict[str, np.ndarray],
    ns,
    draws: int = 200,
    seed: int = 0,
    vote_weights: dict[str, np.ndarray] | None = None,
) -> dict[str, dict[int, float]]:
    """{selector: {N: accuracy over problems}} for every reward model in `scores` (name ->
    [P, M] scores), "majority", "random" and "pass@N", each N of `ns`; and "<name>+vote"
    for each of `vote_weights` (name -> [P, M] weights >= 0), the weighted vote."""
    correct = np.asarray(correct_PxM, np.float64)
    P, M = correct.shape
    scores = {name: np.asarray(s, np.float64) for name, s in scores.items()}
    vote_weights = {name: np.asarray(w, np.float64) for name, w in (vote_weights or {}).items()}
    for name, s in {**scores, **vote_weights}.items():
        if s.shape != (P, M):
            raise ValueError(f"best-of-N: scores {name!r} have shape {s.shape}, expected {(P, M)}")
    ids, right = answer_ids(answers_PxM, truth_P)
    rng = np.random.default_rng(seed)
    voted = [f"{name}+vote" for name in vote_weights]
    out: dict[str, dict[int, float]] = {name: {} for name in [*scores, *voted, "majority", "random", "pass@N"]}
    rows = np.arange(P)[:, None, None]
    for n in ns:
        idx = subsets(rng, P, M, int(n), draws)
        c = correct[rows, idx]
        for name, s in scores.items():
            out[name][int(n)] = float(argmax_accuracy(s[rows, idx], c).mean())
        for name, w in vote_weights.items():
            out[f"{name}+vote"][int(n)] = float(majority_accuracy(ids[rows, idx], right, w[rows, idx]).mean())
        out["majority"][int(n)] = float(majority_accuracy(ids[rows, idx], right).mean())
        out["random"][int(n)] = float(c.mean())
        out["pass@N"][int(n)] = float(c.max(-1).mean())
    return out
