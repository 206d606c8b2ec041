"""Tokenised, padded batches and a loader whose position can be saved and restored.

Layout, shared with the sampler and the losses: a row is the prompt left-padded to P
tokens followed by the completion (ending in EOS) right-padded to C tokens, so every
prompt ends at column P - 1 and every completion starts at column P.

Prompt-length filtering follows the RLOO paper: examples whose prompt is longer than
`max_prompt_len` tokens are dropped (and counted), not truncated; completions longer than
`max_completion_len` are truncated (and counted).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from rlhf_jax.batches import PreferenceBatch, SFTBatch


@dataclasses.dataclass
class Encoded:
    """Token ids of the kept examples, their indices in the input, and what was done."""

    fields: dict[str, list[list[int]]]
    kept: list[int]
    ties: list[float] = dataclasses.field(default_factory=list)  # per kept pair: 1 where the labeller said "same"
    dropped_long_prompt: int = 0
    truncated_completion: int = 0

    def report(self) -> str:
        return (
            f"kept {len(self.kept)} examples; dropped {self.dropped_long_prompt} with prompts over the limit; "
            f"truncated {self.truncated_completion} completions"
        )


def encode(
    tokenizer, examples: Sequence[dict], max_prompt_len: int, max_completion_len: int, completions=("completion",)
) -> Encoded:
    """Tokenise `prompt` and each completion field (EOS appended); filter and truncate."""
    eos = tokenizer.eos_token_id
    fields: dict[str, list[list[int]]] = {"prompt": [], **{c: [] for c in completions}}
    out = Encoded(fields=fields, kept=[])
    ids = {f: token_ids(tokenizer, [ex[f] for ex in examples]) for f in ("prompt", *completions)}
    for i in range(len(examples)):
        prompt = ids["prompt"][i]
        if not prompt or len(prompt) > max_prompt_len:
            out.dropped_long_prompt += bool(prompt)
            continue
        fields["prompt"].append(prompt)
        for c in completions:
            tokens = ids[c][i] + [eos]
            if len(tokens) > max_completion_len:
                tokens = tokens[:max_completion_len]
                out.truncated_completion += 1
            fields[c].append(tokens)
        out.kept.append(i)
        out.ties.append(float(examples[i].get("tie", 0)))
    return out


def token_ids(tokenizer, texts: list[str], block: int = 8192) -> list[list[int]]:
    """Each text's token ids without special tokens, tokenised a block at a time (a fast
    tokenizer encodes a block in one call: several times faster than text by text)."""
    out: list[list[int]] = []
    for start in range(0, len(texts), block):
        out.extend(tokenizer(texts[start : start + block], add_special_tokens=False)["input_ids"])
    return out


def pad_left(seqs: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    tokens = np.full((len(seqs), length), pad_id, np.int32)
    mask = np.zeros((len(seqs), length), np.int32)
    for i, s in enumerate(seqs):
        if len(s) > length:
            raise ValueError(f"pad_left: row {i} has {len(s)} tokens, more than {length}")
        if len(s):
            tokens[i, length - len(s) :] = s
            mask[i, length - len(s) :] = 1
    return tokens, mask


def pad_right(seqs: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    tokens = np.full((len(seqs), length), pad_id, np.int32)
    mask = np.zeros((len(seqs), length), np.int32)
    for i, s in enumerate(seqs):
        if len(s) > length:
            raise ValueError(f"pad_right: row {i} has {len(s)} tokens, more than {length}")
        tokens[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return tokens, mask


def join(prompts, completions, P: int, C: int, pad_id: int):
    """(tokens, mask, completion_mask) of [N, P + C] rows: prompt left-, completion right-padded."""
    pt, pm = pad_left(prompts, P, pad_id)
    ct, cm = pad_right(completions, C, pad_id)
    return np.concatenate([pt, ct], 1), np.concatenate([pm, cm], 1), np.concatenate([np.zeros_like(pm), cm], 1)


def sft_batch(enc: Encoded, rows: Sequence[int], P: int, C: int, pad_id: int) -> SFTBatch:
    tokens, mask, cmask = join(
        [enc.fields["prompt"][r] for r in rows], [enc.fields["completion"][r] for r in rows], P, C, pad_id
    )
    return SFTBatch(tokens, mask, cmask)


def preference_batch(enc: Encoded, rows: Sequence[int], P: int, C: int, pad_id: int) -> PreferenceBatch:
    prompts = [enc.fields["prompt"][r] for r in rows]
    ct, cm, ccm = join(prompts, [enc.fields["chosen"][r] for r in rows], P, C, pad_id)
    rt, rm, rcm = join(prompts, [enc.fields["rejected"][r] for r in rows], P, C, pad_id)
    zeros = np.zeros((len(rows),), np.float32)
    # a data set with ties (collected comparisons) gives every batch its tie flags; one without, none
    ties = np.asarray([enc.ties[r] for r in rows], np.float32) if any(enc.ties) else None
    return PreferenceBatch(ct, cm, ccm, rt, rm, rcm, zeros, zeros, ties)


def prompt_batch(enc: Encoded, rows: Sequence[int], P: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    return pad_left([enc.fields["prompt"][r] for r in rows], P, pad_id)


class Loader:
    """Global batches of row indices over `n` examples: shuffled per epoch with a seed,
    deterministic and resumable from `state()`. Every process draws the same batches and
    builds only its block of each (`mesh.put_rows`). Incomplete final batches are dropped."""

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool = True):
        if batch_size < 1 or batch_size > n:
            raise ValueError(f"Loader: batch_size={batch_size} must be in 1..{n} (the number of examples)")
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.epoch, self.position = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def __iter__(self):
        return self

    def __next__(self) -> np.ndarray:
        if self.position + self.batch_size > self.n:
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._permutation(self.epoch)
        rows = self._order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return rows

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("seed") != self.seed:
            raise ValueError(f"Loader.restore: saved seed {state.get('seed')} differs from {self.seed}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._permutation(self.epoch)
