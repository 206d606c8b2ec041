"""Metrics of a policy's completions; pure functions of arrays (numpy or jax).

win-rate        W = mean_i [s_i > t_i] + 1/2 [s_i = t_i]         (ties count half)
reward          mean_i r_i and its variance (1/n) sum_i (r_i - mean)^2
perplexity      exp(-sum_{b,t} m_bt log pi(x_bt | x_<t) / sum_{b,t} m_bt)
distinct-n      |unique n-grams| / |n-grams| over all completions (Li et al., 2016)
KL              mean_b sum_t m_bt (log pi(y_t) - log pi_ref(y_t))   (k1, on samples of pi)
entropy         H_t / log|V|, H_t = -sum_v p_t(v) log p_t(v)          (RLOO paper app. A)
top-k mass      sum of the k largest p_t(v)                          (RLOO paper app. A)
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def win_rate(scores_a, scores_b) -> float:
    """Share of prompts where a's completion beats b's; a tie counts half."""
    a, b = np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"win_rate: expected two non-empty [N] score arrays, got {a.shape} and {b.shape}")
    return float(np.mean((a > b) + 0.5 * (a == b)))


def reward_stats(scores) -> dict[str, float]:
    r = np.asarray(scores, np.float64)
    return {"mean": float(r.mean()), "variance": float(r.var())}


def perplexity(logps_BxT, mask_BxT) -> float:
    """exp of the mean negative log-likelihood over the masked tokens."""
    m = np.asarray(mask_BxT, np.float64)
    if m.sum() == 0:
        raise ValueError("perplexity: the mask selects no token")
    return float(np.exp(-(np.asarray(logps_BxT, np.float64) * m).sum() / m.sum()))


def distinct_n(sequences: Sequence[Sequence], n: int) -> float:
    """Distinct-n over a set of completions (token ids or words): unique n-grams / n-grams."""
    if n < 1:
        raise ValueError(f"distinct_n: n={n} must be >= 1")
    grams = [tuple(s[i : i + n]) for s in sequences for i in range(len(s) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def mean_length(mask_BxT) -> float:
    return float(np.asarray(mask_BxT, np.float64).sum(-1).mean())


def sequence_kl(logps_BxT, ref_logps_BxT, mask_BxT) -> float:
    diff = (np.asarray(logps_BxT, np.float64) - np.asarray(ref_logps_BxT, np.float64)) * np.asarray(mask_BxT)
    return float(diff.sum(-1).mean())


def normalised_entropy(logits_BxLxV):
    """H(p_t) / log|V| at each step, p_t = softmax(logits): 0 for a point mass, 1 for uniform."""
    logits = jnp.asarray(logits_BxLxV, jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    return entropy / jnp.log(logits.shape[-1])


def top_k_mass(logits_BxLxV, ks: Sequence[int] = (1, 16, 32, 64)):
    """{k: [B, L] probability mass of the k most likely tokens at each step}."""
    probs = jax.nn.softmax(jnp.asarray(logits_BxLxV, jnp.float32), axis=-1)
    top = jax.lax.top_k(probs, min(max(ks), probs.shape[-1]))[0]
    cumulative = jnp.cumsum(top, axis=-1)
    return {k: cumulative[..., min(k, probs.shape[-1]) - 1] for k in ks}


def per_step_mean(values_BxL, mask_BxL) -> np.ndarray:
    """Mean over the rows still generating at each step (NaN where none is)."""
    v, m = np.asarray(values_BxL, np.float64), np.asarray(mask_BxL, np.float64)
    count = m.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (v * m).sum(0) / count, np.nan)


def auroc(scores, labels) -> float:
    """Area under the ROC curve of `scores` ranking the positives (labels 1) above the
    negatives: the Mann-Whitney U statistic / (n_pos n_neg), ties counting one half. 0.5:
    no better than chance; below 0.5: the scores rank the wrong way. nan without both
    classes."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    starts = np.r_[0, np.flatnonzero(np.diff(s[order])) + 1]  # runs of equal scores share their mean rank
    ends = np.r_[starts[1:], len(s)]
    ranks = np.empty(len(s))
    for a, b in zip(starts, ends, strict=True):
        ranks[order[a:b]] = (a + 1 + b) / 2
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_within_groups(scores_GxN, labels_GxN) -> float:
    """`auroc` within each group (a row: one problem's pool) that holds both classes,
    averaged over those groups: the ranking best-of-N acts on. The pooled auroc also
    rewards scoring easy problems above hard ones, which choosing within a problem cannot
    use (Lightman et al. 2023 pick within a problem's samples). nan when no group holds
    both classes."""
    S, Y = np.asarray(scores_GxN, np.float64), np.asarray(labels_GxN).astype(bool)
    values = [auroc(s, y) for s, y in zip(S, Y, strict=True) if 0 < y.sum() < len(y)]
    return float(np.mean(values)) if values else float("nan")


def pass_at_k(n: int, correct: int, k: int) -> float:
    """The unbiased pass@k of one problem from n samples of which `correct` are right (Chen
    et al. 2021, "Evaluating Large Language Models Trained on Code", eq. 1):

        pass@k = 1 - C(n - c, k) / C(n, k)

    the chance that k of the n samples drawn without replacement hold a right one."""
    if not 0 <= correct <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k: needs 0 <= correct <= n and 1 <= k <= n (n={n}, correct={correct}, k={k})")
    if n - correct < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - correct + 1, n + 1)))
