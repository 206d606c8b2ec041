"""Stages a sibling run has trained already. A study's validation cell and the test cell of
the same seed train the same generator and verifiers (same configs, seeds and labels); only
the split their held-out figures and best-of-N read differs. A run given such a finished
sibling (its twin) starts each stage whose config equals the twin's, up to the run's name,
its directory and the held-out split, from the twin's last checkpoint (and copies the
labels those stages trained on), so the stage runs no training step: it evaluates on its
own split and exports. Its summary's `resumed_from` names the adopted step.

    same_training(theirs, ours, their_dir, our_dir)  the comparison of two resolved configs
    find(ours, workdir, candidates, aside)           the twin among a study's sibling runs
    trained(their_dir, stage, ours, our_dir)         the twin's finished stage, if the same
    adopt(ours, theirs)                              a stage directory started from the twin's
"""

from __future__ import annotations

import json
import os
import shutil


def _normal(value, src: str, dst: str):
    """value with every path under src (src itself included) moved under dst, and every
    run name and held-out split blanked."""
    if isinstance(value, dict):
        return {k: None if k in BLANKED else _normal(v, src, dst) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v, src, dst) for v in value]
    if isinstance(value, str) and (value == src or value.startswith(src.rstrip(os.sep) + os.sep)):
        return dst + value[len(src) :]
    return value


BLANKED = ("name", "eval_split")  # the keys in which a twin may differ


def same_training(theirs: dict, ours: dict, their_dir: str, our_dir: str) -> bool:
    """Whether two resolved configs (a stage's, or a whole run's) train the same weights:
    equal once the twin's directory (in every path) is ours, and run names and held-out
    splits are set aside."""
    return _normal(theirs, their_dir, our_dir) == _normal(ours, our_dir, our_dir)


def _finished_config(directory: str) -> dict | None:
    """The config (config.json) of the finished run (summary.json written) in directory."""
    config = os.path.join(directory, "config.json")
    if not (os.path.exists(config) and os.path.exists(os.path.join(directory, "summary.json"))):
        return None
    with open(config) as f:
        return json.load(f)


def trained(their_dir: str, stage: str, ours: dict, our_dir: str) -> str:
    """The twin's directory of `stage` when it is a finished run of the same training as
    `ours` (the stage's resolved config here); "" otherwise."""
    directory = os.path.join(their_dir, stage)
    theirs = _finished_config(directory)
    return directory if theirs is not None and same_training(theirs, ours, their_dir, our_dir) else ""


def find(ours: dict, workdir: str, candidates: tuple[str, ...], aside: tuple[str, ...] = ()) -> str:
    """The first of `candidates` (sibling runs' directories) that has finished (its
    summary.json) a run whose config (config.json) equals `ours` (this run's resolved
    config) up to names, held-out splits and the top-level keys `aside` (those no shared
    stage reads: the evaluation's, or stages compared one by one); "" when none has."""

    def kept(config: dict) -> dict:
        return {k: v for k, v in config.items() if k not in aside}

    for their_dir in candidates:
        if os.path.abspath(their_dir) == os.path.abspath(workdir):
            continue
        theirs = _finished_config(their_dir)
        if theirs is not None and same_training(kept(theirs), kept(ours), their_dir, workdir):
            return their_dir
    return ""


def adopt(ours: str, theirs: str) -> None:
    """Start the stage directory `ours` from the finished `theirs`: its checkpoints and its
    training log (metrics.jsonl; the loss curves the report reads). Nothing is done when
    `ours` has checkpoints of its own already. The checkpoints arrive under one rename, so
    a run cut off while copying copies again."""
    checkpoints = os.path.join(ours, "checkpoints")
    if os.path.exists(checkpoints):
        return
    os.makedirs(ours, exist_ok=True)
    log = os.path.join(theirs, "metrics.jsonl")
    if os.path.exists(log):
        shutil.copyfile(log, os.path.join(ours, "metrics.jsonl"))
    partial = checkpoints + ".adopting"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(os.path.join(theirs, "checkpoints"), partial)
    os.replace(partial, checkpoints)
    print(f"== {os.path.basename(ours)}: starts from the finished {theirs} (same training, other split)", flush=True)
