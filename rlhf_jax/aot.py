"""Ahead-of-time compilation of a run's programs for a TPU slice this machine is not
(`python -m rlhf_jax.main --config ... --dry-run --target v4-64`).

With libtpu installed (`pip install -e '.[tpu]'`) JAX describes a TPU topology's devices
on a CPU-only machine (`jax.experimental.topologies`). Each program of the run is lowered
with the run's real shardings (`mesh`, `model.*`, the rule tables of `mesh.py`) on a mesh
of those devices and compiled by the TPU compiler, which reports what one device holds:

    program    what it takes
    sampler    the policy's sampling weights (a whole copy along fsdp, or the trained
               shardings with rl.sampler_weights=sharded), the prompts
    experience train params, reference params, the scored samples
    update     the train state (donated), the rollout
    reward     the reward model's params, the sampled sequences (a reward model only)
    step       the train state (donated), a batch (the other train.kinds)

An RL run's held-out evaluation samples rl.rollout_batch test prompts once each with the
rollouts' sampler settings (the sampler's program at k = 1: the same rows, cache and
weights) and runs forwards of as many rows (as the experience step does), so it is
covered by those programs and not compiled again.

A program's device bytes are its arguments + outputs + temporaries - what the outputs
reuse of donated arguments, plus what stays resident beside it and is not its argument
(the train state, the reference when it is a copy, the reward model). With LoRA the
experience step's policy and reference arguments are the same base arrays at run time;
the compiler counts them twice, so its figure errs high. Above the chip's
HBM the run cannot start there: `check` names the program and the knobs that shrink it.
FLOPs per iteration are counted from the shapes (2 per parameter and token forward, 6
training); `roofline` predicts the iteration's time from XLA's cost analysis of each
program (`roofline.py`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import mesh as mesh_lib
from rlhf_jax.batches import PreferenceBatch, Scored, SFTBatch
from rlhf_jax.dry_run import run_model_config
from rlhf_jax.experiment import ExperimentConfig
from rlhf_jax.loops import online
from rlhf_jax.losses.preference import preference_loss
from rlhf_jax.losses.reward import pair_loss
from rlhf_jax.losses.sft import sft_loss
from rlhf_jax.models import lora
from rlhf_jax.models.transformer import abstract_model, count_params, with_dtype
from rlhf_jax.rollout import BaselineState
from rlhf_jax.roofline import Cost, Line, Roofline, decode_step, extrapolate
from rlhf_jax.sampling import Sampler, SamplingConfig, mean_slots_read
from rlhf_jax.train_step import (
    TrainState,
    make_optimizer,
    make_schedule,
    make_train_step,
    optax_state_shardings,
    train_step_fn,
)

GiB = 2**30
HEADROOM = 0.10  # the share of HBM a fitted setting leaves free (allocator, fragmentation, buffers)


@dataclasses.dataclass(frozen=True)
class Target:
    """A TPU slice: its topology for `get_topology_desc`, and per device (a chip; a v4 or
    v5p chip's two TensorCores are one megacore device) HBM, peak bf16 TFLOP/s and HBM
    bandwidth (GB/s; Google's data sheets)."""

    name: str
    topology: str
    chip_config: str
    hbm_gib: float
    peak_tflops: float
    hbm_gbps: float

    @property
    def devices(self) -> int:
        return math.prod(int(x) for x in self.topology.split(":")[1].split("x"))


def _targets() -> dict[str, Target]:
    out = {}
    cubes = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8"}
    planes = {4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
    for chips, shape in cubes.items():  # v4-N and v5p-N count TensorCores: N = 2 x chips
        out[f"v4-{2 * chips}"] = Target(f"v4-{2 * chips}", f"v4:{shape}", "megacore", 32.0, 275.0, 1200.0)
        out[f"v5p-{2 * chips}"] = Target(f"v5p-{2 * chips}", f"v5p:{shape}", "megacore", 95.0, 459.0, 2765.0)
    for chips, shape in planes.items():  # v5e-N and v6e-N count chips
        out[f"v5e-{chips}"] = Target(f"v5e-{chips}", f"v5e:{shape}", "default", 16.0, 197.0, 819.0)
        out[f"v6e-{chips}"] = Target(f"v6e-{chips}", f"v6e:{shape}", "default", 32.0, 918.0, 1640.0)
    return out


TARGETS = _targets()


def target(name: str) -> Target:
    if name not in TARGETS:
        raise ValueError(f"--target {name}: unknown; known: {', '.join(TARGETS)}")
    return TARGETS[name]


def target_devices(t: Target) -> list:
    """The slice's devices as the TPU compiler sees them (needs libtpu, not a TPU)."""
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")  # one host describes the whole slice
    try:
        from jax.experimental import topologies  # libtpu only where --target is asked

        desc = topologies.get_topology_desc(
            platform="tpu", topology_name=t.topology, chip_config_name=t.chip_config,
            chips_per_host_bounds=(2, 2, 1), num_slices=1,
        )  # fmt: skip
    except Exception as e:  # noqa: BLE001 - libtpu missing or too old: one line that says what to do
        raise RuntimeError(
            f"--target {t.name}: cannot describe the TPU topology {t.topology} ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200] if str(e) else ''}); install libtpu with pip install -e '.[tpu]'"
        ) from None
    return list(desc.devices)


# ----------------------------------------------------------------------------- bytes


def device_bytes(tree) -> int:
    """Bytes one device holds of a tree of sharded ShapeDtypeStructs (the largest shard)."""
    total = 0
    for x in jax.tree.leaves(tree):
        shape = x.sharding.shard_shape(x.shape) if getattr(x, "sharding", None) is not None else x.shape
        total += int(np.prod(shape)) * jnp.dtype(x.dtype).itemsize
    return total


@dataclasses.dataclass
class Program:
    name: str
    arguments: int
    outputs: int
    temporaries: int
    aliased: int
    resident: int  # held beside the program, not among its arguments
    compile_s: float
    flops: float = 0.0  # per device, XLA's cost analysis of the program as compiled (a loop's body once)
    hbm_bytes: float = 0.0  # likewise: bytes the program reads and writes in HBM

    @property
    def total(self) -> int:
        return self.arguments + self.outputs + self.temporaries - self.aliased + self.resident


def _measure(name: str, lowered_fn, resident: int) -> Program:
    t0 = time.time()
    compiled = lowered_fn().compile()
    seconds = time.time() - t0
    print(f"  compiled {name} in {seconds:.1f} s", flush=True)  # a 7B program can take minutes
    m = compiled.memory_analysis()
    cost = compiled.cost_analysis() or {}
    cost = cost[0] if isinstance(cost, list) else cost  # one dict per device program (older JAX: a list)
    return Program(
        name,
        int(m.argument_size_in_bytes),
        int(m.output_size_in_bytes),
        int(m.temp_size_in_bytes),
        int(m.alias_size_in_bytes),
        resident,
        seconds,
        float(cost.get("flops", 0.0)),
        float(cost.get("bytes accessed", 0.0)),
    )


# ----------------------------------------------------------------------------- programs


def _placed(shapes, shardings):
    return jax.tree.map(lambda s, h: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=h), shapes, shardings)


def _params(model_cfg, head: str, mesh, rules=mesh_lib.TRAIN_RULES):
    _, shapes, axes = abstract_model(model_cfg, head)
    return _placed(shapes, mesh_lib.tree_shardings(axes, shapes, mesh, rules))


def _state(params, optimizer, mesh) -> TrainState:
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    trainable = lora.partition(params)[0]
    opt_shapes = jax.eval_shape(optimizer.init, trainable)
    opt_state = _placed(opt_shapes, optax_state_shardings(optimizer, trainable, replicated))
    return TrainState(jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated), params, opt_state)


def _rows(mesh, shape, dtype=jnp.int32, rules=mesh_lib.TRAIN_RULES):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=mesh_lib.batch_sharding(mesh, rules, shape=shape))


