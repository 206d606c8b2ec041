"""A run's data: the task's rows (prepared once through TFDS), its tokenizer, and the
tokenised train and test sets with the batch layout of `data.batching`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from rlhf_jax.data import batching, builders
from rlhf_jax.data.tokenizer import train_tokenizer
from rlhf_jax.experiment import ExperimentConfig
from rlhf_jax.loops.common import checkpoint_dir
from rlhf_jax.models.hf import load_tokenizer

BUILDERS = {"summarization": builders.SyntheticSummarization, "arithmetic": builders.Arithmetic}


def task_rows(cfg: ExperimentConfig, workdir: str, kind: str):
    """Train and test rows of the built-in task: kind "sft" or "preference"
    (summarisation), "default" (arithmetic: solutions with step and outcome labels)."""
    data_dir = cfg.data.data_dir or os.path.join(workdir, "tfds")
    if cfg.data.task == "arithmetic":
        kind = "default"
    config = builders.task_config(kind, cfg.data.seed, cfg.data.n_train, cfg.data.n_test)
    builder = builders.prepare(BUILDERS[cfg.data.task], data_dir, config=config)
    return builders.records(builder, "train"), builders.records(builder, "test")


def tokenizer_for(cfg: ExperimentConfig, rows, workdir: str):
    """data.tokenizer; else the starting checkpoint's; else the task tokenizer, trained
    once on the train rows into <workdir>/tokenizer."""
    if cfg.data.tokenizer:
        return load_tokenizer(cfg.data.tokenizer)
    if cfg.model.init_from:
        source = checkpoint_dir(cfg.model.init_from)
        if os.path.exists(os.path.join(source, "tokenizer.json")):
            return load_tokenizer(source)
    directory = os.path.join(workdir, "tokenizer")
    if os.path.exists(os.path.join(directory, "tokenizer.json")):
        return load_tokenizer(directory)
    texts = (r["prompt"] + "".join(r.get(k, "") for k in ("completion", "chosen", "rejected")) for r in rows)
    return train_tokenizer(texts, directory)


@dataclasses.dataclass
class TaskData:
    """A task's rows, tokenised train and test sets, and how to lay out their batches."""

    tokenizer: Any
    train_rows: list[dict]
    test_rows: list[dict]
    train: batching.Encoded
    test: batching.Encoded
    make: Callable  # (encoded, rows, P, C, pad) -> batch
    P: int
    C: int

    def batch(self, rows, split: str = "train"):
        enc = self.train if split == "train" else self.test
        return self.make(enc, rows, self.P, self.C, self.tokenizer.pad_token_id)

    def test_batch(self):
        return self.batch(list(range(len(self.test.kept))), "test")

    def test_batch_of(self, rows):
        return self.batch(rows, "test")

    def prompts(self, rows, split: str = "train"):
        """Left-padded prompts [B, P] and mask of encoded rows."""
        enc = self.train if split == "train" else self.test
        return batching.prompt_batch(enc, rows, self.P, self.tokenizer.pad_token_id)

    def row(self, i: int, split: str = "train") -> dict:
        """The task record of encoded row i."""
        enc, rows = (self.train, self.train_rows) if split == "train" else (self.test, self.test_rows)
        return rows[enc.kept[i]]


def task_data(cfg: ExperimentConfig, workdir: str, kind: str) -> TaskData:
    """kind "sft" (prompt, completion) or "preference" (prompt, chosen, rejected)."""
    train_rows, test_rows = task_rows(cfg, workdir, kind)
    tokenizer = tokenizer_for(cfg, train_rows, workdir)
    P, C = cfg.data.max_prompt_len, cfg.data.max_completion_len
    fields, make = (
        (("completion",), batching.sft_batch) if kind == "sft" else (("chosen", "rejected"), batching.preference_batch)
    )
    train_set = batching.encode(tokenizer, train_rows, P, C, completions=fields)
    test_set = batching.encode(tokenizer, test_rows, P, C, completions=fields)
    print(f"train data: {train_set.report()}")
    if not train_set.kept or not test_set.kept:
        raise ValueError(
            f"data: no usable examples (train {len(train_set.kept)}, test {len(test_set.kept)}); "
            f"data.max_prompt_len={P} may be too small"
        )
    return TaskData(tokenizer, train_rows, test_rows, train_set, test_set, make, P, C)
