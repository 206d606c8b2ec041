"""Online RL from a reward model (train.kind "rl"): any advantage estimator of `rollout.py`
with any policy objective of `losses/policy.py` that accepts its advantages.

One iteration i:
  1. draw rollout_batch // k prompts, sample k completions each at the policy's
     temperature (compiled `Sampler`, key fold_in(seed, i)), with their log-probs;
  2. score them: r = RM(x, y), a process reward model's reading of the completion's
     steps (rl.prm_reading; "steps": r spread over the steps' last tokens) or the task's
     gold judge, plus optional Gaussian noise (robustness sweeps) and a missing-EOS penalty;
  3. one compiled `experience` step: log pi_ref by a training forward (log pi_old is the
     sampler's, or another forward with rl.old_logps "forward"),
     the critic's V(s_t) (PPO, Vanilla PG), the KL-shaped reward
         R(x, y) = r(x, y) - beta * sum_t kl_t        (sequence level: REINFORCE family, RAFT)
         R_t = -beta * kl_t  (+ r on the last token)  (token level: PPO, Vanilla PG)
     and the estimator's advantages (RLOO leave-one-out, moving-average baseline, GRPO,
     ReMax's greedy baseline, RAFT's best-of-k weights, GAE, returns minus V);
  4. `updates_per_batch` shuffled passes over the rollout in minibatches, all scanned in
     one compiled program that donates the train state.
The loop state (data position, KL coefficient, baseline) is checkpointed with the
parameters, so a resumed run continues bit-for-bit.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import mesh as mesh_lib
from rlhf_jax import rollout as rl_math
from rlhf_jax import rollout_corrections as corrections
from rlhf_jax.batches import Rollout, Scored
from rlhf_jax.data import batching
from rlhf_jax.data.tokenizer import completion_texts
from rlhf_jax.eval.verifiers import PRMJudge, step_char_ends, token_of_chars
from rlhf_jax.experiment import ExperimentConfig, RLSection
from rlhf_jax.loops.common import Loop, build_model, held_out_report, load_scalar, scalar_from_lm, with_adapters
from rlhf_jax.losses import policy as policy_losses
from rlhf_jax.losses.common import masked_sum
from rlhf_jax.models import lora
from rlhf_jax.models.hf import load_hf
from rlhf_jax.models.transformer import param_shardings, run_as, with_dtype
from rlhf_jax.sampling import Sampler, SamplingConfig
from rlhf_jax.train_step import (
    init_state,
    jit_donating,
    make_optimizer,
    make_schedule,
    state_shardings,
    train_step_fn,
)
from rlhf_jax.workdir import checkpoint_dir


@dataclasses.dataclass
class RLProgress:
    """The loop state saved beside the parameters: data position, beta, baseline."""

    loader: batching.Loader
    beta: jax.Array
    baseline: rl_math.BaselineState

    def state(self) -> dict:
        return {
            "loader": self.loader.state(),
            "beta": float(self.beta),
            "baseline": [float(self.baseline.mean), float(self.baseline.count)],
        }

    def restore(self, state: dict) -> None:
        self.loader.restore(state["loader"])
        self.beta = jnp.float32(state["beta"])
        mean, count = state["baseline"]
        self.baseline = rl_math.BaselineState(mean=jnp.float32(mean), count=jnp.float32(count))


def make_loss(rl: RLSection, policy, critic, completion_len: int = 0):
    """loss(params, rollout) of rl's policy objective; params = {"policy", "value"} with a
    critic. completion_len > 0: completions fill the last completion_len positions (log-probs
    only there)."""
    cfg = rl.loss_config(completion_len)
    return functools.partial(policy_losses.policy_loss, cfg=cfg, model=policy, value_model=critic)


def make_experience(rl: RLSection, k: int, policy, critic, completion_len: int = 0):
    """The compiled scoring step: (params, ref_params, scored, greedy, beta, baseline, key)
    -> (Rollout, new baseline, metrics), with rl's advantage estimator (`rollout.estimate`).
    `scored`: the k samples per prompt (`batches.Scored`); `greedy`: one greedy completion
    per prompt for an estimator with a greedy rollout (ReMax), else None. log pi_old is the
    sampler's (rl.old_logps "sampler") or a training forward's ("forward").
    completion_len as in `make_loss`."""
    temperature = rl.temperature  # (T is a sequence length elsewhere)

    overlong = rl.overlong_tokens(completion_len) if completion_len else 0

    flip = rl.reward_noise_scale == "flip"  # flips the verifier's 0 / 1, before any shaping

    def shaped_scores(scores_B, ended_B, cmask_BxT, key):
        if flip:
            scores_B = rl_math.noisy_scores(scores_B, rl.reward_noise, "flip", key)
        r = scores_B - rl.missing_eos_penalty * (1.0 - ended_B.astype(jnp.float32))
        if overlong:  # DAPO's soft penalty over the last `overlong` tokens of the limit
            r = r + corrections.overlong_penalty(cmask_BxT.sum(-1), completion_len, overlong)
        return r if flip else rl_math.noisy_scores(r, rl.reward_noise, rl.reward_noise_scale, key)

    trainer_forward = rl.old_logps == "forward" or rl.is_correction != "none"

    def sampler_logps(s: Scored):
        """[N, T] token-aligned: the sampler's completion log-probs after zeros for the prompt."""
        return jnp.pad(s.logps_NxC, ((0, 0), (s.tokens_NxT.shape[1] - s.logps_NxC.shape[1], 0)))

    def old_logps(policy_params, s: Scored):
        if trainer_forward:
            return policy.token_logps(policy_params, s.tokens_NxT, s.mask_NxT, temperature, completion_len)
        return sampler_logps(s)

    def experience(params, ref_params, scored: Scored, greedy: Scored | None, beta, baseline, key):
        policy_params = params["policy"] if critic is not None else params
        tokens, mask, cmask = scored.tokens_NxT, scored.mask_NxT, scored.completion_mask_NxT
        old = old_logps(policy_params, scored)
        ref = policy.token_logps(ref_params, tokens, mask, temperature, completion_len)
        noise_key, greedy_key = jax.random.split(key)
        r_B = shaped_scores(scored.scores_N, scored.ended_N, cmask, noise_key)
        values = None
        if critic is not None:
            values = policy_losses.aligned_values(critic, params["value"], tokens, mask) * cmask
        greedy_R = None
        if rl.estimator.greedy_rollout:
            g_old = old_logps(policy_params, greedy)
            g_ref = policy.token_logps(ref_params, greedy.tokens_NxT, greedy.mask_NxT, temperature, completion_len)
            g_r = shaped_scores(greedy.scores_N, greedy.ended_N, greedy.completion_mask_NxT, greedy_key)
            greedy_R, _ = rl_math.sequence_kl_reward(
                g_r, g_old, g_ref, greedy.completion_mask_NxT, beta, rl.kl_estimator
            )
        est = rl_math.estimate(
            rl.estimator.name, r_B, old, ref, cmask, beta=beta, k=k, kl_estimator=rl.kl_estimator,
            values_BxT=values, baseline=baseline, greedy_rewards_P=greedy_R, gamma=rl.gamma, lam=rl.lam,
            baseline_decay=rl.baseline_decay or None, whiten_advantages=rl.whiten_advantages,
            token_scores_BxT=scored.token_scores_NxT,
        )  # fmt: skip
        advantages_B, advantages_BxT, is_metrics = est.advantages_B, est.advantages_BxT, {}
        if trainer_forward:  # both log-probs exist: the gap, and the correction when asked
            sampled = sampler_logps(scored)
            is_metrics = corrections.sampler_mismatch(old, sampled, cmask)
        if rl.is_correction != "none":
            w, more = corrections.importance_weights(old, sampled, cmask, rl.is_correction, rl.is_cap)
            is_metrics.update(more)
            if w.ndim == 1:  # per sequence: scales either kind of advantage
                advantages_B = None if advantages_B is None else advantages_B * w
                advantages_BxT = None if advantages_BxT is None else advantages_BxT * w[:, None]
            else:  # per token: the objective takes token advantages (checked by RLSection)
                token = advantages_BxT if advantages_BxT is not None else advantages_B[:, None] * cmask
                advantages_B, advantages_BxT = None, token * w
        loss_mask = cmask * scored.ended_N[:, None].astype(cmask.dtype) if rl.overlong_filter else cmask
        rollout = Rollout(
            tokens_BxT=tokens,
            mask_BxT=mask,
            completion_mask_BxT=loss_mask,  # overlong_filter: truncated completions out of the loss
            old_logps_BxT=old,
            ref_logps_BxT=ref,
            scores_B=r_B,
            values_BxT=values,
            advantages_B=advantages_B,
            advantages_BxT=advantages_BxT,
            returns_BxT=est.returns_BxT,
            k=k,
        )
        lengths = cmask.sum(-1).astype(jnp.float32)
        metrics = {
            "score": scored.scores_N.mean(),
            "score_std": scored.scores_N.std(),
            "reward": est.rewards_B.mean(),
            "kl": est.kl_B.mean(),
            "kl_k1": masked_sum(old - ref, cmask, axis=-1).mean(),
            "beta": beta,
            "length": lengths.mean(),
            "ended": scored.ended_N.astype(jnp.float32).mean(),
            **is_metrics,
        }
        if est.baseline is not None:
            metrics["baseline"], baseline = est.baseline.mean, est.baseline
        return rollout, baseline, metrics

    return jax.jit(experience)