def compile_run(cfg: ExperimentConfig, devices, vocab_size: int | None = None, layers: int = 0,
                skip: tuple[str, ...] = ()) -> tuple[list[Program], dict]:  # fmt: skip
    """Compile every program of one iteration of cfg's loop on a mesh of `devices`.
    Returns the programs and the figures of the iteration (parameters, FLOPs, the sampler's
    bytes per step). `layers` > 0: the model unrolled at that depth (the roofline's cost
    passes); `skip`: programs not compiled."""
    mesh = mesh_lib.make_mesh(cfg.mesh, devices=devices)
    model_cfg = run_model_config(cfg, vocab_size)
    if layers:
        model_cfg = dataclasses.replace(model_cfg, n_layers=layers, scan_layers=False)
    P, C = cfg.data.max_prompt_len, cfg.data.max_completion_len
    T = P + C
    optimizer = make_optimizer(cfg.optim)
    schedule = make_schedule(cfg.optim)
    kind = cfg.train.kind
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    programs: list[Program] = []
    with mesh_lib.use_mesh(mesh, mesh_lib.TRAIN_RULES):
        if kind == "rl":
            programs, figures = _rl_programs(cfg, model_cfg, mesh, optimizer, schedule, replicated, skip)
        else:
            head = "scalar" if kind == "reward" else "lm"
            model, _, _ = abstract_model(model_cfg, head)
            params = _params(model_cfg, head, mesh)
            state = _state(params, optimizer, mesh)
            B = cfg.train.batch_size
            if kind == "sft":
                loss_fn = functools.partial(sft_loss, model=model, prompt_weight=cfg.train.prompt_loss_weight)
                batch = SFTBatch(*(_rows(mesh, (B, T)) for _ in range(3)))
                tokens = B * T
            elif kind in ("reward", "preference"):
                rows = lambda: (_rows(mesh, (B, T)), _rows(mesh, (B, T)), _rows(mesh, (B, T)))  # noqa: E731
                batch = PreferenceBatch(
                    *rows(), *rows(), _rows(mesh, (B,), jnp.float32), _rows(mesh, (B,), jnp.float32)
                )
                loss_fn = (
                    functools.partial(pair_loss, model=model)
                    if kind == "reward"
                    else functools.partial(preference_loss, cfg=cfg.preference.loss_config(), model=model)
                )
                tokens = 2 * B * T
            else:
                raise ValueError(f"train.kind={kind!r}: --target compiles sft, reward, preference and rl runs")
            shardings = jax.tree.map(lambda x: x.sharding, state)
            step = make_train_step(loss_fn, optimizer, accum_steps=cfg.optim.accum_steps, schedule=schedule,
                                   state_shardings=shardings)  # fmt: skip
            # an offline objective's frozen reference stays resident (with LoRA: the same base, adapters off)
            needs_ref = kind == "preference" and cfg.preference.loss_config().needs_reference
            if needs_ref and lora.has_adapters(params):
                resident = device_bytes(lora.partition(params)[0])
            else:
                resident = device_bytes(params) if needs_ref else 0
            if "step" not in skip:
                programs.append(_measure("step", lambda: step.lower(state, batch), resident))
            n = count_params(params)
            figures = {"params": n, "trainable": count_params(lora.partition(params)[0]), "flops": 6 * n * tokens}
    return programs, figures


