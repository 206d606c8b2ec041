"""What every loop shares: the one run skeleton (`run_loop`, which a loop kind fills in
with a `Loop`), the resumable driver (`drive`), minibatch training over a fixed data set
(`fixed_data_loop`) and held-out loss means (`evaluate`), metrics logging, signal
handling, model construction from a checkpoint, the held-out report of a policy
(`held_out_report`) and the end-of-run outputs.

A loop resumes from the workdir's newest readable checkpoint (train state plus the loop's
own state: data position, baseline, KL coefficient), saves every `save_every`
iterations, on SIGTERM/SIGINT (after finishing the iteration) and at the end, appends to
metrics.jsonl and TensorBoard, and writes summary.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from tensorboardX import SummaryWriter

from rlhf_jax import mesh as mesh_lib
from rlhf_jax.checkpoint import Checkpointer
from rlhf_jax.compiles import CompileCounter
from rlhf_jax.data import batching
from rlhf_jax.eval import policies as policy_eval
from rlhf_jax.eval.judges import RewardModelJudge
from rlhf_jax.experiment import KINDS, ExperimentConfig
from rlhf_jax.loops.data import task_data
from rlhf_jax.models import lora
from rlhf_jax.models.hf import checkpoint_head, load_hf, save_hf
from rlhf_jax.models.transformer import init_model, run_as
from rlhf_jax.train_step import (
    TrainState,
    init_state,
    keep_frozen,
    make_optimizer,
    make_schedule,
    make_train_step,
    state_shardings,
)
from rlhf_jax.workdir import checkpoint_dir, write_json


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

        signals = multihost_utils.process_allgather(np.int32(self.received or 0))
        return int(signals.max()) or None

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Progress(Protocol):
    """The loop's own resumable state, saved as JSON beside the train state."""

    def state(self) -> dict[str, Any]: ...

    def restore(self, state: dict[str, Any]) -> None: ...


@dataclasses.dataclass
class Trained:
    """What `drive` ends with: the final state, the last logged metrics, and the steps
    the run was resumed from (one per restart, in order)."""

    state: Any
    last: dict[str, float]
    resumed_from: list[int]


@contextlib.contextmanager
def _saves_finished_on_error(ckpt: Checkpointer):
    """On an error in the loop, let the checkpoint saves under way finish first (a failure
    never loses what was being saved); an error of the save itself is not raised over it."""
    try:
        yield
    except BaseException:
        try:
            ckpt.wait()
        except Exception:  # noqa: BLE001 - the loop's error is the one to report
            pass
        raise


@jax.jit
def _first_bad(first_bad, finite, step):
    """The first step whose state was not finite (0 = none so far), on device."""
    return jnp.where((first_bad == 0) & (finite < 1), step, first_bad)


def drive(
    cfg: ExperimentConfig,
    workdir: str,
    mesh,
    state,
    progress: Progress,
    advance: Callable[[Any, int], tuple[Any, dict]],
) -> Trained | None:
    """Run `advance(state, i) -> (state, metrics)` for i = start .. train.steps - 1, where
    start is the newest readable checkpoint's iteration. Returns a `Trained`, or None when
    a signal stopped it (after saving).

    A step's metrics carry `finite` (train_step: loss, parameters and optimiser state all
    finite); the first step that was not is tracked on device and read only when saving or
    logging, so no step waits for the host. A non-finite state is never saved: the run
    stops with an error that names the step, and the checkpoints saved before it are kept.
    Each logged line carries `compiles`, the XLA compilations since the previous one (0
    once warm; checkpoint saves not counted)."""
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=cfg.train.keep)
    start, resumed_from, last = 0, [], {}
    restored = ckpt.restore(state)
    if restored is not None:
        start, restored_state, meta = restored
        # a LoRA base is frozen: keep the arrays the reference shares, not a restored second copy
        state = keep_frozen(restored_state, state) if isinstance(state, TrainState) else restored_state
        progress.restore(meta["loop"])
        resumed_from, last = [*meta.get("resumed_from", []), start], meta.get("last", {})
        print(f"resumed from step {start}")
    total, t0 = cfg.train.steps, time.time()
    first_bad = None  # placed like the first step's flag, so that one program serves every step

    def stop_if_not_finite():
        bad = int(first_bad) if first_bad is not None else 0
        if bad:
            ckpt.wait()
            latest = ckpt.latest_step()
            kept = f"latest checkpoint: step {latest}" if latest is not None else "no checkpoint was saved before it"
            if restored is not None and latest == start:  # nothing saved since the resume: suspect what it read
                kept += (f", which this run resumed from: if it is damaged, move {ckpt.directory}/{start} aside "
                         "and rerun")  # fmt: skip
            raise FloatingPointError(
                f"the loss, parameters or optimiser state stopped being finite at step {bad}; nothing from that "
                f"step on was saved; {kept} (otherwise lower optim.learning_rate, or set optim.max_grad_norm)"
            )

    with (
        StopSignal() as stop,
        mesh_lib.use_mesh(mesh),
        MetricsLog(workdir, total, start) as log,
        CompileCounter() as compiles,
        _saves_finished_on_error(ckpt),
    ):
        for i in range(start, total):
            state, metrics = advance(state, i)
            done = i + 1
            metrics = dict(metrics)
            finite = metrics.pop("finite")
            if first_bad is None:
                first_bad = jax.device_put(np.int32(0), getattr(finite, "sharding", None))
            first_bad = _first_bad(first_bad, finite, np.int32(done))
            logged = done % cfg.train.log_every == 0 or done == total
            if logged:
                stop_if_not_finite()
                last = {k: float(v) for k, v in jax.device_get(metrics).items()}
                last["compiles"] = compiles.take()
                log.write(done, last, time.time() - t0)
            signal_received = stop.agreed(sync_point=logged)
            if done % cfg.train.save_every == 0 or done == total or signal_received:
                stop_if_not_finite()
                with compiles.paused():
                    ckpt.save(done, state, {"loop": progress.state(), "resumed_from": resumed_from, "last": last})
            if signal_received:
                ckpt.close()
                print(
                    f"stopped by signal {signal_received} after step {done}; checkpoint saved; "
                    "resume with the same command"
                )
                return None
    ckpt.close()
    return Trained(state, last, resumed_from)


