"""Ahead-of-time compilation for a slice (`aot.py`, `--dry-run --target`): every program of
an RL iteration compiles with the run's shardings and reports what a device holds; LoRA and
sharded sampling weights shrink what they should; a program over the chip's HBM is a named
error with the knobs; the slice table; and, where libtpu is installed (the test extra), real
v4-8 compiles: a tiny run, and a mid-size one whose memory falls with remat, LoRA and bf16
sampling."""

import importlib.util

import jax
import pytest

from rlhf_jax import aot
from rlhf_jax.config import override
from rlhf_jax.main import load_experiment, main

TINY = "experiments/rl_summarization.py:tiny"


def compiled(*sets):
    cfg = override(load_experiment(TINY), ["mesh=1,-1,1", "rl.method=ppo", *sets])
    programs, figures = aot.compile_run(cfg, jax.devices())
    return {p.name: p for p in programs}, figures


@pytest.fixture(scope="module")
def full():
    return compiled()


@pytest.mark.slow  # 6 s: every program compiled on the 8-device mesh
def test_every_rl_program_compiles_on_the_mesh_and_reports_its_bytes(full):
    programs, figures = full
    assert set(programs) == {"sampler", "experience", "update"}
    for p in programs.values():
        assert p.arguments > 0 and p.total >= p.arguments + p.temporaries - p.aliased > 0
    # the update donates the state: its outputs reuse the arguments
    assert programs["update"].aliased > 0
    assert figures["trainable"] == figures["params"] > 3e6
    # the update holds the train state: parameters (policy + critic) and two Adam moments, sharded over 8 devices
    state_floats = 3 * figures["params"] / 8
    assert programs["update"].arguments >= 4 * state_floats * 0.9


@pytest.mark.slow
def test_lora_and_sharded_sampling_weights_hold_less(full):
    programs, figures = full
    lora_programs, lora_figures = compiled("model.lora_rank=4", "rl.sampler_weights=sharded")
    assert lora_figures["trainable"] < 0.01 * lora_figures["params"]
    # Adam's moments for the adapters only: the update's arguments lose about 2 of the 3 state copies
    assert lora_programs["update"].arguments < 0.5 * programs["update"].arguments
    assert lora_programs["sampler"].arguments < programs["sampler"].arguments  # no whole copy along fsdp


@pytest.mark.slow
def test_dynamic_sampling_compiles_the_sampler_for_every_drawn_prompt(full):
    # DAPO draws 3 batches of prompts at once: the sampler's KV cache and outputs hold 3x the
    # rows; the update still trains on rl.rollout_batch
    programs, figures = full
    dapo_programs, dapo_figures = compiled("rl.dynamic_sampling=3")
    rows = lambda p: p.temporaries + p.outputs  # noqa: E731 - the KV cache and the samples: by the row
    assert rows(dapo_programs["sampler"]) > 2.5 * rows(programs["sampler"])
    assert dapo_programs["update"].total == programs["update"].total
    assert dapo_figures["flops"] > figures["flops"]


@pytest.mark.slow  # the compiled programs of the fixture above
def test_a_program_over_the_chips_hbm_is_refused_by_name_with_the_knobs(full):
    programs, _ = full
    update = programs["update"].total
    small = aot.Target("tiny-chip", "v4:2x2x1", "megacore", 0.9 * update / aot.GiB, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"the update program needs .* GiB per device.*mesh.*accum_steps.*lora_rank"):
        aot.check(small, [programs["update"]])
    aot.check(aot.target("v4-8"), list(programs.values()))  # 32 GiB: fits
    roomy = aot.Target("roomy-chip", "v4:2x2x1", "megacore", 2 * update / aot.GiB, 1.0, 1.0)
    assert aot.headroom(roomy, [programs["update"]]) == pytest.approx(0.5)


def test_the_slice_table_and_its_errors(capsys):
    assert aot.target("v4-64").devices == 32 and aot.target("v4-64").hbm_gib == 32
    assert aot.target("v5e-256").devices == 256 and aot.target("v5p-8").hbm_gib == 95
    assert main(["--config", TINY, "--workdir", "/tmp/unused_aot", "--dry-run", "--target", "v9-8"]) == 2
    assert "--target v9-8: unknown; known: v4-8" in capsys.readouterr().err
    assert main(["--config", TINY, "--workdir", "/tmp/unused_aot", "--target", "v4-8"]) == 2
    assert "--target: only with --dry-run" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed (pip install -e '.[tpu]')")
