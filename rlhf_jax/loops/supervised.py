"""Supervised loops: SFT, and the reward models (Bradley-Terry on pairs, ORM on outcome
labels, PRM on per-step labels). Each is a `common.Loop` over a fixed data set that the
run skeleton (`common.run_loop`) trains, reports on the test split and exports."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import numpy as np

from rlhf_jax.batches import NO_STEP
from rlhf_jax.eval.judges import RewardModelJudge
from rlhf_jax.eval.metrics import auroc
from rlhf_jax.eval.verifiers import PRM_MAX_STEPS, SCORES, PRMJudge, prm_label_ids
from rlhf_jax.experiment import ExperimentConfig
from rlhf_jax.loops.common import Loop, Trained, build_model, evaluate, fixed_data_loop
from rlhf_jax.loops.data import TaskData
from rlhf_jax.losses.reward import class_balance_weights, orm_loss, pair_loss, prm_loss
from rlhf_jax.losses.sft import sft_loss

# PRM label tokens (negative, neutral, positive): the LM's next-token logits of these
# characters at a step's last token are the three class logits.


def held_out(cfg: ExperimentConfig, data: TaskData, loss_fn, make) -> Callable[[Trained], dict]:
    """A report of the loss's held-out means over the test split (`make(rows, split)`)
    with the last logged training loss."""

    def report(trained: Trained) -> dict:
        test = evaluate(
            loss_fn, trained.state.params, lambda rows: make(rows, "test"), len(data.test.kept), cfg.train.batch_size
        )
        return {"train_loss": trained.last.get("loss"), **{f"test_{k}": v for k, v in test.items()}}

    return report


def sft(cfg: ExperimentConfig, data: TaskData, mesh) -> Loop:
    """Supervised fine-tuning on the task's reference completions; reports the test
    split's token NLL and perplexity."""
    model, params = build_model(cfg, len(data.tokenizer), mesh)
    loss_fn = functools.partial(sft_loss, model=model, prompt_weight=cfg.train.prompt_loss_weight)

    def report(trained: Trained) -> dict:
        test_nll = float(jax.jit(loss_fn)(trained.state.params, data.test_batch())[1]["nll"])
        return {"train_loss": trained.last.get("loss"), "test_nll": test_nll, "test_ppl": math.exp(test_nll)}

    return fixed_data_loop(cfg, mesh, model, params, loss_fn, data.batch, len(data.train.kept), report)


def reward(cfg: ExperimentConfig, data: TaskData, mesh) -> Loop:
    """A Bradley-Terry reward model on the task's preference pairs; reports held-out
    pairwise accuracy, and where the task has a content probe (pairs of equal form that
    only what they say separates) the share of its test pairs ranked right."""
    model, params = build_model(cfg, len(data.tokenizer), mesh, head="scalar")
    loss_fn = functools.partial(pair_loss, model=model, tie_strength=cfg.train.tie_strength)
    means = held_out(cfg, data, loss_fn, data.batch)

    def report(trained: Trained) -> dict:
        test = means(trained)
        out = {k: test[k] for k in ("train_loss", "test_loss", "test_accuracy")} | {"test_pairs": len(data.test.kept)}
        if "probe" in data.task.offers:
            probe = data.other("probe")
            ranked = held_out(cfg, probe, loss_fn, probe.batch)(trained)
            out |= {"content_probe_accuracy": ranked["test_accuracy"], "content_probe_pairs": len(probe.test.kept)}
        return out

    return fixed_data_loop(cfg, mesh, model, params, loss_fn, data.batch, len(data.train.kept), report)


# ----------------------------------------------------------------------------- ORM / PRM


def orm_batch(data: TaskData, rows, split: str = "train") -> dict:
    sft = data.batch(rows, split)
    labels = np.asarray([data.row(r, split)["outcome"] for r in rows], np.int32)
    return {"tokens_BxT": sft.tokens_BxT, "mask_BxT": sft.mask_BxT, "labels_B": labels}


def step_ends(tokenizer, completion: str, n_steps: int) -> list[int]:
    """Token index (within the completion's tokens) of the last token of each of the
    first n_steps lines."""
    encoded = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    ends, at = [], 0
    for _ in range(n_steps):
        newline = completion.find("\n", at)
        end_char = (newline if newline >= 0 else len(completion)) - 1
        ends.append(next(i for i, (a, b) in enumerate(encoded["offset_mapping"]) if a <= end_char < b))
        at = newline + 1
    return ends


