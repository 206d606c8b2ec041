"""The KL-shaped reward and the advantage estimators of online RLHF, each registered as data.

Everything is a pure function of arrays. Token arrays use the token-aligned convention
of `Model.token_logps`: position t holds the quantity for generating token x_t from the
state s_t = x_<t, so `completion_mask_BxT` selects the actions. Rows are grouped by
prompt: the k samples of prompt i are rows i*k .. i*k + k - 1.

The KL-shaped reward (the RLOO paper, eq. 1):
    R(x, y) = r(x, y) - beta * log(pi(y|x) / pi_ref(y|x)).

An advantage estimator is one function registered with `register_estimator`: it gets the
KL-shaped rewards (one per completion for level "sequence" and "selection", per token for
"token") and returns the advantages. `estimate` is the one place that shapes the reward,
calls the estimator and whitens; the RL loop, the dry run and the tests all go through it.

    name            level      advantage                                   needs
    rloo            sequence   R_i - mean_{j != i} R_j over the prompt's k   k >= 2
    moving_average  sequence   R_i - b, b the running mean of past R         state
    grpo            sequence   (R_i - mean_k R) / (std_k R + eps)            k >= 2
    remax           sequence   R_i - R(greedy completion of the prompt)      a greedy rollout
    best_of_k       selection  1 on each prompt's best completion (RAFT)
    gae             token      GAE(gamma, lambda) on R_t and V(s_t)          a critic
    reward_to_go    token      sum_{i>=t} gamma^(i-t) R_i - V(s_t)           a critic
    rloo_to_go      token      sum_{u>=t} R_i,u - mean_{j != i} sum_u R_j,u  k >= 2

A token-level score (a process reward model's per-step rewards, `token_scores_BxT` of
`estimate`) arrives at the tokens it names instead of all on the last one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rlhf_jax.losses.common import check_same_shape, is_concrete, kl_per_token, masked_sum, whiten

LEVELS = ("sequence", "token", "selection")
NOISE_SCALES = ("absolute", "score_std", "flip")


def check_group(what: str, batch: int, k: int, min_k: int = 1) -> None:
    if k < min_k:
        raise ValueError(f"{what}: k={k} samples per prompt; needs k >= {min_k}")
    if batch % k:
        raise ValueError(f"{what}: k={k} does not divide the batch of {batch} rows")


def check_beta(beta) -> None:
    if is_concrete(beta) and float(np.min(np.asarray(beta))) < 0:  # numpy: no tracer under jit
        raise ValueError(f"beta={beta}: the KL coefficient must be >= 0")


def noisy_scores(scores_B, sigma: float, scale: str, key):
    """r + sigma * s * eps, eps ~ N(0, 1) per completion: the robustness sweeps' corrupted
    reward. s = 1 ("absolute") or the standard deviation of this batch's scores
    ("score_std": sigma is then in units of the reward's spread, as the RLOO paper's noise
    levels are); no gradient flows through s. "flip": a binary (verifiable) reward r in
    {0, 1} becomes 1 - r with probability sigma, each completion on its own."""
    if scale not in NOISE_SCALES:
        raise ValueError(f"reward noise scale {scale!r}: expected one of {NOISE_SCALES}")
    if not sigma:
        return scores_B
    if scale == "flip":
        flipped_B = jax.random.bernoulli(key, sigma, scores_B.shape)
        return jnp.where(flipped_B, 1.0 - scores_B, scores_B).astype(scores_B.dtype)
    s = jax.lax.stop_gradient(jnp.std(scores_B)) if scale == "score_std" else 1.0
    return scores_B + sigma * s * jax.random.normal(key, scores_B.shape, scores_B.dtype)


# ----------------------------------------------------------------------------- KL


def sequence_kl_reward(scores_B, logps_BxT, ref_logps_BxT, completion_mask_BxT, beta, estimator="k1"):
    """R = r - beta * sum_t kl_t over the completion: one reward per completion
    (REINFORCE, RLOO, RAFT, GRPO, ReMax). Returns (R_B, kl_B)."""
    check_beta(beta)
    kl_B = masked_sum(kl_per_token(logps_BxT, ref_logps_BxT, estimator), completion_mask_BxT, axis=-1)
    return scores_B - beta * kl_B, kl_B


def token_kl_rewards(
    scores_B, logps_BxT, ref_logps_BxT, completion_mask_BxT, beta, estimator="k1", token_scores_BxT=None
):
    """Per-token rewards R_t = -beta * kl_t, plus r(x, y) on the last completion token
    (PPO, Vanilla PG: the reward arrives at EOS). With token_scores_BxT (a score spread
    over tokens, e.g. per-step rewards), R_t = -beta * kl_t + s_t, and what r differs from
    sum_t s_t by (noise, penalties) on the last token. Returns (rewards_BxT, kl_BxT); 0
    outside the completion."""
    check_beta(beta)
    mask = completion_mask_BxT.astype(bool)
    kl_BxT = jnp.where(mask, kl_per_token(logps_BxT, ref_logps_BxT, estimator), 0.0)
    T = mask.shape[-1]
    last_B = T - 1 - jnp.argmax(mask[:, ::-1], axis=-1)
    at_last_BxT = jax.nn.one_hot(last_B, T, dtype=jnp.float32) * mask.any(-1, keepdims=True)
    if token_scores_BxT is None:
        return -beta * kl_BxT + at_last_BxT * scores_B[:, None], kl_BxT
    spread = jnp.where(mask, token_scores_BxT, 0.0)
    rest_B = scores_B - spread.sum(-1)
    return -beta * kl_BxT + spread + at_last_BxT * rest_B[:, None], kl_BxT


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


def rloo_to_go_advantages(rewards_BxT, mask_BxT, k: int):
    """Token-level leave-one-out: A_i,t = sum_{u>=t} R_i,u - (1/(k-1)) sum_{j != i} sum_u R_j,u,
    each token's return-to-go less the prompt's other samples' mean return (a baseline of
    the others only: unbiased). With every reward on the last token it is RLOO's A_i at
    each token of completion i."""
    check_group("rloo_to_go_advantages", rewards_BxT.shape[0], k, min_k=2)
    R = jnp.where(mask_BxT.astype(bool), rewards_BxT, 0.0)
    to_go_BxT = jnp.flip(jnp.cumsum(jnp.flip(R, -1), -1), -1)
    total_PxK = R.sum(-1).reshape(-1, k)
    baseline_B = ((total_PxK.sum(-1, keepdims=True) - total_PxK) / (k - 1)).reshape(-1)
    return jnp.where(mask_BxT.astype(bool), to_go_BxT - baseline_B[:, None], 0.0)


def reinforce_pp_advantages(rewards_BxT, mask_BxT, gamma: float = 1.0, eps: float = 1e-8):
    """REINFORCE++ (Hu 2025): no critic; each token's return-to-go G_t = sum_{u>=t} gamma^(u-t) R_u
    of the token-level rewards (the score at the last token, -beta KL at every token),
    normalised over all completion tokens of the batch: A_t = (G_t - mean) / std."""
    zeros = jnp.zeros_like(rewards_BxT)
    to_go_BxT, _ = gae(rewards_BxT, zeros, mask_BxT, gamma=gamma, lam=1.0)  # V = 0: A_t = G_t
    return whiten(to_go_BxT, mask_BxT, eps=eps)


def reinforce_pp_baseline_advantages(rewards_B, k: int, eps: float = 1e-8):
    """REINFORCE++-baseline (Hu 2025): A_i = R_i - mean of the prompt's k rewards, then
    (A - mean_batch) / std_batch over the whole batch."""
    check_group("reinforce_pp_baseline_advantages", rewards_B.shape[0], k, min_k=2)
    R_PxK = rewards_B.reshape(-1, k)
    centred_B = (R_PxK - R_PxK.mean(-1, keepdims=True)).reshape(-1)
    return whiten(centred_B, jnp.ones_like(centred_B), eps=eps)


def raft_weights(rewards_B, k: int):
    """1 on the best of each prompt's k completions (first on ties), 0 elsewhere."""
    check_group("raft_weights", rewards_B.shape[0], k)
    best_P = jnp.argmax(rewards_B.reshape(-1, k), axis=-1)
    return jax.nn.one_hot(best_P, k, dtype=jnp.float32).reshape(-1)


