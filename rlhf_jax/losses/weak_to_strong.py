"""Weak-to-strong generalisation (Burns et al. 2023): a strong student trained on a weak
supervisor's labels.

    weak-label cross-entropy   L = -(1/B) sum_b sum_c q_bc log p_bc,  q = weak soft labels
    auxiliary confidence loss  L = CE(p, (1 - a) q + a h), h = the student's own hardened
        predictions: one-hot argmax, and for two classes thresholded at the batch median
        of p(class 1) so that half the batch is hardened to each class (adaptive
        threshold); h carries no gradient. a is warmed up: a_t = a_max * min(1, t / warmup).
    performance gap recovered  PGR = (weak-to-strong - weak) / (strong ceiling - weak)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rlhf_jax.losses.common import check_same_shape, is_concrete


def soft_cross_entropy(logits_BxC, targets_BxC):
    check_same_shape("soft_cross_entropy", logits=logits_BxC, targets=targets_BxC)
    if is_concrete(targets_BxC):
        sums = jnp.sum(targets_BxC, axis=-1)
        if bool(jnp.any(targets_BxC < 0)) or not bool(jnp.allclose(sums, 1.0, atol=1e-4)):
            raise ValueError("soft_cross_entropy: targets must be probabilities (>= 0, rows summing to 1)")
    logp = jax.nn.log_softmax(logits_BxC.astype(jnp.float32), axis=-1)
    return -jnp.mean(jnp.sum(targets_BxC * logp, axis=-1))


def hardened_predictions(logits_BxC):
    """The student's own labels, one-hot; for C = 2 thresholded at the batch median."""
    probs = jax.nn.softmax(logits_BxC.astype(jnp.float32), axis=-1)
    C = logits_BxC.shape[-1]
    if C == 2:
        threshold = jnp.median(probs[:, 1])
        hard = (probs[:, 1] > threshold).astype(jnp.int32)
    else:
        hard = jnp.argmax(probs, axis=-1)
    return jax.lax.stop_gradient(jax.nn.one_hot(hard, C, dtype=jnp.float32))


def aux_confidence_weight(step, alpha_max: float, warmup_steps: int):
    """a_t = a_max * min(1, t / warmup_steps)."""
    if warmup_steps <= 0:
        return jnp.asarray(alpha_max, jnp.float32)
    return alpha_max * jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / warmup_steps)


def aux_confidence_objective(logits_BxC, weak_probs_BxC, alpha):
    """CE to the mixture of weak labels and the student's hardened predictions."""
    target = (1.0 - alpha) * weak_probs_BxC + alpha * hardened_predictions(logits_BxC)
    loss = soft_cross_entropy(logits_BxC, target)
    agree = jnp.mean(jnp.argmax(logits_BxC, -1) == jnp.argmax(weak_probs_BxC, -1))
    return loss, {"loss": loss, "alpha": jnp.asarray(alpha, jnp.float32), "agreement_with_weak": agree}


def performance_gap_recovered(weak, weak_to_strong, ceiling):
    """PGR; 1 = the student reaches its ceiling, 0 = it only matches its supervisor."""
    gap = ceiling - weak
    if is_concrete(gap) and float(jnp.abs(gap)) < 1e-12:
        raise ValueError("performance_gap_recovered: ceiling equals the weak performance (no gap)")
    return (weak_to_strong - weak) / gap