def _rl_programs(cfg, model_cfg, mesh, optimizer, schedule, replicated, skip=()):
    rl = cfg.rl
    P, C = cfg.data.max_prompt_len, cfg.data.max_completion_len
    T, N = P + C, rl.rollout_batch
    policy, _, _ = abstract_model(model_cfg, "lm")
    params = _params(model_cfg, "lm", mesh)
    critic = None
    state_params = params
    if rl.estimator.critic:
        critic, _, _ = abstract_model(model_cfg, "scalar")
        state_params = {"policy": params, "value": _params(model_cfg, "scalar", mesh)}
    state = _state(state_params, optimizer, mesh)
    ref = params  # with LoRA: the same base, adapters off (zeros of the adapters' size)
    ref_bytes = device_bytes(lora.partition(params)[0]) if lora.has_adapters(params) else device_bytes(params)
    opt_bytes = device_bytes((state.step, state.opt_state))  # resident; no program's argument but the update's
    state_bytes = device_bytes(state)
    if lora.has_adapters(state_params) and critic is not None:  # the critic's frozen base is the policy's
        state_bytes -= device_bytes(lora.partition(state_params["value"])[1])
    rm_bytes, rm_program = 0, None
    if rl.reward_model != "gold" and not rl.prm_reading:
        rm_cfg = lora.base_config(model_cfg)
        rm_model, _, _ = abstract_model(rm_cfg, "scalar")
        rm_params = _params(rm_cfg, "scalar", mesh)
        rm_bytes = device_bytes(rm_params)
        rm_fn = jax.jit(rm_model.rewards)
        drawn = (N * rl.draws, T)  # every drawn group is scored before dynamic sampling keeps N
        rm_program = lambda: rm_fn.lower(rm_params, _rows(mesh, drawn), _rows(mesh, drawn))  # noqa: E731
    programs = []

    whole = rl.sampler_weights == "whole"
    rules = mesh_lib.SAMPLE_RULES if whole else mesh_lib.TRAIN_RULES
    sampling = SamplingConfig(max_new_tokens=C, temperature=rl.temperature, n_samples=rl.k, max_cache_len=T)
    sampler = Sampler(with_dtype(policy, rl.sample_dtype), sampling, mesh, rules)
    sample_params = _params(model_cfg, "lm", mesh, rules) if whole else params
    prompts = _rows(mesh, (rl.n_prompts * rl.draws, P), rules=mesh_lib.SAMPLE_RULES)  # all drawn at once
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=replicated)
    resident = state_bytes + ref_bytes + rm_bytes - (0 if whole else device_bytes(params))
    with mesh_lib.use_mesh(mesh, rules):
        if "sampler" not in skip:
            programs.append(
                _measure("sampler", lambda: sampler._fn.lower(sample_params, prompts, prompts, key), resident)
            )

    def scored(n):
        f32, b = jnp.float32, jnp.bool_
        return Scored(_rows(mesh, (n, T)), _rows(mesh, (n, T)), _rows(mesh, (n, T)), _rows(mesh, (n, C), f32),
                      _rows(mesh, (n,), f32), _rows(mesh, (n,), b))  # fmt: skip

    greedy = scored(rl.n_prompts) if rl.estimator.greedy_rollout else None
    experience = online.make_experience(rl, rl.k, policy, critic, C)
    baseline = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), jax.eval_shape(BaselineState.init)
    )
    beta = jax.ShapeDtypeStruct((), jnp.float32, sharding=replicated)
    lowered = lambda: experience.lower(state.params, ref, scored(N), greedy, beta, baseline, key)  # noqa: E731
    if "experience" not in skip:
        programs.append(_measure("experience", lowered, opt_bytes + rm_bytes))
    rollout = jax.eval_shape(experience, state.params, ref, scored(N), greedy, beta, baseline, key)[0]
    rollout = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rows_sharding(mesh, x)), rollout)
    step = train_step_fn(online.make_loss(rl, policy, critic, C), optimizer, cfg.optim.accum_steps, schedule)
    update = online.make_update(step, jax.tree.map(lambda x: x.sharding, state))
    order = jax.ShapeDtypeStruct((rl.steps_per_iteration, rl.minibatch), jnp.int32, sharding=replicated)
    if "update" not in skip:
        programs.append(_measure("update", lambda: update.lower(state, rollout, order), ref_bytes + rm_bytes))
    if rm_program is not None and "reward" not in skip:
        programs.append(_measure("reward", rm_program, state_bytes + ref_bytes))
    n_policy = count_params(params)
    n_critic = count_params(state_params["value"]) if critic is not None else 0
    samples = rl.n_prompts * rl.k * rl.draws
    flops = 2 * n_policy * samples * T  # sampling (prefill + decode, per token), every drawn group
    flops += 2 * n_policy * N * T * (2 if rl.old_logps == "forward" else 1)  # reference (and old) log-probs
    flops += 2 * n_critic * N * T + (2 * count_params(rm_params) * samples * T if rm_program else 0)
    flops += 6 * (n_policy + n_critic) * rl.minibatch * T * rl.steps_per_iteration
    figures = {
        "params": n_policy + n_critic,
        "trainable": count_params(lora.partition(state_params)[0]),
        "flops": flops,
        "decode": _decode_bytes(model_cfg, mesh, sampling, params, prompts, rl),
    }
    return programs, figures


