"""Every check of a run's config that needs no data, run before any work: sections
against each other (sequence lengths against the model's positions, batch sizes against
the data, the task against the loop), and the paths it names (they exist and hold the
right kind of checkpoint: a reward model has a score head, a policy an LM head).

Each error names the `--set` key to change. A section's own ranges are checked when it is
built (`experiment.py`); what is checked here spans sections or reads the disk. For a
pipeline, each stage is checked under its prefix (`policy.rl.top_p`), and the paths that
an earlier stage of the same pipeline will write are not required to exist yet.
"""

from __future__ import annotations

import dataclasses
import os

from rlhf_jax.data.tasks import TASKS
from rlhf_jax.experiment import KINDS, ExperimentConfig

GOLD = "gold"
SCALAR = ("reward", "orm")  # kinds that train a score head (from an LM or a scalar checkpoint)
MIN_TASK_VOCAB = 258  # data.tokenizer.train_tokenizer: the byte alphabet plus <pad> and <eos>


def check(cfg, workdir: str, dry_run: bool = False) -> None:
    """Raise ValueError / FileNotFoundError naming the key, or return. A dry run (`--dry-run`,
    which reads no data and no weights) takes the data directory and checkpoints it names
    as they will be where the run goes (a pod's bucket): a path missing here is not an error,
    one that exists is checked."""
    from rlhf_jax import workdir as workdir_lib  # fail fast: models and JAX load in seconds

    workdir_lib.check(workdir)
    if isinstance(cfg, ExperimentConfig):
        check_experiment(cfg, dry_run=dry_run)
        return
    if hasattr(cfg, "wired_stages"):  # a run of its own stages (process supervision): each as it will run
        for name, stage in cfg.wired_stages(workdir).items():
            check_experiment(stage, prefix=f"{name}.", pipeline=workdir, dry_run=dry_run)
        return
    if hasattr(cfg, "rounds"):  # an iterated run: its pipeline's stages, as its first round runs them
        _check_pipeline(cfg.pipeline, workdir, dry_run=dry_run)
        return
    if hasattr(cfg, "cells"):  # a study: each cell's pipeline, whose shared stages it will write
        for cell in cfg.cells + cfg.selection_cells:
            seeded = cell.seeded
            if hasattr(seeded, "wired_stages"):
                for name, stage in seeded.wired_stages(os.path.join(workdir, "cells", cell.name)).items():
                    check_experiment(stage, prefix=f"{cell.name}.{name}.", pipeline=workdir, dry_run=dry_run)
                continue
            _check_pipeline(getattr(seeded, "pipeline", seeded), workdir, f"{cell.name}.", dry_run)
        return
    _check_pipeline(cfg, workdir, dry_run=dry_run)


def _check_pipeline(cfg, workdir: str, prefix: str = "", dry_run: bool = False) -> None:
    stages = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    stages = {name: stage for name, stage in stages.items() if name in cfg.trained_stages}
    sft = stages.get("sft")
    for name, stage in stages.items():
        if cfg.reward_source == "task" and stage.train.kind == "preference":  # on the pairs the judge will label
            pairs = os.path.join(workdir, "pairs")
            stage = dataclasses.replace(stage, data=dataclasses.replace(stage.data, comparisons=pairs))
        # the later stages start from the SFT stage's export unless they name a model
        inherited = sft.model if sft is not None and name != "sft" and not stage.model.init_from else None
        check_experiment(stage, prefix=f"{prefix}{name}.", model=inherited, pipeline=workdir, dry_run=dry_run)


def check_experiment(
    cfg: ExperimentConfig, prefix: str = "", model=None, pipeline: str = "", dry_run: bool = False
) -> None:
    """model: the section of the model this stage will start from (a pipeline's SFT
    stage), when it is not its own; pipeline: the workdir of the pipeline this is a stage
    of (its stages write checkpoints that need not exist yet; its reward stage scores);
    dry_run: paths missing here are taken as they will be where the run goes."""
    k = lambda key: prefix + key  # noqa: E731
    _check_paths(cfg, k, pipeline, dry_run)
    positions, source = _positions(model or cfg.model, k)
    needed = cfg.data.max_prompt_len + cfg.data.max_completion_len
    if positions is not None and needed > positions:
        raise ValueError(
            f"{k('data.max_prompt_len')}={cfg.data.max_prompt_len} + {k('data.max_completion_len')}="
            f"{cfg.data.max_completion_len} = {needed} positions; the model has {positions} ({source})"
        )
    kind, task = cfg.train.kind, cfg.data.task
    spec = cfg.data.task_spec
    collected = kind == "preference" and cfg.data.comparisons  # the comparisons a run collected or judged
    if KINDS[kind] not in spec.offers and not collected:
        offering = [t for t, s in TASKS.items() if KINDS[kind] in s.offers]
        raise ValueError(
            f"{k('train.kind')}={kind!r} reads {KINDS[kind]} data; {k('data.task')}={task!r} offers "
            f"{list(spec.offers)} (tasks with {KINDS[kind]} data: {offering})"
        )
    if kind == "rl" and cfg.rl.reward_model == GOLD and spec.judge is None and not pipeline:
        raise ValueError(f"{k('rl.reward_model')}=gold: task {task} has no gold judge; name a reward model")
    if cfg.data.generated:
        rows = cfg.rl.n_prompts if kind == "rl" else cfg.train.batch_size
        key = k("rl.rollout_batch") if kind == "rl" else k("train.batch_size")
        if rows > cfg.data.n_train:
            raise ValueError(f"{key}: a batch of {rows} prompts needs at least as many rows; {k('data.n_train')}="
                             f"{cfg.data.n_train}")  # fmt: skip
    _check_vocab(cfg, k)
    _check_mesh(cfg.mesh, k("mesh"))


