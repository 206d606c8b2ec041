"""The process study's samples and labels: the generator's solutions, labelled exactly by
the arithmetic task (outcome and steps); the pool best-of-N draws from, the uniform labels,
the active-learning rounds' convincing wrong answers (`process_supervision` runs them; its
docstring says what each holds), and a trained verifier's scores over solutions. `cfg`
is the run's `process_supervision.ProcessConfig` (not imported: that module imports this
one)."""

from __future__ import annotations

import os

import numpy as np

from rlhf_jax.eval.judges import RewardModelJudge
from rlhf_jax.eval.policies import sample_texts
from rlhf_jax.eval.verifiers import PRMJudge, once_each
from rlhf_jax.loops.common import load_scalar
from rlhf_jax.loops.data import task_data
from rlhf_jax.models.hf import load_hf
from rlhf_jax.tasks.arithmetic import final_answer, label_completion
from rlhf_jax.workdir import checkpoint_dir, read_jsonl, write_jsonl


def clean(text: str) -> str:
    """A sampled solution without its blank lines (labels and step positions agree on lines)."""
    return "\n".join(line for line in text.split("\n") if line.strip())


class Scorer:
    """A trained ORM (scalar head) or PRM (an LM reading label tokens, `eval.verifiers`)
    over solutions: `scorer(prompts, solutions)` -> {"orm": logits} or the PRM judge's
    readings, `batch` at a time, each distinct pair once (`once_each`)."""

    def __init__(self, directory: str, kind: str, tokenizer, P: int, C: int, batch: int = 256):

        self.kind = kind
        if kind == "orm":
            model, params = load_scalar(directory, None, strict=True)
            self.judge = RewardModelJudge(model, params, tokenizer, P, C, batch_size=batch)
        elif kind == "prm":
            model, params = load_hf(checkpoint_dir(directory))
            self.judge = PRMJudge(model, params, tokenizer, P, C, batch=batch)
        else:
            raise ValueError(f"Scorer kind {kind!r}: expected 'orm' or 'prm'")

    def __call__(self, prompts, solutions) -> dict[str, np.ndarray]:
        if self.kind == "prm":
            return once_each(self.judge, prompts, solutions)
        return once_each(lambda p, s: {"orm": self.judge(p, s)}, prompts, solutions)


def label_dir(workdir: str, name: str) -> str:
    return os.path.join(workdir, "labels", name)


def labelled(prompt: str, text: str, **extra) -> dict:

    solution = clean(text)
    steps, outcome = label_completion(prompt, solution)
    return {"prompt": prompt, "completion": solution, "outcome": outcome, "step_labels": steps,
            "final": final_answer(solution), **extra}  # fmt: skip


class Generator:
    """The trained generator, its task data (train problems, test problems) and sampling."""

    def __init__(self, cfg, configs: dict, workdir: str):

        self.cfg, directory = cfg, os.path.join(workdir, "generator")
        self.data = task_data(configs["generator"], directory, "sft")
        self.model, self.params = load_hf(checkpoint_dir(directory))
        self.order = np.random.default_rng([cfg.seed, 29]).permutation(len(self.data.train.kept))

    def sample(self, rows, split: str, n: int, seed: int) -> list[dict]:
        """n labelled solutions for each encoded row of `split`, grouped by row."""

        texts = sample_texts(self.model, self.params, self.data, rows, split, n=n, temperature=self.cfg.temperature,
                             seed=seed, batch=max(1, 512 // n))  # fmt: skip
        prompts = [self.data.row(int(r), split)["prompt"] for r in rows]
        return [labelled(prompts[i // n], t, problem=int(rows[i // n])) for i, t in enumerate(texts)]


def make_pool(cfg, gen: Generator, workdir: str) -> list[dict]:
    path = os.path.join(workdir, "pool", "pool.jsonl")
    if not os.path.exists(path):
        rows = np.arange(cfg.test_problems)
        write_jsonl(path, gen.sample(rows, "test", cfg.pool, seed=cfg.seed * 1000 + 1))
    return read_jsonl(path)


def make_uniform(cfg, gen: Generator, workdir: str, pool: list[dict], twin: str = "") -> None:
    """The uniform labels (a twin's, when its generator is this one: `twins`)."""
    here = label_dir(workdir, "uniform")
    if os.path.exists(os.path.join(here, "solutions.jsonl")):
        return
    rows = gen.order[: cfg.labelled]
    write_jsonl(os.path.join(here, "held_out.jsonl"), pool[:: cfg.pool])
    if twin:
        solutions = read_jsonl(os.path.join(label_dir(twin, "uniform"), "solutions.jsonl"))
    else:
        solutions = gen.sample(rows, "train", 1, seed=cfg.seed * 1000 + 2)
    write_jsonl(os.path.join(here, "solutions.jsonl"), solutions)


def make_active(cfg, gen: Generator, workdir: str, r: int, pool: list[dict], twin: str = "") -> None:
    """Round r's labels (cumulative); see the module docstring. twin: a run whose round
    r - 1 PRM is this one's (`twins`), whose labels are copied."""
    here = label_dir(workdir, f"active{r}")
    if os.path.exists(os.path.join(here, "solutions.jsonl")):
        return
    per_round = cfg.labelled // cfg.rounds
    if twin and r > 0:
        solutions = read_jsonl(os.path.join(label_dir(twin, f"active{r}"), "solutions.jsonl"))
    elif r == 0:
        uniform = read_jsonl(os.path.join(label_dir(workdir, "uniform"), "solutions.jsonl"))
        solutions = [{**x, "round": 0} for x in uniform[:per_round]]
    else:
        start = cfg.labelled + (r - 1) * per_round
        rows = gen.order[start : start + per_round]
        candidates = gen.sample(rows, "train", cfg.candidates, seed=cfg.seed * 1000 + 10 + r)
        scorer = Scorer(os.path.join(workdir, f"prm_active{r - 1}"), "prm", gen.data.tokenizer, gen.data.P, gen.data.C)
        scores = scorer([c["prompt"] for c in candidates], [c["completion"] for c in candidates])["product"]
        new = []
        for i in range(len(rows)):
            mine = list(range(i * cfg.candidates, (i + 1) * cfg.candidates))
            wrong = [j for j in mine if not candidates[j]["outcome"]]
            pick = max(wrong or mine, key=lambda j: scores[j])
            new.append({**candidates[pick], "prm_score": float(scores[pick]), "wrong_candidates": len(wrong)})
        earlier = read_jsonl(os.path.join(label_dir(workdir, f"active{r - 1}"), "solutions.jsonl"))
        solutions = earlier + [{**x, "round": r} for x in new]
    write_jsonl(os.path.join(here, "held_out.jsonl"), pool[:: cfg.pool])
    write_jsonl(os.path.join(here, "solutions.jsonl"), solutions)


def wrong_share(directory: str) -> float:
    """The share of a label set's solutions whose final answer is wrong."""
    rows = read_jsonl(os.path.join(directory, "solutions.jsonl"))
    return float(np.mean([1 - x["outcome"] for x in rows]))
