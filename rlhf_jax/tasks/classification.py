"""Binary classification tasks of graded difficulty over digit strings, for
weak-to-strong experiments (a weak model learns the easy ones, only stronger ones the
hard ones). Labels are balanced by construction.

    contains   does the string contain a 7?                       (easiest)
    majority   are there more odd digits than even ones?
    sorted     are the digits in non-decreasing order?
    parity     is the digit sum even?                             (hardest)
"""

from __future__ import annotations

import numpy as np

TASKS = {
    "contains": lambda d: int(7 in d),
    "majority": lambda d: int(sum(x % 2 for x in d) * 2 > len(d)),
    "sorted": lambda d: int(all(a <= b for a, b in zip(d, d[1:], strict=False))),
    "parity": lambda d: int(sum(d) % 2 == 0),
}
DIFFICULTY = ("contains", "majority", "sorted", "parity")


def _draw(rng: np.random.Generator, task: str, length: int, want: int) -> list[int]:
    for _ in range(10_000):
        digits = rng.integers(0, 10, size=length)
        if task == "sorted" and want == 1:
            digits = np.sort(digits)
        elif task == "contains" and want == 0:
            digits = np.where(digits == 7, 8, digits)
        digits = digits.tolist()
        if TASKS[task](digits) == want:
            return digits
    raise RuntimeError(f"could not draw a {task} example with label {want}")


def examples(task: str, n: int, seed: int, length: int = 9) -> list[dict]:
    """{"text": "3 1 4 ...", "label": 0 | 1}, alternating labels, shuffled."""
    if task not in TASKS:
        raise ValueError(f"classification task {task!r}: expected one of {DIFFICULTY}")
    rng = np.random.default_rng(seed)
    rows = [
        {"text": " ".join(map(str, d)), "label": i % 2} for i in range(n) for d in [_draw(rng, task, length, i % 2)]
    ]
    order = rng.permutation(n)
    return [rows[i] for i in order]


def label(task: str, text: str) -> int:
    """The gold label of a digit string under a task."""
    return TASKS[task]([int(t) for t in text.split()])