@dataclasses.dataclass
class Loop:
    """What a loop kind fills in of the one run skeleton (`run_loop`): the model it
    exports, the initial train state, its resumable progress, one step
    `advance(state, i) -> (state, metrics)`, the held-out report of the trained run, and
    which parameters of the final state are exported."""

    model: Any
    state: Any
    progress: Progress
    advance: Callable[[Any, int], tuple[Any, dict]]
    report: Callable[[Trained], dict]
    export: Callable[[Any], Any] = lambda state: state.params


def run_loop(cfg: ExperimentConfig, workdir: str, build: Callable[[ExperimentConfig, Any, Any], Loop]) -> dict:
    """The one run skeleton of every train.kind: the task's data (the kind
    `experiment.KINDS` names) -> `build(cfg, data, mesh)` -> `drive` -> the loop's report
    -> HF export and summary.json. Returns the summary, or {"stopped": True} when a
    signal stopped the run (after saving)."""
    data = task_data(cfg, workdir, KINDS[cfg.train.kind])
    mesh = mesh_lib.make_mesh(cfg.mesh)
    loop = build(cfg, data, mesh)
    result = drive(cfg, workdir, mesh, loop.state, loop.progress, loop.advance)
    if result is None:
        return {"stopped": True}
    summary = {"steps": cfg.train.steps, **loop.report(result)}
    return finish(workdir, summary, loop.model, loop.export(result.state), data.tokenizer, result)


def fixed_data_loop(cfg: ExperimentConfig, mesh, model, params, loss_fn, make_batch, n_train: int, report) -> Loop:
    """A `Loop` of minibatch training over the n_train rows of a fixed data set
    (`make_batch(rows)`), resumable (the loader's position is saved)."""
    optimizer = make_optimizer(cfg.optim)
    state = init_state(params, optimizer)
    loader = batching.Loader(n_train, cfg.train.batch_size, cfg.train.seed)
    step_fn = make_train_step(
        loss_fn, optimizer, schedule=make_schedule(cfg.optim), state_shardings=state_shardings(state)
    )

    def advance(state, i):
        return step_fn(state, mesh_lib.put_rows(make_batch, next(loader), mesh))

    return Loop(model, state, loader, advance, report)


def evaluate(loss_fn, params, batch_of, n: int, batch_size: int) -> dict[str, float]:
    """Row-weighted means of a loss's metrics over n held-out rows, in batches."""
    fn = jax.jit(loss_fn)
    totals, count = {}, 0
    for start in range(0, n, batch_size):
        rows = list(range(start, min(start + batch_size, n)))
        _, metrics = fn(params, batch_of(rows))
        for k, v in jax.device_get(metrics).items():
            totals[k] = totals.get(k, 0.0) + float(v) * len(rows)
        count += len(rows)
    return {k: v / count for k, v in totals.items()}


