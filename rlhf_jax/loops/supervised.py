"""Supervised loops: SFT, and the reward models (Bradley-Terry on pairs, ORM on outcome
labels, PRM on per-step labels). Each trains with `common.drive` and ends with its
held-out figures in summary.json and an HF export."""

from __future__ import annotations

import functools
import math

import jax
import numpy as np

from rlhf_jax import mesh as mesh_lib
from rlhf_jax.batches import NO_STEP
from rlhf_jax.experiment import ExperimentConfig
from rlhf_jax.loops.common import build_model, evaluate, finish, train
from rlhf_jax.loops.data import TaskData, task_data
from rlhf_jax.losses.reward import orm_loss, pair_loss, prm_loss
from rlhf_jax.losses.sft import sft_loss

# PRM label tokens (negative, neutral, positive): the LM's next-token logits of these
# characters at a step's last token are the three class logits.
PRM_LABEL_TEXT = ("-", "=", "+")


def run_sft(cfg: ExperimentConfig, workdir: str) -> dict:
    """Supervised fine-tuning on the task's reference completions."""
    data = task_data(cfg, workdir, "sft")
    mesh = mesh_lib.make_mesh(cfg.mesh)
    model, params = build_model(cfg, len(data.tokenizer), mesh)
    loss_fn = functools.partial(sft_loss, model=model, prompt_weight=cfg.train.prompt_loss_weight)
    result = train(cfg, workdir, mesh, params, loss_fn, data.batch, len(data.train.kept))
    if result is None:
        return {"stopped": True}
    state, last = result.state, result.last
    test_nll = float(jax.jit(loss_fn)(state.params, data.test_batch())[1]["nll"])
    summary = {"steps": cfg.train.steps, "train_loss": last.get("loss"), "test_nll": test_nll}
    summary["test_ppl"] = math.exp(test_nll)
    return finish(workdir, summary, model, state.params, data.tokenizer, result)


def run_reward(cfg: ExperimentConfig, workdir: str) -> dict:
    """A Bradley-Terry reward model on the task's preference pairs; reports held-out
    pairwise accuracy."""
    data = task_data(cfg, workdir, "preference")
    mesh = mesh_lib.make_mesh(cfg.mesh)
    model, params = build_model(cfg, len(data.tokenizer), mesh, head="scalar")
    loss_fn = functools.partial(pair_loss, model=model)
    result = train(cfg, workdir, mesh, params, loss_fn, data.batch, len(data.train.kept))
    if result is None:
        return {"stopped": True}
    state, last = result.state, result.last
    test = evaluate(loss_fn, state.params, data.test_batch_of, len(data.test.kept), cfg.train.batch_size)
    summary = {
        "steps": cfg.train.steps,
        "train_loss": last.get("loss"),
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
        "test_pairs": len(data.test.kept),
    }
    return finish(workdir, summary, model, state.params, data.tokenizer, result)


# ----------------------------------------------------------------------------- ORM / PRM


def labelled_data(cfg: ExperimentConfig, workdir: str) -> TaskData:
    if cfg.data.task != "arithmetic":
        raise ValueError(f"train.kind={cfg.train.kind!r} needs step/outcome labels: data.task must be 'arithmetic'")
    return task_data(cfg, workdir, "sft")


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


def prm_label_ids(tokenizer) -> tuple[int, ...]:
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in PRM_LABEL_TEXT]
    if any(len(i) != 1 for i in ids):
        raise ValueError(f"PRM label texts {PRM_LABEL_TEXT} must each be one token of the tokenizer")
    return tuple(i[0] for i in ids)


def run_orm(cfg: ExperimentConfig, workdir: str) -> dict:
    """An outcome reward model: a scalar head trained on whether the final answer is right."""
    data = labelled_data(cfg, workdir)
    mesh = mesh_lib.make_mesh(cfg.mesh)
    model, params = build_model(cfg, len(data.tokenizer), mesh, head="scalar")

    def loss_fn(params, batch):
        return orm_loss(params, batch["tokens_BxT"], batch["mask_BxT"], batch["labels_B"], model)

    result = train(cfg, workdir, mesh, params, loss_fn, lambda rows: orm_batch(data, rows), len(data.train.kept))
    if result is None:
        return {"stopped": True}
    state, last = result.state, result.last
    test = evaluate(
        loss_fn, state.params, lambda rows: orm_batch(data, rows, "test"), len(data.test.kept), cfg.train.batch_size
    )
    positive = np.mean([data.row(i, "test")["outcome"] for i in range(len(data.test.kept))])
    summary = {
        "steps": cfg.train.steps,
        "train_loss": last.get("loss"),
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
        "test_majority_baseline": float(max(positive, 1 - positive)),
    }
    return finish(workdir, summary, model, state.params, data.tokenizer, result)


def run_prm(cfg: ExperimentConfig, workdir: str, max_steps: int = 8) -> dict:
    """A process reward model: the LM predicts each step's label (negative / neutral /
    positive) as one of three label tokens at the step's last token (PRM800K)."""
    data = labelled_data(cfg, workdir)
    mesh = mesh_lib.make_mesh(cfg.mesh)
    model, params = build_model(cfg, len(data.tokenizer), mesh)
    label_ids = prm_label_ids(data.tokenizer)

    def loss_fn(params, batch):
        return prm_loss(
            params, batch["tokens_BxT"], batch["mask_BxT"], batch["step_positions_BxS"], batch["step_labels_BxS"],
            label_ids, model,
        )  # fmt: skip

    make = lambda rows, split="train": prm_batch(data, rows, max_steps, split)  # noqa: E731
    result = train(cfg, workdir, mesh, params, loss_fn, make, len(data.train.kept))
    if result is None:
        return {"stopped": True}
    state, last = result.state, result.last
    test = evaluate(loss_fn, state.params, lambda rows: make(rows, "test"), len(data.test.kept), cfg.train.batch_size)
    summary = {
        "steps": cfg.train.steps,
        "train_loss": last.get("loss"),
        "test_loss": test["loss"],
        "test_step_accuracy": test["step_accuracy"],
    }
    return finish(workdir, summary, model, state.params, data.tokenizer, result)
