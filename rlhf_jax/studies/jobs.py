"""Jobs with dependencies, each run once the jobs it needs are done: in processes of
their own, at most n at a time (`run_jobs`), or in this process with its console in a log
file (`run_logged`). The study runner's scheduler (`study.plan` makes the jobs)."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Job:
    """A unit of work: a shared stage ("shared/<stage>-<hash>") or a cell ("cells/<name>"),
    run once the jobs it needs are done."""

    key: str
    needs: tuple[str, ...]
    run: Callable[[], None]


def run_jobs(jobs: list[Job], n: int, command: Callable[[str], list[str]], logs: str) -> list[str]:
    """Run each job in a process of its own (`command(key)`), at most n at a time, each
    once the jobs it needs have succeeded. Returns the keys of the jobs that failed (and of
    those that needed them). SIGTERM / SIGINT: the running jobs are stopped (they save)."""
    os.makedirs(logs, exist_ok=True)
    pending, running, done, failed = list(jobs), {}, set(), []
    try:
        while pending or running:
            for job in [j for j in pending if any(k in failed for k in j.needs)]:
                pending.remove(job)
                failed.append(job.key)
                print(f"-- {job.key}: skipped (a stage it needs failed)", flush=True)
            ready = [j for j in pending if all(k in done for k in j.needs)]
            while ready and len(running) < n:
                job = ready.pop(0)
                pending.remove(job)
                log = open(log_path(logs, job.key), "a")
                proc = subprocess.Popen(command(job.key), stdout=log, stderr=subprocess.STDOUT, preexec_fn=_with_parent)
                running[job.key] = (proc, log)
                print(f"-- {job.key}: started (log {log.name})", flush=True)
            time.sleep(0.5)
            for key, (proc, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[key]
                if proc.returncode == 0:
                    done.add(key)
                    print(f"-- {key}: done", flush=True)
                else:
                    failed.append(key)
                    print(f"-- {key}: failed (exit {proc.returncode}; see {log.name})", flush=True)
    finally:
        for proc, _ in running.values():  # interrupted: stop the jobs (they save first)
            proc.terminate()
        for proc, log in running.values():
            proc.wait()
            log.close()
    return failed


def _with_parent() -> None:
    """In a job process before it starts: SIGTERM when the study's process dies, however it
    dies (kill -9 included), so no job runs on without its parent (Linux: prctl
    PR_SET_PDEATHSIG; elsewhere the parent's own SIGTERM handling stops them). The job
    saves and exits as on any SIGTERM."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


def log_path(logs: str, key: str) -> str:
    return os.path.join(logs, key.replace("/", "--") + ".log")


def run_logged(job: Job, logs: str):
    """Run a job in this process with its console (Python's prints) in its log file."""
    os.makedirs(logs, exist_ok=True)
    path = log_path(logs, job.key)
    print(f"-- {job.key}: started (log {path})", flush=True)
    t0 = time.time()
    with open(path, "a") as f, contextlib.redirect_stdout(f):
        out = job.run()
    print(f"-- {job.key}: {'stopped' if isinstance(out, dict) and out.get('stopped') else 'done'} "
          f"({time.time() - t0:.0f} s)", flush=True)  # fmt: skip
    return out