def make_update(step, shardings):
    """All minibatch steps of one rollout in one program: scan over order [S, M] (row
    indices of each minibatch); returns the state and the metrics averaged over steps."""

    def update(state, rollout, order_SxM):
        def body(state, rows_M):
            return step(state, jax.tree.map(lambda x: x[rows_M], rollout))

        state, metrics = jax.lax.scan(body, state, order_SxM)
        finite = metrics.pop("finite").min()  # every step's state, not their average
        return state, {**jax.tree.map(lambda m: m.mean(0), metrics), "finite": finite}

    return jit_donating(update, shardings, (None, None))


def minibatch_order(rl: RLSection, seed: int, iteration: int) -> np.ndarray:
    """[updates_per_batch * n_minibatches, minibatch] row indices: a fresh shuffle per pass."""
    rng = np.random.default_rng([seed, iteration, 7])
    passes = [rng.permutation(rl.rollout_batch) for _ in range(rl.updates_per_batch)]
    return np.concatenate(passes).reshape(-1, rl.minibatch).astype(np.int32)


class Scorer:
    """The training reward r(x, y) of sampled completions: a reward model (compiled), a
    process reward model read as `prm_reading` (on the decoded text: `eval.verifiers`),
    or the task's gold judge (host, on the decoded text). `gold` gives the gold judge's
    scores (a metric) where the task has one, else None."""

    def __init__(self, data, rm=None, rm_params=None, prm_reading: str = ""):
        self.data, self.rm, self.rm_params, self.prm_reading = data, rm, rm_params, prm_reading
        if data.task.judge is None and rm is None:
            raise ValueError(f"rl.reward_model=gold: task {data.task.name} has no gold judge; name a reward model")
        self._rm_fn = jax.jit(rm.rewards) if rm is not None and not prm_reading else None
        if prm_reading:
            self.judge = PRMJudge(rm, rm_params, data.tokenizer, data.P, data.C, batch=64)

    def gold(self, samples, rows, split: str = "train") -> np.ndarray | None:
        """rows: the encoded row of each sample."""
        if self.data.task.judge is None:
            return None
        return self.data.gold(rows, self.data.texts(samples.tokens, samples.mask), split).astype(np.float32)

    def __call__(self, samples, sequences, rows, split: str = "train"):
        """(scores [N] as a device or host array, gold scores [N] on the host or None,
        token scores [N, T] or None)."""
        gold = self.gold(samples, rows, split)
        if self.rm is None:
            return gold, gold, None
        tokens, mask, _ = sequences
        if not self.prm_reading:
            return self._rm_fn(self.rm_params, tokens, mask), gold, None
        texts, ids = completion_texts(self.data.tokenizer, mesh_lib.to_host(samples.tokens),
                                      mesh_lib.to_host(samples.mask))  # fmt: skip
        prompts = [self.data.row(int(r), split)["prompt"] for r in rows]
        out = self.judge(prompts, texts)
        if self.prm_reading != "steps":
            return out[self.prm_reading].astype(np.float32), gold, None
        return out["product"].astype(np.float32) - 1.0, gold, self.spread(out, texts, ids, tokens.shape[1])

    def spread(self, judged: dict, texts: list[str], ids: list[list[int]], T: int) -> np.ndarray:
        """[N, T] each step's reward at the sampled token that ends the step (completion
        tokens start at P); a completion without a step gets its -1 on its first token."""

        P, tokenizer = self.data.P, self.data.tokenizer
        out = np.zeros((len(texts), T), np.float32)
        rewards, valid = judged["step_rewards"], judged["valid"]
        for n, (text, token_ids) in enumerate(zip(texts, ids, strict=True)):
            lengths = [len(tokenizer.decode([t])) for t in token_ids]
            where = token_of_chars(step_char_ends(text), lengths) if sum(lengths) == len(text) else []
            for s in range(rewards.shape[1]):
                if not valid[n, s]:
                    continue
                at = where[s] if s < len(where) and where[s] is not None else len(token_ids) - 1
                out[n, P + max(at, 0)] += rewards[n, s]  # a token that did not decode alone: the last one
            if not valid[n].any():
                out[n, P] += rewards[n, 0]
        return out


