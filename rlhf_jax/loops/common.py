"""What every loop shares: the resumable driver (`drive`), metrics logging, signal
handling, model construction from a checkpoint, and the end-of-run outputs.

A loop resumes from the workdir's newest readable checkpoint (train state plus the loop's
own state: data position, baseline, KL coefficient), saves every `save_every`
iterations, on SIGTERM/SIGINT (after finishing the iteration) and at the end, appends to
metrics.jsonl and TensorBoard, and writes summary.json.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections.abc import Callable
from typing import Any, Protocol

import jax
import numpy as np
from tensorboardX import SummaryWriter

from rlhf_jax import mesh as mesh_lib
from rlhf_jax.checkpoint import Checkpointer
from rlhf_jax.compiles import CompileCounter
from rlhf_jax.experiment import ExperimentConfig
from rlhf_jax.models.hf import load_hf, save_hf
from rlhf_jax.models.transformer import init_model


class MetricsLog:
    """One JSON object per logging step in metrics.jsonl, the same scalars as TensorBoard
    events under tb/, and a progress line with the key metrics (process 0 only). A resumed
    run first drops what was logged after its checkpoint, so the log reads as one run."""

    KEYS = ("loss", "accuracy", "score", "reward", "kl", "gold", "grad_norm")

    def __init__(self, workdir: str, total: int, start: int):
        self.workdir, self.total, self.start = workdir, total, start
        self.main = jax.process_index() == 0

    def __enter__(self):
        if self.main:
            path = os.path.join(self.workdir, "metrics.jsonl")
            if os.path.exists(path):
                with open(path) as f:
                    kept = [line for line in f if line.strip() and json.loads(line)["step"] <= self.start]
                with open(path, "w") as f:
                    f.writelines(kept)
            self.file = open(path, "a")
            purge = self.start + 1 if self.start else None
            self.tb = SummaryWriter(os.path.join(self.workdir, "tb"), purge_step=purge)
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
        shown = " ".join(f"{k} {metrics[k]:.4g}" for k in self.KEYS if k in metrics)
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

    def agreed(self, sync_point: bool) -> int | None:
        """The signal, if any process has received one: every process of a run must stop
        (and save) after the same step, or the others would wait for it forever. Over
        several processes they agree only at `sync_point`s (the logging steps, where the
        host waits for the devices anyway), so other steps keep dispatching ahead."""
        if jax.process_count() == 1:
            return self.received
        if not sync_point:
            return None
        from jax.experimental import multihost_utils

        signals = multihost_utils.process_allgather(np.int32(self.received or 0))
        return int(signals.max()) or None

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Progress(Protocol):
    """The loop's own resumable state, saved as JSON beside the train state."""

    def state(self) -> dict[str, Any]: ...

    def restore(self, state: dict[str, Any]) -> None: ...


def drive(
    cfg: ExperimentConfig,
    workdir: str,
    mesh,
    state,
    progress: Progress,
    advance: Callable[[Any, int], tuple[Any, dict]],
):
    """Run `advance(state, i) -> (state, metrics)` for i = start .. train.steps - 1, where
    start is the newest checkpoint's iteration. Returns (state, last logged metrics), or
    None when a signal stopped it (after saving). A non-finite loss stops the run with an
    error that names the iteration; the checkpoints saved before it are kept. Each logged
    line carries `compiles`, the XLA compilations since the previous one (0 once warm;
    checkpoint saves not counted)."""
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=cfg.train.keep)
    start = 0
    restored = ckpt.restore(state)
    if restored is not None:
        start, state, meta = restored
        progress.restore(meta["loop"])
        print(f"resumed from step {start}")
    total, t0, last = cfg.train.steps, time.time(), {}
    with (
        StopSignal() as stop,
        mesh_lib.use_mesh(mesh),
        MetricsLog(workdir, total, start) as log,
        CompileCounter() as compiles,
    ):
        for i in range(start, total):
            state, metrics = advance(state, i)
            done = i + 1
            logged = done % cfg.train.log_every == 0 or done == total
            if logged:
                last = {k: float(v) for k, v in jax.device_get(metrics).items()}
                last["compiles"] = compiles.take()
                if not math.isfinite(last["loss"]):
                    ckpt.wait()
                    raise FloatingPointError(
                        f"loss is {last['loss']} at step {done}; last good checkpoint: step {ckpt.latest_step()}"
                    )
                log.write(done, last, time.time() - t0)
            signal_received = stop.agreed(sync_point=logged)
            if done % cfg.train.save_every == 0 or done == total or signal_received:
                with compiles.paused():
                    ckpt.save(done, state, {"loop": progress.state()})
            if signal_received:
                ckpt.close()
                print(
                    f"stopped by signal {signal_received} after step {done}; checkpoint saved; "
                    "resume with the same command"
                )
                return None
    ckpt.close()
    return state, last


def checkpoint_dir(path: str) -> str:
    """An HF directory, or a previous run's workdir (its exported hf/)."""
    exported = os.path.join(path, "hf")
    if os.path.exists(os.path.join(exported, "config.json")):
        return exported
    if not os.path.exists(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{path}: neither an HF checkpoint directory nor a finished run's workdir (no hf/)")
    return path


def load_scalar(path: str, mesh, seed: int = 0):
    """A scalar-head model from `path`; an LM checkpoint keeps its backbone and starts
    the score from its usual initialisation (an RM or critic from the SFT policy)."""
    path = checkpoint_dir(path)
    try:
        return load_hf(path, head="scalar", mesh=mesh)
    except KeyError:
        model, lm_params = load_hf(path, mesh=mesh)
        return scalar_from_lm(model, lm_params, mesh, seed)


def scalar_from_lm(model, lm_params, mesh, seed: int = 0):
    scalar_model, scalar = init_model(model.cfg, head="scalar", seed=seed, mesh=mesh)
    return scalar_model, {k: lm_params[k] if k in lm_params and k != "lm_head" else v for k, v in scalar.items()}


def build_model(cfg: ExperimentConfig, vocab_size: int, mesh, head: str = "lm"):
    """From scratch (model.* sizes, train.seed), or from model.init_from."""
    if not cfg.model.init_from:
        return init_model(cfg.model.model_config(vocab_size), head=head, seed=cfg.train.seed, mesh=mesh)
    if head == "lm":
        return load_hf(checkpoint_dir(cfg.model.init_from), mesh=mesh)
    return load_scalar(cfg.model.init_from, mesh, cfg.train.seed)


def finish(workdir: str, summary: dict, model, params, tokenizer) -> dict:
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        save_hf(model, params, os.path.join(workdir, "hf"), tokenizer=tokenizer)
    return summary
