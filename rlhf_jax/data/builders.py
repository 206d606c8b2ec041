"""tensorflow-datasets builders, prepared once into a data dir as array_record files and
read back by random access without TensorFlow (`builder.as_data_source()`).

Real data are read from a directory the user names (TFDS's `manual_dir`); the built-in
tasks are generated from a seed. `prepare(Builder, data_dir, source_dir)` builds (or
reuses) a dataset; `records(builder, split)` reads a split as dicts of str.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import tensorflow_datasets as tfds

from rlhf_jax.data import formats
from rlhf_jax.errors import raise_if_interrupted
from rlhf_jax.tasks import arithmetic, classification, summarization
from rlhf_jax.workdir import Lock


class _NotCustomConfigs(logging.Filter):
    """TFDS warns about every config not declared in BUILDER_CONFIGS; the built-in tasks'
    configs are made per setting on purpose (`task_config`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Using custom data configuration")


logging.getLogger("absl").addFilter(_NotCustomConfigs())


class _Quiet:
    """One line while a dataset is prepared, instead of TFDS's download-size banner
    ("Unknown size" for data made offline) and its completion message."""

    def _log_download_bytes(self) -> None:
        config = f"/{self.builder_config.name}" if self.builder_config else ""
        print(f"preparing {self.name}{config} in {self.data_dir}", flush=True)

    def _log_download_done(self) -> None:
        pass


PAIR = {"prompt": tfds.features.Text(), "chosen": tfds.features.Text(), "rejected": tfds.features.Text()}
SFT = {"prompt": tfds.features.Text(), "completion": tfds.features.Text()}


class _LocalBuilder(_Quiet, tfds.core.GeneratorBasedBuilder):
    """Reads the files of one format from manual_dir, split by file name."""

    VERSION = tfds.core.Version("1.0.0")
    FEATURES: dict = {}
    SPLIT_FILES: dict[str, tuple[str, ...]] = {}
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Pass the directory holding the original files as source_dir."

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(dict(self.FEATURES)))

    def _split_generators(self, dl_manager):
        directory = str(dl_manager.manual_dir)
        splits = {}
        for split, names in self.SPLIT_FILES.items():
            files = formats.find_files(directory, names)
            if files:
                splits[split] = self._generate_examples(files, split, directory)
        if not splits:
            wanted = sorted({n for names in self.SPLIT_FILES.values() for n in names})
            raise FileNotFoundError(f"{directory}: none of {wanted} found for {self.name}")
        return splits

    def _generate_examples(self, files, split, directory):
        """Examples keyed by file (relative to the source directory) and record: TFDS orders
        a split by a hash of the keys, so the order does not depend on where the files are."""
        skips = formats.Skips()
        for path in files:
            relative = os.path.relpath(path, directory)
            for key, example in self.READER(path, skips, split):
                raise_if_interrupted()
                yield f"{relative}:{key}", example
        print(skips.report(f"{self.name}/{split}"))
        self.skips = getattr(self, "skips", {})
        self.skips[split] = skips


class HhRlhf(_LocalBuilder):
    """Anthropic HH-RLHF: train.jsonl(.gz) / test.jsonl(.gz), in any subdirectories."""

    FEATURES = PAIR
    SPLIT_FILES = {"train": ("train.jsonl", "train.jsonl.gz"), "test": ("test.jsonl", "test.jsonl.gz")}
    READER = staticmethod(formats.hh_rlhf)


class TldrSft(_LocalBuilder):
    """TL;DR SFT data: train / valid / test .jsonl."""

    FEATURES = SFT
    SPLIT_FILES = {s: (f"{s}.jsonl", f"{s}.jsonl.gz") for s in ("train", "valid", "test")}
    READER = staticmethod(formats.tldr_sft)


