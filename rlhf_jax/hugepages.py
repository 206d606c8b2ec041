"""Transparent huge pages for XLA's CPU buffers (Linux, glibc >= 2.35).

XLA's CPU runtime takes each execution's large buffers (a [64, 64, 8192] f32 logits tensor
is 134 MB) from malloc, which serves anything over 32 MB with a fresh mmap and unmaps it
on free. Every call then touches new memory: one page fault per 4 KiB page, 32,768 for
that tensor, about 25 ms on a 2-core VM, before any arithmetic. The glibc tunable
`glibc.malloc.hugetlb=1` makes malloc ask for transparent huge pages (madvise) on those
maps, so one fault covers 2 MiB (measured: 41 ms -> 17 ms for exp over 134 MB; an RLOO
update at d_model 128, 1.2 s -> 0.6 s; bench/RESULTS.md).

glibc reads tunables once, at process start, so the entry point re-executes itself with
the tunable set (`reexec_with_huge_pages`). RLHF_JAX_HUGEPAGES=0 turns this off. Where THP
is disabled system-wide (/sys/kernel/mm/transparent_hugepage/enabled = never) or glibc is
older, the tunable is ignored and nothing changes.
"""

from __future__ import annotations

import os
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT = "RLHF_JAX_HUGEPAGES"


def wanted(env=None) -> bool:
    env = os.environ if env is None else env
    return sys.platform.startswith("linux") and env.get(OPT_OUT, "1") != "0"


def with_tunable(env=None) -> dict[str, str]:
    """A copy of `env` (default os.environ) whose GLIBC_TUNABLES includes the huge-page
    tunable (other tunables kept; one already set for hugetlb is left as it is)."""
    env = dict(os.environ if env is None else env)
    if not wanted(env):
        return env
    tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t]
    if not any(t.startswith("glibc.malloc.hugetlb=") for t in tunables):
        tunables.append(TUNABLE)
    env["GLIBC_TUNABLES"] = ":".join(tunables)
    return env


def reexec_with_huge_pages() -> None:
    """Re-execute this process (same interpreter, options and arguments) with the tunable
    set, unless it is set already, opted out of, or not Linux. Call before importing JAX."""
    env = with_tunable()
    if env.get("GLIBC_TUNABLES") == os.environ.get("GLIBC_TUNABLES"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