def load_scalar(path: str, mesh, seed: int = 0, strict: bool = False, scan_layers: bool = False):
    """A scalar-head model from `path`; an LM checkpoint keeps its backbone and starts
    the score from its usual initialisation (an RM or critic from the SFT policy), unless
    `strict` (a reward model to score with must have been trained: its score head)."""
    path = checkpoint_dir(path)
    if checkpoint_head(path) == "scalar":
        return load_hf(path, head="scalar", mesh=mesh, scan_layers=scan_layers)
    if strict:
        raise ValueError(f"{path}: a policy (LM head), not a reward model: it has no score head")
    model, lm_params = load_hf(path, mesh=mesh, scan_layers=scan_layers)
    return scalar_from_lm(model, lm_params, mesh, seed)


def scalar_from_lm(model, lm_params, mesh, seed: int = 0):
    """A scalar-head model on an LM's backbone (the same arrays) with a fresh score head
    (and fresh adapters when the LM has them)."""
    backbone = {k: v for k, v in lora.base_leaves(lm_params).items() if k != "lm_head"}
    return init_model(model.cfg, head="scalar", seed=seed, mesh=mesh, existing=backbone)


def build_model(cfg: ExperimentConfig, vocab_size: int, mesh, head: str = "lm"):
    """From scratch (model.* sizes, train.seed), or from model.init_from; vocab_size is
    the tokenizer's, which the model's vocabulary must hold. Run with model.remat and
    model.attention, in
    model.scan_layers' layout."""
    if not cfg.model.init_from:
        if cfg.model.vocab_size and cfg.model.vocab_size < vocab_size:
            raise ValueError(
                f"model.vocab_size={cfg.model.vocab_size}: the tokenizer has {vocab_size} tokens; 0 = its size"
            )
        return init_model(cfg.model.model_config(vocab_size), head=head, seed=cfg.train.seed, mesh=mesh)
    if head == "lm":
        model, params = load_hf(checkpoint_dir(cfg.model.init_from), mesh=mesh, scan_layers=cfg.model.scan_layers)
    else:
        model, params = load_scalar(cfg.model.init_from, mesh, cfg.train.seed, scan_layers=cfg.model.scan_layers)
    model = run_as(model, **cfg.model.how_to_run)
    if model.cfg.vocab_size < vocab_size:
        raise ValueError(
            f"model.init_from={cfg.model.init_from}: a vocabulary of {model.cfg.vocab_size} tokens, "
            f"the tokenizer has {vocab_size}"
        )
    return with_adapters(cfg, model, params, mesh)


def with_adapters(cfg: ExperimentConfig, model, params, mesh):
    """(model, params) with model.lora_rank's fresh adapters around the same base arrays
    (unchanged when the rank is 0)."""
    m = cfg.model
    return lora.add_adapters(model, params, m.lora_rank, m.lora_alpha, m.lora_targets, cfg.train.seed, mesh)


def finish(workdir: str, summary: dict, model, params, tokenizer, trained: Trained | None = None) -> dict:
    """The HF export, then summary.json (written last and atomically: its presence marks a
    finished run), with the steps the run was resumed from."""
    if trained is not None:
        summary = {**summary, "resumed_from": trained.resumed_from}
    if jax.process_index() == 0:
        save_hf(model, params, os.path.join(workdir, "hf"), tokenizer=tokenizer)
        write_json(os.path.join(workdir, "summary.json"), summary)
    return summary


def held_out_report(
    cfg: ExperimentConfig, data, model, named_params: dict, ref_params, mesh, rm=None, rm_params=None
) -> dict:
    """The loops' held-out report (`eval.policies.compare`): one sampled completion per
    test prompt at the training temperature from each named policy, in sampler calls of
    rl.rollout_batch prompts in rl.sample_dtype (the rollouts' sampler at k = 1, so a run
    that fits its rollouts fits its evaluation); judged by the gold reward (built-in
    tasks) and the reward model (when there is one); "policy" against "reference" head to
    head."""
    gold = data.task.judge
    rm_judge = RewardModelJudge(rm, rm_params, data.tokenizer, data.P, data.C) if rm is not None else None
    pairs = [("policy", "reference")] if "reference" in named_params and (gold or rm_judge) else []
    return policy_eval.compare(
        model, named_params, ref_params, data, pairs, gold=gold, rm_judge=rm_judge, temperature=cfg.rl.temperature,
        seed=cfg.train.seed + 1, mesh=mesh, greedy=False, chunk=cfg.rl.rollout_batch, sample_dtype=cfg.rl.sample_dtype,
    )  # fmt: skip
