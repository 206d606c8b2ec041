"""Weak-to-strong generalisation (Burns et al. 2023; the seeds' note 003, second half):
can a strong pretrained model, fine-tuned on a weaker model's labels, do better than its
supervisor, and how much of the gap to its ceiling does it recover?

    python -m rlhf_jax.main --config experiments/weak_to_strong.py --workdir DIR

Every model size is pretrained (a stage each, `pretrain<i>`, smallest first, shared by
every seed as the paper's pretrained models are): on the digit strings' properties that
the tasks are composed from, never their answers (`tasks.classification`, task
"digits_related") for the classification tasks, on the summarisation task's SFT data for
the preference task. A classifier is a scalar head, starting at zero, on a pretrained
model, fine-tuned whole (`loops.classifier`), with its size's own learning rate and steps
(`fits`; the paper tunes them per size). The task's data (seed 1000 + seed) split into A,
B, B2, B3 of n_split examples and a test split:

    weak<i>        size i on A's gold labels; its probabilities on B are the weak labels
    ceiling<j>     size j on B's gold labels (the strong ceiling)
    naive<i>-<j>   size j on B with weak<i>'s soft labels (cross-entropy), for every i < j
    aux<i>-<j>     the same with the auxiliary confidence loss (alpha aux_alpha, warmed up)
    hard<i>-<j>    the same with weak<i>'s hardened labels (argmax)
    boot<i>-<j>    bootstrapping from supervisor i through every intermediate size: size
                   i+1 as naive<i>-<i+1>, then each size k > i+1 on split B<k-i> labelled
                   by size k-1's bootstrapped model (a model labels only data it did not
                   train on), for every i with at least one size between it and j
    scratch        the largest size from random weights on B's gold labels (does
                   pretraining matter?)
    zero_shot      each pretrained LM's own answer (digit tasks: the value it states for
                   the task's related fact after the question, composed by the task's
                   rule: `classification.zero_shot_label`)

    PGR = (student - weak) / (ceiling - weak), undefined (None) when the ceiling beats
    the weak supervisor by less than pgr_margin

No student sees B's gold labels: they are read only by ceiling<j>, scratch and the test
of the weak labels' accuracy. The run writes DIR/summary.json; finished runs are kept in
DIR/runs/ (a cut-off run resumes with the runs still missing).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import config as config_lib
from rlhf_jax import pipeline
from rlhf_jax.data import builders
from rlhf_jax.experiment import ExperimentConfig
from rlhf_jax.loops import classifier
from rlhf_jax.loops.classifier import FitConfig
from rlhf_jax.loops.common import scalar_from_lm
from rlhf_jax.models.hf import load_hf, load_tokenizer
from rlhf_jax.models.transformer import count_params, init_model
from rlhf_jax.tasks import classification
from rlhf_jax.workdir import checkpoint_dir, write_json

PREFERENCE = "preference"
TASKS = (*classification.DIFFICULTY, PREFERENCE)
RUNS = ("naive", "aux", "hard", "bootstrap", "scratch")
SPLITS = ("A", "B", "B2", "B3")


@dataclasses.dataclass(frozen=True)
class WeakToStrongConfig:
    """sizes: the pretraining stage of each model size, smallest first (train.kind sft;
    data.task digits_related for a classification task, summarization for "preference");
    fit: every fine-tune's optimisation; fits: each size's own (its learning rate and steps,
    chosen on validation), smallest first, for the fine-tunes of a model of that size
    (empty: `fit` for all); length: the token length of a classifier's sequence."""

    name: str
    task: str
    sizes: tuple[ExperimentConfig, ...]
    fit: FitConfig = FitConfig()
    seed: int = 0
    n_split: int = 2000
    n_test: int = 1000
    length: int = 16
    aux_alpha: float = 0.75
    pgr_margin: float = 0.02
    runs: tuple[str, ...] = RUNS
    eval_split: str = "test"  # "validation" (other strings, n_test of them) for choosing settings
    fits: tuple[FitConfig, ...] = ()

    def __post_init__(self):
        config_lib.check_numbers(self, {"seed": ">= 0", "n_split": ">= 1", "n_test": ">= 1", "length": ">= 1",
                                        "pgr_margin": "> 0"})  # fmt: skip
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r}: expected one of {TASKS}")
        if len(self.sizes) < 2:
            raise ValueError(f"sizes: {len(self.sizes)} given; weak-to-strong needs at least 2")
        want = ("summarization",) if self.task == PREFERENCE else ("digits_related",)
        for i, stage in enumerate(self.sizes):
            if stage.train.kind != "sft" or stage.data.task not in want:
                wanted = " or ".join(map(repr, want))
                raise ValueError(f"sizes[{i}]: train.kind={stage.train.kind!r}, data.task={stage.data.task!r}; "
                                 f"the pretraining of task {self.task!r} is 'sft' on {wanted}")  # fmt: skip
        unknown = [r for r in self.runs if r not in RUNS]
        if unknown:
            raise ValueError(f"runs: {unknown} unknown; expected some of {RUNS}")
        if "bootstrap" in self.runs and len(self.sizes) < 3:
            raise ValueError("runs: bootstrap needs at least 3 sizes (one intermediate)")
        if "bootstrap" in self.runs and len(self.sizes) > len(SPLITS):
            raise ValueError(f"runs: bootstrap labels one split per step: at most {len(SPLITS)} sizes")
        if self.fits and len(self.fits) != len(self.sizes):
            raise ValueError(f"fits: {len(self.fits)} given for {len(self.sizes)} sizes; give one a size or none")
        for name, fit in (("fit", self.fit), *((f"fits[{i}]", f) for i, f in enumerate(self.fits))):
            if fit.batch_size > self.n_split:
                raise ValueError(f"{name}.batch_size={fit.batch_size}: above n_split={self.n_split}")
        if self.eval_split not in ("test", "validation"):
            raise ValueError(f"eval_split={self.eval_split!r}: expected 'test' or 'validation'")
        if not 0 < self.aux_alpha <= 1:
            raise ValueError(f"aux_alpha={self.aux_alpha}: must be in (0, 1]")

    def fit_of(self, size: int) -> FitConfig:
        """The fine-tuning of a model of size `size` (a supervisor, student or ceiling)."""
        return self.fits[size] if self.fits else self.fit

    def wired_stages(self, workdir: str, data_dir: str = "") -> dict[str, ExperimentConfig]:
        """The pretraining stages as they run (`stage_configs`; preflight checks these)."""
        return stage_configs(self, data_dir or os.path.join(workdir, "tfds"))

    def stage_dirs(self, workdir: str) -> dict[str, str]:
        """Where a run of its own keeps its pretrained models (a study shares them)."""
        return {f"pretrain{i}": os.path.join(workdir, f"pretrain{i}") for i in range(len(self.sizes))}


