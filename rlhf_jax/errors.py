"""How a run ends when something goes wrong: signals outside the training loop, and the
one-line message of an error the user can act on.

- SIGINT / SIGTERM: inside the training loop `loops.common.StopSignal` records them (the
  step finishes, a checkpoint is saved); everywhere else (data preparation, model
  loading, evaluation, export) the handler installed here raises `Interrupted` at once.
  It derives from BaseException, so no `except Exception` on the way swallows it.
- `describe(exc)`: a one-line `cause` for errors of input and environment (bad config or
  data, missing files, disk full, read-only storage, a diverged run, unreadable
  checkpoints), or None for anything else (a bug: its traceback is wanted).
"""

from __future__ import annotations

import errno
import logging
import re
import signal
import sys


class CheckpointError(RuntimeError):
    """Checkpoints exist but none can be restored; the message says which and why."""


class WorkdirBusy(RuntimeError):
    """Another live run holds the workdir."""


class Interrupted(BaseException):
    """A SIGINT / SIGTERM outside the training loop."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    def __str__(self) -> str:
        return signal.Signals(self.signum).name


_pending: list[int] = []  # signals received outside the training loop


def _raise(signum, frame):
    _pending.append(signum)
    raise Interrupted(signum)


def raise_if_interrupted() -> None:
    """Raise `Interrupted` again if a signal was received: for long loops of our own (data
    generation), in case the handler's exception fired inside a finaliser, where Python
    prints and drops it."""
    if _pending:
        raise Interrupted(_pending[0])


def install_signal_handlers() -> dict:
    """SIGINT and SIGTERM raise `Interrupted` (the training loop defers them itself);
    returns the handlers they replace."""
    stops = (signal.SIGINT, signal.SIGTERM)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)  # a launcher may have blocked them: the mask is inherited
    return {sig: signal.signal(sig, _raise) for sig in stops}


def restore_signal_handlers(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


# What the OS says, in words a user acts on.
_OS_CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "not a directory",
    errno.EISDIR: "is a directory",
}
# Storage errors that reach us as text (TensorStore / Orbax wrap the OS error in their own).
_TEXT_CAUSES = (
    ("No space left on device", "no space left on the device"),
    ("RESOURCE_EXHAUSTED", "no space left on the device (storage reported RESOURCE_EXHAUSTED)"),
    ("Read-only file system", "read-only file system"),
    ("Permission denied", "permission denied"),
    ("Disk quota exceeded", "disk quota exceeded"),
)
# TensorStore names the file it failed on; a checkpoint's temporary directory is cut to the step's.
_STORAGE_PATH = re.compile(r'(?:local file|Failed writing:) "(/[^"]*?)(?:\.orbax-checkpoint-tmp[^"]*)?"')
_INPUT_ERRORS = (ValueError, FloatingPointError, CheckpointError, WorkdirBusy, UnicodeError, EOFError)


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def describe(exc: BaseException) -> str | None:
    """The one-line message of an error the user can act on, else None."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in _OS_CAUSES:
            where = f": {e.filename}" if e.filename else ""
            return f"{_OS_CAUSES[e.errno]}{where}"
    text = " ".join(str(e) for e in _chain(exc))
    for marker, cause in _TEXT_CAUSES:
        if marker in text:
            where = _STORAGE_PATH.search(text)
            return f"{cause}: {where.group(1)}" if where else cause
    if isinstance(exc, _INPUT_ERRORS) or isinstance(exc, OSError):
        first = str(exc).strip().splitlines()
        return first[0] if first else type(exc).__name__
    return None


class QuietLibraryThreads(logging.Filter):
    """Keeps the console to one line per error: while installed, the tracebacks that
    libraries log through absl (Orbax's writer threads each log the same storage error
    with its traceback, then raise it in the main thread) stay off the console; the error
    that ends the run is still described in one line. --debug (or RLHF_JAX_DEBUG=1) leaves
    them on."""

    def __init__(self):
        super().__init__()
        self.logger = logging.getLogger("absl")
        self.logger.addFilter(self)
        # TensorStore's callbacks print through sys.excepthook when a failed save's event
        # loop has closed under them ("Event loop is closed", once per pending write)
        self.excepthook, sys.excepthook = sys.excepthook, self._quiet_hook
        self.hidden = 0

    def _quiet_hook(self, kind, value, tb) -> None:
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            self.hidden += 1
            return
        self.excepthook(kind, value, tb)

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and record.exc_info)  # a traceback: the error itself ends the run

    def remove(self) -> None:
        self.logger.removeFilter(self)
        if sys.excepthook == self._quiet_hook:
            sys.excepthook = self.excepthook