def _decode_bytes(model_cfg, mesh, sampling: SamplingConfig, params, prompts, rl) -> dict:
    """What one device moves per sampler step: every weight of the policy (as stored, float32,
    cast as used; over the tensor axis: its share) and the KV cache slots the step attends
    over (`kv_cache.py`'s chunks: a step reads the chunks filled so far), averaged over the
    completion's steps; and the prefill's. Rows: the device's share of the prompts drawn,
    times k. With rl.sampler_weights=sharded each step also gathers the weights over the
    chips' links, which this does not count."""
    P, C = sampling.max_cache_len - sampling.max_new_tokens, sampling.max_new_tokens
    rows = prompts.sharding.shard_shape(prompts.shape)[0] * rl.k
    tensor = mesh.shape["tensor"]
    kv_heads = model_cfg.n_kv_heads // tensor if model_cfg.n_kv_heads % tensor == 0 else model_cfg.n_kv_heads
    slot_bytes = 2 * model_cfg.n_layers * rows * kv_heads * model_cfg.head_dim * jnp.dtype(rl.sample_dtype).itemsize
    n = count_params(params) / tensor
    read = mean_slots_read(P, C, sampling.cache_chunks)
    return {"rows": rows, "weight_bytes": 4 * n, "params": n, "kv_bytes": slot_bytes * read,
            "prefill_tokens": P, "prefill_kv_bytes": slot_bytes * P, "new_tokens": C}  # fmt: skip