def ended(samples, eos_id: int):
    return jnp.any((samples.tokens == eos_id) & samples.mask.astype(bool), axis=-1)


def build_models(cfg: ExperimentConfig, vocab_size: int, mesh):
    """(policy, params, ref_params, critic or None, rm or None, rm_params); vocab_size is
    the tokenizer's (used when the policy starts from scratch)."""
    rl = cfg.rl
    policy, params = build_model(cfg, vocab_size, mesh)
    # the state's params are donated; a LoRA base is not (the reference is that base, adapters off)
    ref_params = lora.without_adapters(params) if lora.has_adapters(params) else jax.tree.map(jnp.copy, params)
    if rl.reference:
        reference, ref_params = load_hf(checkpoint_dir(rl.reference), mesh=mesh, scan_layers=policy.cfg.scan_layers)
        if dataclasses.replace(reference.cfg, **cfg.model.how_to_run) != lora.base_config(policy.cfg):
            raise ValueError(f"rl.reference={rl.reference}: a model other than the policy's ({reference.cfg})")
        if lora.has_adapters(params):  # run by the policy's program: adapters that add 0
            ref_params = lora.without_adapters(with_adapters(cfg, reference, ref_params, mesh)[1])
    rm = rm_params = None
    if rl.prm_reading:  # a process reward model: an LM reading label tokens
        rm, rm_params = load_hf(checkpoint_dir(rl.reward_model), mesh=mesh, scan_layers=cfg.model.scan_layers)
    elif rl.reward_model != "gold":
        rm, rm_params = load_scalar(
            rl.reward_model, mesh, cfg.train.seed, strict=True, scan_layers=cfg.model.scan_layers
        )
        if rm.cfg.vocab_size != policy.cfg.vocab_size:
            raise ValueError(
                f"rl.reward_model={rl.reward_model}: vocabulary of {rm.cfg.vocab_size} tokens, "
                f"the policy's has {policy.cfg.vocab_size} (they must share the tokenizer)"
            )
    if rm is not None:  # its forwards by the run's attention kernel
        rm = run_as(rm, attention=cfg.model.attention)
    critic = None
    if rl.estimator.critic:
        if rl.critic_from == "reward" and rm is not None:
            critic, value_params = with_adapters(cfg, run_as(rm, **cfg.model.how_to_run), rm_params, mesh)
        else:
            critic, value_params = scalar_from_lm(policy, ref_params, mesh, cfg.train.seed)
        # its own copy of what it trains (donated with the state); a frozen LoRA base stays shared
        trainable, frozen = lora.partition(value_params)
        params = {"policy": params, "value": lora.combine(jax.tree.map(jnp.copy, trainable), frozen)}
    return policy, params, ref_params, critic, rm, rm_params


