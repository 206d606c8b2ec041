"""Reading a process reward model (PRM800K style: an LM that, at the last token of each
step, puts its probability on three label tokens: negative, neutral, positive).

A solution's steps are its non-blank lines, the final "The answer is" line included (as
`tasks.arithmetic.label_solution` labels them). From the PRM's class probabilities
p_s = (p_neg, p_neu, p_pos) of steps s = 1..S, a solution's score (`SCORES`):

    product      prod_s p_pos(s)                 Lightman et al.: P(every step is good)
    min          min_s p_pos(s)
    first_error  prod_s (1 - p_neg(s))           P(no step is the first error): neutral passes

and a solution without a step (an empty one, or one cut off before its first line ends)
scores 0. As a token-level reward (`step_rewards`), the product telescoped over the
steps: r_s = q_s - q_(s-1) with q_s = prod_(u <= s) p_pos(u), q_0 = 1, at each step's last
token; the r_s sum to product - 1, and a step is charged with the drop in P(all good so
far) it causes.
"""

from __future__ import annotations

import jax
import numpy as np

from rlhf_jax.batches import NEGATIVE, NO_STEP, POSITIVE
from rlhf_jax.data import batching
from rlhf_jax.losses.reward import prm_step_logits

SCORES = {  # reading -> (P(good step), how the steps combine)
    "product": ("positive", "product"),
    "min": ("positive", "min"),
    "first_error": ("not_negative", "product"),
}
PRM_LABEL_TEXT = ("-", "=", "+")  # the label tokens of negative, neutral, positive
PRM_MAX_STEPS = 8  # a PRM reads a solution's first 8 steps


def step_char_ends(text: str) -> list[int]:
    """The index of the last non-space character of each step line (non-blank line) of `text`."""
    ends, at = [], 0
    for line in text.split("\n"):
        if line.strip():
            ends.append(at + len(line.rstrip()) - 1)
        at += len(line) + 1
    return ends


def token_of_chars(char_ends: list[int], token_lengths: list[int]) -> list[int | None]:
    """For each character index, the index of the token that holds it, given each token's
    length in characters (None past the last token)."""
    cum = np.cumsum(token_lengths)
    out = []
    for e in char_ends:
        i = int(np.searchsorted(cum, e, side="right"))
        out.append(i if i < len(token_lengths) else None)
    return out


