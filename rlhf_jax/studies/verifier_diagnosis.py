"""Why best-of-N by a learnt verifier can fall below random choice: the verifier's ranking
of a process-supervision run's pool, taken apart (`diagnose`).

Per verifier reading (the ORM's logit; the uniform PRM's product, min and first error):
    auroc           of the score against correctness over every pool solution (0.5: chance;
                    below: the scores rank right solutions lower)
    auroc_within_problems  the same within each problem's pool, averaged: the ranking that
                    best-of-N uses (the overall figure also rewards scoring easy problems high)
    spread_between_problems / _within_problems  the std of the problems' mean scores, and
                    the mean std within a problem
    auroc_by_steps  the same within solutions of one step count, averaged with the counts'
                    weights: whether it verifies once length is held fixed
    corr_steps      the rank correlation of the score with the step count
    pick_steps      the mean step count of each problem's best-of-M pick (the whole pool),
                    with its accuracy and the share of picks whose first step is wrong
    right_on_top    among problems whose pool holds both classes, the share whose highest
                    score is a right solution: best-of-M's accuracy where it can be right
    top_margin      the mean of (highest wrong score - highest right score) over those
                    problems, in units of the score's std within problems (> 0: a wrong
                    solution outscores every right one)
    pick_copies     how many times the pick's text occurs in its problem's pool (a right
                    answer is written the same way again and again; a slip seldom twice)
and for the pool: accuracy by step count and the mean step count, so that a verifier that
prefers short solutions while right ones are long shows as what it is; and the distinct
right and wrong texts per problem. Best-of-N reads the top of each pool, not its ranking
on average: with one right text against W distinct wrong ones, the pick is right only if
the right text outscores all W, so an AUROC well above 0.5 still leaves best-of-M below
random choice once W is large (tests/test_best_of_n.py builds such a pool).

    python -m rlhf_jax.studies.verifier_diagnosis --config experiments/process_supervision.py --workdir DIR

DIR: a process-supervision run that has trained its verifiers; writes DIR/diagnosis.json.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter

import numpy as np

from rlhf_jax.batches import NEGATIVE
from rlhf_jax.config import load_experiment
from rlhf_jax.eval.metrics import auroc, auroc_within_groups
from rlhf_jax.studies.process_samples import Generator, Scorer
from rlhf_jax.studies.process_supervision import ProcessConfig, stage_configs
from rlhf_jax.workdir import read_jsonl, write_json


def rank_corr(a, b) -> float:
    """Spearman's correlation (ranks without tie correction: enough for a diagnosis)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def by_steps(scores, correct, steps) -> float:
    """auroc within each step count that holds both classes, weighted by its solutions."""
    values, weights = [], []
    for n in np.unique(steps):
        here = steps == n
        if 0 < correct[here].sum() < here.sum():
            values.append(auroc(scores[here], correct[here]))
            weights.append(here.sum())
    return float(np.average(values, weights=weights)) if values else float("nan")


