"""Rollouts, the KL-shaped reward and the advantage estimators of online RLHF.

Everything is a pure function of arrays. Token arrays use the token-aligned convention
of `Model.token_logps`: position t holds the quantity for generating token x_t from the
state s_t = x_<t, so `completion_mask_BxT` selects the actions. Rows are grouped by
prompt: the k samples of prompt i are rows i*k .. i*k + k - 1.

The KL-shaped reward (the RLOO paper, eq. 1):
    R(x, y) = r(x, y) - beta * log(pi(y|x) / pi_ref(y|x)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from rlhf_jax.losses.common import check_same_shape, is_concrete, masked_sum, whiten

KL_ESTIMATORS = ("k1", "k2", "k3")


@struct.dataclass
class Rollout:
    """A batch of sampled completions with everything the losses need.

    tokens_BxT: prompt (left-padded) then completion (right-padded); mask_BxT: real tokens.
    completion_mask_BxT: the completion's tokens up to and including the first EOS.
    old_logps_BxT: log pi_old(x_t | x_<t), recomputed by a training forward (not the
      sampler's, whose numerics may differ); ref_logps_BxT: the same under pi_ref.
    values_BxT: the critic's V(s_t) (PPO / Vanilla PG; zeros otherwise).
    scores_B: the reward model's r(x, y). k: samples per prompt (static).
    advantages / returns: filled by an estimator (per row [B] or per token [B, T]).
    """

    tokens_BxT: jax.Array
    mask_BxT: jax.Array
    completion_mask_BxT: jax.Array
    old_logps_BxT: jax.Array
    ref_logps_BxT: jax.Array
    scores_B: jax.Array
    values_BxT: jax.Array | None = None
    advantages: jax.Array | None = None
    returns_BxT: jax.Array | None = None
    k: int = struct.field(pytree_node=False, default=1)

    @property
    def n_prompts(self) -> int:
        return self.tokens_BxT.shape[0] // self.k


def check_group(what: str, batch: int, k: int, min_k: int = 1) -> None:
    if k < min_k:
        raise ValueError(f"{what}: k={k} samples per prompt; needs k >= {min_k}")
    if batch % k:
        raise ValueError(f"{what}: k={k} does not divide the batch of {batch} rows")


def check_beta(beta) -> None:
    if is_concrete(beta) and float(jnp.min(jnp.asarray(beta))) < 0:
        raise ValueError(f"beta={beta}: the KL coefficient must be >= 0")


# ----------------------------------------------------------------------------- KL


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


def sequence_kl_reward(scores_B, logps_BxT, ref_logps_BxT, completion_mask_BxT, beta, estimator="k1"):
    """R = r - beta * sum_t kl_t over the completion: one reward per completion
    (REINFORCE, RLOO, RAFT, GRPO, ReMax). Returns (R_B, kl_B)."""
    check_beta(beta)
    kl_B = masked_sum(kl_per_token(logps_BxT, ref_logps_BxT, estimator), completion_mask_BxT, axis=-1)
    return scores_B - beta * kl_B, kl_B


def token_kl_rewards(scores_B, logps_BxT, ref_logps_BxT, completion_mask_BxT, beta, estimator="k1"):
    """Per-token rewards R_t = -beta * kl_t, plus r(x, y) on the last completion token
    (PPO, Vanilla PG: the reward arrives at EOS). Returns (rewards_BxT, kl_BxT); 0 outside."""
    check_beta(beta)
    mask = completion_mask_BxT.astype(bool)
    kl_BxT = jnp.where(mask, kl_per_token(logps_BxT, ref_logps_BxT, estimator), 0.0)
    T = mask.shape[-1]
    last_B = T - 1 - jnp.argmax(mask[:, ::-1], axis=-1)
    at_last_BxT = jax.nn.one_hot(last_B, T, dtype=jnp.float32) * mask.any(-1, keepdims=True)
    return -beta * kl_BxT + at_last_BxT * scores_B[:, None], kl_BxT


def adaptive_beta(beta, observed_kl, n_steps, target_kl: float, horizon: float):
    """Ziegler et al.'s proportional controller towards a target KL:
    beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n_steps / horizon)."""
    error = jnp.clip(observed_kl / target_kl - 1.0, -0.2, 0.2)
    return beta * (1.0 + error * n_steps / horizon)


# ----------------------------------------------------------------------------- advantages


@struct.dataclass
class BaselineState:
    """Moving-average baseline of REINFORCE: its mean and the number of rewards seen."""

    mean: jax.Array
    count: jax.Array

    @classmethod
    def init(cls) -> BaselineState:
        return cls(mean=jnp.zeros((), jnp.float32), count=jnp.zeros((), jnp.float32))


def reinforce_ma_advantages(rewards_B, state: BaselineState, decay: float | None = None):
    """A = R - b with b the moving average of all past rewards (RLOO paper eq. 8,
    b = (1/S) sum_s R_s), or an exponential one with `decay`. The baseline is the one
    from before this batch, so A stays unbiased. Returns (A_B, new_state)."""
    advantages_B = rewards_B - state.mean
    n = rewards_B.shape[0]
    batch_mean = jnp.mean(rewards_B)
    if decay is None:
        count = state.count + n
        mean = state.mean + (batch_mean - state.mean) * n / count
    else:
        count = state.count + n
        mean = jnp.where(state.count > 0, decay * state.mean + (1 - decay) * batch_mean, batch_mean)
    return advantages_B, BaselineState(mean=mean, count=count)


def rloo_advantages(rewards_B, k: int):
    """Leave-one-out: A_i = R_i - (1/(k-1)) sum_{j != i} R_j within each prompt's k samples."""
    check_group("rloo_advantages", rewards_B.shape[0], k, min_k=2)
    R_PxK = rewards_B.reshape(-1, k)
    baseline_PxK = (R_PxK.sum(-1, keepdims=True) - R_PxK) / (k - 1)
    return (R_PxK - baseline_PxK).reshape(-1)


