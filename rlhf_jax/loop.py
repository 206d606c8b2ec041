"""Experiment loops. Each resumes from the workdir's latest readable checkpoint (train
state plus loop state: data position), saves every `save_every` steps, on SIGTERM/SIGINT
(after finishing the step) and at the end, logs metrics.jsonl, and writes summary.json.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import jax
from tensorboardX import SummaryWriter

from rlhf_jax import mesh as mesh_lib
from rlhf_jax.checkpoint import Checkpointer
from rlhf_jax.data import batching, builders
from rlhf_jax.data.tokenizer import train_tokenizer
from rlhf_jax.experiment import ExperimentConfig
from rlhf_jax.losses.reward import pair_loss
from rlhf_jax.losses.sft import sft_loss
from rlhf_jax.models.hf import load_hf, load_tokenizer, save_hf
from rlhf_jax.models.transformer import init_model
from rlhf_jax.train_step import init_state, make_optimizer, make_schedule, make_train_step, state_shardings


class MetricsLog:
    """One JSON object per logging step in metrics.jsonl, the same scalars as TensorBoard
    events under tb/, and a progress line with the key metrics (process 0 only)."""

    def __init__(self, workdir: str, total: int, start: int):
        self.workdir, self.total, self.start = workdir, total, start
        self.main = jax.process_index() == 0

    def __enter__(self):
        if self.main:
            self.file = open(os.path.join(self.workdir, "metrics.jsonl"), "a")
            self.tb = SummaryWriter(os.path.join(self.workdir, "tb"))
        return self

    def write(self, step: int, metrics: dict[str, float], elapsed: float) -> None:
        if not self.main:
            return
        self.file.write(json.dumps({"step": step, **metrics}) + "\n")
        self.file.flush()
        for key, value in metrics.items():
            self.tb.add_scalar(key, value, step)
        rate = (step - self.start) / max(elapsed, 1e-9)
        eta = (self.total - step) / max(rate, 1e-9)
        keys = [k for k in ("loss", "accuracy", "kl", "reward", "grad_norm") if k in metrics]
        shown = " ".join(f"{k} {metrics[k]:.4g}" for k in keys)
        print(f"step {step}/{self.total} {shown} | {rate:.2f} steps/s, {elapsed:.0f} s, eta {eta:.0f} s", flush=True)

    def __exit__(self, *exc):
        if self.main:
            self.file.close()
            self.tb.close()


class StopSignal:
    """Records SIGTERM / SIGINT so the loop can finish its step, save and exit cleanly."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def task_rows(cfg: ExperimentConfig, workdir: str, kind: str):
    """Train and test rows of the built-in summarisation task: kind "sft" or "preference"."""
    data_dir = cfg.data.data_dir or os.path.join(workdir, "tfds")
    config = builders.task_config(kind, cfg.data.seed, cfg.data.n_train, cfg.data.n_test)
    builder = builders.prepare(builders.SyntheticSummarization, data_dir, config=config)
    return builders.records(builder, "train"), builders.records(builder, "test")


def tokenizer_for(cfg: ExperimentConfig, rows, workdir: str):
    if cfg.data.tokenizer:
        return load_tokenizer(cfg.data.tokenizer)
    directory = os.path.join(workdir, "tokenizer")
    if os.path.exists(os.path.join(directory, "tokenizer.json")):
        return load_tokenizer(directory)
    texts = (r["prompt"] + "".join(r.get(k, "") for k in ("completion", "chosen", "rejected")) for r in rows)
    return train_tokenizer(texts, directory)


def build_model(cfg: ExperimentConfig, vocab_size: int, mesh, head: str = "lm"):
    """From scratch, or from an HF checkpoint; a scalar head on an LM checkpoint keeps its
    backbone and starts the score from its usual initialisation (an RM from the SFT policy)."""
    if not cfg.model.init_from:
        return init_model(cfg.model.model_config(vocab_size), head=head, seed=cfg.train.seed, mesh=mesh)
    if head == "lm":
        return load_hf(cfg.model.init_from, mesh=mesh)
    try:
        return load_hf(cfg.model.init_from, head=head, mesh=mesh)
    except KeyError:  # an LM checkpoint: take its backbone
        model, lm_params = load_hf(cfg.model.init_from, mesh=mesh)
        scalar_model, scalar = init_model(model.cfg, head=head, seed=cfg.train.seed, mesh=mesh)
        return scalar_model, {k: lm_params.get(k, v) if k not in ("lm_head", "score") else v for k, v in scalar.items()}


