"""Multi-step arithmetic: every step can be checked, which gives exact outcome (ORM) and
process (PRM) labels and a verifiable reward.

A prompt is a left-nested expression, "Compute: ((3 + 4) * 2) - 5\n"; a solution is one
step a line, "3 + 4 = 7", "7 * 2 = 14", "14 - 5 = 9", then "The answer is 9". Step labels
(PRM800K's three classes, `batches.py`), for a solution judged line by line:

    POSITIVE  the expression's next operation, on the right running value, computed right;
    NEUTRAL   right but useless: the line restates an earlier step of the solution (the
              same operation and result), so the solution neither advances nor goes wrong;
    NEGATIVE  anything else: arithmetic wrong, a line that cannot be parsed, or right
              arithmetic on the wrong operands (an operation skipped, changed or invented);
    NO_STEP   every line after the first NEGATIVE one: not labelled, as in PRM800K.

The final "The answer is" line is a step too, as PRM800K rates the step that states the
answer: POSITIVE when it states the expression's value, NEGATIVE otherwise (a solution
that stops early, or one that states another number). Without it a solution that stopped
an operation short had every step labelled good and a wrong answer, and a PRM's product
ranked such solutions first (docs/notes.md). The outcome label is whether the final answer
equals the expression's value, so a wrong outcome always holds a NEGATIVE step.

Data of the process-supervision study (`ArithmeticConfig.ops` "+-" keeps every running
value within two digits): `pretrain_examples`, one-operation problems over the whole
range of running values, solved right (the generator's arithmetic: what pretraining gives
a real generator); `checked_examples`, the same facts beside as many checks, "Check: a op
b = c" answered " right" or " wrong" (c off by 1 or 2 half the time, as a generator's
slips are): the knowledge a verifier reads a step with, as the paper's base
models learn theirs from a mathematics corpus before any label; `format_examples`,
multi-step solutions in the step format whose final answer is wrong (one slip each) or, as
the control, right, with restated lines now and then (so that the generator also writes
NEUTRAL steps).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from rlhf_jax.batches import NEGATIVE, NEUTRAL, NO_STEP, POSITIVE

OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
_STEP = re.compile(r"^\s*(-?\d+)\s*([+\-*])\s*(-?\d+)\s*=\s*(-?\d+)\s*$")
_ANSWER = re.compile(r"^\s*The answer is\s+(-?\d+)\s*$")


@dataclasses.dataclass(frozen=True)
class ArithmeticConfig:
    n_ops: tuple[int, int] = (2, 4)
    max_operand: int = 9
    error_prob: float = 0.3  # chance that a sampled solution has one slip
    ops: str = "+-*"
    restate_prob: float = 0.0  # chance that a solution restates one of its steps (a NEUTRAL line)


STEPS = ArithmeticConfig(n_ops=(2, 4), max_operand=9, ops="+-", restate_prob=0.2)  # the study's problems
# RL with a verifiable reward: prompts of mixed depth (difficulty varies by prompt), SFT
# solutions that slip half the time (so that an SFT policy's k samples disagree)
RLVR = ArithmeticConfig(n_ops=(1, 3), max_operand=9, ops="+-", error_prob=0.5)
SUMS = ArithmeticConfig(n_ops=(1, 1), max_operand=3, ops="+", error_prob=0.6)  # nine problems: the tests' size


def make_problem(rng: np.random.Generator, cfg: ArithmeticConfig) -> tuple[str, list[tuple[int, str, int]]]:
    """(expression text, [(left, op, right), ...]) with left of step i+1 = result of step i."""
    n = int(rng.integers(cfg.n_ops[0], cfg.n_ops[1] + 1))
    first = int(rng.integers(1, cfg.max_operand + 1))
    ops = [(str(rng.choice(list(cfg.ops))), int(rng.integers(1, cfg.max_operand + 1))) for _ in range(n)]
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


def solve(steps, rng: np.random.Generator | None = None, error_prob: float = 0.0, restate_prob: float = 0.0) -> str:
    """A solution; with probability error_prob one step's result is off by 1 or 2 (later
    steps work on from the wrong value); with probability restate_prob one step is
    written twice (a restatement right after it)."""
    slip = int(rng.integers(len(steps))) if rng is not None and rng.random() < error_prob else -1
    restate = -1
    if rng is not None and restate_prob > 0 and rng.random() < restate_prob:
        restate = int(rng.integers(len(steps)))
    lines, value = [], None
    for i, (left, op, right) in enumerate(steps):
        a = left if left is not None else value
        value = OPS[op](a, right)
        if i == slip:
            value += int(rng.choice([-2, -1, 1, 2]))
        lines.append(f"{a} {op} {right} = {value}")
        if i == restate:
            lines.append(lines[-1])
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
    """(a PRM label per line, the final answer line included, and the ORM label) of a
    solution to the given problem: see the module docstring (NO_STEP after the first
    NEGATIVE line)."""
    true_answer, true_values = evaluate(expression_steps)
    lines = [line for line in solution.strip().splitlines() if line.strip()]
    step_lines = lines[:-1] if lines and _ANSWER.match(lines[-1]) else lines
    labels, done, value, k = [], [], None, 0  # done: (a, op, b, c) of the steps so far; k: the next operation
    for line in step_lines:
        if labels and labels[-1] in (NEGATIVE, NO_STEP):
            labels.append(NO_STEP)
            continue
        m = _STEP.match(line)
        if not m or not check_step(line):
            labels.append(NEGATIVE)
            continue
        step = (int(m[1]), m[2], int(m[3]), int(m[4]))
        if k < len(expression_steps):
            left, op, right = expression_steps[k]
            if step[:3] == (left if left is not None else value, op, right):  # progress first: a problem may
                labels.append(POSITIVE)  # repeat an earlier step's operation, (((4 - 7) + 7) - 7)
                done.append(step)
                value, k = step[3], k + 1
                continue
        labels.append(NEUTRAL if step in done else NEGATIVE)
    answer = final_answer(solution)
    right = answer is not None and answer == true_answer
    if answer is not None:  # the answer line: rated as a step
        labels.append(NO_STEP if labels and labels[-1] in (NEGATIVE, NO_STEP) else POSITIVE if right else NEGATIVE)
    return labels, int(right)


def parse_problem(prompt_text: str) -> list[tuple[int | None, str, int]]:
    """The steps of a prompt's left-nested expression, as `make_problem` gives them."""
    expression = prompt_text.removeprefix("Compute: ").strip()
    tokens = expression.replace("(", " ").replace(")", " ").split()
    if len(tokens) < 3 or len(tokens) % 2 == 0 or not re.fullmatch(r"[\d\s()+\-*]+", expression):
        raise ValueError(f"not an arithmetic prompt: {prompt_text[:60]!r}")
    try:
        first, pairs = int(tokens[0]), [(tokens[i], int(tokens[i + 1])) for i in range(1, len(tokens), 2)]
    except ValueError:
        raise ValueError(f"not an arithmetic prompt: {prompt_text[:60]!r}") from None
    if any(op not in OPS for op, _ in pairs):
        raise ValueError(f"not an arithmetic prompt: {prompt_text[:60]!r}")
    return [(first, *pairs[0])] + [(None, op, b) for op, b in pairs[1:]]


