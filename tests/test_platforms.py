"""The CPU alone where no accelerator is attached (libtpu's start-up errors are not
printed), and nothing forced on a TPU or GPU host or over the user's JAX_PLATFORMS."""

import os
import subprocess
import sys

from rlhf_jax import platforms

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_cpu_alone_only_without_an_accelerator_or_a_users_choice(tmp_path):
    none = (str(tmp_path / "accel*"),)
    env = {}
    platforms.default_platforms(env, none)
    assert env == {"JAX_PLATFORMS": "cpu"}
    (tmp_path / "accel0").write_text("")
    env = {}
    platforms.default_platforms(env, none)  # a TPU device file: JAX chooses
    assert env == {}
    env = {"JAX_PLATFORMS": "tpu"}
    platforms.default_platforms(env, (str(tmp_path / "nothing*"),))
    assert env == {"JAX_PLATFORMS": "tpu"}


def test_starting_a_run_prints_no_libtpu_errors_on_this_machine(tmp_path):
    if platforms.accelerator_attached():
        return  # an accelerator host: JAX starts what it finds
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    code = "import rlhf_jax.main, jax; print(jax.devices()[0].platform)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "cpu" and "TPU_WORKER_HOSTNAMES" not in out.stderr, out.stderr
