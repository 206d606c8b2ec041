"""The experiment entry point and the SFT loop: loss falls, resume is exact, SIGTERM saves,
and bad input is refused with a clear message."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from rlhf_jax import loops
from rlhf_jax.main import load_experiment, main
from rlhf_jax.models.hf import load_hf

TINY = "experiments/sft_summarization.py:tiny"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_sft_experiment_runs_and_its_loss_falls(tmp_path):
    assert main(["--config", TINY, "--workdir", str(tmp_path)]) == 0
    lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [m["step"] for m in lines] == [4, 8, 12]
    assert lines[-1]["loss"] < lines[0]["loss"]
    summary = json.load(open(tmp_path / "summary.json"))
    assert np.isfinite(summary["test_nll"]) and json.load(open(tmp_path / "config.json"))["train"]["steps"] == 12
    model, params = load_hf(str(tmp_path / "hf"))
    assert model.cfg.d_model == 32
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "tb"))


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_bit_identical_parameters(tmp_path):
    cfg = load_experiment(TINY)
    data = dataclasses.replace(cfg.data, data_dir=str(tmp_path / "tfds"))
    cfg = dataclasses.replace(cfg, data=data)
    loops.run(cfg, str(tmp_path / "straight"))
    short = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=8))
    loops.run(short, str(tmp_path / "resumed"))  # stops after step 8, checkpoint saved
    loops.run(cfg, str(tmp_path / "resumed"))  # resumes at 8 with the data position restored
    _, a = load_hf(str(tmp_path / "straight" / "hf"))
    _, b = load_hf(str(tmp_path / "resumed" / "hf"))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    steps = [json.loads(line)["step"] for line in open(tmp_path / "resumed" / "metrics.jsonl")]
    assert steps == [4, 8, 12]


@pytest.mark.slow
def test_sigterm_finishes_the_step_saves_and_exits_zero(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "rlhf_jax.main",
        "--config",
        TINY,
        "--workdir",
        str(tmp_path),
        "--set",
        "train.steps=400",
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for line in proc.stdout:
        if line.startswith("step 8/"):
            proc.send_signal(signal.SIGTERM)
            break
    out = proc.stdout.read()
    assert proc.wait(timeout=120) == 0
    assert "checkpoint saved; resume with the same command" in out
    saved = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
    assert saved and saved[-1] >= 8


def test_bad_input_is_refused_with_a_clear_message(tmp_path, capsys):
    assert main(["--config", TINY, "--workdir", str(tmp_path), "--set", "train.stepz=3"]) == 2
    assert "did you mean train.steps" in capsys.readouterr().err
    assert main(["--config", TINY, "--workdir", str(tmp_path), "--set", "train.steps=many"]) == 2
    assert "expected int" in capsys.readouterr().err
    bare = tmp_path / "bare.py"
    bare.write_text("X = 1\n")
    assert main(["--config", str(bare), "--workdir", str(tmp_path / "w")]) == 2
    assert "defines no get_config" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"name": "something else"}))
    assert main(["--config", TINY, "--workdir", str(tmp_path / "run")]) == 2
    assert "holds a run with a different config" in capsys.readouterr().err


@pytest.mark.slow
def test_a_nan_loss_stops_with_an_error_naming_the_step(tmp_path, capsys):
    sets = ["--set", "optim.learning_rate=1e30", "--set", "optim.max_grad_norm=0"]
    assert main(["--config", TINY, "--workdir", str(tmp_path), *sets]) == 2
    err = capsys.readouterr().err
    assert re.search(r"error: .* finite at step \d+; nothing from that step on was saved; (last good|no) ", err)


@pytest.mark.slow
def test_reward_experiment_runs_from_scratch_and_from_an_sft_checkpoint(tmp_path):
    assert main(["--config", "experiments/reward_summarization.py:tiny", "--workdir", str(tmp_path / "rm")]) == 0
    summary = json.load(open(tmp_path / "rm" / "summary.json"))
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and summary["test_pairs"] > 0
    model, params = load_hf(str(tmp_path / "rm" / "hf"), head="scalar")
    assert "score" in params
    # a reward model started from an SFT policy keeps the policy's backbone
    assert main(["--config", TINY, "--workdir", str(tmp_path / "sft")]) == 0
    sft_dir = str(tmp_path / "sft" / "hf")
    rm_from_sft = [
        "--config",
        "experiments/reward_summarization.py:tiny",
        "--workdir",
        str(tmp_path / "rm2"),
        "--set",
        f"model.init_from={sft_dir}",
        "--set",
        f"data.tokenizer={sft_dir}",
        "--set",
        "optim.learning_rate=1e-9",
    ]
    assert main(rm_from_sft) == 0
    _, sft_params = load_hf(sft_dir)
    _, rm_params = load_hf(str(tmp_path / "rm2" / "hf"), head="scalar")
    np.testing.assert_allclose(rm_params["embed"], sft_params["embed"], atol=1e-6)