def stage_configs(cfg: WeakToStrongConfig, data_dir: str) -> dict[str, ExperimentConfig]:
    """pretrain<i> with the data dir set; their seeds are their own (not the run's): every
    seed fine-tunes the same pretrained models."""
    out = {}
    for i, stage in enumerate(cfg.sizes):
        data = dataclasses.replace(stage.data, data_dir=stage.data.data_dir or data_dir)
        out[f"pretrain{i}"] = dataclasses.replace(stage, name=stage.name or f"pretrain{i}", data=data)
    return out


# ----------------------------------------------------------------------------- data


@dataclasses.dataclass
class Split:
    """One split's classifier inputs, gold labels and prompts (the strings)."""

    inputs: classifier.Inputs
    labels: np.ndarray
    prompts: list[str]


def task_splits(cfg: WeakToStrongConfig, tokenizer, data_dir: str) -> dict[str, Split]:
    """A, B, B2, B3 and test (read from eval_split), from the task's TFDS data (seed 1000 +
    cfg.seed). A
    preference pair is shown in a random order: label 1 when the first is the chosen."""

    seed = 1000 + cfg.seed
    config = builders.task_config(
        PREFERENCE if cfg.task == PREFERENCE else cfg.task, seed, len(SPLITS) * cfg.n_split, cfg.n_test
    )
    builder_cls = builders.SyntheticSummarization if cfg.task == PREFERENCE else builders.Digits
    builder = builders.prepare(builder_cls, data_dir, config=config)
    rows = {"train": builders.records(builder, "train"), "test": builders.records(builder, cfg.eval_split)}
    rng = np.random.default_rng(seed)

    def make(part: list[dict]) -> Split:
        prompts = [r["prompt"] for r in part]
        if cfg.task == PREFERENCE:
            first = rng.random(len(part)) < 0.5
            completions = [(r["chosen"], r["rejected"]) if f else (r["rejected"], r["chosen"])
                           for r, f in zip(part, first, strict=True)]  # fmt: skip
            labels = first.astype(np.int32)
        else:
            completions = [(r["completion"],) for r in part]
            labels = np.asarray([r["label"] for r in part], np.int32)
        inputs = classifier.encode(tokenizer, prompts, completions, cfg.length, eos=cfg.task == PREFERENCE)
        return Split(inputs, labels, prompts)

    n = cfg.n_split
    out = {name: make(rows["train"][k * n : (k + 1) * n]) for k, name in enumerate(SPLITS)}
    out["test"] = make(rows["test"])
    return out


