"""Multi-step arithmetic: every step can be checked, which gives exact outcome (ORM) and
process (PRM) labels and a verifiable reward.

A prompt is a left-nested expression, "Compute: ((3 + 4) * 2) - 5\\n"; a solution is one
step a line, "3 + 4 = 7", "7 * 2 = 14", "14 - 5 = 9", then "The answer is 9". Sampled
solutions carry injected slips (a step's result off by a little); later steps then work
correctly from the wrong value. Step labels (PRM800K's classes, batches.py):
    POSITIVE  the step's arithmetic is right and it continues from the right value;
    NEGATIVE  the step's arithmetic is wrong, or it cannot be parsed;
    NEUTRAL   the arithmetic is right but it continues from an earlier mistake.
The outcome label is whether the final answer equals the expression's value.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from rlhf_jax.batches import NEGATIVE, NEUTRAL, POSITIVE

OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
_STEP = re.compile(r"^\s*(-?\d+)\s*([+\-*])\s*(-?\d+)\s*=\s*(-?\d+)\s*$")
_ANSWER = re.compile(r"^\s*The answer is\s+(-?\d+)\s*$")


@dataclasses.dataclass(frozen=True)
class ArithmeticConfig:
    n_ops: tuple[int, int] = (2, 4)
    max_operand: int = 9
    error_prob: float = 0.3  # chance that a sampled solution has one slip


def make_problem(rng: np.random.Generator, cfg: ArithmeticConfig) -> tuple[str, list[tuple[int, str, int]]]:
    """(expression text, [(left, op, right), ...]) with left of step i+1 = result of step i."""
    n = int(rng.integers(cfg.n_ops[0], cfg.n_ops[1] + 1))
    first = int(rng.integers(1, cfg.max_operand + 1))
    ops = [(str(rng.choice(list(OPS))), int(rng.integers(1, cfg.max_operand + 1))) for _ in range(n)]
    text = str(first)
    for i, (op, b) in enumerate(ops):
        text = f"({text} {op} {b})" if i < n - 1 else f"{text} {op} {b}"
    return text, [(first, *ops[0])] + [(None, op, b) for op, b in ops[1:]]


def evaluate(steps) -> tuple[int, list[int]]:
    value, values = None, []
    for left, op, right in steps:
        value = OPS[op](left if left is not None else value, right)
        values.append(value)
    return value, values


def prompt(expression: str) -> str:
    return f"Compute: {expression}\n"


def solve(steps, rng: np.random.Generator | None = None, error_prob: float = 0.0) -> str:
    """A solution; with probability error_prob one step's result is off by 1 or 2."""
    slip = int(rng.integers(len(steps))) if rng is not None and rng.random() < error_prob else -1
    lines, value = [], None
    for i, (left, op, right) in enumerate(steps):
        a = left if left is not None else value
        value = OPS[op](a, right)
        if i == slip:
            value += int(rng.choice([-2, -1, 1, 2]))
        lines.append(f"{a} {op} {right} = {value}")
    lines.append(f"The answer is {value}")
    return "\n".join(lines)


def check_step(line: str) -> bool | None:
    """True / False for a well-formed step line with right / wrong arithmetic, None if unparsable."""
    m = _STEP.match(line)
    if not m:
        return None
    a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
    return OPS[op](a, b) == c


def final_answer(solution: str) -> int | None:
    lines = [line for line in solution.strip().splitlines() if line.strip()]
    m = _ANSWER.match(lines[-1]) if lines else None
    return int(m[1]) if m else None


def label_solution(expression_steps, solution: str) -> tuple[list[int], int]:
    """(a PRM label per step line, the ORM label) of a solution to the given problem."""
    true_answer, true_values = evaluate(expression_steps)
    lines = [line for line in solution.strip().splitlines() if line.strip()]
    step_lines = lines[:-1] if lines and _ANSWER.match(lines[-1]) else lines
    labels, on_track = [], True
    for i, line in enumerate(step_lines):
        ok = check_step(line)
        if not ok:
            labels.append(NEGATIVE)
            on_track = False
            continue
        result = int(_STEP.match(line)[4])
        right_value = i < len(true_values) and result == true_values[i]
        labels.append(POSITIVE if on_track and right_value else NEUTRAL)
        on_track = on_track and right_value
    answer = final_answer(solution)
    return labels, int(answer is not None and answer == true_answer)


def verifiable_reward(prompt_text: str, completion: str) -> float:
    """1 if the completion's final answer equals the prompt expression's value, else 0."""
    expression = prompt_text.removeprefix("Compute: ").strip()
    if not re.fullmatch(r"[\d\s()+\-*]+", expression):
        raise ValueError(f"not an arithmetic prompt: {prompt_text[:60]!r}")
    answer = final_answer(completion)
    return float(answer is not None and answer == eval(expression))  # noqa: S307 - digits and + - * ( ) only


def examples(n: int, seed: int, cfg: ArithmeticConfig = ArithmeticConfig()) -> list[dict]:
    """{"prompt", "completion", "step_labels", "outcome", "answer"}: sampled solutions with slips."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        expression, steps = make_problem(rng, cfg)
        solution = solve(steps, rng, cfg.error_prob)
        labels, outcome = label_solution(steps, solution)
        out.append(
            {
                "prompt": prompt(expression),
                "completion": solution,
                "step_labels": labels,
                "outcome": outcome,
                "answer": evaluate(steps)[0],
            }
        )
    return out
