"""Masked reductions, the per-token KL estimators and input checks shared by the losses
and the advantage estimators."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def masked_sum(x, mask, axis=None):
    return jnp.sum(jnp.where(mask.astype(bool), x, 0.0), axis=axis)


def masked_mean(x, mask, axis=None):
    """sum(x * mask) / max(sum(mask), 1): an empty mask gives 0, not NaN."""
    return masked_sum(x, mask, axis) / jnp.maximum(jnp.sum(mask.astype(jnp.float32), axis=axis), 1.0)


def masked_var(x, mask, unbiased: bool = True):
    mean = masked_mean(x, mask)
    n = jnp.sum(mask.astype(jnp.float32))
    var = masked_sum(jnp.square(x - mean), mask) / jnp.maximum(n - (1.0 if unbiased else 0.0), 1.0)
    return var


def whiten(x, mask, shift_mean: bool = True, eps: float = 1e-8):
    """(x - mean) / std over the masked entries (mean kept if not shift_mean); 0 outside."""
    mean = masked_mean(x, mask)
    out = (x - mean) * jax.lax.rsqrt(masked_var(x, mask) + eps)
    if not shift_mean:
        out = out + mean
    return jnp.where(mask.astype(bool), out, 0.0)


AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm", "seq_mean_token_sum")


def aggregate(x_BxT, mask_BxT, mode: str = "token_mean", norm_len: float = 1.0):
    """A per-token loss reduced to a scalar (the loss-aggregation modes of the GRPO family):
    token_mean               sum_{i,t} x / sum_{i,t} 1 over every completion token of the
                             batch (DAPO's token-level loss; this codebase's PPO before)
    seq_mean_token_mean      (1/B) sum_i (1/|y_i|) sum_t x   (GRPO as published)
    seq_mean_token_sum_norm  (1/B) sum_i (1/L) sum_t x, L = norm_len the maximum completion
                             length, a constant (Dr. GRPO: no length bias)
    seq_mean_token_sum       (1/B) sum_i sum_t x   (a sequence-level sum)
    """
    if mode == "token_mean":
        return masked_mean(x_BxT, mask_BxT)
    if mode == "seq_mean_token_mean":
        return jnp.mean(masked_mean(x_BxT, mask_BxT, axis=-1))
    if mode == "seq_mean_token_sum_norm":
        return jnp.mean(masked_sum(x_BxT, mask_BxT, axis=-1)) / norm_len
    if mode == "seq_mean_token_sum":
        return jnp.mean(masked_sum(x_BxT, mask_BxT, axis=-1))
    raise ValueError(f"loss aggregation {mode!r}: expected one of {AGGREGATIONS}")


KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_per_token(logps_BxT, ref_logps_BxT, estimator: str = "k1"):
    """Per-token estimators of KL(pi || pi_ref) from samples of pi, with
    log_r = log pi(x_t) - log pi_ref(x_t) (Schulman's k1, k2, k3):
        k1 = log_r;  k2 = log_r^2 / 2;  k3 = exp(-log_r) - 1 + log_r  (>= 0, unbiased).
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl estimator {estimator!r}: expected one of {KL_ESTIMATORS}")
    check_same_shape("kl_per_token", logps=logps_BxT, ref_logps=ref_logps_BxT)
    log_r = logps_BxT - ref_logps_BxT
    if estimator == "k1":
        return log_r
    if estimator == "k2":
        return 0.5 * jnp.square(log_r)
    return jnp.expm1(-log_r) + log_r


def sequence_sum(logps_BxT, mask_BxT):
    """Per-row sum of token values over the mask: log pi(y|x) from token log-probs."""
    return masked_sum(logps_BxT, mask_BxT, axis=-1)


def sequence_mean(logps_BxT, mask_BxT):
    """Per-row length-normalised sum (1/|y|) sum_t over the mask."""
    return masked_mean(logps_BxT, mask_BxT, axis=-1)


def is_concrete(*xs) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


def check_same_shape(what: str, **arrays) -> None:
    """Raise naming the fields if the arrays' shapes disagree (works under jit: shapes are static)."""
    shapes = {name: tuple(jnp.shape(a)) for name, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        listing = ", ".join(f"{name}{shape}" for name, shape in shapes.items())
        raise ValueError(f"{what}: shapes disagree: {listing}")


def check_nonempty_rows(what: str, field: str, mask_BxT) -> None:
    """Raise naming the rows with an empty mask (only when values are concrete, i.e. eager)."""
    if not is_concrete(mask_BxT):
        return
    lengths = np.asarray(mask_BxT).astype(bool).sum(-1)
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise ValueError(f"{what}: {field} is empty in rows {empty[:10].tolist()}")


def check_labels(what: str, field: str, labels, n_classes: int, ignore: int | None = None) -> None:
    """Raise naming the field and offending values if labels fall outside [0, n_classes)."""
    if not is_concrete(labels):
        return
    arr = np.asarray(labels)
    valid = (arr >= 0) & (arr < n_classes)
    if ignore is not None:
        valid |= arr == ignore
    if not valid.all():
        bad = np.unique(arr[~valid])[:10].tolist()
        raise ValueError(f"{what}: {field} has values {bad} outside the classes 0..{n_classes - 1}")