def train(cfg: ExperimentConfig, workdir: str, mesh, params, loss_fn, make_batch, n_train: int):
    """The resumable training loop shared by every kind. Returns (state, last logged
    metrics), or None when a signal stopped it (after saving)."""
    optimizer = make_optimizer(cfg.optim)
    state = init_state(params, optimizer)
    loader = batching.Loader(n_train, cfg.train.batch_size, cfg.train.seed)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=cfg.train.keep)
    restored = ckpt.restore(state)
    if restored is not None:
        _, state, meta = restored
        loader.restore(meta["loader"])
        print(f"resumed from step {int(state.step)}")
    step_fn = make_train_step(
        loss_fn, optimizer, schedule=make_schedule(cfg.optim), state_shardings=state_shardings(state)
    )
    start, t0, last = int(state.step), time.time(), {}
    with StopSignal() as stop, mesh_lib.use_mesh(mesh), MetricsLog(workdir, cfg.train.steps, start) as log:
        for step in range(start, cfg.train.steps):
            state, metrics = step_fn(state, mesh_lib.put_batch(make_batch(next(loader)), mesh))
            done = step + 1
            if done % cfg.train.log_every == 0 or done == cfg.train.steps:
                last = {k: float(v) for k, v in jax.device_get(metrics).items()}
                if not math.isfinite(last["loss"]):
                    latest = ckpt.latest_step()
                    raise FloatingPointError(f"loss is {last['loss']} at step {done}; last good checkpoint: {latest}")
                log.write(done, last, time.time() - t0)
            if done % cfg.train.save_every == 0 or done == cfg.train.steps or stop.received:
                ckpt.save(done, state, {"loader": loader.state()})
            if stop.received:
                ckpt.wait()
                print(
                    f"stopped by signal {stop.received} after step {done}; checkpoint saved; "
                    "resume with the same command"
                )
                return None
    ckpt.close()
    return state, last


def finish(workdir: str, summary: dict, model, params, tokenizer) -> dict:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    save_hf(model, params, os.path.join(workdir, "hf"), tokenizer=tokenizer)
    return summary


@dataclasses.dataclass
class TaskData:
    """A task's tokenised train and test sets and how to lay out their batches."""

    tokenizer: Any
    train: batching.Encoded
    test: batching.Encoded
    make: Callable  # (encoded, rows, P, C, pad) -> batch
    P: int
    C: int

    def batch(self, rows, split: str = "train"):
        enc = self.train if split == "train" else self.test
        return self.make(enc, rows, self.P, self.C, self.tokenizer.pad_token_id)

    def test_batch(self):
        return self.batch(list(range(len(self.test.kept))), "test")


def task_data(cfg: ExperimentConfig, workdir: str, kind: str) -> TaskData:
    """kind "sft" (prompt, completion) or "preference" (prompt, chosen, rejected)."""
    train_rows, test_rows = task_rows(cfg, workdir, kind)
    tokenizer = tokenizer_for(cfg, train_rows, workdir)
    P, C = cfg.data.max_prompt_len, cfg.data.max_completion_len
    fields, make = (
        (("completion",), batching.sft_batch) if kind == "sft" else (("chosen", "rejected"), batching.preference_batch)
    )
    train_set = batching.encode(tokenizer, train_rows, P, C, completions=fields)
    test_set = batching.encode(tokenizer, test_rows, P, C, completions=fields)
    print(f"train data: {train_set.report()}")
    return TaskData(tokenizer, train_set, test_set, make, P, C)


def run_sft(cfg: ExperimentConfig, workdir: str) -> dict:
    """Supervised fine-tuning on the task's reference completions."""
    data = task_data(cfg, workdir, "sft")
    mesh = mesh_lib.make_mesh(cfg.mesh)
    model, params = build_model(cfg, len(data.tokenizer), mesh)
    loss_fn = functools.partial(sft_loss, model=model)
    result = train(cfg, workdir, mesh, params, loss_fn, data.batch, len(data.train.kept))
    if result is None:
        return {"stopped": True}
    state, last = result
    test_nll = float(jax.jit(loss_fn)(state.params, data.test_batch())[0])
    summary = {
        "steps": cfg.train.steps,
        "train_loss": last.get("loss"),
        "test_nll": test_nll,
        "test_ppl": math.exp(test_nll),
    }
    return finish(workdir, summary, model, state.params, data.tokenizer)


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
    state, last = result
    _, test_metrics = jax.jit(loss_fn)(state.params, data.test_batch())
    summary = {
        "steps": cfg.train.steps,
        "train_loss": last.get("loss"),
        "test_loss": float(test_metrics["loss"]),
        "test_accuracy": float(test_metrics["accuracy"]),
        "test_pairs": len(data.test.kept),
    }
    return finish(workdir, summary, model, state.params, data.tokenizer)


LOOPS = {"sft": run_sft, "reward": run_reward}


def run(cfg: ExperimentConfig, workdir: str) -> dict:
    return LOOPS[cfg.train.kind](cfg, workdir)
