"""A study cell's record (`<records>/<cell>.json`): its key, the figures it keeps (metrics,
training and generation curves) and where it was made (commit, machine). `study.py` runs
the cells; a cell is a `study.Cell`."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess

import jax
import numpy as np

from rlhf_jax import config as config_lib
from rlhf_jax.eval import plots


def digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def cell_key(cell) -> str:
    """Identifies what the cell computes (its pipeline's config and seed), not where: a
    record is current while its key is. Fields at their defaults do not count, so that a
    new option, off by default, leaves the records current (a default that changes what
    a run computes must then come with a study setting of its own)."""
    return digest(config_lib.non_default(cell.pipeline), cell.seed)


def read_record(records: str, cell) -> dict | None:
    """The cell's record if it is there and of the cell's current config."""
    path = os.path.join(records, f"{cell.name}.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        record = e
    if not isinstance(record, dict):
        why = record if isinstance(record, Exception) else f"a JSON {type(record).__name__}, not an object"
        raise ValueError(f"study record {path} is damaged ({why}); restore it from git, or move it aside to run "
                         "the cell again")  # fmt: skip
    return record if record.get("key") == cell_key(cell) else None


def flatten(tree: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


def split(figures: dict) -> dict:
    """A policy's figures as {"greedy": the top level, "sampled": its "sampled" part} (and
    "verifiable": pass@k and the lengths of right and wrong answers, where measured)."""
    parts = ("sampled", "verifiable")
    out = {"greedy": {k: v for k, v in figures.items() if k not in parts}, "sampled": figures.get("sampled", {})}
    if "verifiable" in figures:
        out["verifiable"] = figures["verifiable"]
    return out


def cell_metrics(summary: dict) -> dict[str, float]:
    """A pipeline summary's figures under names that do not depend on the method: "sft.*",
    "policy.*" (greedy.* and sampled.* each), "policy_vs_sft.{greedy,sampled}" (gold
    win-rate) and "reward_model.*" (its held-out accuracy, content probe)."""
    m = summary["method"]
    policies = summary["policies"]

    tree = {
        "sft": split(policies["sft"]),
        "policy": split(policies[m]),
        "policy_vs_sft": {
            "greedy": summary[f"gold_win_rate_{m}_vs_sft"],
            "sampled": summary[f"gold_win_rate_{m}_vs_sft_sampled"],
        },
        "reward_model": summary["reward_model"],
    }
    return flatten(tree)


def training_curve(policy_dir: str, keys: tuple[str, ...], per_step: int) -> list[dict]:
    """The policy stage's logged metrics (`keys` of them) with the completions sampled by
    each logged step (per_step per iteration; 0 for offline training)."""
    if not os.path.exists(os.path.join(policy_dir, "metrics.jsonl")):
        return []
    rows = plots.read_metrics(policy_dir)
    return [{"step": r["step"], "completions": r["step"] * per_step, **{k: r[k] for k in keys if k in r}} for r in rows]


def loss_ends(stage_dir: str) -> dict[str, float]:
    """A stage's training loss over the first and the last tenth of its logged steps
    (whether a reward model learnt: class-weighted, chance is ln 2 = 0.693 for an ORM)."""
    if not os.path.exists(os.path.join(stage_dir, "metrics.jsonl")):
        return {}
    losses = [r["loss"] for r in plots.read_metrics(stage_dir) if "loss" in r]
    if not losses:
        return {}
    tenth = max(1, len(losses) // 10)
    return {"train_loss_first": float(np.mean(losses[:tenth])), "train_loss_last": float(np.mean(losses[-tenth:]))}


def generation_curves(summary: dict) -> dict:
    """The evaluation's curves per generation step: {"sft": {...}, "policy": {...}}."""
    curves = summary.get("curves", {})
    return {who: curves[name] for who, name in (("sft", "sft"), ("policy", summary["method"])) if name in curves}


def machine() -> str:
    """The CPU model and core count, and the accelerator when there is one."""

    cpu = platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    device = jax.devices()[0]
    accelerator = "" if device.platform == "cpu" else f", {len(jax.devices())} x {device.device_kind}"
    return f"{cpu}, {os.cpu_count()} cores{accelerator}"


def commit() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        # the studies' records and reports are what a run writes, not what makes it: they do not count
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top,exclude)studies"],
                               cwd=here, capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip()[:12] + ("+changes" if dirty.stdout.strip() else "")
