"""The batch types every layer shares: what the data pipeline builds, the sampler and the
RL experience step fill in, and the losses consume. Plain pytrees, no maths; this module
imports nothing from the project, so data, tasks, losses, rollout and loops can all
import it without depending on each other.

Layout (see `data.batching`): a row is the prompt left-padded to P tokens followed by the
completion right-padded to C; `mask_BxT` marks real tokens and `completion_mask_BxT` the
completion's (the tokens a loss counts). Token arrays are token-aligned: position t holds
the quantity of generating x_t from x_<t.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

# Step labels of process supervision (PRM800K's three classes), and "no step here".
NEGATIVE, NEUTRAL, POSITIVE = 0, 1, 2
NO_STEP = -1


@struct.dataclass
class SFTBatch:
    """tokens_BxT: prompt then completion; mask_BxT: real tokens; completion_mask_BxT: the loss tokens."""

    tokens_BxT: jnp.ndarray
    mask_BxT: jnp.ndarray
    completion_mask_BxT: jnp.ndarray


@struct.dataclass
class PreferenceBatch:
    """Chosen and rejected sequences (prompt + completion, same T), their completion masks,
    the reference model's sequence log-probs (zeros for reference-free objectives), and
    tie_B: 1 where the labeller judged the pair equal (reward models' tie term; None: none)."""

    chosen_tokens_BxT: jnp.ndarray
    chosen_mask_BxT: jnp.ndarray
    chosen_completion_mask_BxT: jnp.ndarray
    rejected_tokens_BxT: jnp.ndarray
    rejected_mask_BxT: jnp.ndarray
    rejected_completion_mask_BxT: jnp.ndarray
    ref_chosen_logps_B: jnp.ndarray
    ref_rejected_logps_B: jnp.ndarray
    tie_B: jnp.ndarray | None = None


@struct.dataclass
class KTOBatch:
    """Unpaired completions with a desirable flag; kl_* hold mismatched (x, y') pairs."""

    tokens_BxT: jnp.ndarray
    mask_BxT: jnp.ndarray
    completion_mask_BxT: jnp.ndarray
    desirable_B: jnp.ndarray
    ref_logps_B: jnp.ndarray
    kl_tokens_BxT: jnp.ndarray
    kl_mask_BxT: jnp.ndarray
    kl_completion_mask_BxT: jnp.ndarray
    kl_ref_logps_B: jnp.ndarray


@struct.dataclass
class Scored:
    """Sampled completions with their scores: the input of the RL experience step.

    tokens_NxT / mask_NxT / completion_mask_NxT: prompt + completion, laid out as above;
    logps_NxC: the sampler's log pi_old of the C completion positions;
    scores_N: the reward r(x, y); ended_N: whether the completion emitted EOS;
    token_scores_NxT: r spread over the tokens where it arises (a process reward model's
    per-step rewards; they sum to scores_N), or None: all of r at the end.
    """

    tokens_NxT: jax.Array
    mask_NxT: jax.Array
    completion_mask_NxT: jax.Array
    logps_NxC: jax.Array
    scores_N: jax.Array
    ended_N: jax.Array
    token_scores_NxT: jax.Array | None = None


@struct.dataclass
class Rollout:
    """Sampled completions with everything the policy losses need. Rows are grouped by
    prompt: the k samples of prompt i are rows i*k .. i*k + k - 1.

    old_logps_BxT: log pi_old(x_t | x_<t) under the parameters that sampled (the sampler's
      own, or a training forward with rl.old_logps "forward"); ref_logps_BxT: under pi_ref.
    scores_B: the reward r(x, y) as shaped for training (noise, missing-EOS penalty).
    values_BxT: the critic's V(s_t) at sampling time (estimators with a critic), else None.
    An advantage estimator fills exactly one of advantages_B (one per completion: the
    REINFORCE family; RAFT's best-of-k weights) or advantages_BxT (per token: GAE), and
    returns_BxT when a critic learns from them. k: samples per prompt (static).
    """

    tokens_BxT: jax.Array
    mask_BxT: jax.Array
    completion_mask_BxT: jax.Array
    old_logps_BxT: jax.Array
    ref_logps_BxT: jax.Array
    scores_B: jax.Array
    values_BxT: jax.Array | None = None
    advantages_B: jax.Array | None = None
    advantages_BxT: jax.Array | None = None
    returns_BxT: jax.Array | None = None
    k: int = struct.field(pytree_node=False, default=1)

    @property
    def n_prompts(self) -> int:
        return self.tokens_BxT.shape[0] // self.k

    def token_advantages(self) -> jax.Array:
        """[B, T]: the per-token advantages, or each completion's A_i on all its tokens."""
        if self.advantages_BxT is not None:
            return self.advantages_BxT
        return self.advantages_B[:, None] * self.completion_mask_BxT.astype(self.advantages_B.dtype)
