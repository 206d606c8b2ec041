"""Sampled evaluation of policies on a task's held-out prompts, and the scorer that gives
their completions a reward (a reward model, or the task's gold judge): what the online
and offline loops report under "test" in summary.json."""

from __future__ import annotations

import jax
import numpy as np

from rlhf_jax import mesh as mesh_lib
from rlhf_jax.eval import metrics as eval_metrics
from rlhf_jax.experiment import SYNTHETIC_TASKS, ExperimentConfig
from rlhf_jax.sampling import Sampler, SamplingConfig
from rlhf_jax.tasks import gold_judge


class Scorer:
    """r(x, y) of sampled completions: a reward model (compiled) or the task's gold judge
    (host, on the decoded text). `gold` gives the gold judge's scores (a metric) where the
    task has one (the built-in tasks), else None."""

    def __init__(self, cfg: ExperimentConfig, data, rm=None, rm_params=None):
        self.data, self.rm, self.rm_params = data, rm, rm_params
        self.judge = gold_judge(cfg.data.task) if cfg.data.task in SYNTHETIC_TASKS else None
        if self.judge is None and rm is None:
            raise ValueError(f"rl.reward_model=gold: task {cfg.data.task} has no gold judge; name a reward model")
        self._rm_fn = jax.jit(rm.rewards) if rm is not None else None

    def texts(self, samples) -> list[str]:
        mask = mesh_lib.to_host(samples.mask)
        tokens = mesh_lib.to_host(samples.tokens) * mask
        eos = self.data.tokenizer.eos_token_id
        rows = [[int(t) for t, m in zip(row, mrow, strict=True) if m and t != eos] for row, mrow in
                zip(tokens, mask, strict=True)]  # fmt: skip
        return self.data.tokenizer.batch_decode(rows, skip_special_tokens=True)

    def gold(self, samples, rows, split: str = "train") -> np.ndarray | None:
        """rows: the encoded row of each sample."""
        if self.judge is None:
            return None
        texts = self.texts(samples)
        records = [self.data.row(int(r), split) for r in rows]
        return np.asarray([self.judge(rec, t) for rec, t in zip(records, texts, strict=True)], np.float32)

    def __call__(self, samples, sequences, rows, split: str = "train"):
        """(scores [N] as a device or host array, gold scores [N] on the host or None)."""
        gold = self.gold(samples, rows, split)
        if self.rm is None:
            return gold, gold
        tokens, mask, _ = sequences
        return self._rm_fn(self.rm_params, tokens, mask), gold


def evaluate_policies(cfg, data, policy, named_params: dict, ref_params, scorer: Scorer, mesh) -> dict:
    """On the test prompts, one completion per prompt at the training temperature from each
    policy: mean score, gold reward (where the task has a gold judge), KL to the reference,
    length; and the win-rate of "policy" against "reference" (ties count half) by the gold
    reward (`gold_win_rate`), or else by the reward model (`score_win_rate`). Prompts go
    through in chunks of rl.rollout_batch rows (the training sampler's batch; the last
    chunk is padded, so one program serves all)."""
    n, size = len(data.test.kept), cfg.rl.rollout_batch
    sampling = SamplingConfig(
        max_new_tokens=data.C,
        temperature=cfg.rl.temperature,
        eos_ids=(data.tokenizer.eos_token_id,),
        pad_id=data.tokenizer.pad_token_id,
        max_cache_len=policy.cfg.max_positions,
    )
    sampler = Sampler(policy, sampling, mesh)
    logps_fn = jax.jit(policy.token_logps, static_argnums=3)
    base_key = jax.random.key(cfg.train.seed + 1)

    def chunk(params, c):
        rows = np.minimum(np.arange(c, c + size), n - 1)  # past the end: the last row again
        prompts, pmask = data.prompts(rows, "test")
        samples = sampler(params, prompts, pmask, jax.random.fold_in(base_key, c))
        tokens, mask, cmask = samples.sequences()
        scores, gold = scorer(samples, (tokens, mask, cmask), rows, "test")
        logps = logps_fn(params, tokens, mask, cfg.rl.temperature)
        ref = logps_fn(ref_params, tokens, mask, cfg.rl.temperature)
        host = [mesh_lib.to_host(x) for x in (scores, logps, ref, cmask)] + [gold]
        kept = min(size, n - c)
        return [None if x is None else x[:kept] for x in host]

    out, ranked = {}, {}
    for name, params in named_params.items():
        parts = [chunk(params, c) for c in range(0, n, size)]
        scores, logps, ref, cmask, gold = (
            None if part[0] is None else np.concatenate(part) for part in zip(*parts, strict=True)
        )
        ranked[name] = scores if gold is None else gold
        out[name] = {
            "score": float(scores.mean()),
            "kl": eval_metrics.sequence_kl(logps, ref, cmask),
            "length": eval_metrics.mean_length(cmask),
            **({} if gold is None else {"gold": float(gold.mean())}),
        }
    if "reference" in ranked:
        name = "gold_win_rate" if scorer.judge is not None else "score_win_rate"
        out[name] = eval_metrics.win_rate(ranked["policy"], ranked["reference"])
    return out
