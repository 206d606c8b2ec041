"""Judges of completions: the task's gold reward, a trained reward model, and an LM judge
that asks a local model the pairwise questions of the RLOO paper's appendix D (the TL;DR
and HH prompts used with GPT-4; the DPO paper's wording) and parses its verdict.

Every judge scores text: prompts and completions as strings, so any two policies (or a
policy and the data's reference completions) can be compared.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import jax
import numpy as np

from rlhf_jax import mesh as mesh_lib
from rlhf_jax.data import batching

TLDR_PROMPT = """Which of the following summaries does a better job of summarizing the most \
important points in the given forum post, without including unimportant or irrelevant details? \
A good summary is both precise and concise.

Post:
{instruction}

Summary (A):
{output_1}

Summary (B):
{output_2}

FIRST provide a one-sentence comparison of the two summaries, explaining which you prefer and why. \
SECOND, on a new line, state only "Summary (A)" or "Summary (B)" to indicate your choice. Your response \
should use the format:
Comparison: <one-sentence comparison and explanation>
Preferred: <"Summary (A)" or "Summary (B)">
"""

HH_PROMPT = """For the following query to a chatbot assistant, which response is more helpful?

Query: {instruction}

Response (A):
{output_1}

Response (B):
{output_2}

FIRST provide a one-sentence comparison of the two responses and explain which you feel is more \
helpful. SECOND, on a new line, state only "Response (A)" or "Response (B)" to indicate which response \
is more helpful. If they are equally good or bad, state "Neither". Your response should use the format:
Comparison: <one-sentence comparison and explanation>
Preferred: <"Response (A)" or "Response (B)" or "Neither">
"""

TEMPLATES = {"tldr": TLDR_PROMPT, "hh": HH_PROMPT}
_VERDICT = re.compile(
    r"Preferred:\s*\"?\s*(?:(?:Summary|Response)\s*)?\(?\s*([AB])\s*\)?|Preferred:\s*\"?\s*(Neither)", re.I
)


def judge_prompt(template: str, instruction: str, output_1: str, output_2: str) -> str:
    if template not in TEMPLATES:
        raise ValueError(f"LM judge template {template!r}: expected one of {tuple(TEMPLATES)}")
    return TEMPLATES[template].format(instruction=instruction, output_1=output_1, output_2=output_2)


def parse_verdict(answer: str) -> str | None:
    """ "A", "B", "Neither", or None when the answer does not follow the format (the last
    "Preferred:" line counts)."""
    found = _VERDICT.findall(answer)
    if not found:
        return None
    letter, neither = found[-1]
    return "Neither" if neither else letter.upper()


class LMJudge:
    """Pairwise judgement by any local model: `generate(list of prompts) -> list of answers`.

    `compare` shows each pair in a random order (seeded) to cancel position bias, and
    returns per pair 1.0 (a wins), 0.0 (b wins), 0.5 (Neither) or NaN (unparsable)."""

    def __init__(self, generate: Callable[[list[str]], list[str]], template: str = "tldr"):
        judge_prompt(template, "", "", "")  # validates the template
        self.generate, self.template = generate, template

    def compare(self, instructions: Sequence[str], a: Sequence[str], b: Sequence[str], seed: int = 0) -> np.ndarray:
        if not len(instructions) == len(a) == len(b):
            raise ValueError(f"LMJudge.compare: {len(instructions)} instructions, {len(a)} and {len(b)} outputs")
        swap = np.random.default_rng(seed).random(len(a)) < 0.5
        prompts = [
            judge_prompt(self.template, x, *((ob, oa) if s else (oa, ob)))
            for x, oa, ob, s in zip(instructions, a, b, swap, strict=True)
        ]
        out = np.full(len(a), np.nan)
        for i, answer in enumerate(self.generate(prompts)):
            verdict = parse_verdict(answer)
            if verdict == "Neither":
                out[i] = 0.5
            elif verdict is not None:
                out[i] = float((verdict == "A") != swap[i])
        return out


class RewardModelJudge:
    """A trained scalar-head reward model's score of prompt + completion (texts are laid
    out as in training: prompt left-padded to P, completion + EOS right-padded to C)."""

    def __init__(self, model, params, tokenizer, P: int, C: int, batch_size: int = 64):
        self.model, self.params, self.tokenizer = model, params, tokenizer
        self.P, self.C, self.batch_size = P, C, batch_size
        self._fn = jax.jit(model.rewards)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        rows = [{"prompt": p, "completion": c} for p, c in zip(prompts, completions, strict=True)]
        enc = batching.encode(self.tokenizer, rows, self.P, self.C)
        if len(enc.kept) != len(rows):
            raise ValueError(f"RewardModelJudge: {len(rows) - len(enc.kept)} prompts exceed {self.P} tokens")
        out = []
        for start in range(0, len(rows), self.batch_size):
            idx = list(range(start, min(start + self.batch_size, len(rows))))
            full = idx + [idx[-1]] * (self.batch_size - len(idx))  # one shape: no recompilation
            batch = batching.sft_batch(enc, full, self.P, self.C, self.tokenizer.pad_token_id)
            out.append(mesh_lib.to_host(self._fn(self.params, batch.tokens_BxT, batch.mask_BxT))[: len(idx)])
        return np.concatenate(out).astype(np.float64)