def _check_vocab(cfg: ExperimentConfig, k) -> None:
    """A model trained from scratch with its own vocabulary size must hold every token id
    of the tokenizer (an id past the embedding table reads garbage and ends in NaN)."""
    vocab = cfg.model.vocab_size
    if not cfg.model.from_scratch or not vocab:
        return
    if cfg.data.tokenizer:
        from rlhf_jax.models.hf import load_tokenizer  # fail fast: models and JAX load in seconds

        size, what = len(load_tokenizer(cfg.data.tokenizer)), f"{k('data.tokenizer')} has {{}} tokens"
    else:
        size, what = MIN_TASK_VOCAB, "the task tokenizer has at least {} (256 bytes, pad and EOS)"
    if vocab < size:
        raise ValueError(f"{k('model.vocab_size')}={vocab}: {what.format(size)}; 0 = the tokenizer's size")


def _positions(model, k):
    """(max positions, where the figure comes from) of the model a stage builds."""
    if model.init_from:
        from rlhf_jax.models.hf import read_config  # fail fast: models and JAX load in seconds
        from rlhf_jax.workdir import checkpoint_dir  # fail fast: models and JAX load in seconds

        try:
            return read_config(checkpoint_dir(model.init_from)).max_positions, f"{k('model.init_from')}'s config"
        except (FileNotFoundError, ValueError):
            return None, ""  # a path the pipeline writes later
    if model.preset:
        from rlhf_jax.models.presets import preset  # fail fast: models and JAX load in seconds

        return preset(model.preset).max_positions, f"preset {model.preset}"
    return model.max_positions, k("model.max_positions")


def _check_paths(cfg: ExperimentConfig, k, pipeline: str, dry_run: bool = False) -> None:
    if not cfg.data.generated and not cfg.data.source_dir:
        raise ValueError(
            f"{k('data.source_dir')}: task {cfg.data.task} is read from its original files; name their directory"
        )

    def later(path: str) -> bool:
        """Written by an earlier stage of this pipeline: not there yet, or a stage still in
        progress (no summary.json: another job of the study may be running it)."""
        if dry_run and not os.path.exists(path):
            return True
        inside = pipeline and os.path.abspath(path).startswith(os.path.abspath(pipeline) + os.sep)
        return bool(inside) and not os.path.exists(os.path.join(path, "summary.json"))

    if cfg.data.tokenizer and not os.path.isdir(cfg.data.tokenizer):
        raise FileNotFoundError(f"{k('data.tokenizer')}={cfg.data.tokenizer}: no such directory")
    if cfg.data.source_dir and not os.path.isdir(cfg.data.source_dir) and not later(cfg.data.source_dir):
        raise FileNotFoundError(f"{k('data.source_dir')}={cfg.data.source_dir}: no such directory")
    for key, name in (("comparisons", "comparisons.jsonl"), ("solutions", "solutions.jsonl")):
        directory = getattr(cfg.data, key)
        if directory and not os.path.exists(os.path.join(directory, name)) and not later(os.path.join(directory, name)):
            raise FileNotFoundError(f"{k('data.' + key)}={directory}: no {name} there")
    if cfg.data.data_dir and os.path.exists(cfg.data.data_dir) and not os.path.isdir(cfg.data.data_dir):
        raise ValueError(f"{k('data.data_dir')}={cfg.data.data_dir}: exists and is not a directory")

    checkpoints = [(cfg.model.init_from, "model.init_from", "any" if cfg.train.kind in SCALAR else "lm")]
    if cfg.train.kind == "rl" and cfg.rl.reward_model != GOLD:  # a process reward model is an LM
        checkpoints.append((cfg.rl.reward_model, "rl.reward_model", "lm" if cfg.rl.prm_reading else "scalar"))
    if cfg.train.kind == "rl":
        checkpoints.append((cfg.rl.reference, "rl.reference", "lm"))
    if cfg.train.kind == "preference":
        checkpoints.append((cfg.preference.reference, "preference.reference", "lm"))
    for path, key, want in checkpoints:
        if path and not later(path):
            _checkpoint(path, k(key), want)


def _checkpoint(path: str, key: str, want: str) -> None:
    """path is an HF checkpoint directory, or a finished run's workdir, of the wanted head.
    want "scalar": must have a score head; "lm": must not be only a reward model (an LM
    checkpoint serves a reward model too: its backbone starts the score head); "any"."""
    if not os.path.exists(path):  # before the imports below, which take seconds
        raise FileNotFoundError(f"{key}={path}: no such file or directory")
    from rlhf_jax.models.hf import check_tensors, checkpoint_head  # fail fast: models and JAX load in seconds
    from rlhf_jax.workdir import checkpoint_dir  # fail fast: models and JAX load in seconds

    try:
        directory = checkpoint_dir(path)
        head = checkpoint_head(directory)
        check_tensors(directory, head)
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"{key}={path}: not a usable checkpoint ({e})") from None
    if want == "scalar" and head != "scalar":
        raise ValueError(
            f"{key}={path}: a policy (LM head), not a reward model: it has no score head. "
            "Name a reward run's workdir or an HF directory of a *ForSequenceClassification model"
        )
    if want == "lm" and head == "scalar":
        raise ValueError(f"{key}={path}: a reward model (score head), not a policy")


def _check_mesh(shape, key: str) -> None:
    """The mesh fits this run's devices (mesh.make_mesh's own checks, named by the key)."""
    from rlhf_jax import mesh as mesh_lib  # fail fast: models and JAX load in seconds

    try:
        mesh_lib.make_mesh(shape)
    except ValueError as e:
        raise ValueError(f"{key}: {e}") from None
