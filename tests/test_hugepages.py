"""The entry point's huge-page tunable: how GLIBC_TUNABLES is built, and the re-exec."""

import json
import os
import subprocess
import sys

import pytest

from rlhf_jax import hugepages

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables are Linux's")


@linux_only
def test_the_tunable_is_added_beside_other_tunables():
    assert hugepages.with_tunable({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    env = hugepages.with_tunable({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "X": "1"})
    assert env == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", "X": "1"}


def test_a_users_own_setting_or_opt_out_is_kept():
    mine = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}
    assert hugepages.with_tunable(mine) == mine
    off = {"RLHF_JAX_HUGEPAGES": "0"}
    assert hugepages.with_tunable(off) == off


SCRIPT = """
import json, os, sys
from rlhf_jax.hugepages import reexec_with_huge_pages
print("start", flush=True)
reexec_with_huge_pages()
print(json.dumps({"tunables": os.environ.get("GLIBC_TUNABLES"), "command": sys.orig_argv[1:]}))
"""


@linux_only
def test_reexec_runs_once_with_the_same_options_and_arguments(tmp_path):
    script = tmp_path / "entry.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "RLHF_JAX_HUGEPAGES")}
    out = subprocess.run(
        [sys.executable, "-u", str(script), "--config", "a b"], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[:2] == ["start", "start"]  # the process started once more, then went on
    want = {"tunables": "glibc.malloc.hugetlb=1", "command": ["-u", str(script), "--config", "a b"]}
    assert json.loads(out[2]) == want
    assert len(out) == 3
