"""Counting XLA compilations: a loop that recompiles after its first iteration pays the
compile time again every time (a shape or a static argument that changes, a Python
scalar that became a constant). `drive` logs the count per logging window; the tests and
bench/ assert that it is 0 once the loop is warm. A program loaded from the persistent
compilation cache counts too: the loop traced and lowered it again to find it there.

Keeping compiled programs on disk (`persist`): a process that needs a program an earlier
process compiled (the next cell of a study, a resumed run, the next test) loads it.

    with CompileCounter() as compiles:
        ...
    compiles.count          # backend compilations so far
    compiles.take()         # the count since the last take(), then reset
    with compiles.paused(): # not counted (Orbax's first save on a multi-device mesh
        ...                 # compiles one slicing program per device and shape)
"""

from __future__ import annotations

import contextlib
import os
import threading

import jax

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_retrieval_time_sec"  # sent on a persistent-cache hit only
CACHE_DIR_ENV = "JAX_COMPILATION_CACHE_DIR"


def persist(directory: str) -> str:
    """Keep compiled programs in `directory` (JAX's persistent compilation cache), every
    program however quick its compilation, in this process and in the processes it starts
    (through the environment). A cache the user named in $JAX_COMPILATION_CACHE_DIR wins.
    Call before the first compilation. Returns the directory in use."""
    directory = os.environ.setdefault(CACHE_DIR_ENV, directory)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))  # fmt: skip
    jax.config.update("jax_persistent_cache_min_entry_size_bytes",
                      int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]))  # fmt: skip
    return directory


class CompileCounter:
    """Counts the programs XLA builds or loads from the persistent cache (in-memory cache
    hits excluded) in any thread while the context is open."""

    def __init__(self):
        self.count = 0
        self.seconds = 0.0
        self._taken = 0
        self._paused = False
        self._lock = threading.Lock()

    def _listen(self, event: str, duration: float, **_) -> None:
        if event in (BACKEND_COMPILE_EVENT, CACHE_HIT_EVENT) and not self._paused:
            with self._lock:
                self.count += 1
                self.seconds += duration

    def take(self) -> int:
        """Compilations since the previous take() (or since the context opened)."""
        with self._lock:
            n, self._taken = self.count - self._taken, self.count
        return n

    @contextlib.contextmanager
    def paused(self):
        self._paused = True
        try:
            yield
        finally:
            self._paused = False

    def __enter__(self) -> CompileCounter:
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self._listen)