OPTIMISER = Cost(15.0, 32.0)  # per float32 parameter trained: AdamW and global-norm clipping (see `roofline`)


def roofline(cfg: ExperimentConfig, devices, t: Target, figures: dict, vocab_size: int | None = None) -> Roofline:
    """The iteration's roofline on the slice (`roofline.py`). Each compiled program's XLA
    cost is taken on one device for one device's share of the rows (on the whole slice the
    partitioner's own loops, a collective matmul's ring steps, would hide most FLOPs from the
    count: a Pythia-6.9B layer on v4-64 reads as 0.15 of its FLOPs), then divided over the
    tensor axis; communication is not counted. The optimiser, which a device runs on its
    shard of the parameters only, is taken out of that count and put back per shard: AdamW
    with global-norm clipping reads and writes about 32 bytes and does about 15 FLOPs per
    float32 parameter trained (`OPTIMISER`). Depth is scaled from passes unrolled at 1 and 2
    layers; gradient accumulation is one pass; the update's minibatch steps are one step
    times the steps. The sampler is counted from the bytes each step moves."""
    mesh = mesh_lib.make_mesh(cfg.mesh, devices=devices)
    shards, tensor = mesh.shape["data"] * mesh.shape["fsdp"], mesh.shape["tensor"]
    depth = run_model_config(cfg, vocab_size).n_layers
    peak, bandwidth = t.peak_tflops * 1e12, t.hbm_gbps * 1e9
    optimiser = OPTIMISER * figures["trainable"]
    unsharded = optimiser * (1 / tensor - 1 / (mesh.shape["fsdp"] * tensor))  # counted whole, run on a shard

    def local(rows: int, key: str) -> int:
        if rows % shards:
            raise ValueError(f"roofline: {key}={rows} rows do not split over the mesh's {shards} batch shards")
        return rows // shards

    one = dataclasses.replace(cfg, mesh=(1, 1, 1), optim=dataclasses.replace(cfg.optim, accum_steps=1))

    def costs(run: ExperimentConfig, skip: tuple[str, ...]) -> dict[str, Cost]:
        by_depth = [{p.name: Cost(p.flops, p.hbm_bytes) * (1 / tensor)
                     for p in compile_run(run, devices[:1], vocab_size, n, skip)[0]} for n in (1, 2)]  # fmt: skip
        return {name: extrapolate(by_depth[0][name], by_depth[1][name], depth) for name in by_depth[0]}

    lines, tokens = [], 0.0  # tokens: the sampler's decode tokens/s per device, at its roofline
    if cfg.train.kind != "rl":
        batch = local(cfg.train.batch_size, "train.batch_size")
        run = dataclasses.replace(one, train=dataclasses.replace(cfg.train, batch_size=batch))
        lines.append(Line("step", costs(run, ())["step"] - unsharded))
    else:
        rl = cfg.rl
        d = figures["decode"]
        prefill = Cost(2.0 * d["params"] * d["rows"] * d["prefill_tokens"], d["weight_bytes"] + d["prefill_kv_bytes"])
        step = decode_step(d["weight_bytes"], d["kv_bytes"], d["params"], d["rows"])
        lines += [Line("prefill", prefill), Line("decode", step, d["new_tokens"])]
        tokens = d["rows"] / step.seconds(peak, bandwidth)
        rows, minibatch = local(rl.rollout_batch, "rl.rollout_batch"), local(rl.minibatch, "rl.minibatch")
        try:  # a device's rows: its share of the rollout
            forwards = dataclasses.replace(rl, rollout_batch=rows, minibatch=minibatch)
        except ValueError as e:
            raise ValueError(f"roofline: a device's share of the rollout is no whole number of groups ({e})") from None
        try:  # one minibatch step of its share
            one_step, calls = dataclasses.replace(forwards, rollout_batch=minibatch, updates_per_batch=1), 1.0
        except ValueError:  # a share that is no whole number of groups: a step on all its rows, scaled by rows
            one_step = dataclasses.replace(forwards, minibatch=rows, updates_per_batch=1)
            calls = minibatch / rows
        rest = costs(dataclasses.replace(one, rl=forwards), ("sampler", "update"))
        lines += [Line(name, cost) for name, cost in rest.items()]
        update = costs(dataclasses.replace(one, rl=one_step), ("sampler", "experience", "reward"))["update"]
        update = update - unsharded
        lines.append(Line("update", update, calls * rl.steps_per_iteration))
    return Roofline(tuple(lines), peak, bandwidth, t.devices, figures["flops"], tokens)


