"""Multi-process runs: two CPU processes joined by `jax.distributed` (gloo collectives on
localhost), each with 2 devices, run the tiny RLOO loop on a (4, 1, 1) mesh and match one
process with 4 devices; their Orbax checkpoint restores in a single process."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from rlhf_jax import mesh as mesh_lib

pytestmark = pytest.mark.slow  # end-to-end runs: the whole suite, not `-m "not slow"`

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "experiments/rl_summarization.py:tiny"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(workdir, devices: int, sets: list[str], extra: list[str] = ()) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    cmd = [sys.executable, "-m", "rlhf_jax.main", "--config", TINY, "--workdir", str(workdir), *sets, *extra]
    log = open(f"{workdir}.log", "w")
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)


def _finish(procs, workdirs) -> None:
    for proc, workdir in zip(procs, workdirs, strict=True):
        if proc.wait(timeout=300) != 0:
            pytest.fail(f"exit {proc.returncode}:\n" + open(f"{workdir}.log").read()[-4000:])


def _metrics(workdir):
    return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def test_two_processes_match_one(tmp_path):
    sets = ["--set", f"data.data_dir={tmp_path / 'tfds'}", "--set", "mesh=4,1,1"]
    # Two steps: sums reduced across processes differ in the last bits, and so do the
    # parameters after each update; a draw is a step function of the probabilities, so a
    # longer run may sample a different token and part ways.
    sets += ["--set", "train.steps=2", "--set", "train.log_every=1", "--set", "train.save_every=1"]
    one, two = tmp_path / "one", tmp_path / "two"
    _finish([_start(one, 4, sets)], [one])
    port = _free_port()
    procs = [
        _start(two, 2, sets, ["--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)])
        for i in (0, 1)
    ]
    _finish(procs, [two, two])  # both log to two.log; process 1 writes no metrics

    a, b = _metrics(one), _metrics(two)
    assert [m["step"] for m in b] == [1, 2]
    assert [m["compiles"] for m in b[1:]] == [0]  # the stop-signal allgather and a save included
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x.keys() - {"compiles"}:  # the same samples
            np.testing.assert_allclose(x[key], y[key], rtol=2e-4, atol=2e-5, err_msg=key)
    test_one = json.load(open(one / "summary.json"))["test"]["policies"]["policy"]
    test_two = json.load(open(two / "summary.json"))["test"]["policies"]["policy"]
    assert test_one["sampled"]["gold"] == test_two["sampled"]["gold"]
    # a difference of nearly equal log-probs: last-bit parameter differences weigh more
    np.testing.assert_allclose(test_one["kl_to_reference"], test_two["kl_to_reference"], rtol=5e-4)

    # The two processes' checkpoint (step 2) restores in one process: nothing left to
    # train, the same final policy (its summary removed: a finished run is not run again).
    os.remove(two / "summary.json")
    again = subprocess.run(
        [sys.executable, "-m", "rlhf_jax.main", "--config", TINY, "--workdir", str(two), *sets],
        cwd=ROOT,
        env=dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resumed from step 2" in again.stdout
    again_test = json.load(open(two / "summary.json"))["test"]["policies"]["policy"]
    assert again_test["sampled"]["gold"] == test_two["sampled"]["gold"]


def test_distributed_flags_are_checked():
    with pytest.raises(ValueError, match="process_id not given"):
        mesh_lib.initialize_distributed("localhost:1234", 2, None)
    with pytest.raises(ValueError, match="outside 0..1"):
        mesh_lib.initialize_distributed("localhost:1234", 2, 2)
    assert mesh_lib.initialize_distributed() is False


def test_process_rows_cover_the_batch_in_one_process():
    mesh = mesh_lib.make_mesh((2, 2, 1))
    assert mesh_lib.process_rows(8, mesh) == slice(0, 8)
    built = mesh_lib.put_rows(lambda rows: {"x": rows * 10}, np.arange(8), mesh)
    np.testing.assert_array_equal(np.asarray(built["x"]), np.arange(8) * 10)
    assert built["x"].sharding.spec[0] == ("data", "fsdp")