def one_hot(labels_N: np.ndarray) -> np.ndarray:
    return np.eye(2, dtype=np.float32)[np.asarray(labels_N)]


def harden(probs_Nx2: np.ndarray) -> np.ndarray:
    return one_hot((probs_Nx2[:, 1] > probs_Nx2[:, 0]).astype(np.int32))


def pgr(weak: float, student: float, ceiling: float, margin: float) -> float | None:
    """(student - weak) / (ceiling - weak); None when ceiling - weak < margin."""
    gap = ceiling - weak
    return None if gap < margin else (student - weak) / gap


# ----------------------------------------------------------------------------- the run


class Runs:
    """The fine-tunes of one run, each done once: its figures (and the predictions other
    runs need) kept in DIR/runs/<name>.json."""

    def __init__(self, cfg: WeakToStrongConfig, workdir: str, lms: list, splits: dict[str, Split]):
        self.cfg, self.dir, self.lms, self.splits = cfg, os.path.join(workdir, "runs"), lms, splits
        os.makedirs(self.dir, exist_ok=True)

    def run(self, name: str, size: int, split: str, targets_Nx2: np.ndarray, predict_on: tuple[str, ...] = (),
            aux: bool = False, scratch: bool = False) -> dict:  # fmt: skip
        """Fine-tune size `size` on `split` with `targets`; {"test_accuracy", "loss",
        "seconds", "probs": {split: [N, 2] as lists}}."""
        path = os.path.join(self.dir, f"{name}.json")
        if os.path.exists(path):
            with open(path) as f:
                done = json.load(f)
            if set(predict_on) <= set(done["probs"]):  # else made before a later run needed its predictions: again
                return done

        t = time.time()
        lm_model, lm_params = self.lms[size]
        seed = self.cfg.seed * 1000 + sum(map(ord, name))  # an order of its own for every run
        if scratch:
            model, params = init_model(lm_model.cfg, head="scalar", seed=seed)
        else:
            model, params = scalar_from_lm(lm_model, lm_params, None, seed)
        fit = dataclasses.replace(self.cfg.fit_of(size), aux_alpha=self.cfg.aux_alpha if aux else 0.0)
        params, loss = classifier.fit(model, params, self.splits[split].inputs, targets_Nx2, fit, seed)
        test = classifier.predict(model, params, self.splits["test"].inputs)
        out = {
            "test_accuracy": classifier.accuracy(test, self.splits["test"].labels),
            "loss": loss,
            "seconds": round(time.time() - t, 1),
            "probs": {s: classifier.predict(model, params, self.splits[s].inputs).tolist() for s in predict_on},
        }
        write_json(path, out)
        print(f"   {name:<14} size {size} on {split}: test accuracy {out['test_accuracy']:.3f} ({out['seconds']} s)",
              flush=True)  # fmt: skip
        return out


