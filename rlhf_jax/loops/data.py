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
import numpy as np

from rlhf_jax import mesh as mesh_lib
from rlhf_jax.data import batching
from rlhf_jax.data.tasks import Task, collected_comparisons, labelled_solutions
from rlhf_jax.data.tokenizer import completion_texts, train_tokenizer
from rlhf_jax.experiment import ExperimentConfig
from rlhf_jax.models.hf import load_tokenizer
from rlhf_jax.workdir import checkpoint_dir


def process_0_first(name: str, make: Callable):
    """make() on process 0, then on the others once it has finished."""
    if jax.process_index() == 0:
        out = make()
    mesh_lib.barrier(name)
    if jax.process_index() != 0:
        out = make()
    return out


def task_rows(cfg: ExperimentConfig, workdir: str, kind: str) -> tuple[list[dict], list[dict]]:
    """Train and test rows of the task's `kind` of data (`data.tasks.DATA_KINDS`),
    prepared once through TFDS (by process 0 first); preference train rows from
    data.comparisons when it names a directory of collected comparisons, labelled ones
    from data.solutions."""
    if kind == "preference" and cfg.data.comparisons and kind not in cfg.data.task_spec.offers:
        # a task without comparisons of its own (a verifiable reward): the collected ones test too
        def collected():
            return collected_comparisons(cfg.data.comparisons), collected_comparisons(cfg.data.comparisons, "test")

        train, test = process_0_first("comparisons prepared", collected)
        if test is None:
            raise ValueError(f"data.comparisons={cfg.data.comparisons}: data.task={cfg.data.task} has no comparisons "
                             "of its own to test on, and the directory has no held_out.jsonl")  # fmt: skip
        return train, test
    source = cfg.data.task_spec.source(kind)
    data_dir = cfg.data.data_dir or os.path.join(workdir, "tfds")
    builder = process_0_first("task data prepared", lambda: source.prepare(cfg.data, data_dir))
    train, test = source.rows(builder, cfg.data)
    if kind == "preference" and cfg.data.comparisons:  # collected comparisons train; the task's rows test
        train = process_0_first("comparisons prepared", lambda: collected_comparisons(cfg.data.comparisons))
    if kind == "labelled" and cfg.data.solutions:  # labelled samples train (and test, if held out there)
        train, held_out = process_0_first("solutions prepared", lambda: labelled_solutions(cfg.data.solutions))
        test = held_out if held_out is not None else test
    return train, test


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
        own = os.path.join(workdir, "tokenizer")
        print(f"model.init_from={cfg.model.init_from}: no tokenizer.json there; the task's tokenizer is used "
              f"(trained into {own}; data.tokenizer=DIR names another)", flush=True)  # fmt: skip
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
    """A task's rows of one kind of data, tokenised train and test sets, how to lay out
    their batches, and the task's judge of decoded completions (`gold`)."""

    task: Task
    tokenizer: Any
    train_rows: list[dict]
    test_rows: list[dict]
    train: batching.Encoded
    test: batching.Encoded
    make: Callable  # (encoded, rows, P, C, pad) -> batch
    P: int
    C: int
    other: Callable[[str], TaskData]  # another kind of the same task's data, with the same tokenizer

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

    def texts(self, tokens, mask) -> list[str]:
        """The completion texts of sampled [N, C] tokens and mask (host or device)."""
        return completion_texts(self.tokenizer, mesh_lib.to_host(tokens), mesh_lib.to_host(mask))[0]

    def gold(self, rows, texts, split: str = "train") -> np.ndarray | None:
        """[N] gold reward of each completion text for encoded row rows[n], or None when
        the task has no gold judge."""
        if self.task.gold_reward is None:
            return None
        return self.task.gold([self.row(int(r), split) for r in rows], texts)


def task_data(cfg: ExperimentConfig, workdir: str, kind: str) -> TaskData:
    """The task's `kind` of data (`data.tasks.DATA_KINDS`), tokenised; "preference" rows
    are laid out as pairs, the others as (prompt, completion)."""
    train_rows, test_rows = task_rows(cfg, workdir, kind)
    tokenizer = tokenizer_for(cfg, train_rows, workdir)
    P, C = cfg.data.max_prompt_len, cfg.data.max_completion_len
    pairs = kind in ("preference", "probe")
    fields = ("chosen", "rejected") if pairs else ("completion",)
    make = batching.preference_batch if pairs else batching.sft_batch
    train_set = batching.encode(tokenizer, train_rows, P, C, completions=fields)
    test_set = batching.encode(tokenizer, test_rows, P, C, completions=fields)
    print(f"train data: {train_set.report()}")
    if not train_set.kept or not test_set.kept:
        raise ValueError(
            f"data: no usable examples (train {len(train_set.kept)}, test {len(test_set.kept)}); "
            f"data.max_prompt_len={P} may be too small"
        )
    other = lambda other_kind: task_data(cfg, workdir, other_kind)  # noqa: E731
    return TaskData(cfg.data.task_spec, tokenizer, train_rows, test_rows, train_set, test_set, make, P, C, other)