# ----------------------------------------------------------------------------- registry


@dataclasses.dataclass(frozen=True)
class AdvantageInputs:
    """What an estimator sees. rewards: the KL-shaped R_B (levels "sequence" and
    "selection") or R_BxT (level "token", the score on the last completion token);
    values_BxT: the critic's V(s_t) (estimators with critic=True), else None; baseline:
    the loop's moving-average state; greedy_rewards_P: the KL-shaped reward of each
    prompt's greedy completion (estimators with greedy_rollout=True), else None."""

    rewards: jax.Array
    completion_mask_BxT: jax.Array
    k: int
    values_BxT: jax.Array | None = None
    baseline: BaselineState | None = None
    greedy_rewards_P: jax.Array | None = None
    gamma: float = 1.0
    lam: float = 0.95
    baseline_decay: float | None = None


@dataclasses.dataclass(frozen=True)
class Advantages:
    """An estimator's output: advantages of its level's shape ([B] or [B, T]), the value
    targets when it uses a critic, and the new moving-average state when it keeps one."""

    advantages: jax.Array
    returns_BxT: jax.Array | None = None
    baseline: BaselineState | None = None


@dataclasses.dataclass(frozen=True)
class Estimator:
    """A registered advantage estimator: its function and what the loop must provide."""

    name: str
    fn: Callable[[AdvantageInputs], Advantages]
    level: str
    min_k: int = 1
    critic: bool = False
    greedy_rollout: bool = False