def zero_shot(cfg: WeakToStrongConfig, lm, tokenizer, split: Split) -> float | None:
    """A pretrained LM's own accuracy on a digit task: the token it finds most likely after
    the question (the value of the task's related fact, " ; sum" -> " 41"), composed by
    the task's rule (`classification.zero_shot_label`; a token that is no number counts as
    wrong). None for the preference task, whose pretraining states no answer to read."""
    if cfg.task == PREFERENCE:
        return None

    model, params = lm
    fn = jax.jit(lambda p, t, m: jnp.argmax(model.logits(p, t, m)[:, -1, :], axis=-1))
    tokens, mask = split.inputs.tokens_NxKxT[:, 0], split.inputs.mask_NxKxT[:, 0]
    ids = np.concatenate([np.asarray(fn(params, tokens[s : s + 256], mask[s : s + 256]))
                          for s in range(0, len(tokens), 256)])  # fmt: skip
    stated = [tokenizer.decode([int(i)]) for i in ids]
    said = [classification.zero_shot_label(cfg.task, v, p) for v, p in zip(stated, split.prompts, strict=True)]
    return float(np.mean([s == y for s, y in zip(said, split.labels.tolist(), strict=True)]))


def run(cfg: WeakToStrongConfig, workdir: str, dirs: dict[str, str] | None = None, data_dir: str = "") -> dict:
    """The pretraining stages not done yet (in `dirs`, default DIR/pretrain<i>), every
    fine-tune not done yet, then DIR/summary.json (see the module docstring)."""

    path = os.path.join(workdir, "summary.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    t0 = time.time()
    data_dir = data_dir or os.path.join(workdir, "tfds")
    dirs = dirs or cfg.stage_dirs(workdir)
    configs = stage_configs(cfg, data_dir)
    for name, stage in configs.items():
        if pipeline.run_stage(name, stage, dirs[name]).get("stopped"):
            return {"stopped": True, "stage": name}
    lms = [load_hf(checkpoint_dir(dirs[f"pretrain{i}"])) for i in range(len(cfg.sizes))]
    tokenizers = [load_tokenizer(checkpoint_dir(dirs[f"pretrain{i}"])) for i in range(len(cfg.sizes))]
    if any(t.get_vocab() != tokenizers[0].get_vocab() for t in tokenizers):
        raise ValueError(f"{cfg.name}: the pretrained sizes have different tokenizers; they must share one")
    splits = task_splits(cfg, tokenizers[0], data_dir)
    runs = Runs(cfg, workdir, lms, splits)
    S, gold = len(cfg.sizes), {s: one_hot(splits[s].labels) for s in SPLITS}
    acc: dict[str, dict[str, float] | float] = {"weak": {}, "ceiling": {}}
    weak_probs = {}
    for i in range(S - 1):
        out = runs.run(f"weak{i}", i, "A", gold["A"], predict_on=("B",))
        acc["weak"][str(i)] = out["test_accuracy"]
        weak_probs[i] = np.asarray(out["probs"]["B"], np.float32)
    for j in range(1, S):
        acc["ceiling"][str(j)] = runs.run(f"ceiling{j}", j, "B", gold["B"])["test_accuracy"]
    labels = {
        "weak_label_accuracy": {str(i): classifier.accuracy(p, splits["B"].labels) for i, p in weak_probs.items()}
    }
    for kind in ("naive", "aux", "hard"):
        if kind not in cfg.runs:
            continue
        acc[kind] = {}
        for i in range(S - 1):
            targets = harden(weak_probs[i]) if kind == "hard" else weak_probs[i]
            for j in range(i + 1, S):
                first_step = kind == "naive" and j == i + 1 and j < S - 1  # a bootstrap chain's first step
                more = ("B2",) if first_step and "bootstrap" in cfg.runs else ()
                out = runs.run(f"{kind}{i}-{j}", j, "B", targets, predict_on=more, aux=kind == "aux")
                acc[kind][f"{i}-{j}"] = out["test_accuracy"]
    if "bootstrap" in cfg.runs:
        acc["bootstrap"] = {}
        for i in range(S - 2):
            # the chain's first step is the naive run (made above when naive runs)
            previous = runs.run(f"naive{i}-{i + 1}", i + 1, "B", weak_probs[i], predict_on=("B2",))
            acc["bootstrap"][f"{i}-{i + 1}"] = previous["test_accuracy"]
            for k in range(i + 2, S):
                here, after = SPLITS[k - i], (SPLITS[k - i + 1],) if k + 1 < S else ()
                boot = runs.run(f"boot{i}-{k}", k, here, np.asarray(previous["probs"][here], np.float32), after)
                acc["bootstrap"][f"{i}-{k}"], previous = boot["test_accuracy"], boot
    if "scratch" in cfg.runs:
        acc["scratch"] = runs.run("scratch", S - 1, "B", gold["B"], scratch=True)["test_accuracy"]
    pgrs = {}
    for kind in ("naive", "aux", "hard", "bootstrap"):
        if kind in acc:
            pgrs[kind] = {}
            for pair, student in acc[kind].items():
                i, j = pair.split("-")
                pgrs[kind][pair] = pgr(acc["weak"][i], student, acc["ceiling"][j], cfg.pgr_margin)
    summary = {
        "name": cfg.name,
        "task": cfg.task,
        "seed": cfg.seed,
        "params": [count_params(p) for _, p in lms],
        "zero_shot": {str(i): zero_shot(cfg, lm, tokenizers[0], splits["test"]) for i, lm in enumerate(lms)},
        "accuracy": acc,
        "pgr": pgrs,
        **labels,
        "seconds": {"total": round(time.time() - t0, 1)},
    }
    write_json(path, summary)
    print(table(summary))
    return summary


def study_figures(summary: dict) -> tuple[dict, list[dict]]:
    """A finished run as a study cell reports it: (metrics tree, one row per student
    size). The tree: accuracies, PGRs (undefined ones left out), zero-shot accuracies; a
    row: "n" (the student's parameters), "ceiling", and per run kind and weak size i
    "<kind>.weak<i>" (accuracy) and "pgr.<kind>.weak<i>"."""
    acc = summary["accuracy"]
    tree = {
        "accuracy": acc,
        "pgr": {k: {p: v for p, v in by.items() if v is not None} for k, by in summary["pgr"].items()},
        "zero_shot": {k: v for k, v in summary["zero_shot"].items() if v is not None},
        "weak_label_accuracy": summary["weak_label_accuracy"],
    }
    rows = []
    for j, n in enumerate(summary["params"]):
        row = {"n": n}
        if str(j) in acc["ceiling"]:
            row["ceiling"] = acc["ceiling"][str(j)]
        if str(j) in acc["weak"]:
            row["weak"] = acc["weak"][str(j)]
        for kind in ("naive", "aux", "hard", "bootstrap"):
            for pair, value in acc.get(kind, {}).items():
                i, student = pair.split("-")
                if int(student) == j:
                    row[f"{kind}.weak{i}"] = value
                    if summary["pgr"][kind][pair] is not None:
                        row[f"pgr.{kind}.weak{i}"] = summary["pgr"][kind][pair]
        rows.append(row)
    return tree, rows


def table(summary: dict) -> str:
    """Test accuracy per (weak, strong) pair and run kind, with PGR."""
    acc, pgrs = summary["accuracy"], summary["pgr"]
    lines = [f"{summary['name']} ({summary['task']}, seed {summary['seed']}); parameters {summary['params']}"]
    lines.append("weak: " + ", ".join(f"{i}: {v:.3f}" for i, v in acc["weak"].items())
                 + "; ceiling: " + ", ".join(f"{j}: {v:.3f}" for j, v in acc["ceiling"].items())
                 + (f"; scratch: {acc['scratch']:.3f}" if "scratch" in acc else ""))  # fmt: skip
    for kind in ("naive", "aux", "hard", "bootstrap"):
        for pair, value in acc.get(kind, {}).items():
            p = pgrs[kind][pair]
            lines.append(f"{kind:<10} {pair}: accuracy {value:.3f}, PGR {'undefined' if p is None else f'{p:.2f}'}")
    return "\n".join(lines)