def readings(scores: np.ndarray, correct: np.ndarray, steps: np.ndarray, P: int, first_wrong=None, texts=None) -> dict:
    """first_wrong: [N] bool, the solution's first step is wrong; texts: [N] the solutions
    (both optional; grouped by problem, P problems of equal pools)."""
    picks = scores.reshape(P, -1).argmax(-1) + np.arange(P) * (len(scores) // P)
    S, Y = scores.reshape(P, -1), correct.reshape(P, -1)
    mixed = (Y.any(1)) & (~Y.all(1))
    best_right = np.where(Y, S, -np.inf).max(1)[mixed]
    best_wrong = np.where(~Y, S, -np.inf).max(1)[mixed]
    scale = float(S.std(1).mean()) or 1.0
    out = {
        "auroc": auroc(scores, correct),
        "auroc_within_problems": auroc_within_groups(S, Y),
        "auroc_by_steps": by_steps(scores, correct, steps),
        "corr_steps": rank_corr(scores, steps),
        "spread_between_problems": float(S.mean(1).std()),
        "spread_within_problems": float(S.std(1).mean()),
        "pick_steps": float(steps[picks].mean()),
        "pick_accuracy": float(correct[picks].mean()),
        "right_on_top": float((best_right > best_wrong).mean()) if mixed.any() else float("nan"),
        "top_margin": float(((best_wrong - best_right) / scale).mean()) if mixed.any() else float("nan"),
    }
    if first_wrong is not None:
        out["pick_first_step_wrong"] = float(np.asarray(first_wrong)[picks].mean())
    if texts is not None:
        n = len(scores) // P
        pools = [Counter(texts[p * n : (p + 1) * n]) for p in range(P)]
        out["pick_copies"] = float(np.mean([pools[p][texts[i]] for p, i in enumerate(picks)]))
    return out


def distinct(solutions, correct: np.ndarray, P: int) -> dict:
    """The mean number of distinct right and distinct wrong texts in a problem's pool, and
    how often a right text recurs (copies per distinct right text)."""
    n = len(solutions) // P
    groups = [(solutions[p * n : (p + 1) * n], correct[p * n : (p + 1) * n]) for p in range(P)]
    right = [len({t for t, c in zip(ts, cs, strict=True) if c}) for ts, cs in groups]
    wrong = [len({t for t, c in zip(ts, cs, strict=True) if not c}) for ts, cs in groups]
    return {
        "distinct_right": float(np.mean(right)),
        "distinct_wrong": float(np.mean(wrong)),
        "right_copies": float(correct.sum() / max(sum(right), 1)),
        "wrong_copies": float((~correct).sum() / max(sum(wrong), 1)),
    }


def diagnose(cfg: ProcessConfig, workdir: str, data_dir: str = "") -> dict:
    configs = stage_configs(cfg, workdir, data_dir)
    gen = Generator(cfg, configs, workdir)
    pool = read_jsonl(os.path.join(workdir, "pool", "pool.jsonl"))
    prompts, solutions = [x["prompt"] for x in pool], [x["completion"] for x in pool]
    correct = np.asarray([x["outcome"] for x in pool], bool)
    steps = np.asarray([len(x["step_labels"]) for x in pool])
    first_wrong = np.asarray([bool(x["step_labels"]) and x["step_labels"][0] == NEGATIVE for x in pool])
    tok = gen.data.tokenizer
    out = {"pool": {
        "solutions": len(pool), "accuracy": float(correct.mean()), "mean_steps": float(steps.mean()),
        "accuracy_by_steps": {int(n): float(correct[steps == n].mean()) for n in np.unique(steps)},
        "count_by_steps": {int(n): int((steps == n).sum()) for n in np.unique(steps)},
        "mean_steps_right": float(steps[correct].mean()) if correct.any() else None,
        "mean_steps_wrong": float(steps[~correct].mean()) if (~correct).any() else None,
        "first_step_wrong": float(first_wrong.mean()),
        **distinct(solutions, correct, cfg.test_problems),
    }}  # fmt: skip
    orm = Scorer(os.path.join(workdir, "orm"), "orm", tok, gen.data.P, gen.data.C)(prompts, solutions)["orm"]
    out["orm"] = readings(np.asarray(orm), correct, steps, cfg.test_problems, first_wrong, solutions)
    prm = Scorer(os.path.join(workdir, "prm_uniform"), "prm", tok, gen.data.P, gen.data.C)(prompts, solutions)
    for name in ("product", "min", "first_error"):
        out[f"prm_uniform.{name}"] = readings(
            np.asarray(prm[name]), correct, steps, cfg.test_problems, first_wrong, solutions
        )
    write_json(os.path.join(workdir, "diagnosis.json"), out)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf_jax.studies.verifier_diagnosis", description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args(argv)
    out = diagnose(load_experiment(args.config), args.workdir)
    for name, r in out.items():
        print(name, r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
