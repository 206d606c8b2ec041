"""Which JAX platforms a run starts, before JAX does.

With libtpu installed (the `tpu` and `test` extras: `--dry-run --target` compiles with it)
JAX tries the TPU backend at start-up on any machine, and on one without a TPU libtpu
prints several lines of errors about TPU_WORKER_HOSTNAMES and host bounds before JAX falls
back to the CPU. Where no accelerator is attached, nothing is lost by starting the CPU
alone: `default_platforms` sets JAX_PLATFORMS=cpu when the machine has no TPU device
files (/dev/accel*, /dev/vfio/*) and no NVIDIA GPU (/dev/nvidia*), and JAX_PLATFORMS is not
set already. A TPU or GPU host is left as it is, and so is a JAX_PLATFORMS of the user's.
libtpu still compiles for TPU targets under JAX_PLATFORMS=cpu (`aot.py`).
"""

from __future__ import annotations

import glob
import os

DEVICE_FILES = ("/dev/accel*", "/dev/vfio/*", "/dev/nvidia*")


def accelerator_attached(patterns: tuple[str, ...] = DEVICE_FILES) -> bool:
    return any(glob.glob(p) for p in patterns)


def default_platforms(env=None, patterns: tuple[str, ...] = DEVICE_FILES) -> None:
    """JAX_PLATFORMS=cpu in `env` (default os.environ) on a machine with no accelerator,
    unless JAX_PLATFORMS is set."""
    env = os.environ if env is None else env
    if "JAX_PLATFORMS" not in env and not accelerator_attached(patterns):
        env["JAX_PLATFORMS"] = "cpu"
