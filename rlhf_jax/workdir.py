"""A run's workdir: one run at a time (an exclusive lock), a finished run left as it is,
and `--restart`, which moves a run's outputs aside before starting over.

The lock is `<workdir>/.lock`, held with flock(2) for the life of the process and holding
the holder's pid and host. The kernel drops a flock when its holder dies, so a lock left
by a killed run is free: the next run takes it over and says whose it was. Where the file
system has no flock (some network mounts), the pid file alone decides: a lock whose pid no
longer lives on this host is taken over; one held on another host is refused.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time

from rlhf_jax.config import differences
from rlhf_jax.errors import WorkdirBusy

LOCK = ".lock"
# What a run writes (besides its data: tfds/, tokenizer/, which are deterministic and kept).
OUTPUTS = ("checkpoints", "checkpoints.unreadable", "metrics.jsonl", "tb", "hf", "summary.json",
           "summary.previous.json", "plots")  # fmt: skip
STAGES = ("sft", "reward", "policy")


def check(path: str) -> None:
    """A workdir must be a directory, or not exist yet (it is created)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--workdir {path}: exists and is not a directory")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lock:
    """`with Lock(workdir):` an exclusive hold on the workdir, or WorkdirBusy; with
    wait=True, waits for the holder to let go instead."""

    def __init__(self, workdir: str, wait: bool = False):
        self.path = os.path.join(workdir, LOCK)
        self.fd: int | None = None
        self.wait = wait

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        waited = False
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            previous = os.read(fd, 4096).decode(errors="replace").strip()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = previous or "holder unknown"
                if self.wait:
                    if not waited:
                        print(f"waiting for {os.path.dirname(self.path)}: in use by {holder}", flush=True)
                    waited = True
                    time.sleep(1.0)
                    continue
                raise WorkdirBusy(
                    f"--workdir {os.path.dirname(self.path)} is in use by another run ({holder}); "
                    "wait for it to end, or use another --workdir"
                ) from None
            except OSError:  # no flock here: the pid file decides
                self._refuse_if_held_elsewhere(previous)
            # the file we locked may have been removed by a holder that just released it
            if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                break
            os.close(fd)
        if previous:
            print(f"taking over the lock of a run that is gone ({previous})")
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self.fd = fd
        return self

    def _refuse_if_held_elsewhere(self, previous: str) -> None:
        parts = previous.split()
        if len(parts) >= 4 and parts[0] == "pid" and parts[1].isdigit():
            pid, host = int(parts[1]), parts[3]
            if host != socket.gethostname() or (_alive(pid) and pid != os.getpid()):
                raise WorkdirBusy(f"--workdir {os.path.dirname(self.path)} is in use by another run ({previous})")

    def __exit__(self, *exc):
        if self.fd is not None:
            os.unlink(self.path)  # while still held, so a waiting opener re-checks (above)
            os.close(self.fd)
            self.fd = None


def finished(workdir: str, resolved: dict) -> bool:
    """Whether workdir holds a finished run of this config (summary.json written last)."""
    summary, config = os.path.join(workdir, "summary.json"), os.path.join(workdir, "config.json")
    if not (os.path.exists(summary) and os.path.exists(config)):
        return False
    with open(config) as f:
        return not differences(json.load(f), resolved)


def retire_summary(workdir: str) -> None:
    """Before a config.json of another config is written: the summary of the old config's
    run moves to summary.previous.json, so that the new config's run is not taken as
    finished until it writes its own (a continued run cut off before its end resumes)."""
    path = os.path.join(workdir, "summary.json")
    if os.path.exists(path):
        os.replace(path, os.path.join(workdir, "summary.previous.json"))


def own_directory(directory: str, resolved: dict) -> None:
    """A directory that holds one config's run (a study's cell): one of another config (the
    grid was amended) moves aside to <directory>.previous-<n>; config.json names this one."""
    path = os.path.join(directory, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            if not differences(json.load(f), resolved):
                return
        n = 0
        while os.path.exists(f"{directory}.previous-{n}"):
            n += 1
        os.replace(directory, f"{directory}.previous-{n}")
        print(f"== {os.path.basename(directory)}: a run of another config moved to {directory}.previous-{n}")
    elif os.path.isdir(directory) and os.listdir(directory):
        return  # made before cells kept their config: left as it is
    os.makedirs(directory, exist_ok=True)
    write_json(path, resolved)


def move_outputs_aside(workdir: str) -> str | None:
    """--restart: move every output of the run (and of its pipeline stages) to
    <workdir>/previous-<time>/, keeping the prepared data. Returns where, or None if there
    was nothing to move."""
    found = [name for name in OUTPUTS if os.path.exists(os.path.join(workdir, name))]
    found += [
        os.path.join(stage, name)
        for stage in STAGES
        for name in (*OUTPUTS, "config.json")
        if os.path.exists(os.path.join(workdir, stage, name))
    ]
    if not found:
        return None
    aside = os.path.join(workdir, f"previous-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while os.path.exists(aside):
        aside, n = f"{aside.rsplit('.', 1)[0]}.{n}", n + 1
    for name in found:
        target = os.path.join(aside, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.rename(os.path.join(workdir, name), target)
    return aside


def checkpoint_dir(path: str) -> str:
    """An HF directory, or a previous run's workdir (its exported hf/)."""
    exported = os.path.join(path, "hf")
    if os.path.exists(os.path.join(exported, "config.json")):
        return exported
    if not os.path.exists(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{path}: neither an HF checkpoint directory nor a finished run's workdir (no hf/)")
    return path


def write_jsonl(path: str, rows: list[dict]) -> None:
    """One JSON object a line, written atomically like `write_json` (its directory made)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    os.replace(tmp, path)


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_json(path: str, value) -> None:
    """Write JSON atomically (a temporary file renamed over the target): a reader, or a
    run killed mid-write, sees the old file or the new one, never half of one. Its
    directory is made."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2)
    os.replace(tmp, path)