def grpo_advantages(rewards_B, k: int, scale: bool = True, eps: float = 1e-4):
    """GRPO group normalisation: A_i = (R_i - mean_group) / (std_group + eps), the standard
    deviation with Bessel's correction as TRL computes it (scale=False: centring only)."""
    check_group("grpo_advantages", rewards_B.shape[0], k, min_k=2)
    R_PxK = rewards_B.reshape(-1, k)
    centred = R_PxK - R_PxK.mean(-1, keepdims=True)
    if scale:
        centred = centred / (jnp.std(R_PxK, axis=-1, ddof=1, keepdims=True) + eps)
    return centred.reshape(-1)


def remax_advantages(rewards_B, greedy_rewards_P, k: int = 1):
    """ReMax: A = R(y) - R(y_greedy), the greedy completion's reward of the same prompt."""
    check_group("remax_advantages", rewards_B.shape[0], k)
    if greedy_rewards_P.shape[0] * k != rewards_B.shape[0]:
        raise ValueError(
            f"remax_advantages: {greedy_rewards_P.shape[0]} greedy rewards for {rewards_B.shape[0]} rows with k={k}"
        )
    return rewards_B - jnp.repeat(greedy_rewards_P, k)


def gae(rewards_BxT, values_BxT, mask_BxT, gamma: float = 1.0, lam: float = 0.95, whiten_advantages=False):
    """Generalised advantage estimation by a reverse scan over the completion tokens:
        delta_t = R_t + gamma * V_{t+1} - V_t,   A_t = delta_t + gamma * lam * A_{t+1},
    with V and A zero past the last token. Returns (advantages_BxT, returns_BxT = A + V),
    both 0 outside the mask. lam = 1, gamma = 1: return-to-go minus V; lam = 0: delta_t.
    """
    check_same_shape("gae", rewards=rewards_BxT, values=values_BxT, mask=mask_BxT)
    m = mask_BxT.astype(jnp.float32)
    r, v = rewards_BxT * m, values_BxT * m
    next_v = jnp.pad(v[:, 1:], ((0, 0), (0, 1)))
    next_m = jnp.pad(m[:, 1:], ((0, 0), (0, 1)))
    delta_BxT = r + gamma * next_v * next_m - v

    def step(carry_B, xs):
        delta_B, next_m_B = xs
        adv_B = delta_B + gamma * lam * next_m_B * carry_B
        return adv_B, adv_B

    _, adv_TxB = jax.lax.scan(step, jnp.zeros_like(delta_BxT[:, 0]), (delta_BxT.T, next_m.T), reverse=True)
    advantages_BxT = adv_TxB.T * m
    returns_BxT = (advantages_BxT + v) * m
    if whiten_advantages:
        advantages_BxT = whiten(advantages_BxT, mask_BxT)
    return advantages_BxT, returns_BxT


def vanilla_pg_advantages(rewards_BxT, values_BxT, mask_BxT, gamma: float = 1.0):
    """Vanilla PG: the return sum_{i>=t} gamma^(i-t) R_i minus the learned baseline b(s_t)
    (GAE with lambda = 1). Returns (advantages_BxT, returns_BxT)."""
    return gae(rewards_BxT, values_BxT, mask_BxT, gamma=gamma, lam=1.0)
