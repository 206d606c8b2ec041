"""A run's data: the task's rows (prepared once through TFDS), its tokenizer, and the
tokenised train and test sets with the batch layout of `data.batching`.

Over several processes, process 0 prepares the data and trains the tokenizer first; the
others then read what it wrote (shared storage) or make their own copy (local disks).
Every process holds the row table; each builds only its block of a batch's rows
(`mesh.put_rows`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax

from rlhf_jax import mesh as mesh_lib
from rlhf_jax.data import batching, builders, formats
from rlhf_jax.data.tokenizer import train_tokenizer
from rlhf_jax.experiment import ExperimentConfig
from rlhf_jax.models.hf import load_tokenizer
from rlhf_jax.workdir import checkpoint_dir

BUILDERS = {"summarization": builders.SyntheticSummarization, "arithmetic": builders.Arithmetic}


def process_0_first(name: str, make: Callable):
    """make() on process 0, then on the others once it has finished."""
    if jax.process_index() == 0:
        out = make()
    mesh_lib.barrier(name)
    if jax.process_index() != 0:
        out = make()
    return out


# Real data sets: (builder, subdirectory of data.source_dir, train split, test splits in order of preference)
REAL = {
    ("tldr", "sft"): (builders.TldrSft, "sft", "train", ("test", "valid")),
    ("tldr", "preference"): (builders.TldrComparisons, "comparisons", "train", ("valid1", "valid2")),
    ("hh", "sft"): (builders.HhRlhf, "", "train", ("test",)),
    ("hh", "preference"): (builders.HhRlhf, "", "train", ("test",)),
}


def task_rows(cfg: ExperimentConfig, workdir: str, kind: str):
    """Train and test rows of the task: kind "sft" (prompt, completion) or "preference"
    (prompt, chosen, rejected); the arithmetic task gives its solutions with step and
    outcome labels. HH has no SFT split: its SFT rows are the prompts with the chosen
    response (as the RLOO paper, appendix C)."""
    data_dir = cfg.data.data_dir or os.path.join(workdir, "tfds")
    if (cfg.data.task, kind) in REAL:
        return real_rows(cfg, data_dir, kind)
    if cfg.data.task == "arithmetic":
        kind = "default"
    config = builders.task_config(kind, cfg.data.seed, cfg.data.n_train, cfg.data.n_test)
    builder = process_0_first(
        "task data prepared", lambda: builders.prepare(BUILDERS[cfg.data.task], data_dir, config=config)
    )
    return builders.records(builder, "train"), builders.records(builder, "test")


def real_rows(cfg: ExperimentConfig, data_dir: str, kind: str):
    """The first data.n_train / data.n_test rows (0 = all) of a real data set, prepared
    once from the original files in data.source_dir."""
    builder_cls, sub, train_split, test_splits = REAL[(cfg.data.task, kind)]
    source = cfg.data.source_dir
    if not source:
        raise ValueError(f"data.source_dir: task {cfg.data.task} needs the directory of its original files")
    if sub and os.path.isdir(os.path.join(source, sub)):
        source = os.path.join(source, sub)
    builder = process_0_first("task data prepared", lambda: builders.prepare(builder_cls, data_dir, source_dir=source))
    splits = set(builder.info.splits.keys())
    test_split = next((s for s in test_splits if s in splits), None)
    if train_split not in splits or test_split is None:
        raise ValueError(
            f"data.source_dir={source}: {builder_cls.__name__} found splits {sorted(splits)}; "
            f"needs {train_split} and one of {list(test_splits)}"
        )
    train, test = builders.records(builder, train_split), builders.records(builder, test_split)
    if cfg.data.task == "hh" and kind == "sft":
        train, test = formats.hh_sft_view(train), formats.hh_sft_view(test)
    return train[: cfg.data.n_train or None], test[: cfg.data.n_test or None]


def tokenizer_for(cfg: ExperimentConfig, rows, workdir: str):
    """data.tokenizer; else the starting checkpoint's; else the task tokenizer, trained
    once on the train rows into <workdir>/tokenizer. A pretrained tokenizer without a pad
    token (Pythia, Llama) pads with its EOS token (padding is masked out everywhere)."""
    if cfg.data.tokenizer:
        return with_pad(load_tokenizer(cfg.data.tokenizer))
    if cfg.model.init_from:
        source = checkpoint_dir(cfg.model.init_from)
        if os.path.exists(os.path.join(source, "tokenizer.json")):
            return with_pad(load_tokenizer(source))
    directory = os.path.join(workdir, "tokenizer")

    def load_or_train():
        if os.path.exists(os.path.join(directory, "tokenizer.json")):
            return load_tokenizer(directory)
        texts = (r["prompt"] + "".join(r.get(k, "") for k in ("completion", "chosen", "rejected")) for r in rows)
        return train_tokenizer(texts, directory)

    return process_0_first("tokenizer trained", load_or_train)


def with_pad(tokenizer):
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer {tokenizer.name_or_path}: neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


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