def test_a_tiny_run_compiles_for_a_v4_8_with_libtpu():  # pragma: no cover - where libtpu is installed
    t = aot.target("v4-8")
    devices = aot.target_devices(t)
    cfg = override(load_experiment(TINY), ["mesh=1,-1,1"])
    programs, _ = aot.compile_run(cfg, devices)
    assert {p.name for p in programs} == {"sampler", "experience", "update"}
    aot.check(t, programs)


MID = [  # a mid-size model (50M parameters with the task's 32k vocabulary, 512 tokens): remat, LoRA and bf16 show
    "mesh=1,-1,1", "model.d_model=512", "model.n_layers=4", "model.n_heads=8", "model.d_ff=2048",
    "model.max_positions=512", "data.max_prompt_len=384", "data.max_completion_len=128", "model.scan_layers=true",
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed (pip install -e '.[tpu]')")
def test_a_mid_size_run_for_a_v4_8_holds_less_with_remat_lora_and_bf16_sampling():  # pragma: no cover - where libtpu
    t = aot.target("v4-8")
    devices = aot.target_devices(t)

    def step(*sets):
        cfg = override(load_experiment("experiments/sft_summarization.py:tiny"), [*MID, "train.batch_size=32", *sets])
        (program,), figures = aot.compile_run(cfg, devices)
        aot.check(t, [program])
        return program, figures

    plain, figures = step()
    remat, _ = step("model.remat=full")
    adapters, lora_figures = step("model.lora_rank=8")
    assert 20e6 < figures["params"] < 60e6 and lora_figures["trainable"] < 0.05 * figures["params"]
    # remat keeps one block's activations, not every layer's: the temporaries fall, the arguments do not move
    assert remat.temporaries < 0.7 * plain.temporaries and remat.arguments == plain.arguments
    # LoRA: no moments (and no gradients) for the frozen base: arguments about a third of the full state's
    assert adapters.arguments < 0.45 * plain.arguments and adapters.total < plain.total

    # rl.sample_dtype=bfloat16: the KV cache (keys and values of every layer, row and slot) in half the bytes
    rl = override(load_experiment(TINY), [*MID, "rl.rollout_batch=32", "rl.minibatch=32"])
    sampler = aot.compile_run(rl, devices)[0][0]
    half = aot.compile_run(override(rl, ["rl.sample_dtype=bfloat16", "rl.old_logps=forward"]), devices)[0][0]
    cache_f32 = 2 * 4 * 32 * 512 * 512 * 4 / t.devices  # layers x rows x slots x d_model, float32, rows sharded
    assert sampler.name == "sampler" and sampler.temporaries - half.temporaries > 0.4 * cache_f32


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed (pip install -e '.[tpu]')")
def test_splash_attention_lowers_for_a_v4_8_and_holds_less_than_the_einsum():  # pragma: no cover - where libtpu
    t = aot.target("v4-8")
    devices = aot.target_devices(t)

    def step(attention):
        cfg = load_experiment("experiments/sft_summarization.py:tiny")
        cfg = override(cfg, [*MID, "train.batch_size=32", f"model.attention={attention}"])
        return aot.compile_run(cfg, devices)[0][0]

    einsum, splash, auto = step("einsum"), step("splash"), step("auto")
    # the [B, H, T, T] float32 scores of 4 layers (8 rows x 8 heads x 512^2 per device) are not kept
    scores = 4 * 8 * 8 * 512 * 512 * 4
    assert einsum.temporaries - splash.temporaries > 0.5 * scores
    assert auto.temporaries == splash.temporaries  # auto chose splash for the TPU target


@pytest.mark.slow
def test_an_offline_objectives_reference_is_counted_resident_beside_its_step():
    dpo = override(load_experiment("experiments/quickstart.py:dpo,tiny").policy, ["mesh=1,-1,1"])
    (step,), figures = aot.compile_run(dpo, jax.devices())
    # the state is parameters + two Adam moments (+ counts); the reference, one more copy of the parameters
    assert step.name == "step" and abs(step.resident - step.arguments / 3) < 0.02 * step.arguments
    simpo = override(dpo, ["preference.objective=simpo"])  # reference-free
    assert aot.compile_run(simpo, jax.devices())[0][0].resident == 0