def rows_sharding(mesh, x):
    """A rollout leaf's sharding: its rows over the data axes (scalars replicated)."""
    if not x.shape:
        return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return mesh_lib.batch_sharding(mesh, mesh_lib.TRAIN_RULES, shape=x.shape)


# ----------------------------------------------------------------------------- report


def report(cfg: ExperimentConfig, t: Target, programs: list[Program], figures: dict) -> str:
    """Per program and device: arguments, outputs, temporaries, resident beside it, total,
    against the chip's HBM (the time: `roofline`)."""
    hbm = t.hbm_gib * GiB
    lines = [
        f"{cfg.name} on {t.name} ({t.devices} devices of {t.hbm_gib:g} GiB, mesh {tuple(cfg.mesh)}): "
        f"{_millions(figures['params'])} parameters, {_millions(figures['trainable'])} trained",
        f"{'program':<11}{'args':>9}{'outputs':>9}{'temps':>9}{'resident':>10}{'total':>9}{'of HBM':>8}{'compile':>9}",
    ]
    for p in programs:
        g = lambda b: f"{b / GiB:8.2f}"  # noqa: E731
        lines.append(
            f"{p.name:<11}{g(p.arguments)} {g(p.outputs)} {g(p.temporaries)} {g(p.resident):>9} {g(p.total)}"
            f"{p.total / hbm:>8.0%}{p.compile_s:>8.1f}s"
        )
    lines.append(f"GiB per device; a chip: {t.peak_tflops:g} TFLOP/s bf16, {t.hbm_gbps:g} GB/s HBM")
    return "\n".join(lines)


def _millions(n: int) -> str:
    return f"{n / 1e6:,.1f}M" if n >= 1e6 else f"{n / 1e3:,.1f}k"


def headroom(t: Target, programs: list[Program]) -> float:
    """The share of the chip's HBM the largest program leaves free."""
    return 1 - max(p.total for p in programs) / (t.hbm_gib * GiB)


def check(t: Target, programs: list[Program]) -> None:
    """Raise ValueError naming the first program that does not fit the chip's HBM, and the knobs."""
    hbm = t.hbm_gib * GiB
    for p in programs:
        if p.total > hbm:
            raise ValueError(
                f"--target {t.name}: the {p.name} program needs {p.total / GiB:.2f} GiB per device, the chip has "
                f"{t.hbm_gib:g} GiB; shrink it with: mesh (more fsdp / tensor: --set mesh=1,-1,1), a smaller "
                "train.batch_size or rl.minibatch, optim.accum_steps, model.remat=full, model.scan_layers=true, "
                "rl.sampler_weights=sharded, model.lora_rank; or a bigger slice"
            )