ESTIMATORS: dict[str, Estimator] = {}


def register_estimator(name: str, *, level: str, min_k: int = 1, critic: bool = False, greedy_rollout: bool = False):
    """Decorator: make `fn(AdvantageInputs) -> Advantages` the estimator `rl.advantage=name`."""
    if level not in LEVELS:
        raise ValueError(f"estimator {name!r}: level {level!r}, expected one of {LEVELS}")

    def add(fn):
        if name in ESTIMATORS:
            raise ValueError(f"advantage estimator {name!r} is registered already")
        ESTIMATORS[name] = Estimator(name, fn, level, min_k, critic, greedy_rollout)
        return fn

    return add


def estimator(name: str) -> Estimator:
    if name not in ESTIMATORS:
        raise ValueError(f"advantage estimator {name!r}: expected one of {tuple(ESTIMATORS)}")
    return ESTIMATORS[name]


@register_estimator("rloo", level="sequence", min_k=2)
def _rloo(x: AdvantageInputs) -> Advantages:
    """R_i - mean of the prompt's other k-1 rewards (leave-one-out; Ahmadian et al. 2024)."""
    return Advantages(rloo_advantages(x.rewards, x.k))


@register_estimator("moving_average", level="sequence")
def _moving_average(x: AdvantageInputs) -> Advantages:
    """R_i - mean of all past rewards (or an exponential average: rl.baseline_decay)."""
    advantages_B, baseline = reinforce_ma_advantages(x.rewards, x.baseline, x.baseline_decay)
    return Advantages(advantages_B, baseline=baseline)


@register_estimator("grpo", level="sequence", min_k=2)
def _grpo(x: AdvantageInputs) -> Advantages:
    """(R_i - group mean) / group std (Shao et al. 2024)."""
    return Advantages(grpo_advantages(x.rewards, x.k))


@register_estimator("remax", level="sequence", greedy_rollout=True)
def _remax(x: AdvantageInputs) -> Advantages:
    """R_i - R(greedy completion of the prompt) (Li et al. 2023)."""
    return Advantages(remax_advantages(x.rewards, x.greedy_rewards_P, x.k))


@register_estimator("dr_grpo", level="sequence", min_k=2)
def _dr_grpo(x: AdvantageInputs) -> Advantages:
    """R_i - group mean, not divided by the group's std (Dr. GRPO, Liu et al. 2025)."""
    return Advantages(grpo_advantages(x.rewards, x.k, scale=False))


@register_estimator("reinforce_pp", level="token")
def _reinforce_pp(x: AdvantageInputs) -> Advantages:
    """return-to-go of the KL-shaped token rewards, normalised over every token of the batch (REINFORCE++, Hu 2025)."""
    return Advantages(reinforce_pp_advantages(x.rewards, x.completion_mask_BxT, x.gamma))