def label_completion(prompt_text: str, completion: str) -> tuple[list[int], int]:
    """`label_solution` of a sampled completion, the problem read from its prompt."""
    return label_solution(parse_problem(prompt_text), completion)


CHECK = "Check: "
VERDICTS = (" wrong", " right")  # indexed by the equation's truth


def check_examples(n: int, seed: int, cfg: ArithmeticConfig = STEPS) -> list[dict]:
    """Equations to check: prompt "Check: a op b = c" (a anywhere in `value_range(cfg)`, b
    in 1..max_operand), completion `VERDICTS[c == a op b]`; c is off by 1 or 2 (as `solve`'s
    slips are) half the time, and the verdict is read where a PRM reads a step: at c's last
    token. The loss falls on the verdict alone (no wrong result is taught). outcome: the
    truth; answer: c."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a, op, b = one_operation(rng, cfg)
        right = bool(rng.random() < 0.5)
        c = OPS[op](a, b) + (0 if right else int(rng.choice([-2, -1, 1, 2])))
        out.append({"prompt": f"{CHECK}{a} {op} {b} = {c}", "completion": VERDICTS[right], "step_labels": [],
                    "outcome": int(right), "answer": c})  # fmt: skip
    return out


def checked_examples(n: int, seed: int, cfg: ArithmeticConfig = STEPS) -> list[dict]:
    """`pretrain_examples` and `check_examples`, half each (facts first when n is odd), in
    one seeded shuffle: a base model that both computes and checks one-operation steps."""
    rows = pretrain_examples(n - n // 2, seed, cfg) + check_examples(n // 2, seed + 1, cfg)
    order = np.random.default_rng(seed + 2).permutation(len(rows))
    return [rows[i] for i in order]


def facts_reward(prompt_text: str, completion: str) -> float:
    """A base model's sample scored exactly: for a check, 1 if the completion is the right
    verdict; otherwise `verifiable_reward`."""
    if not prompt_text.startswith(CHECK):
        return verifiable_reward(prompt_text, completion)
    truth = check_step(prompt_text.removeprefix(CHECK))
    if truth is None or "*" in prompt_text:
        raise ValueError(f"not a check prompt: {prompt_text[:60]!r}")
    return float(completion.strip() == VERDICTS[truth].strip())


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
        solution = solve(steps, rng, cfg.error_prob, cfg.restate_prob)
        out.append(_record(expression, steps, solution))
    return out


def _record(expression: str, steps, solution: str) -> dict:
    labels, outcome = label_solution(steps, solution)
    return {"prompt": prompt(expression), "completion": solution, "step_labels": labels, "outcome": outcome,
            "answer": evaluate(steps)[0]}  # fmt: skip


def value_range(cfg: ArithmeticConfig) -> tuple[int, int]:
    """The least and greatest running value a problem of cfg can reach (sums and
    differences only: "*" is not bounded this way)."""
    if set(cfg.ops) - {"+", "-"}:
        raise ValueError(f"value_range: ops={cfg.ops!r}; only + and - are bounded")
    most = cfg.max_operand * (1 + cfg.n_ops[1])
    return (1 - cfg.max_operand * cfg.n_ops[1] if "-" in cfg.ops else 1), most


def one_operation(rng: np.random.Generator, cfg: ArithmeticConfig) -> tuple[int, str, int]:
    """(a, op, b): a anywhere in `value_range(cfg)`, op of cfg.ops, b in 1..max_operand."""
    low, high = value_range(cfg)
    return int(rng.integers(low, high + 1)), str(rng.choice(list(cfg.ops))), int(rng.integers(1, cfg.max_operand + 1))


def pretrain_examples(n: int, seed: int, cfg: ArithmeticConfig = STEPS) -> list[dict]:
    """One-operation problems "Compute: a op b", a anywhere in `value_range(cfg)`, solved
    right: the arithmetic facts the generator's steps need, in the step format."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a, op, b = one_operation(rng, cfg)
        out.append(_record(f"{a} {op} {b}", [(a, op, b)], solve([(a, op, b)])))
    return out


def format_examples(n: int, seed: int, correct: bool, cfg: ArithmeticConfig = STEPS) -> list[dict]:
    """Multi-step solutions in the step format, restating a step with cfg.restate_prob:
    every final answer wrong (one slip each) or, with `correct`, every one right."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        expression, steps = make_problem(rng, cfg)
        solution = solve(steps, rng, 0.0 if correct else 1.0, cfg.restate_prob)
        record = _record(expression, steps, solution)
        if record["outcome"] != int(correct):  # + and - carry a slip to the answer; "*" by 1 or more too
            raise AssertionError(f"format_examples: {solution!r} should be {'right' if correct else 'wrong'}")
        out.append(record)
    return out
