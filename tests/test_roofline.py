"""The roofline of `--dry-run --target` (`roofline.py`, `aot.roofline`): the bound and time
of hand-made costs; a scanned model's FLOPs scaled from its 1- and 2-layer passes on one device
equal XLA's per-device count of the same model unrolled on the mesh (within 8%), and sit
just above the count from shapes (6 per parameter and token); an RL
iteration's lines (prefill, decode steps, experience, the update's minibatch steps) and its
decode speed from the bytes each step moves."""

import dataclasses

import jax
import pytest

from rlhf_jax import aot
from rlhf_jax.config import override
from rlhf_jax.dry_run import run_model_config
from rlhf_jax.main import load_experiment
from rlhf_jax.models.transformer import abstract_model, count_params
from rlhf_jax.roofline import Cost, Line, Roofline, decode_step, extrapolate

CHIP = aot.Target("test-chip", "v4:2x2x1", "megacore", 32.0, 100.0, 1000.0)  # 100 TFLOP/s, 1 TB/s


def test_a_cost_is_bound_by_the_slower_of_its_flops_and_its_bytes():
    peak, bandwidth = 100e12, 1e12  # the ridge: 100 FLOPs per byte
    matmul, decode = Cost(200e12, 1e9), Cost(1e12, 2e12)
    assert matmul.seconds(peak, bandwidth) == 2.0 and matmul.bound(peak, bandwidth) == "compute"
    assert decode.seconds(peak, bandwidth) == 2.0 and decode.bound(peak, bandwidth) == "memory"
    assert extrapolate(Cost(10, 4), Cost(13, 6), 32) == Cost(10 + 3 * 31, 4 + 2 * 31)
    # one 7B decode step per chip: 14 GB of bf16 weights and 2 GB of cache for 64 rows -> 16 ms, 4,000 tokens/s
    step = decode_step(14e9, 2e9, 7e9, 64)
    assert step == Cost(2 * 7e9 * 64, 16e9) and step.seconds(peak, bandwidth) == pytest.approx(0.016)
    r = Roofline((Line("decode", step, 10), Line("update", matmul)), peak, bandwidth, 4, 4 * 100e12, 64 / 0.016)
    assert r.seconds == pytest.approx(2.16) and r.mfu == pytest.approx(100 / 216)


@pytest.mark.slow  # 4 programs compiled
def test_a_scanned_models_flops_scaled_by_depth_equal_xlas_count_of_it_unrolled():
    sets = ["mesh=1,-1,1", "model.n_layers=4", "model.d_model=128", "model.d_ff=512", "model.vocab_size=256",
            "train.batch_size=8"]  # fmt: skip
    cfg = override(load_experiment("experiments/sft_summarization.py:tiny"), [*sets, "model.scan_layers=true"])
    devices = jax.devices()
    (scanned,), figures = aot.compile_run(cfg, devices)
    (unrolled,), _ = aot.compile_run(override(cfg, ["model.scan_layers=false"]), devices)
    roof = aot.roofline(cfg, devices, CHIP, figures)
    (step,) = roof.lines
    assert scanned.flops < 0.8 * unrolled.flops  # XLA counts the scanned body once (of 4 layers and a 32k head)
    # one device's rows counted alone: as the slice's per-device program, but for the optimiser
    # and the replicated work (here 5% more)
    assert step.cost.flops == pytest.approx(unrolled.flops, rel=0.08)
    # the count from shapes (6 per parameter and token) leaves out attention, norms and the optimiser
    per_device = figures["flops"] / len(devices)
    assert per_device < step.cost.flops < 1.2 * per_device  # here 1.06


@pytest.mark.slow  # the RL programs compiled at 1 and 2 layers, twice
def test_an_rl_iteration_runs_its_sampler_from_bytes_and_its_update_once_per_minibatch():
    cfg = override(load_experiment("experiments/rl_summarization.py:tiny"), ["mesh=1,-1,1", "rl.method=ppo"])
    cfg = dataclasses.replace(cfg, rl=dataclasses.replace(cfg.rl, rollout_batch=64, minibatch=32, updates_per_batch=2))
    devices = jax.devices()
    _, figures = aot.compile_run(cfg, devices)
    roof = aot.roofline(cfg, devices, CHIP, figures)
    lines = {line.name: line for line in roof.lines}
    assert set(lines) == {"prefill", "decode", "experience", "update"}
    assert lines["decode"].calls == cfg.data.max_completion_len and lines["update"].calls == 4  # 2 passes x 2
    d = figures["decode"]
    assert d["rows"] == 64 // 8  # 16 prompts over 8 devices, k = 4 samples each
    policy = count_params(abstract_model(run_model_config(cfg, None))[1])
    assert d["weight_bytes"] == 4 * policy  # each step reads the whole float32 policy (tensor axis 1)
    assert lines["decode"].cost.bound(100e12, 1e12) == "memory"
    assert roof.decode_tokens_per_s == pytest.approx(d["rows"] / ((d["weight_bytes"] + d["kv_bytes"]) / 1e12))
    assert 0 < roof.mfu < 1 and roof.xla_flops > 0