@register_estimator("reinforce_pp_baseline", level="sequence", min_k=2)
def _reinforce_pp_baseline(x: AdvantageInputs) -> Advantages:
    """R_i - group mean, then normalised over the batch (REINFORCE++-baseline, Hu 2025)."""
    return Advantages(reinforce_pp_baseline_advantages(x.rewards, x.k))


@register_estimator("best_of_k", level="selection")
def _best_of_k(x: AdvantageInputs) -> Advantages:
    """1 on each prompt's best of k, 0 elsewhere (RAFT, Dong et al. 2023)."""
    return Advantages(raft_weights(x.rewards, x.k))


@register_estimator("gae", level="token", critic=True)
def _gae(x: AdvantageInputs) -> Advantages:
    """GAE(gamma, lambda) on per-token rewards against the critic V(s_t) (rl.gamma, rl.lam)."""
    advantages_BxT, returns_BxT = gae(x.rewards, x.values_BxT, x.completion_mask_BxT, x.gamma, x.lam)
    return Advantages(advantages_BxT, returns_BxT)


@register_estimator("reward_to_go", level="token", critic=True)
def _reward_to_go(x: AdvantageInputs) -> Advantages:
    """return-to-go - V(s_t): GAE with lambda = 1."""
    advantages_BxT, returns_BxT = vanilla_pg_advantages(x.rewards, x.values_BxT, x.completion_mask_BxT, x.gamma)
    return Advantages(advantages_BxT, returns_BxT)


@register_estimator("rloo_to_go", level="token", min_k=2)
def _rloo_to_go(x: AdvantageInputs) -> Advantages:
    """each token's return-to-go - mean return of the prompt's other k-1."""
    return Advantages(rloo_to_go_advantages(x.rewards, x.completion_mask_BxT, x.k))


@struct.dataclass
class Estimate:
    """`estimate`'s result: exactly one of advantages_B / advantages_BxT (by the level),
    returns_BxT with a critic, the new baseline state (None: the estimator keeps none),
    and per completion the total KL-shaped reward R_B and the KL estimate kl_B (metrics)."""

    advantages_B: jax.Array | None
    advantages_BxT: jax.Array | None
    returns_BxT: jax.Array | None
    baseline: BaselineState | None
    rewards_B: jax.Array
    kl_B: jax.Array


def estimate(
    name: str,
    scores_B,
    logps_BxT,
    ref_logps_BxT,
    completion_mask_BxT,
    *,
    beta,
    k: int,
    kl_estimator: str = "k1",
    values_BxT=None,
    baseline=None,
    greedy_rewards_P=None,
    gamma: float = 1.0,
    lam: float = 0.95,
    baseline_decay: float | None = None,
    whiten_advantages: bool = False,
    token_scores_BxT=None,
) -> Estimate:
    """The KL-shaped reward at the estimator's level, then its advantages. Whitening
    (whiten_advantages) standardises sequence advantages over the batch and token ones
    over the completion tokens; a selection (best_of_k's weights) is never whitened.
    token_scores_BxT: the score spread over tokens (`token_kl_rewards`; the sequence
    levels see only scores_B)."""
    est = estimator(name)
    check_group(name, scores_B.shape[0], k, est.min_k)
    if est.level == "token":
        rewards, kl_BxT = token_kl_rewards(
            scores_B, logps_BxT, ref_logps_BxT, completion_mask_BxT, beta, kl_estimator, token_scores_BxT
        )
        rewards_B, kl_B = rewards.sum(-1), kl_BxT.sum(-1)
    else:
        rewards, kl_B = sequence_kl_reward(scores_B, logps_BxT, ref_logps_BxT, completion_mask_BxT, beta, kl_estimator)
        rewards_B = rewards
    inputs = AdvantageInputs(rewards, completion_mask_BxT, k, values_BxT, baseline, greedy_rewards_P, gamma, lam,
                             baseline_decay)  # fmt: skip
    out = est.fn(inputs)
    adv = out.advantages
    if whiten_advantages and est.level == "sequence":
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    elif whiten_advantages and est.level == "token":
        adv = whiten(adv, completion_mask_BxT)
    per_token = est.level == "token"
    return Estimate(
        advantages_B=None if per_token else adv,
        advantages_BxT=adv if per_token else None,
        returns_BxT=out.returns_BxT,
        baseline=out.baseline,
        rewards_B=rewards_B,
        kl_B=kl_B,
    )
