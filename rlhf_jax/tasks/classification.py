"""Binary classification tasks of graded difficulty over digit strings, for
weak-to-strong experiments (a weak model learns the easy ones, only stronger ones the
hard ones). Labels are balanced by construction.

    contains   does the string contain a 7?                       (easiest)
    majority   are there more odd digits than even ones?
    sorted     are the digits in non-decreasing order?
    parity     is the digit sum even?                             (hardest)

Pretraining text (`pretrain_examples`), the "broad family of related properties" that
gives a pretrained model latent knowledge of the tasks: a string as the prompt, and as the
completion every property of `FACTS` stated in a random order, " ; name answer" each
(the tasks' answers are yes / no; max, min, first and last a digit). A classifier reads
a string with one question asked (`question`: prompt "3 1 4 ...", completion " ; parity"),
the text a pretrained model has seen followed by the answer; what the fine-tuning has to
find is whether the model learnt to answer it.

That text states the evaluated answers themselves. `RELATED` is pretraining text without
them: properties each task can be composed from but that are not its answer, so that what
a pretrained model knows of a task is latent, and zero-shot accuracy a measurement:

    contains  <- sevens (how many 7s)          majority <- odds (how many odd digits)
    sorted    <- descents (neighbours falling)  parity   <- sum (the digit sum)

with max, min, first and last beside them (`COMPOSED_FROM`; `pretrain_examples(facts=RELATED)`).
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
FACTS = {
    **{name: (lambda f: lambda d: ("no", "yes")[f(d)])(f) for name, f in TASKS.items()},
    "max": lambda d: str(max(d)),
    "min": lambda d: str(min(d)),
    "first": lambda d: str(d[0]),
    "last": lambda d: str(d[-1]),
}
RELATED = {
    "sevens": lambda d: str(d.count(7)),
    "odds": lambda d: str(sum(x % 2 for x in d)),
    "descents": lambda d: str(sum(a > b for a, b in zip(d, d[1:], strict=False))),
    "sum": lambda d: str(sum(d)),
    **{name: FACTS[name] for name in ("max", "min", "first", "last")},
}
COMPOSED_FROM = {"contains": "sevens", "majority": "odds", "sorted": "descents", "parity": "sum"}


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


def _check(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"classification task {task!r}: expected one of {DIFFICULTY}")


def examples(task: str, n: int, seed: int, length: int = 9) -> list[dict]:
    """{"text": "3 1 4 ...", "label": 0 | 1}, alternating labels, shuffled."""
    _check(task)
    rng = np.random.default_rng(seed)
    rows = [
        {"text": " ".join(map(str, d)), "label": i % 2} for i in range(n) for d in [_draw(rng, task, length, i % 2)]
    ]
    order = rng.permutation(n)
    return [rows[i] for i in order]


def question(task: str, text: str) -> dict:
    """A string with `task` asked, as (prompt, completion) text: what a classifier reads."""
    _check(task)
    return {"prompt": text, "completion": f" ; {task}"}


def pretrain_examples(n: int, seed: int, length: int = 9, facts: dict | None = None) -> list[dict]:
    """{"prompt": digits, "completion": " ; name answer ..."} with every fact of `facts`
    (FACTS, or RELATED: no task's answer) in a random order; a quarter of the strings
    sorted (else hardly any would be)."""
    facts = FACTS if facts is None else facts
    rng = np.random.default_rng(seed)
    names = list(facts)
    rows = []
    for i in range(n):
        digits = rng.integers(0, 10, size=length)
        digits = (np.sort(digits) if i % 4 == 3 else digits).tolist()
        order = rng.permutation(len(names))
        rows.append({
            "prompt": " ".join(map(str, digits)),
            "completion": "".join(f" ; {names[j]} {facts[names[j]](digits)}" for j in order),
        })  # fmt: skip
    return rows


def facts_reward(prompt: str, completion: str, facts: dict | None = None) -> float:
    """The share of `facts` (FACTS or RELATED) that a completion states right about the
    prompt's string ("name answer" parts between " ; "; a fact stated twice counts by its
    first statement, one left out counts as wrong): 1 for the pretraining text itself."""
    facts = FACTS if facts is None else facts
    digits = [int(t) for t in prompt.split()]
    stated: dict[str, str] = {}
    for part in completion.split(";"):
        words = part.split()
        if len(words) == 2 and words[0] in facts:
            stated.setdefault(words[0], words[1])
    return sum(stated.get(name) == fn(digits) for name, fn in facts.items()) / len(facts)


def label(task: str, text: str) -> int:
    """The gold label of a digit string under a task."""
    return TASKS[task]([int(t) for t in text.split()])
