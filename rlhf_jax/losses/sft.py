"""Supervised fine-tuning: negative log-likelihood of the completion only.

    token mean:     L = -sum_{b,t} m_bt log pi(x_bt | x_b,<t) / sum_{b,t} m_bt
    sequence mean:  L = -(1/B) sum_b [sum_t m_bt log pi(x_bt | x_b,<t) / sum_t m_bt]
with m the completion mask (the prompt is masked out).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct

from rlhf_jax.losses.common import check_nonempty_rows, check_same_shape, masked_mean, sequence_mean

REDUCTIONS = ("token", "sequence")


@struct.dataclass
class SFTBatch:
    """tokens_BxT: prompt then completion; mask_BxT: real tokens; completion_mask_BxT: the loss tokens."""

    tokens_BxT: jnp.ndarray
    mask_BxT: jnp.ndarray
    completion_mask_BxT: jnp.ndarray


def sft_objective(logps_BxT, completion_mask_BxT, reduction: str = "token"):
    if reduction not in REDUCTIONS:
        raise ValueError(f"sft reduction {reduction!r}: expected one of {REDUCTIONS}")
    check_same_shape("sft_objective", logps=logps_BxT, completion_mask=completion_mask_BxT)
    check_nonempty_rows("sft_objective", "completion_mask", completion_mask_BxT)
    if reduction == "token":
        nll = -masked_mean(logps_BxT, completion_mask_BxT)
    else:
        nll = -jnp.mean(sequence_mean(logps_BxT, completion_mask_BxT))
    n_tokens = jnp.sum(completion_mask_BxT.astype(jnp.float32))
    return nll, {"loss": nll, "nll": nll, "tokens": n_tokens}


def sft_loss(params, batch: SFTBatch, model, reduction: str = "token"):
    check_same_shape("sft batch", tokens=batch.tokens_BxT, mask=batch.mask_BxT, completion=batch.completion_mask_BxT)
    logps = model.token_logps(params, batch.tokens_BxT, batch.mask_BxT)
    return sft_objective(logps, batch.completion_mask_BxT, reduction)
