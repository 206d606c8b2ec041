"""Supervised fine-tuning: negative log-likelihood of the completion.

    token mean:     L = -sum_{b,t} m_bt log pi(x_bt | x_b,<t) / sum_{b,t} m_bt
    sequence mean:  L = -(1/B) sum_b [sum_t m_bt log pi(x_bt | x_b,<t) / sum_t m_bt]
with m the completion mask (the prompt is masked out, TRL's `completion_only_loss`).

With a prompt weight w > 0 (OpenAI's `prompt_loss_weight`) the prompt's tokens count
too, each w times a completion token (token mean only):

    L = -sum_{b,t} (m_bt + w p_bt) log pi(x_bt | x_b,<t) / sum_{b,t} (m_bt + w p_bt)
with p the prompt tokens that have a predecessor. The reported `nll` stays the
completion's.
"""

from __future__ import annotations

import jax.numpy as jnp

from rlhf_jax.batches import SFTBatch
from rlhf_jax.losses.common import check_nonempty_rows, check_same_shape, masked_mean, sequence_mean

REDUCTIONS = ("token", "sequence")


def sft_objective(
    logps_BxT, completion_mask_BxT, reduction: str = "token", prompt_mask_BxT=None, prompt_weight: float = 0.0
):
    if reduction not in REDUCTIONS:
        raise ValueError(f"sft reduction {reduction!r}: expected one of {REDUCTIONS}")
    if prompt_weight < 0:
        raise ValueError(f"sft prompt_weight={prompt_weight}: must be >= 0")
    if prompt_weight > 0 and (reduction != "token" or prompt_mask_BxT is None):
        raise ValueError("sft prompt_weight > 0 needs reduction='token' and a prompt mask")
    check_same_shape("sft_objective", logps=logps_BxT, completion_mask=completion_mask_BxT)
    check_nonempty_rows("sft_objective", "completion_mask", completion_mask_BxT)
    if reduction == "token":
        nll = -masked_mean(logps_BxT, completion_mask_BxT)
    else:
        nll = -jnp.mean(sequence_mean(logps_BxT, completion_mask_BxT))
    loss = nll
    if prompt_weight > 0:
        weights_BxT = completion_mask_BxT.astype(jnp.float32) + prompt_weight * prompt_mask_BxT.astype(jnp.float32)
        loss = -jnp.sum(logps_BxT * weights_BxT) / jnp.maximum(jnp.sum(weights_BxT), 1e-9)
    n_tokens = jnp.sum(completion_mask_BxT.astype(jnp.float32))
    return loss, {"loss": loss, "nll": nll, "tokens": n_tokens}


def prompt_mask(mask_BxT, completion_mask_BxT):
    """Real prompt tokens that have a real predecessor (the first has no prediction)."""
    real = mask_BxT.astype(bool)
    has_prev = jnp.pad(real[:, :-1], ((0, 0), (1, 0)))
    return real & has_prev & ~completion_mask_BxT.astype(bool)


def sft_loss(params, batch: SFTBatch, model, reduction: str = "token", prompt_weight: float = 0.0):
    check_same_shape("sft batch", tokens=batch.tokens_BxT, mask=batch.mask_BxT, completion=batch.completion_mask_BxT)
    logps = model.token_logps(params, batch.tokens_BxT, batch.mask_BxT)
    prompts = prompt_mask(batch.mask_BxT, batch.completion_mask_BxT) if prompt_weight > 0 else None
    return sft_objective(logps, batch.completion_mask_BxT, reduction, prompts, prompt_weight)