class Iteration:
    """One RL iteration as compiled parts, for given models and a scorer:
    `iteration(state, progress, prompts, pmask, rows, i) -> (state, metrics)` samples k
    completions per prompt, scores them, runs the `experience` step and the scanned
    update, and adapts beta. `scorer(samples, sequences, rows, split) -> (scores, gold or
    None, token scores or None)`. `rl` builds it into the run's `Loop`; bench/rloo_iteration.py times it."""

    def __init__(self, cfg: ExperimentConfig, policy, critic, ref_params, scorer, state, eos_id: int, pad_id: int,
                 max_new_tokens: int, mesh):  # fmt: skip
        rl = self.rl = cfg.rl
        self.cfg, self.policy, self.critic, self.ref_params, self.scorer = cfg, policy, critic, ref_params, scorer
        self.mesh, self.eos_id = mesh, eos_id
        base = SamplingConfig(
            max_new_tokens=max_new_tokens,
            temperature=rl.temperature,
            top_k=rl.top_k,
            top_p=rl.top_p,
            eos_ids=(eos_id,),
            pad_id=pad_id,
            n_samples=rl.k,
            max_cache_len=policy.cfg.max_positions,
        )
        whole = rl.sampler_weights == "whole"
        rules = mesh_lib.SAMPLE_RULES if whole else mesh_lib.TRAIN_RULES
        sampling = with_dtype(policy, rl.sample_dtype)
        self.sampler = Sampler(sampling, base, mesh, rules)
        self.greedy_sampler = Sampler(sampling, dataclasses.replace(base, greedy=True, n_samples=1), mesh, rules)
        self.sample_shardings = param_shardings(policy.cfg, "lm", mesh, rules) if mesh.size > 1 and whole else None
        optimizer = make_optimizer(cfg.optim)
        loss = make_loss(rl, policy, critic, max_new_tokens)
        step = train_step_fn(loss, optimizer, cfg.optim.accum_steps, make_schedule(cfg.optim))
        self.update = make_update(step, state_shardings(state))
        self.experience = make_experience(rl, rl.k, policy, critic, max_new_tokens)
        self.base_key = jax.random.key(cfg.train.seed)
        self.replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def for_sampling(self, state):
        p = state.params["policy"] if self.critic is not None else state.params
        return jax.device_put(p, self.sample_shardings) if self.sample_shardings is not None else p

    def sample_scored(self, sampler, params, prompts, pmask, rows, key, split="train") -> tuple[Scored, Any]:
        """(the samples with their scores, gold scores or None)."""
        samples = sampler(params, prompts, pmask, key)
        sequences = samples.sequences()
        n = samples.tokens.shape[0] // prompts.shape[0]
        scores, gold, token_scores = self.scorer(samples, sequences, np.repeat(rows, n), split)
        token_scores = None if token_scores is None else jnp.asarray(token_scores)
        return Scored(*sequences, samples.logps, jnp.asarray(scores), ended(samples, self.eos_id), token_scores), gold

    def __call__(self, state, progress: RLProgress, prompts, pmask, rows, i: int):
        rl = self.rl
        key = jax.random.fold_in(self.base_key, i)
        sample_key, greedy_key, noise_key = jax.random.split(key, 3)
        params_s = self.for_sampling(state)
        scored, gold = self.sample_scored(self.sampler, params_s, prompts, pmask, rows, sample_key)
        drawn = {}
        if rl.draws > 1:  # DAPO's dynamic sampling: groups with a signal first
            n_drawn = rows.shape[0]
            groups, n_signal = corrections.dynamic_sampling_groups(np.asarray(scored.scores_N), rl.k, rl.n_prompts)
            take = (groups[:, None] * rl.k + np.arange(rl.k)).reshape(-1)
            scored = jax.tree.map(lambda x: x[take], scored)
            prompts, pmask, rows = prompts[groups], pmask[groups], rows[groups]
            drawn = {"groups_with_signal": n_signal / n_drawn,
                     "kept_without_signal": max(0, rl.n_prompts - n_signal) / rl.n_prompts}  # fmt: skip
        greedy = None
        if rl.estimator.greedy_rollout:
            greedy, _ = self.sample_scored(self.greedy_sampler, params_s, prompts, pmask, rows, greedy_key)
        del params_s  # the sampler's copy of the weights is not alive during the update
        # placed like the step's outputs, so the first call's program serves every later one
        beta, baseline = jax.device_put((progress.beta, progress.baseline), self.replicated)
        rollout, progress.baseline, metrics = self.experience(
            state.params, self.ref_params, scored, greedy, beta, baseline, noise_key
        )
        state, update_metrics = self.update(state, rollout, minibatch_order(rl, self.cfg.train.seed, i))
        if rl.target_kl:
            progress.beta = rl_math.adaptive_beta(
                progress.beta, metrics["kl"], rl.rollout_batch, rl.target_kl, rl.kl_horizon
            )
        gold = {} if gold is None else {"gold": float(gold.mean())}  # over every drawn completion
        return state, {**update_metrics, **metrics, **gold, **drawn}


