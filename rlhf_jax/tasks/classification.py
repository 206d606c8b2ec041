"""Binary classification tasks of graded difficulty over digit strings, for
weak-to-strong experiments (a weak model learns the easy ones, only stronger ones the
hard ones). Labels are balanced by construction.

    contains   does the string contain a 7?                       (easiest)
    majority   are there more odd digits than even ones?
    sorted     are the digits in non-decreasing order?
    band       is the digit sum within 38..43 (`BAND`)?
    near       is the digit sum within 39..42 (`NEAR`), against strings whose sum lies
               just outside it (35..38, 43..46): an error of one in the sum decides
    parity     is the digit sum even?                             (hardest)

Pretraining text (`pretrain_examples`), the "broad family of related properties" that
gives a pretrained model latent knowledge of the tasks: a string as the prompt, and as the
completion every property of `RELATED` stated in a random order, " ; name value" each.
None of them is a task's answer; each task is composed from one of them (`COMPOSED`):

    contains  <- sevens (how many 7s) > 0        majority <- 2 odds (how many odd) > length
    sorted    <- descents (neighbours falling) = 0
    band      <- sum (the digit sum) in BAND     near     <- sum in NEAR
    parity    <- sum even

with max, min, first and last beside them. A classifier reads a string with its task
asked in the words of that fact (`question`: prompt "3 1 4 ...", completion " ; sum"),
where a pretrained model would state the fact: what fine-tuning has to elicit is the
task's answer from the model's knowledge of the fact. Zero-shot, a pretrained model's
own answer is its stated fact composed by the task's rule (`zero_shot_label`): a
measurement, not the answer key.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

BAND = (38, 43)  # the band task's digit sums: about a quarter of 9-digit strings, around the mean 40.5
NEAR, NEAR_OUT = (39, 42), 4  # the near task's digit sums; its negatives' sums lie within NEAR_OUT of them
TASKS = {
    "contains": lambda d: int(7 in d),
    "majority": lambda d: int(sum(x % 2 for x in d) * 2 > len(d)),
    "sorted": lambda d: int(all(a <= b for a, b in zip(d, d[1:], strict=False))),
    "band": lambda d: int(BAND[0] <= sum(d) <= BAND[1]),
    "near": lambda d: int(NEAR[0] <= sum(d) <= NEAR[1]),
    "parity": lambda d: int(sum(d) % 2 == 0),
}
DIFFICULTY = ("contains", "majority", "sorted", "band", "near", "parity")
RELATED = {
    "sevens": lambda d: str(d.count(7)),
    "odds": lambda d: str(sum(x % 2 for x in d)),
    "descents": lambda d: str(sum(a > b for a, b in zip(d, d[1:], strict=False))),
    "sum": lambda d: str(sum(d)),
    "max": lambda d: str(max(d)),
    "min": lambda d: str(min(d)),
    "first": lambda d: str(d[0]),
    "last": lambda d: str(d[-1]),
}
# task -> (the related fact it is composed from, its rule: (the fact's value, the string's length) -> label)
COMPOSED: dict[str, tuple[str, Callable[[int, int], int]]] = {
    "contains": ("sevens", lambda v, n: int(v > 0)),
    "majority": ("odds", lambda v, n: int(2 * v > n)),
    "sorted": ("descents", lambda v, n: int(v == 0)),
    "band": ("sum", lambda v, n: int(BAND[0] <= v <= BAND[1])),
    "near": ("sum", lambda v, n: int(NEAR[0] <= v <= NEAR[1])),
    "parity": ("sum", lambda v, n: int(v % 2 == 0)),
}
COMPOSED_FROM = {task: fact for task, (fact, _) in COMPOSED.items()}


def _draw(rng: np.random.Generator, task: str, length: int, want: int) -> list[int]:
    for _ in range(10_000):
        digits = rng.integers(0, 10, size=length)
        if task == "sorted" and want == 1:
            digits = np.sort(digits)
        elif task == "contains" and want == 0:
            digits = np.where(digits == 7, 8, digits)
        digits = digits.tolist()
        if task == "near" and not NEAR[0] - NEAR_OUT <= sum(digits) <= NEAR[1] + NEAR_OUT:
            continue  # a negative far from the band is told by any rough sum
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
    """A string with `task` asked in its related fact's words, as (prompt, completion)
    text: what a classifier reads ("3 1 4 ..." and " ; sum" for band and parity)."""
    _check(task)
    return {"prompt": text, "completion": f" ; {COMPOSED_FROM[task]}"}


def zero_shot_label(task: str, stated: str, text: str) -> int | None:
    """A pretrained model's own answer to `task` about `text`: the value it `stated` for
    the task's related fact, composed by the task's rule; None when it stated no number."""
    _check(task)
    try:
        value = int(stated.strip())
    except ValueError:
        return None
    return COMPOSED[task][1](value, len(text.split()))


def pretrain_examples(n: int, seed: int, length: int = 9) -> list[dict]:
    """{"prompt": digits, "completion": " ; name value ..."} with every fact of `RELATED`
    (no task's answer) in a random order; a quarter of the strings sorted (else hardly any
    would be, and the sorted task's fact, no descent, would hardly occur)."""
    rng = np.random.default_rng(seed)
    names = list(RELATED)
    rows = []
    for i in range(n):
        digits = rng.integers(0, 10, size=length)
        digits = (np.sort(digits) if i % 4 == 3 else digits).tolist()
        order = rng.permutation(len(names))
        rows.append({
            "prompt": " ".join(map(str, digits)),
            "completion": "".join(f" ; {names[j]} {RELATED[names[j]](digits)}" for j in order),
        })  # fmt: skip
    return rows


def stated_facts(completion: str) -> dict[str, str]:
    """{name: value} of the " ; name value" parts of a completion (a fact stated twice by
    its first statement; parts that are not two words are skipped)."""
    stated: dict[str, str] = {}
    for part in completion.split(";"):
        words = part.split()
        if len(words) == 2:
            stated.setdefault(words[0], words[1])
    return stated


def facts_reward(prompt: str, completion: str) -> float:
    """The share of `RELATED` that a completion states right about the prompt's string
    (one left out counts as wrong): 1 for the pretraining text itself."""
    digits = [int(t) for t in prompt.split()]
    stated = stated_facts(completion)
    return sum(stated.get(name) == fn(digits) for name, fn in RELATED.items()) / len(RELATED)


def label(task: str, text: str) -> int:
    """The gold label of a digit string under a task."""
    return TASKS[task]([int(t) for t in text.split()])
