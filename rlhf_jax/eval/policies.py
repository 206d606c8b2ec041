"""The one evaluation path for policies: every loop, the pipeline and the studies report a
policy on a task's test prompts through `compare`, with the same metric names.

Per policy (`evaluate_policy`), one completion per test prompt, by greedy decoding (the
RLOO paper's tables; top level) and sampled at the training temperature (the distribution
RL optimises; under "sampled"):
    gold                         {mean, variance} of the task's gold reward (built-in tasks)
    reward_model                 {mean, variance} of a reward model's score (when given one)
    gold_win_rate_vs_reference   against the data's reference (preferred) completions
    length                       completion tokens, EOS included
    distinct_1, distinct_2       of the greedy completions
    perplexity_of_reference      of the reference completions under the policy
    kl_to_reference              sum_t log pi - log pi_ref over the sampled completions
and per generation step of the greedy completions the normalised entropy and the
top-1/16/32/64 probability mass (curves). `compare` adds the head-to-head win-rates of
pairs of policies, by the gold reward or else by the reward model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import numpy as np

from rlhf_jax import mesh as mesh_lib
from rlhf_jax.batches import PreferenceBatch
from rlhf_jax.data.tokenizer import completion_texts
from rlhf_jax.eval import metrics
from rlhf_jax.eval.judges import RewardModelJudge
from rlhf_jax.models.transformer import with_dtype
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
    samples: object  # sampling.Samples, on the host
    gold: np.ndarray | None = None  # [N] gold reward of each, once judged
    scores: np.ndarray | None = None  # [N] reward-model score of each, once judged


def generate(model, params, data, *, greedy: bool, temperature: float = 1.0, seed: int = 0, mesh=None,
             logits: bool = False, chunk: int | None = None) -> Completions:  # fmt: skip
    """One completion per test prompt of `data` (a loops.data.TaskData). chunk: prompts per
    sampler call (the last call padded with the last prompt, so one program serves all;
    call c draws with key fold_in(seed, c)); None: all in one call, drawn with `seed`."""
    n = len(data.test.kept)
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
    sampler = _sampler(model, cfg, mesh)
    if chunk is None or chunk >= n:
        prompts, pmask = data.prompts(np.arange(n), "test")
        samples = jax.tree.map(mesh_lib.to_host, sampler(params, prompts, pmask, seed))
    else:
        parts = []
        for c in range(0, n, chunk):
            prompts, pmask = data.prompts(np.minimum(np.arange(c, c + chunk), n - 1), "test")
            key = jax.random.fold_in(jax.random.key(seed), c)
            parts.append(jax.tree.map(lambda x: mesh_lib.to_host(x)[: n - c], sampler(params, prompts, pmask, key)))
        samples = jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
    texts, ids = completion_texts(data.tokenizer, samples.tokens, samples.mask)
    return Completions(texts, ids, samples)


def sample_texts(model, params, data, rows, split: str, *, n: int, temperature: float, seed: int, mesh=None,
                 batch: int = 64, lengths: bool = False) -> list[str] | tuple[list[str], np.ndarray]:  # fmt: skip
    """n sampled completion texts for each encoded row of `split` of `data` (a
    loops.data.TaskData): rows[i] -> texts n*i .. n*i + n - 1. `batch` prompts per sampler
    call (the last call padded with its last prompt), call c drawn with key
    fold_in(seed, c). lengths: also each completion's tokens (EOS included), as
    (texts, lengths)."""
    cfg = SamplingConfig(
        max_new_tokens=data.C,
        temperature=temperature,
        eos_ids=(data.tokenizer.eos_token_id,),
        pad_id=data.tokenizer.pad_token_id,
        n_samples=n,
        max_cache_len=model.cfg.max_positions,
    )
    sampler = _sampler(model, cfg, mesh)
    rows = np.asarray(rows)
    texts: list[str] = []
    counts: list[np.ndarray] = []
    for c, start in enumerate(range(0, len(rows), batch)):
        mine = rows[start : start + batch]
        padded = np.concatenate([mine, np.full(batch - len(mine), mine[-1])])
        prompts, pmask = data.prompts(padded, split)
        out = sampler(params, prompts, pmask, jax.random.fold_in(jax.random.key(seed), c))
        mask = mesh_lib.to_host(out.mask)
        texts += data.texts(mesh_lib.to_host(out.tokens), mask)[: n * len(mine)]
        counts.append(np.asarray(mask).sum(-1)[: n * len(mine)])
    return (texts, np.concatenate(counts)) if lengths else texts


def _references(data, records) -> tuple[list[str], object]:
    """The test split's reference completions (SFT data: the completion; preference pairs:
    the chosen one) and their batch (tokens, mask, completion mask)."""
    batch = data.test_batch()
    if isinstance(batch, PreferenceBatch):
        texts = [r["chosen"] for r in records]
        return texts, (batch.chosen_tokens_BxT, batch.chosen_mask_BxT, batch.chosen_completion_mask_BxT)
    return [r["completion"] for r in records], (batch.tokens_BxT, batch.mask_BxT, batch.completion_mask_BxT)


def evaluate_policy(
    model,
    params,
    ref_params,
    data,
    *,
    gold: Callable[[Sequence[dict], Sequence[str]], np.ndarray] | None = None,
    rm_judge: RewardModelJudge | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    mesh=None,
    greedy: bool = True,
    chunk: int | None = None,
    sample_dtype: str = "float32",
) -> tuple[dict, dict, dict[str, Completions]]:
    """(figures, per-step curves, {"greedy", "sampled"} completions) of one policy on
    data's test split; see the module docstring. greedy=False: the sampled completions
    only (no distinct-n, no curves). chunk as in `generate`; sample_dtype: the sampler's
    compute dtype, as the run's (rl.sample_dtype; log-probs and KL in float32)."""
    records = [data.row(i, "test") for i in range(len(data.test.kept))]
    prompts = [r["prompt"] for r in records]
    ref_texts, (ref_tokens, ref_mask, ref_cmask) = _references(data, records)
    reference_gold = gold(records, ref_texts) if gold is not None else None

    def judged(completions: Completions) -> dict:
        out = {"length": metrics.mean_length(completions.samples.mask)}
        if gold is not None:
            completions.gold = gold(records, completions.texts)
            out["gold"] = metrics.reward_stats(completions.gold)
            out["gold_win_rate_vs_reference"] = metrics.win_rate(completions.gold, reference_gold)
        if rm_judge is not None:
            completions.scores = rm_judge(prompts, completions.texts)
            out["reward_model"] = metrics.reward_stats(completions.scores)
        return out

    jitted = _logps_fn(model)

    def logps_fn(params, tokens, mask, temperature):
        """Token log-probs on the host, in forwards of `chunk` rows (the last padded) as
        the sampling was, so a large test split never runs as one batch."""
        n = tokens.shape[0]
        step = n if chunk is None else min(chunk, n)
        parts = []
        for c in range(0, n, step):
            rows = np.minimum(np.arange(c, c + step), n - 1)
            parts.append(mesh_lib.to_host(jitted(params, tokens[rows], mask[rows], temperature))[: n - c])
        return np.concatenate(parts)

    sampling = with_dtype(model, sample_dtype)
    sampled = generate(sampling, params, data, greedy=False, temperature=temperature, seed=seed, mesh=mesh, chunk=chunk)
    tokens, mask, cmask = sampled.samples.sequences()
    kl = metrics.sequence_kl(
        logps_fn(params, tokens, mask, temperature), logps_fn(ref_params, tokens, mask, temperature), cmask
    )
    figures = {
        "perplexity_of_reference": metrics.perplexity(logps_fn(params, ref_tokens, ref_mask, 1.0), ref_cmask),
        "kl_to_reference": kl,
        "sampled": judged(sampled),
    }
    completions, curves = {"sampled": sampled}, {}
    if greedy:
        completions["greedy"] = generate(sampling, params, data, greedy=True, mesh=mesh, logits=True, chunk=chunk)
        figures.update(judged(completions["greedy"]))
        figures["distinct_1"] = metrics.distinct_n(completions["greedy"].token_ids, 1)
        figures["distinct_2"] = metrics.distinct_n(completions["greedy"].token_ids, 2)
        step_mask = np.asarray(completions["greedy"].samples.mask)
        logits = completions["greedy"].samples.logits
        curves["normalised_entropy"] = metrics.per_step_mean(metrics.normalised_entropy(logits), step_mask).tolist()
        for k, mass in metrics.top_k_mass(logits, TOP_KS).items():
            curves[f"top_{k}_mass"] = metrics.per_step_mean(mass, step_mask).tolist()
    return figures, curves, completions


