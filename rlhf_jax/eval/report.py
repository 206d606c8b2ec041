"""A policy's report on a task's test prompts, as the RLOO paper's tables and appendix A:
completions by greedy decoding and samples at the training temperature (the distribution
RL optimises; the KL is taken on them); gold and reward-model scores of both, the gold
win-rate against the data's reference completions, the perplexity of those reference
(preferred) completions, length, distinct-1/2, KL to the reference policy, and per
generation step of the greedy completions the normalised entropy and the top-1/16/32/64
probability mass."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from rlhf_jax import mesh as mesh_lib
from rlhf_jax.eval import metrics
from rlhf_jax.eval.judges import GoldJudge, RewardModelJudge
from rlhf_jax.sampling import Sampler, SamplingConfig

TOP_KS = (1, 16, 32, 64)
_COMPILED: dict = {}  # (model, sampling config or "logps", mesh) -> compiled function, shared by policies


def _sampler(model, cfg: SamplingConfig, mesh) -> Sampler:
    key = (model, cfg, mesh)
    if key not in _COMPILED:
        _COMPILED[key] = Sampler(model, cfg, mesh)
    return _COMPILED[key]


def _logps_fn(model):
    key = (model, "logps", None)
    if key not in _COMPILED:
        _COMPILED[key] = jax.jit(model.token_logps, static_argnums=3)
    return _COMPILED[key]


@dataclasses.dataclass
class Completions:
    texts: list[str]
    token_ids: list[list[int]]
    samples: object  # sampling.Samples
    gold: np.ndarray | None = None  # [N] gold reward of each, once judged


def generate(model, params, data, *, greedy: bool, temperature: float = 1.0, seed: int = 0, mesh=None, logits=False):
    """One completion per test prompt of `data` (a loops.data.TaskData)."""
    rows = np.arange(len(data.test.kept))
    prompts, pmask = data.prompts(rows, "test")
    eos = data.tokenizer.eos_token_id
    cfg = SamplingConfig(
        max_new_tokens=data.C,
        temperature=temperature,
        greedy=greedy,
        eos_ids=(eos,),
        pad_id=data.tokenizer.pad_token_id,
        max_cache_len=model.cfg.max_positions,
        return_logits=logits,
    )
    samples = jax.tree.map(mesh_lib.to_host, _sampler(model, cfg, mesh)(params, prompts, pmask, seed))
    tokens, mask = samples.tokens, samples.mask
    ids = [
        [int(t) for t, m in zip(row, mrow, strict=True) if m and t != eos]
        for row, mrow in zip(tokens, mask, strict=True)
    ]
    return Completions(data.tokenizer.batch_decode(ids, skip_special_tokens=True), ids, samples)


def evaluate_policy(model, params, ref_params, data, task: str, rm_judge: RewardModelJudge | None = None,
                    temperature=1.0, seed=0, mesh=None) -> tuple[dict, dict, dict[str, Completions]]:  # fmt: skip
    """(figures, per-step curves, {"greedy", "sampled"} completions) of one policy on data's
    test split (an "sft"-kind TaskData: its completions are the reference ones). The
    greedy figures are at the top level; those of the samples under "sampled"."""
    records = [data.row(i, "test") for i in range(len(data.test.kept))]
    gold = GoldJudge(task)
    reference_scores = gold(records, [r["completion"] for r in records])

    def judged(completions: Completions) -> dict:
        completions.gold = gold(records, completions.texts)
        out = {
            "gold": metrics.reward_stats(completions.gold),
            "gold_win_rate_vs_reference": metrics.win_rate(completions.gold, reference_scores),
            "length": metrics.mean_length(completions.samples.mask),
        }
        if rm_judge is not None:
            out["reward_model"] = metrics.reward_stats(rm_judge([r["prompt"] for r in records], completions.texts))
        return out

    greedy = generate(model, params, data, greedy=True, mesh=mesh, logits=True)
    sampled = generate(model, params, data, greedy=False, temperature=temperature, seed=seed, mesh=mesh)
    jitted = _logps_fn(model)
    logps_fn = lambda *args: mesh_lib.to_host(jitted(*args))  # noqa: E731
    ref_batch = data.test_batch()
    ref_logps = logps_fn(params, ref_batch.tokens_BxT, ref_batch.mask_BxT, 1.0)
    tokens, mask, cmask = sampled.samples.sequences()
    kl = metrics.sequence_kl(
        logps_fn(params, tokens, mask, temperature), logps_fn(ref_params, tokens, mask, temperature), cmask
    )
    figures = {
        **judged(greedy),
        "perplexity_of_reference": metrics.perplexity(ref_logps, ref_batch.completion_mask_BxT),
        "distinct_1": metrics.distinct_n(greedy.token_ids, 1),
        "distinct_2": metrics.distinct_n(greedy.token_ids, 2),
        "kl_to_reference": kl,
        "sampled": judged(sampled),
    }
    step_mask = np.asarray(greedy.samples.mask)
    logits = greedy.samples.logits
    curves = {"normalised_entropy": metrics.per_step_mean(metrics.normalised_entropy(logits), step_mask).tolist()}
    for k, mass in metrics.top_k_mass(logits, TOP_KS).items():
        curves[f"top_{k}_mass"] = metrics.per_step_mean(mass, step_mask).tolist()
    return figures, curves, {"greedy": greedy, "sampled": sampled}