class TldrComparisons(_LocalBuilder):
    """TL;DR human comparisons: batch files whose records name their split (train,
    valid1, valid2); files named train / valid1 / valid2 .jsonl are read as those splits."""

    FEATURES = PAIR
    SPLIT_FILES = {s: (f"{s}.jsonl", f"{s}.json", f"{s}.jsonl.gz") for s in ("train", "valid1", "valid2")}
    READER = staticmethod(formats.tldr_comparisons)

    def _split_generators(self, dl_manager):
        directory = str(dl_manager.manual_dir)
        batches = formats.find_files(directory, prefix="batch")
        if not batches:
            return super()._split_generators(dl_manager)
        present = {record.get("split", "train") for path in batches for _, record in formats.read_jsonl(path)}
        return {split: self._generate_examples(batches, split, directory) for split in sorted(present)}


class CollectedComparisons(_LocalBuilder):
    """Comparisons of a policy's own samples collected by a run (an iterated run's rounds, a
    verifiable reward's judged pairs): comparisons.jsonl (prompt, chosen, rejected,
    document, tie) as its train split, held_out.jsonl (optional) as its test split."""

    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES = {
        "1.1.0": "tie: the labeller judged the pair equal (chosen / rejected in no order).",
        "1.2.0": "held_out.jsonl, when there, as the test split.",
    }
    FEATURES = {**PAIR, "document": tfds.features.Text(), "tie": np.int32}
    SPLIT_FILES = {"train": ("comparisons.jsonl",), "test": ("held_out.jsonl",)}
    READER = staticmethod(formats.collected_comparisons)


class LabelledSolutions(_LocalBuilder):
    """Solutions a run sampled and labelled (outcome and step labels):
    solutions.jsonl as its train split, held_out.jsonl (optional) its test split."""

    FEATURES = {**SFT, "outcome": np.int32, "step_labels": tfds.features.Sequence(np.int32)}
    SPLIT_FILES = {"train": ("solutions.jsonl",), "test": ("held_out.jsonl",)}
    READER = staticmethod(formats.labelled_solutions)


# ----------------------------------------------------------------------------- built-in tasks


@dataclasses.dataclass
class TaskConfig(tfds.core.BuilderConfig):
    kind: str = "default"  # summarisation: "sft" or "preference"
    seed: int = 0
    n_train: int = 2000
    n_test: int = 200


def task_config(kind: str = "default", seed: int = 0, n_train: int = 2000, n_test: int = 200) -> TaskConfig:
    """A built-in task's config; its name carries every setting, so each set of data is
    prepared once into its own directory."""
    name = f"{kind}-seed{seed}-train{n_train}-test{n_test}"
    return TaskConfig(name=name, kind=kind, seed=seed, n_train=n_train, n_test=n_test)


class _TaskBuilder(_Quiet, tfds.core.GeneratorBasedBuilder):
    """A built-in task: `examples(n, seed)` gives the rows; the test split uses seed + 10000
    and the validation split (n_test rows, for choosing settings) seed + 20000."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.1.0": "A validation split."}

    def features(self) -> dict:
        return {}

    def examples(self, n: int, seed: int) -> list[dict]:
        return []

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(self.features()))

    def _split_generators(self, dl_manager):
        c = self.builder_config
        return {
            "train": self._generate_examples(c.n_train, c.seed),
            "test": self._generate_examples(c.n_test, c.seed + 10_000),
            "validation": self._generate_examples(c.n_test, c.seed + 20_000),
        }

    def _generate_examples(self, n, seed):
        for i, example in enumerate(self.examples(n, seed)):
            raise_if_interrupted()
            yield i, example


class SyntheticSummarization(_TaskBuilder):
    """The built-in summarisation task: `sft` (prompt, completion), `preference` and
    `probe` (prompt, chosen, rejected) configs, generated from the config's seed."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.1.0": "Documents lean more on their topic words; comparisons include early-policy summaries.",
        "1.2.0": "A validation split.",
        "2.0.0": "Documents open with a lede that names their topic words, which recur; other content words appear "
        "once. Comparisons are between two summaries of one length without repeats, so that they turn on content.",
    }
    BUILDER_CONFIGS = [
        TaskConfig(name="sft", kind="sft"),
        TaskConfig(name="preference", kind="preference"),
        TaskConfig(name="probe", kind="probe"),
    ]

    def features(self):
        return {**(SFT if self.builder_config.kind == "sft" else PAIR), "document": tfds.features.Text()}

    def examples(self, n, seed):
        if self.builder_config.kind == "sft":
            return summarization.sft_examples(n, seed)
        if self.builder_config.kind == "probe":
            return summarization.content_probe_examples(n, seed)
        return [
            {k: v for k, v in ex.items() if k != "gold_margin"} for ex in summarization.preference_examples(n, seed)
        ]