def rl(cfg: ExperimentConfig, data, mesh) -> Loop:
    """Online RL with the estimator of cfg.rl; see the module docstring."""
    rl = cfg.rl
    policy, params, ref_params, critic, rm, rm_params = build_models(cfg, len(data.tokenizer), mesh)
    scorer = Scorer(data, rm, rm_params, rl.prm_reading)
    state = init_state(params, make_optimizer(cfg.optim))
    iteration = Iteration(
        cfg, policy, critic, ref_params, scorer, state, data.tokenizer.eos_token_id, data.tokenizer.pad_token_id,
        data.C, mesh,
    )  # fmt: skip
    progress = RLProgress(
        loader=batching.Loader(len(data.train.kept), rl.n_prompts * rl.draws, cfg.train.seed),
        beta=jnp.float32(rl.beta),
        baseline=rl_math.BaselineState.init(),
    )

    def advance(state, i):
        rows = next(progress.loader)
        prompts, pmask = mesh_lib.put_rows(data.prompts, rows, mesh, mesh_lib.SAMPLE_RULES)
        return iteration(state, progress, prompts, pmask, rows, i)

    def export(state):
        return state.params["policy"] if critic is not None else state.params

    def report(trained) -> dict:
        named = {"policy": export(trained.state), "reference": ref_params}
        judge = (None, None) if rl.prm_reading else (rm, rm_params)  # a PRM is no scalar judge of a completion
        test = held_out_report(cfg, data, policy, named, ref_params, mesh, *judge)
        return {"train": trained.last, "test": test}

    return Loop(policy, state, progress, advance, report, export)