def verifiable_figures(model, params, data, *, k: int, temperature: float, seed: int = 0, mesh=None) -> dict:
    """A policy on a verifiable reward (a gold judge that says right, 1, or wrong, 0): k
    samples per test prompt at `temperature`: {"pass@1", "pass@k" (`metrics.pass_at_k`, mean
    over prompts), "k", "right_length", "wrong_length" (mean completion tokens, EOS
    included, of the right and of the wrong samples; None where there are none), "right"
    (their share)}."""
    rows = np.arange(len(data.test.kept))
    texts, lengths = sample_texts(model, params, data, rows, "test", n=k, temperature=temperature, seed=seed,
                                  mesh=mesh, lengths=True)  # fmt: skip
    right = np.asarray(data.gold(np.repeat(rows, k), texts, "test")) > 0.5
    per_prompt = right.reshape(len(rows), k).sum(axis=1)

    def mean_or_none(x):
        return float(np.mean(x)) if len(x) else None

    return {
        "k": k,
        "pass@1": float(np.mean([metrics.pass_at_k(k, int(c), 1) for c in per_prompt])),
        f"pass@{k}": float(np.mean([metrics.pass_at_k(k, int(c), k) for c in per_prompt])),
        "right": float(right.mean()),
        "right_length": mean_or_none(lengths[right]),
        "wrong_length": mean_or_none(lengths[~right]),
    }


def head_to_head(a: Completions, b: Completions) -> tuple[str, float]:
    """("gold_win_rate", ...) of a's completions against b's on the same prompts, or
    ("reward_model_win_rate", ...) where there is no gold reward; ties count half."""
    if a.gold is not None:
        return "gold_win_rate", metrics.win_rate(a.gold, b.gold)
    return "reward_model_win_rate", metrics.win_rate(a.scores, b.scores)


def compare(model, named_params: dict, ref_params, data, pairs=(), **kwargs) -> dict:
    """Every named policy through `evaluate_policy` (kwargs), and for each (a, b) in pairs
    the head-to-head win-rates of a against b per decoding. Returns {"policies": {name:
    figures}, "curves": {name: curves}, "<a>_vs_<b>": {decoding: {gold_win_rate: x}}}."""
    out: dict = {"policies": {}, "curves": {}}
    completions = {}
    for name, params in named_params.items():
        out["policies"][name], curves, completions[name] = evaluate_policy(model, params, ref_params, data, **kwargs)
        if curves:
            out["curves"][name] = curves
    for a, b in pairs:
        out[f"{a}_vs_{b}"] = {
            decoding: dict([head_to_head(completions[a][decoding], completions[b][decoding])])
            for decoding in completions[a]
        }
    return out