class Arithmetic(_TaskBuilder):
    """The built-in arithmetic task with per-step and outcome labels: `default`, sampled
        solutions with slips; the process-supervision study's generator data (`tasks.arithmetic`,
        + and - only): `facts` (one-operation problems, right), `checked` (the facts beside as
    many checked equations: the verifiers' base), `wrong` (step-format solutions
        whose answer is wrong), `right` (the same, right)."""

    VERSION = tfds.core.Version("3.0.0")
    RELEASE_NOTES = {
        "1.1.0": "A validation split.",
        "2.0.0": "PRM800K's labels: neutral is a right but restated step; steps after the first negative are not "
        "labelled. The study's generator data: facts, wrong, right.",
        "3.0.0": "The final answer line is a labelled step (negative when the answer is wrong).",
    }
    BUILDER_CONFIGS = [
        TaskConfig(name=kind, kind=kind) for kind in ("default", "facts", "checked", "wrong", "right", "rlvr", "sums")
    ]

    def features(self):
        return {
            **SFT,
            "step_labels": tfds.features.Sequence(np.int32),
            "outcome": np.int32,
            "answer": np.int32,
        }

    def examples(self, n, seed):
        kind = self.builder_config.kind
        if kind == "facts":
            return arithmetic.pretrain_examples(n, seed)
        if kind == "checked":
            return arithmetic.checked_examples(n, seed)
        if kind in ("wrong", "right"):
            return arithmetic.format_examples(n, seed, correct=kind == "right")
        if kind in ("rlvr", "sums"):
            return arithmetic.examples(n, seed, arithmetic.RLVR if kind == "rlvr" else arithmetic.SUMS)
        return arithmetic.examples(n, seed)


class Digits(_TaskBuilder):
    """Digit strings (`tasks.classification`): `related`, the pretraining text (prompt, the
    string; completion, the properties the tasks are composed from, never a task's
    answer); one config per classification task (prompt and completion, the string with
    the task asked in its related fact's words; label, its gold answer)."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.1.0": "A validation split.",
        "2.0.0": "No pretraining text with the tasks' answers; a task asked in its related fact's words; band.",
    }
    BUILDER_CONFIGS = [TaskConfig(name=kind, kind=kind) for kind in ("related", *classification.DIFFICULTY)]

    def features(self):
        return SFT if self.builder_config.kind == "related" else {**SFT, "label": np.int32}

    def examples(self, n, seed):
        task = self.builder_config.kind
        if task == "related":
            return classification.pretrain_examples(n, seed)
        return [{**classification.question(task, ex["text"]), "label": ex["label"]}
                for ex in classification.examples(task, n, seed)]  # fmt: skip


def prepare(builder_cls, data_dir: str, source_dir: str | None = None, config: str | TaskConfig | None = None):
    """Build (once) and return the builder; later calls reuse the prepared files. The data
    dir is locked while a dataset is prepared: processes that share it (a study's jobs)
    each wait for the one preparing, then find its files (TFDS's own final rename fails
    when two prepare one dataset at once)."""
    tfds.display_progress_bar(False)  # its bars write escape codes into logs; one line says what runs
    with Lock(data_dir, wait=True):
        builder = builder_cls(data_dir=data_dir, config=config, file_format="array_record")
        download_config = tfds.download.DownloadConfig(manual_dir=source_dir) if source_dir else None
        builder.download_and_prepare(download_config=download_config)
    return builder


def records(builder, split: str) -> list[dict]:
    """A split as a list of dicts, text decoded to str, in the prepared order (TFDS's
    deterministic shuffle of the keys)."""
    source = builder.as_data_source()[split]
    out = []
    for start in range(0, len(source), 4096):  # one read per block: element reads cost a syscall each
        for record in source.__getitems__(range(start, min(start + 4096, len(source)))):
            out.append({k: v.decode("utf-8") if isinstance(v, bytes) else v for k, v in record.items()})
    return out
