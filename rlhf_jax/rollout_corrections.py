"""Corrections of a rollout before its update, the GRPO family's: importance weights for
the gap between the sampler's and the trainer's log-probabilities (truncated or masked,
per token or per sequence) and the gap itself as a metric; DAPO's dynamic sampling (keep
the groups whose rewards differ) and its soft overlong penalty. Pure functions; the RL
loop (`loops/online.py`) applies them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.losses.common import check_same_shape

# ----------------------------------------------------------------------------- sampler-trainer mismatch

IS_CORRECTIONS = ("none", "tis_token", "tis_seq", "mis_token", "mis_seq")
MISMATCH_THRESHOLD = 0.1  # a token whose log-probs differ by more than this counts in mismatch_frac


def sampler_mismatch(trainer_logps_BxT, sampler_logps_BxT, mask_BxT) -> dict:
    """The gap between the trainer's and the sampler's log-probs of the sampled tokens
    (bf16 sampling, another kernel): mean and max of |log pi_train - log pi_sampler| over the
    completion tokens, and the share above MISMATCH_THRESHOLD."""
    check_same_shape("sampler_mismatch", trainer=trainer_logps_BxT, sampler=sampler_logps_BxT)
    m = mask_BxT.astype(bool)
    gap = jnp.where(m, jnp.abs(trainer_logps_BxT - sampler_logps_BxT), 0.0)
    n = jnp.maximum(m.sum(), 1)
    return {"mismatch_mean": gap.sum() / n, "mismatch_max": gap.max(),
            "mismatch_frac": (gap > MISMATCH_THRESHOLD).sum() / n}  # fmt: skip


def importance_weights(trainer_logps_BxT, sampler_logps_BxT, mask_BxT, mode: str, cap: float):
    """Corrections for sampling from pi_sampler while the loss assumes pi_old = pi_train:
        tis_token  w_t = min(pi_train(y_t) / pi_sampler(y_t), C)          (truncated IS, Yao et al. 2025)
        tis_seq    w_i = min(prod_t pi_train(y_t) / pi_sampler(y_t), C)
        mis_token  w_t = the ratio where it is <= C, else 0 (the token masked out)
        mis_seq    w_i = the sequence ratio where it is <= C, else 0 (the sequence masked out)
    Returns (w: [B, T] or [B], metrics). The weights are constants (no gradient); they scale
    the advantages, which scales every objective's term (each is linear in A)."""
    if mode not in IS_CORRECTIONS or mode == "none":
        raise ValueError(f"importance_weights: mode {mode!r}, expected one of {IS_CORRECTIONS[1:]}")
    m = mask_BxT.astype(jnp.float32)
    log_w_BxT = jax.lax.stop_gradient(trainer_logps_BxT - sampler_logps_BxT) * m
    log_w = log_w_BxT.sum(-1) if mode.endswith("_seq") else log_w_BxT
    w = jnp.exp(jnp.minimum(log_w, 80.0))  # exp overflows beyond; such a weight is capped or masked anyway
    over = w > cap
    w = jnp.minimum(w, cap) if mode.startswith("tis") else jnp.where(over, 0.0, w)
    if mode.endswith("_token"):
        w = w * m
        share = (over * m).sum() / jnp.maximum(m.sum(), 1.0)
        mean = (w * m).sum() / jnp.maximum(m.sum(), 1.0)
    else:
        share, mean = over.mean(), w.mean()
    return w, {"is_weight_mean": mean, ("is_capped_frac" if mode.startswith("tis") else "is_masked_frac"): share}


# ----------------------------------------------------------------------------- DAPO's sampling and length shaping


def dynamic_sampling_groups(scores_N: np.ndarray, k: int, n_keep: int) -> tuple[np.ndarray, int]:
    """DAPO's dynamic sampling (Yu et al. 2025) over one draw of several batches of prompts:
    a group whose k rewards are all equal gives every sample a zero group advantage and no
    gradient, so the groups with a signal (max > min) are kept first, in the order drawn, and
    the batch is filled with signal-free ones only when too few have one. Returns (the kept
    groups' indices [n_keep], the number of groups with a signal among those drawn). Host
    code: the scores are the scorer's (numpy)."""
    R_GxK = np.asarray(scores_N, np.float64).reshape(-1, k)
    if n_keep > R_GxK.shape[0]:
        raise ValueError(f"dynamic_sampling_groups: {n_keep} groups asked of {R_GxK.shape[0]} drawn")
    signal = R_GxK.max(-1) > R_GxK.min(-1)
    order = np.concatenate([np.flatnonzero(signal), np.flatnonzero(~signal)])
    return np.sort(order[:n_keep]), int(signal.sum())


def overlong_penalty(lengths_B, max_len: int, buffer: int):
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13) added to the reward:
        0                                  for |y| <= L_max - L_cache
        ((L_max - L_cache) - |y|) / L_cache  for L_max - L_cache < |y| <= L_max
        -1                                 past L_max (a completion cut at the limit: |y| = L_max)
    with L_max = max_len and L_cache = buffer (buffer 0: no penalty)."""
    if buffer <= 0:
        return jnp.zeros_like(lengths_B, jnp.float32)
    over = (max_len - buffer - lengths_B.astype(jnp.float32)) / buffer
    return jnp.clip(over, -1.0, 0.0)
