"""What a run does when things go wrong: corrupt checkpoints, a diverging state, bad
settings and paths, a second run on the same workdir, a rerun of a finished run, signals
during data preparation, a full disk. Each case was a failure of an earlier version."""

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import errors, workdir
from rlhf_jax import mesh as mesh_lib
from rlhf_jax.checkpoint import Checkpointer
from rlhf_jax.loops import common
from rlhf_jax.main import load_experiment, main
from rlhf_jax.train_step import all_finite

SFT = "experiments/sft_summarization.py:tiny"
RL = "experiments/rl_summarization.py:tiny"
PS = "experiments/process_supervision.py:tiny"
W2S = "experiments/weak_to_strong.py:tiny"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def sft_args(workdir, tfds_dir, *sets):
    pairs = [f"data.data_dir={tfds_dir}", *sets]
    return ["--config", SFT, "--workdir", str(workdir), *sum((["--set", p] for p in pairs), [])]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tfds_dir):
    """A finished tiny SFT run (12 steps, checkpoints 8 and 12 kept)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(sft_args(run, tfds_dir)) == 0
    return run


def tree_digest(root) -> dict[str, str]:
    out = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def same_weights(a, b):
    from safetensors.numpy import load_file

    x, y = load_file(os.path.join(a, "hf", "model.safetensors")), load_file(os.path.join(b, "hf", "model.safetensors"))
    assert x.keys() == y.keys()
    for key in x:
        np.testing.assert_array_equal(x[key], y[key], err_msg=key)


# ----------------------------------------------------------------------------- checkpoints


def truncate_largest(step_dir):
    files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(step_dir, "state")) for f in fs]
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as f:
        f.truncate(os.path.getsize(largest) // 3)


def delete_state_metadata(step_dir):
    os.remove(os.path.join(step_dir, "state", "_METADATA"))


def garbage_meta(step_dir):
    with open(os.path.join(step_dir, "meta", "metadata"), "wb") as f:
        f.write(b"\x00\xffnot json")


def empty_dir(step_dir):
    shutil.rmtree(step_dir)
    os.makedirs(step_dir)


@pytest.mark.slow
@pytest.mark.parametrize("corrupt", [truncate_largest, delete_state_metadata, garbage_meta, empty_dir])
def test_a_corrupt_latest_checkpoint_is_moved_aside_and_the_run_resumes_to_the_end(
    corrupt, finished, tfds_dir, tmp_path, capsys
):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    os.remove(run / "summary.json")  # as if killed after its last save, before finishing
    corrupt(str(run / "checkpoints" / "12"))
    with pytest.warns(RuntimeWarning, match="step 12 .* cannot be restored"):
        assert main(sft_args(run, tfds_dir)) == 0
    out = capsys.readouterr().out
    assert "moved aside" in out and "resumed from step 8" in out
    assert sorted(os.listdir(run / "checkpoints")) == ["12", "8"]
    assert os.listdir(run / "checkpoints.unreadable") == ["12"]  # kept, not deleted
    same_weights(run, finished)
    assert json.load(open(run / "summary.json"))["resumed_from"] == [8]


@pytest.mark.slow
def test_no_readable_checkpoint_refuses_to_start_over_unless_told(finished, tfds_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    os.remove(run / "summary.json")
    for step in ("8", "12"):
        truncate_largest(str(run / "checkpoints" / step))
    before = tree_digest(run)
    with pytest.warns(RuntimeWarning):
        assert main(sft_args(run, tfds_dir)) == 2
    err = capsys.readouterr().err
    assert "no checkpoint in" in err and "step 12:" in err and "step 8:" in err and "--restart" in err
    assert tree_digest(run) == before  # nothing touched
    assert main([*sft_args(run, tfds_dir), "--restart"]) == 0
    (aside,) = [d for d in os.listdir(run) if d.startswith("previous-")]
    moved = {k.removeprefix(aside + os.sep): v for k, v in tree_digest(run).items() if k.startswith(aside)}
    assert moved == {k: v for k, v in before.items() if k.split(os.sep)[0] in workdir.OUTPUTS}
    same_weights(run, finished)


def flip_bytes(step_dir):
    """64 bytes inverted in the middle of the largest array file: still a valid file."""
    files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(step_dir, "state")) for f in fs]
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as f:
        f.seek(os.path.getsize(largest) // 2)
        data = f.read(64)
        f.seek(os.path.getsize(largest) // 2)
        f.write(bytes(255 - b for b in data))


@pytest.mark.slow
def test_flipped_bytes_in_a_checkpoint_are_caught_and_it_is_moved_aside(finished, tfds_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    os.remove(run / "summary.json")
    flip_bytes(str(run / "checkpoints" / "12"))
    with pytest.warns(RuntimeWarning, match="step 12 .* arrays differ from what was saved"):
        assert main(sft_args(run, tfds_dir)) == 0
    out = capsys.readouterr().out
    assert "moved aside" in out and "resumed from step 8" in out
    same_weights(run, finished)


def test_checkpoint_digests_see_a_changed_value_and_not_a_reshard():
    from rlhf_jax.checkpoint import _damaged, digests

    state = {"w": jnp.arange(24.0).reshape(4, 6), "step": jnp.int32(3), "h": jnp.ones(5, jnp.bfloat16)}
    saved = digests(state)
    assert _damaged(saved, state) == "" and _damaged(None, state) == ""
    assert _damaged(saved, {**state, "w": state["w"].at[2, 1].set(jnp.nan)}).startswith("1 of 3 arrays, e.g. ['w']")
    flipped = np.asarray(state["w"]).copy().reshape(-1).view(np.uint8)
    flipped[5:9] = 255 - flipped[5:9]  # four bytes inverted, as on a damaged disk
    assert _damaged(saved, {**state, "w": jnp.asarray(flipped.view(np.float32).reshape(4, 6))})
    mesh = mesh_lib.make_mesh((2, 2, 2))
    import jax

    sharded = jax.device_put(state["w"], jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data", "fsdp")))
    assert _damaged(saved, {**state, "w": sharded}) == ""  # integer sums: any order, any mesh


def test_a_continued_run_is_not_finished_until_it_writes_its_own_summary(tmp_path):
    from rlhf_jax import config as config_lib
    from rlhf_jax.main import check_and_write_config

    run = tmp_path / "run"
    cfg = config_lib.override(load_experiment(SFT), [f"data.data_dir={tmp_path / 'tfds'}"])
    check_and_write_config(cfg, str(run))  # a finished 12-step run: its config, then its summary
    (run / "summary.json").write_text('{"steps": 12}')
    assert workdir.finished(str(run), config_lib.to_dict(cfg))
    longer = config_lib.override(cfg, ["train.steps=16"])
    check_and_write_config(longer, str(run), overwrite=True)  # continued; then cut off before step 16
    assert not workdir.finished(str(run), config_lib.to_dict(longer))
    assert not (run / "summary.json").exists() and (run / "summary.previous.json").read_text() == '{"steps": 12}'
    check_and_write_config(longer, str(run), overwrite=True)  # the same config again: nothing moves
    assert (run / "summary.previous.json").exists() and not (run / "summary.json").exists()


def test_a_non_finite_state_never_reaches_a_checkpoint(tmp_path, capsys):
    # A NaN appears in the parameters at step 3, which is not a logging step (log_every 8):
    # the flag carried on device stops the run at the next save (every step) without saving it.
    cfg = load_experiment(SFT)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=6, log_every=8, save_every=1))
    state = {"w": jnp.ones(3)}

    class Position:
        def state(self):
            return {}

        def restore(self, _):
            pass

    def advance(state, i):
        w = state["w"] * (jnp.nan if i + 1 == 3 else 1.0)
        return {"w": w}, {"loss": jnp.float32(1.0), "finite": all_finite(jnp.float32(1.0), w)}

    mesh = mesh_lib.make_mesh((1, 1, 1))
    with pytest.raises(FloatingPointError, match="at step 3; .* latest checkpoint: step 2"):
        common.drive(cfg, str(tmp_path), mesh, state, Position(), advance)
    ckpt = Checkpointer(str(tmp_path / "checkpoints"))
    assert ckpt.steps() == [1, 2]
    _, saved, _ = ckpt.restore(state)
    assert bool(jnp.isfinite(saved["w"]).all())


def test_all_finite_sees_parameters_optimiser_state_and_loss():
    good = {"p": jnp.ones(2), "count": jnp.int32(3)}
    assert float(all_finite(jnp.float32(0.5), good)) == 1.0
    assert float(all_finite(jnp.float32(jnp.inf), good)) == 0.0
    assert float(all_finite(jnp.float32(0.5), {**good, "mu": jnp.array([0.0, jnp.nan])})) == 0.0


@pytest.mark.slow
def test_a_diverging_run_ends_with_one_line_naming_the_step(tfds_dir, tmp_path, capsys):
    args = sft_args(tmp_path, tfds_dir, "optim.learning_rate=1e30", "train.log_every=8", "train.save_every=1")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: the loss, parameters or optimiser state stopped being finite at step")
    bad, good = (int(x.split()[0].rstrip(";")) for x in (err.split("at step ")[1], err.split("checkpoint: step ")[1]))
    assert Checkpointer(str(tmp_path / "checkpoints")).steps()[-1] == good < bad


# ----------------------------------------------------------------------------- bad settings


BAD = [
    (RL, "rl.rollout_batch=0", "rl.rollout_batch"),
    (RL, "model.d_model=0", "model.d_model"),
    (RL, "model.n_heads=3", "model.n_heads"),
    (RL, "rl.top_p=0", "rl.top_p"),
    (RL, "rl.top_p=2", "rl.top_p"),
    (RL, "rl.temperature=0", "rl.temperature"),
    (RL, "rl.temperature=-1", "rl.temperature"),
    (RL, "rl.ppo_clip=-1", "rl.ppo_clip"),
    (RL, "rl.kl_estimator=k9", "rl.kl_estimator"),
    (RL, "rl.sample_dtype=float8", "rl.sample_dtype"),
    (RL, "rl.sample_dtype=bfloat16", "rl.old_logps=forward"),  # pi_old must be the trained policy's
    (RL, "data.max_prompt_len=200", "data.max_prompt_len"),
    (RL, "model.max_positions=32", "model.max_positions"),
    (RL, "model.init_from=/nonexistent", "model.init_from"),
    (RL, "rl.reward_model=/nonexistent", "rl.reward_model"),
    (RL, "data.task=hh", "data.source_dir"),
    (RL, "data.source_dir=/nonexistent", "data.source_dir"),
    (SFT, "model.vocab_size=10", "model.vocab_size"),
    (SFT, "train.kind=prm", "data.task"),
    (SFT, "train.batch_size=100", "train.batch_size"),
    (RL, "rl.beta=nan", "rl.beta"),  # once through to step 1, blaming the learning rate
    (RL, "optim.learning_rate=inf", "optim.learning_rate"),
    (RL, "train.seed=-1", "train.seed"),
    (PS, "test_problems=-1", "test_problems"),  # a traceback after 12.7 s
    (PS, "draws=0", "draws"),  # rc 0 after 50 s with a NaN table
    (PS, "seed=-1", "seed"),
    (PS, "ns=", "ns"),
    (W2S, "n_test=0", "n_test"),
    (W2S, "pgr_margin=-1", "pgr_margin"),  # ZeroDivisionError after 33 s
    (W2S, "length=-4", "length"),
    (W2S, "seed=-5", "seed"),
    (W2S, "fit.learning_rate=nan", "fit.learning_rate"),
]


@pytest.mark.parametrize("config, assignment, key", BAD, ids=[b[1] for b in BAD])
def test_bad_settings_are_refused_before_any_work_naming_the_key(config, assignment, key, tmp_path, capsys):
    assert main(["--config", config, "--workdir", str(tmp_path / "run"), "--set", assignment]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and key in err and err.count("\n") == 1, err
    assert not os.path.exists(tmp_path / "run")  # refused before anything was written


def test_a_dry_run_takes_missing_paths_as_the_pods_but_checks_those_that_exist(tmp_path, capsys, monkeypatch):
    """--dry-run (--target) checks a pod run here: its bucket is neither mounted nor on this machine."""
    monkeypatch.setenv("RLHF_JAX_GCS_MOUNT", str(tmp_path / "gcs"))
    pod = ["--set", "model.init_from=gs://bucket/sft", "--set", "rl.reward_model=/bucket/reward"]
    pod += ["--set", "data.task=hh", "--set", "data.source_dir=gs://bucket/data/hh"]
    assert main(["--config", RL, "--workdir", "gs://bucket/rl", "--dry-run", *pod]) == 0
    assert "rollout:" in capsys.readouterr().out
    assert main(["--config", RL, "--workdir", str(tmp_path / "run"), *pod]) == 2  # a real run: refused
    assert "bucket bucket is not mounted" in capsys.readouterr().err
    (tmp_path / "reward").mkdir()  # there, but not a checkpoint: refused as in a real run
    bad = [*pod[:2], "--set", f"rl.reward_model={tmp_path / 'reward'}"]
    assert main(["--config", RL, "--workdir", str(tmp_path / "run"), "--dry-run", *bad]) == 2
    assert "rl.reward_model" in capsys.readouterr().err and not os.path.exists(tmp_path / "run")


def test_a_workdir_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["--config", SFT, "--workdir", str(tmp_path / "file")]) == 2
    assert "is not a directory" in capsys.readouterr().err


@pytest.mark.slow
def test_a_policy_named_as_the_reward_model_is_refused(finished, tmp_path, capsys):
    assert main(["--config", RL, "--workdir", str(tmp_path / "rl"), "--set", f"rl.reward_model={finished}"]) == 2
    err = capsys.readouterr().err
    assert "rl.reward_model" in err and "not a reward model" in err and "no score head" in err


# ----------------------------------------------------------------------------- the workdir


@pytest.mark.slow
def test_a_second_run_on_a_busy_workdir_is_refused_and_the_first_is_unharmed(tfds_dir, tmp_path, capsys):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "rlhf_jax.main", *sft_args(run, tfds_dir, "train.steps=40", "optim.total_steps=40")]
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not os.path.exists(run / "config.json") and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    assert main(sft_args(run, tfds_dir, "train.steps=40", "optim.total_steps=40")) == 2
    err = capsys.readouterr().err
    assert "is in use by another run" in err and f"pid {first.pid}" in err
    out, _ = first.communicate(timeout=240)
    assert first.returncode == 0, out
    steps = [json.loads(line)["step"] for line in open(run / "metrics.jsonl")]
    assert steps == [4 * i for i in range(1, 11)]
    assert not os.path.exists(run / workdir.LOCK)


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / workdir.LOCK).write_text(f"pid {dead.pid} on {socket.gethostname()} since then")
    with workdir.Lock(str(tmp_path)):
        assert f"pid {os.getpid()}" in (tmp_path / workdir.LOCK).read_text()
    assert f"taking over the lock of a run that is gone (pid {dead.pid}" in capsys.readouterr().out


@pytest.mark.slow
def test_rerunning_a_finished_run_changes_no_file(finished, tfds_dir, capsys):
    before = tree_digest(finished)
    assert main(sft_args(finished, tfds_dir)) == 0
    assert "finished already" in capsys.readouterr().out
    assert tree_digest(finished) == before


# The signal state a shell gives a foreground command (default dispositions, nothing
# blocked), whatever this test process's own is after a long session; then the run itself.
AS_FROM_A_TERMINAL = (
    "import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); "
    "[signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGTERM)]; "
    "os.execv(sys.executable, [sys.executable, '-m', 'rlhf_jax.main', *sys.argv[1:]])"
)


@pytest.mark.slow
def test_sigint_during_data_preparation_stops_the_run(tmp_path):
    # 100,000 generated documents take far longer to prepare than the signal may take to act.
    run, log = tmp_path / "run", tmp_path / "log"
    blocked = [line for line in open("/proc/self/status") if line.startswith("SigBlk")]
    cmd = [sys.executable, "-c", AS_FROM_A_TERMINAL, *sft_args(run, tmp_path / "tfds", "data.n_train=100000")]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while not os.path.exists(tmp_path / "tfds") and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        try:  # preparing the data alone would take minutes
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"not stopped; this process's {blocked}; {log.read_text()[-2000:]}")
        finally:
            proc.kill()
    out = log.read_text()
    assert proc.returncode == 0 and "stopped by SIGINT" in out, out[-3000:]
    assert not os.path.exists(run / "summary.json") and not os.path.exists(run / workdir.LOCK)


# ----------------------------------------------------------------------------- storage errors


def test_storage_errors_are_one_line_naming_the_cause():
    assert errors.describe(OSError(errno.ENOSPC, "No space left on device", "/w/x")) == (
        "no space left on the device: /w/x"
    )
    assert errors.describe(OSError(errno.EROFS, "Read-only file system", "/w/config.json")) == (
        "read-only file system: /w/config.json"
    )
    wrapped = ValueError("RESOURCE_EXHAUSTED: Error writing local file /w/checkpoints/ocdbt.process_0/d/x")
    assert errors.describe(RuntimeError("save failed")) is None  # not ours to explain: a traceback
    try:
        try:
            raise wrapped
        except ValueError as e:
            raise RuntimeError("async save failed") from e
    except RuntimeError as e:
        assert errors.describe(e).startswith("no space left on the device")


@pytest.mark.slow
def test_a_full_disk_while_saving_ends_in_one_line_and_keeps_what_was_saved(
    finished, tfds_dir, tmp_path, monkeypatch, capsys
):
    run = tmp_path / "run"
    args = sft_args(run, tfds_dir, "train.steps=8", "optim.total_steps=8")
    real_save = Checkpointer.save

    def save(self, step, *a, **k):
        if step == 8:
            raise OSError(errno.ENOSPC, "No space left on device", os.path.join(self.directory, "8"))
        return real_save(self, step, *a, **k)

    monkeypatch.setattr(Checkpointer, "save", save)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"error: no space left on the device: {run / 'checkpoints' / '8'}"
    assert Checkpointer(str(run / "checkpoints")).steps() == [4]
