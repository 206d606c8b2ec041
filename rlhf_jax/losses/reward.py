"""Reward-model objectives: Bradley-Terry pairs, outcome (ORM) and process (PRM) labels,
and the ways a trained RM ranks candidates (PRM aggregation, best-of-N, majority vote).

    Bradley-Terry   L = -log sigma(r+ - r- - m) + c * (r+ + r-)^2      (margin m, centring c)
    ORM             L = BCE(sigmoid(r), y),  y = 1 if the final answer is correct
    PRM             L = CE(step_logits, label) over the steps, labels PRM800K-style:
                    0 = negative, 1 = neutral, 2 = positive (-1 = no step)
    PRM score       product_s p_s or min_s p_s, p_s = P(step s is good)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.batches import NEUTRAL, NO_STEP, POSITIVE
from rlhf_jax.losses.common import check_labels, check_same_shape, masked_mean


def bradley_terry_objective(r_chosen_B, r_rejected_B, margin_B=None, center_coef: float = 0.0, tie_B=None,
                            tie_strength: float = 1.0):  # fmt: skip
    """-log sigmoid(r_c - r_r - m) (Bradley and Terry 1952), averaged; + center_coef
    (r_c + r_r)^2 keeps the rewards centred.

    With ties (`tie_B` 1 where the labeller judged the pair equal, chosen / rejected then in
    no order), Davidson's (1970) model with nu = tie_strength > 0: with d = r_c - r_r,

        P(c > r) = 1 / (1 + e^-d + nu e^(-d/2)),   P(tie) = nu / (2 cosh(d/2) + nu),

    so -log P(c > r) = log(2 cosh(d/2) + nu) - d/2 and -log P(tie) = log(2 cosh(d/2) + nu)
    - log nu: a tie pulls the two rewards together, and nu -> 0 is Bradley-Terry. Accuracy
    is over the pairs that are not ties."""
    check_same_shape("bradley_terry_objective", r_chosen=r_chosen_B, r_rejected=r_rejected_B)
    diff = r_chosen_B - r_rejected_B
    if margin_B is not None:
        diff = diff - margin_B
    if tie_B is None:
        per_pair = -jax.nn.log_sigmoid(diff)
        decided = jnp.ones_like(diff)
    else:
        if margin_B is not None or not tie_strength > 0:
            raise ValueError("bradley_terry_objective: ties take tie_strength > 0 and no margin")
        check_same_shape("bradley_terry_objective", r_chosen=r_chosen_B, tie=tie_B)
        half = 0.5 * diff
        log_norm = jnp.logaddexp(jnp.logaddexp(half, -half), jnp.log(tie_strength))  # log(2 cosh(d/2) + nu)
        per_pair = log_norm - jnp.where(tie_B > 0, jnp.log(tie_strength), half)
        decided = 1.0 - tie_B
    loss = jnp.mean(per_pair)
    if center_coef:
        loss = loss + center_coef * jnp.mean(jnp.square(r_chosen_B + r_rejected_B))
    right = (r_chosen_B > r_rejected_B).astype(jnp.float32) * decided
    metrics = {
        "loss": loss,
        "accuracy": jnp.sum(right) / jnp.maximum(jnp.sum(decided), 1.0),
        "margin": jnp.mean(r_chosen_B - r_rejected_B),
        "reward_mean": jnp.mean(0.5 * (r_chosen_B + r_rejected_B)),
    }
    if tie_B is not None:
        metrics["ties"] = jnp.mean(tie_B)
    return loss, metrics


def orm_objective(logits_B, labels_B, class_weights=None):
    """Binary cross-entropy of the outcome label on the RM's logit; with class_weights
    (w_wrong, w_right) the weighted mean sum_i w_{y_i} ce_i / sum_i w_{y_i} (balanced
    classes: w_c proportional to 1 / n_c, `class_balance_weights`)."""
    check_same_shape("orm_objective", logits=logits_B, labels=labels_B)
    check_labels("orm_objective", "labels", labels_B, 2)
    y = labels_B.astype(jnp.float32)
    ce_B = -(y * jax.nn.log_sigmoid(logits_B) + (1 - y) * jax.nn.log_sigmoid(-logits_B))
    if class_weights is None:
        loss = jnp.mean(ce_B)
    else:
        w_B = jnp.asarray(class_weights, jnp.float32)[labels_B]
        loss = jnp.sum(w_B * ce_B) / jnp.maximum(jnp.sum(w_B), 1e-12)
    accuracy = jnp.mean(((logits_B > 0) == (y > 0.5)).astype(jnp.float32))
    return loss, {"loss": loss, "accuracy": accuracy}


def prm_objective(step_logits_BxSx3, step_labels_BxS, class_weights=None):
    """Cross-entropy of each step's 3-class label; steps labelled NO_STEP are ignored; with
    class_weights (negative, neutral, positive) the weighted mean over the labelled steps."""
    if step_logits_BxSx3.shape[:-1] != step_labels_BxS.shape or step_logits_BxSx3.shape[-1] != 3:
        raise ValueError(
            f"prm_objective: step_logits{tuple(step_logits_BxSx3.shape)} must be step_labels"
            f"{tuple(step_labels_BxS.shape)} + (3,)"
        )
    check_labels("prm_objective", "step_labels", step_labels_BxS, 3, ignore=NO_STEP)
    valid = step_labels_BxS != NO_STEP
    logp = jax.nn.log_softmax(step_logits_BxSx3.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, jnp.maximum(step_labels_BxS, 0)[..., None], axis=-1)[..., 0]
    if class_weights is None:
        loss = -masked_mean(picked, valid)
    else:
        w = jnp.asarray(class_weights, jnp.float32)[jnp.maximum(step_labels_BxS, 0)] * valid
        loss = -jnp.sum(w * picked) / jnp.maximum(jnp.sum(w), 1e-12)
    accuracy = masked_mean((jnp.argmax(logp, -1) == step_labels_BxS).astype(jnp.float32), valid)
    return loss, {"loss": loss, "step_accuracy": accuracy, "steps": valid.sum()}


def prm_step_probs(step_logits_BxSx3, neutral_is_good: bool = False):
    """P(step is good): the positive class, plus neutral if neutral_is_good (PRM800K's
    two readings of a neutral step)."""
    probs = jax.nn.softmax(step_logits_BxSx3.astype(jnp.float32), axis=-1)
    return probs[..., POSITIVE] + (probs[..., NEUTRAL] if neutral_is_good else 0.0)


def prm_aggregate(step_probs_BxS, valid_BxS, how: str = "product"):
    """A solution's score from its steps: product_s p_s or min_s p_s over the valid steps."""
    valid = valid_BxS.astype(bool)
    if how == "product":
        return jnp.exp(jnp.sum(jnp.where(valid, jnp.log(jnp.maximum(step_probs_BxS, 1e-30)), 0.0), axis=-1))
    if how == "min":
        return jnp.min(jnp.where(valid, step_probs_BxS, 1.0), axis=-1)
    raise ValueError(f"prm aggregation {how!r}: expected 'product' or 'min'")