def prm_batch(data: TaskData, rows, max_steps: int, split: str = "train") -> dict:
    """Tokens plus, per step, the sequence position of its last token and its label
    (NO_STEP for padding and for steps cut off by the completion limit)."""
    sft = data.batch(rows, split)
    positions = np.zeros((len(rows), max_steps), np.int32)
    labels = np.full((len(rows), max_steps), NO_STEP, np.int32)
    for b, r in enumerate(rows):
        record = data.row(r, split)
        step_labels = list(record["step_labels"])[:max_steps]
        n_completion = int(sft.completion_mask_BxT[b].sum())
        for s, end in enumerate(step_ends(data.tokenizer, record["completion"], len(step_labels))):
            if end < n_completion:
                positions[b, s], labels[b, s] = data.P + end, step_labels[s]
    return {
        "tokens_BxT": sft.tokens_BxT,
        "mask_BxT": sft.mask_BxT,
        "step_positions_BxS": positions,
        "step_labels_BxS": labels,
    }


def held_out_solutions(data: TaskData) -> tuple[list[str], list[str], np.ndarray]:
    """The test split's (prompts, solutions, outcomes): what a verifier's held-out AUROC ranks."""
    rows = [data.row(i, "test") for i in range(len(data.test.kept))]
    return [r["prompt"] for r in rows], [r["completion"] for r in rows], np.asarray([r["outcome"] for r in rows])


def orm(cfg: ExperimentConfig, data: TaskData, mesh) -> Loop:
    """An outcome reward model: a scalar head trained on whether the final answer is
    right; reports held-out accuracy beside the majority-class baseline, and the AUROC of
    its score against the outcome (0.5: it ranks right and wrong solutions alike)."""
    model, params = build_model(cfg, len(data.tokenizer), mesh, head="scalar")
    weights = None
    if cfg.train.class_balance:  # wrong, right: inverse to their frequency in the train set
        weights = class_balance_weights([data.row(i, "train")["outcome"] for i in range(len(data.train.kept))], 2)

    def loss_fn(params, batch):
        return orm_loss(params, batch["tokens_BxT"], batch["mask_BxT"], batch["labels_B"], model, weights)

    make = lambda rows, split="train": orm_batch(data, rows, split)  # noqa: E731
    means = held_out(cfg, data, loss_fn, make)

    def report(trained: Trained) -> dict:
        test = means(trained)
        prompts, solutions, outcomes = held_out_solutions(data)
        scores = RewardModelJudge(model, trained.state.params, data.tokenizer, data.P, data.C)(prompts, solutions)
        positive = outcomes.mean()
        return (
            {k: test[k] for k in ("train_loss", "test_loss", "test_accuracy")}
            | {"test_majority_baseline": float(max(positive, 1 - positive)), "test_auroc": auroc(scores, outcomes)}
            | ({"class_weights": list(weights)} if weights else {})
        )

    return fixed_data_loop(cfg, mesh, model, params, loss_fn, make, len(data.train.kept), report)


def prm(cfg: ExperimentConfig, data: TaskData, mesh, max_steps: int = PRM_MAX_STEPS) -> Loop:
    """A process reward model: the LM predicts each step's label (negative / neutral /
    positive) as one of three label tokens at the step's last token (PRM800K)."""
    model, params = build_model(cfg, len(data.tokenizer), mesh)
    label_ids = prm_label_ids(data.tokenizer)
    weights = None
    if cfg.train.class_balance:  # negative, neutral, positive: inverse to their frequency among the train steps
        steps = [label for i in range(len(data.train.kept)) for label in data.row(i, "train")["step_labels"]]
        weights = class_balance_weights(steps, 3)

    def loss_fn(params, batch):
        return prm_loss(
            params, batch["tokens_BxT"], batch["mask_BxT"], batch["step_positions_BxS"], batch["step_labels_BxS"],
            label_ids, model, weights,
        )  # fmt: skip

    make = lambda rows, split="train": prm_batch(data, rows, max_steps, split)  # noqa: E731
    means = held_out(cfg, data, loss_fn, make)

    def report(trained: Trained) -> dict:
        test = means(trained)
        prompts, solutions, outcomes = held_out_solutions(data)
        judged = PRMJudge(model, trained.state.params, data.tokenizer, data.P, data.C, max_steps)(prompts, solutions)
        aurocs = {f"test_auroc_{name}": auroc(judged[name], outcomes) for name in SCORES}
        return (
            {k: test[k] for k in ("train_loss", "test_loss", "test_step_accuracy")}
            | aurocs
            | ({"class_weights": list(weights)} if weights else {})
        )

    return fixed_data_loop(cfg, mesh, model, params, loss_fn, make, len(data.train.kept), report)
