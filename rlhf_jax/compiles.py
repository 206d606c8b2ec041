"""Counting XLA compilations: a loop that recompiles after its first iteration pays the
compile time again every time (a shape or a static argument that changes, a Python
scalar that became a constant). `drive` logs the count per logging window; the tests and
bench/ assert that it is 0 once the loop is warm.

    with CompileCounter() as compiles:
        ...
    compiles.count          # backend compilations so far
    compiles.take()         # the count since the last take(), then reset
    with compiles.paused(): # not counted (Orbax's first save on a multi-device mesh
        ...                 # compiles one slicing program per device and shape)
"""

from __future__ import annotations

import contextlib
import threading

import jax

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileCounter:
    """Counts backend compilations (one per program XLA builds, cache hits excluded) made
    in any thread while the context is open."""

    def __init__(self):
        self.count = 0
        self.seconds = 0.0
        self._taken = 0
        self._paused = False
        self._lock = threading.Lock()

    def _listen(self, event: str, duration: float, **_) -> None:
        if event == BACKEND_COMPILE_EVENT and not self._paused:
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