def solution_batch(tokenizer, prompts, solutions, P: int, C: int, max_steps: int) -> dict:
    """Model inputs of (prompt, solution) pairs in the SFT layout: tokens_BxT, mask_BxT,
    step_positions_BxS (the sequence index of each step's last token) and step_valid_BxS
    (the step exists and its last token is within the C completion tokens)."""

    records = [{"prompt": p, "completion": s} for p, s in zip(prompts, solutions, strict=True)]
    enc = batching.encode(tokenizer, records, P, C)
    if len(enc.kept) != len(records):
        raise ValueError(f"solution_batch: {len(records) - len(enc.kept)} prompts over P={P} tokens")
    sft = batching.sft_batch(enc, list(range(len(records))), P, C, tokenizer.pad_token_id)
    positions = np.zeros((len(records), max_steps), np.int32)
    valid = np.zeros((len(records), max_steps), bool)
    for b, s in enumerate(solutions):
        offsets = tokenizer(s, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        n_tokens = int(sft.completion_mask_BxT[b].sum())
        for k, end in enumerate(step_char_ends(s)[:max_steps]):
            token = next((i for i, (a, z) in enumerate(offsets) if a <= end < z), None)
            if token is not None and token < n_tokens:
                positions[b, k], valid[b, k] = P + token, True
    return {"tokens_BxT": sft.tokens_BxT, "mask_BxT": sft.mask_BxT, "step_positions_BxS": positions,
            "step_valid_BxS": valid}  # fmt: skip


def prm_scores(step_probs_BxSx3: np.ndarray, valid_BxS: np.ndarray) -> dict[str, np.ndarray]:
    """Each of SCORES from the steps' class probabilities [B, S, 3]; 0 without a valid step."""
    probs = np.asarray(step_probs_BxSx3, np.float64)
    good = {"positive": probs[..., POSITIVE], "not_negative": 1.0 - probs[..., NEGATIVE]}
    valid = np.asarray(valid_BxS, bool)
    any_step = valid.any(-1)
    out = {}
    for name, (reading, how) in SCORES.items():
        p = good[reading]
        if how == "product":
            s = np.exp(np.where(valid, np.log(np.maximum(p, 1e-300)), 0.0).sum(-1))
        else:
            s = np.where(valid, p, 1.0).min(-1)
        out[name] = np.where(any_step, s, 0.0)
    return out


def step_rewards(step_probs_BxSx3: np.ndarray, valid_BxS: np.ndarray) -> np.ndarray:
    """[B, S] r_s = q_s - q_(s-1), q_s the running product of P(positive) over the valid
    steps (0 at invalid ones); each row sums to product - 1 (to -1 without a step)."""
    p = np.where(np.asarray(valid_BxS, bool), np.asarray(step_probs_BxSx3, np.float64)[..., POSITIVE], 1.0)
    q = np.cumprod(p, axis=-1)
    previous = np.concatenate([np.ones_like(q[:, :1]), q[:, :-1]], axis=-1)
    r = np.where(valid_BxS, q - previous, 0.0)
    none = ~np.asarray(valid_BxS, bool).any(-1)
    r[none, 0] = -1.0  # no step shown: the product reading's 0, less 1
    return r


class PRMJudge:
    """A trained PRM over (prompt, solution) texts: `judge(prompts, solutions)` -> each of
    SCORES, "probs" [B, S, 3], "valid" [B, S] and "step_rewards" [B, S]; `batch` pairs per
    compiled call (the last call padded)."""

    def __init__(self, model, params, tokenizer, P: int, C: int, max_steps: int = 0, batch: int = 256):

        ids = prm_label_ids(tokenizer)
        self.params, self.tokenizer, self.P, self.C, self.batch = params, tokenizer, P, C, batch
        self.max_steps = max_steps or PRM_MAX_STEPS

        def probs(params, b):
            logits = prm_step_logits(params, b["tokens_BxT"], b["mask_BxT"], b["step_positions_BxS"], ids, model)
            return jax.nn.softmax(logits.astype(np.float32), axis=-1)

        self.fn = jax.jit(probs)

    def __call__(self, prompts, solutions) -> dict[str, np.ndarray]:
        parts = []
        for start in range(0, len(prompts), self.batch):
            p, s = list(prompts[start : start + self.batch]), list(solutions[start : start + self.batch])
            n = len(p)
            p, s = p + [p[-1]] * (self.batch - n), s + [s[-1]] * (self.batch - n)  # one program for every call
            b = solution_batch(self.tokenizer, p, s, self.P, self.C, self.max_steps)
            inputs = {k: v for k, v in b.items() if k != "step_valid_BxS"}
            parts.append((np.asarray(self.fn(self.params, inputs))[:n], b["step_valid_BxS"][:n]))
        probs = np.concatenate([o for o, _ in parts])
        valid = np.concatenate([v for _, v in parts])
        return {**prm_scores(probs, valid), "probs": probs, "valid": valid, "step_rewards": step_rewards(probs, valid)}


def once_each(score, prompts, solutions) -> dict[str, np.ndarray]:
    """`score(prompts, solutions)` (-> arrays whose first axis is the pair) called on each
    distinct (prompt, solution) pair once, its rows copied to the repeats: a pool of
    sampled solutions repeats its common ones (the process study's: ~58 distinct texts of
    256 per problem), and a copy scores what its original scores."""

    first: dict[tuple[str, str], int] = {}
    which = np.asarray([first.setdefault(pair, len(first)) for pair in zip(prompts, solutions, strict=True)])
    pairs = list(first)
    out = score([p for p, _ in pairs], [s for _, s in pairs])
    return {k: np.asarray(v)[which] for k, v in out.items()}


def prm_label_ids(tokenizer) -> tuple[int, ...]:
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in PRM_LABEL_TEXT]
    if any(len(i) != 1 for i in ids):
        raise ValueError(f"PRM label texts {PRM_LABEL_TEXT} must each be one token of the tokenizer")
    return tuple(i[0] for i in ids)


def calibration(probs_BxSx3, valid_BxS, labels, bins: int = 10) -> list[dict]:
    """Predicted P(positive) against the share of steps that are positive, per bin of the
    prediction, over the labelled steps (NO_STEP left out) of the solutions."""

    predicted, actual = [], []
    for b, steps in enumerate(labels):
        for k, label in enumerate(steps[: valid_BxS.shape[1]]):
            if label != NO_STEP and valid_BxS[b, k]:
                predicted.append(float(probs_BxSx3[b, k, POSITIVE]))
                actual.append(float(label == POSITIVE))
    predicted, actual = np.asarray(predicted), np.asarray(actual)
    which = np.minimum((predicted * bins).astype(int), bins - 1)
    return [
        {"bin": f"{i / bins:.1f}-{(i + 1) / bins:.1f}", "steps": int((which == i).sum()),
         "predicted": float(predicted[which == i].mean()), "positive": float(actual[which == i].mean())}
        for i in range(bins) if (which == i).any()
    ]  # fmt: skip