def best_of_n(scores_PxN):
    """Index of the best-scored of each prompt's N candidates (reranking by an RM)."""
    return jnp.argmax(scores_PxN, axis=-1)


def majority_vote(answers_PxN, weights_PxN=None) -> np.ndarray:
    """Per prompt, the answer given most often (or with the most total weight, e.g. RM
    scores: weighted majority); ties go to the answer seen first. Host-side (answers may
    be any hashable value)."""
    answers = np.asarray(answers_PxN, dtype=object)
    weights = np.ones(answers.shape) if weights_PxN is None else np.asarray(weights_PxN, np.float64)
    winners = []
    for row, w in zip(answers, weights, strict=True):
        totals: dict = {}
        for a, wi in zip(row, w, strict=True):
            totals[a] = totals.get(a, 0.0) + wi
        winners.append(max(totals, key=lambda a: (totals[a], -list(totals).index(a))))
    return np.asarray(winners, dtype=object)


# ----------------------------------------------------------------------------- with a model


def pair_loss(params, batch, model, margin_B=None, center_coef: float = 0.0, tie_strength: float = 1.0):
    """Bradley-Terry on a scalar-head model (Davidson's ties where `batch.tie_B` has any);
    `batch` has chosen_/rejected_ tokens_BxT and mask_BxT (same T); both halves go through
    one forward."""
    check_same_shape("reward pair batch", chosen=batch.chosen_tokens_BxT, rejected=batch.rejected_tokens_BxT)
    tokens = jnp.concatenate([batch.chosen_tokens_BxT, batch.rejected_tokens_BxT])
    mask = jnp.concatenate([batch.chosen_mask_BxT, batch.rejected_mask_BxT])
    r_chosen, r_rejected = jnp.split(model.rewards(params, tokens, mask), 2)
    return bradley_terry_objective(r_chosen, r_rejected, margin_B, center_coef, batch.tie_B, tie_strength)


def class_balance_weights(labels, n_classes: int, max_ratio: float = 10.0) -> tuple[float, ...]:
    """w_c = n / (n_classes n_c) over the labels given (NO_STEP left out; a class absent
    gets 0): each class then carries the same total weight (King and Zeng 2001's
    inverse-frequency weighting), except that no weight exceeds max_ratio times the
    smallest: a class seen a handful of times (2 neutral steps among 3,800, a generator
    that seldom restates) would otherwise weigh a thousand times the others, and one such
    step would make a batch's whole loss."""
    labels = np.asarray(labels).ravel()
    labels = labels[labels != NO_STEP]
    counts = np.bincount(labels, minlength=n_classes)[:n_classes].astype(np.float64)
    w = [len(labels) / (n_classes * c) if c else 0.0 for c in counts]
    cap = max_ratio * min((x for x in w if x), default=0.0)
    return tuple(float(min(x, cap)) for x in w)


def orm_loss(params, tokens_BxT, mask_BxT, labels_B, model, class_weights=None):
    return orm_objective(model.rewards(params, tokens_BxT, mask_BxT), labels_B, class_weights)


def prm_step_logits(params, tokens_BxT, mask_BxT, step_positions_BxS, label_token_ids, model):
    """An LM as a PRM: at each step separator, the logits of the three label tokens
    (negative, neutral, positive), as PRM800K / Math-Shepherd fine-tune a causal LM."""
    logits_BxTxV = model.logits(params, tokens_BxT, mask_BxT)
    at_steps_BxSxV = jnp.take_along_axis(logits_BxTxV, jnp.maximum(step_positions_BxS, 0)[..., None], axis=1)
    return at_steps_BxSxV[..., jnp.asarray(label_token_ids)]


def prm_loss(params, tokens_BxT, mask_BxT, step_positions_BxS, step_labels_BxS, label_token_ids, model,
             class_weights=None):  # fmt: skip
    logits = prm_step_logits(params, tokens_BxT, mask_BxT, step_positions_BxS, label_token_ids, model)
    return prm_objective(logits, step_labels_BxS, class_weights)
