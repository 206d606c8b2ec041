"""PNG plots of a run: reward and KL over training steps, reward against samples seen,
and the appendix A curves (normalised entropy and top-k mass per generation step)."""

from __future__ import annotations

import json
import os

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def training_curves(runs: dict[str, str], rollout_batch: dict[str, int], out_dir: str) -> list[str]:
    """runs: label -> RL workdir. Writes reward_kl.png (score, gold and KL per step) and
    reward_vs_samples.png (gold and score against completions sampled)."""
    fig, (ax_r, ax_kl) = plt.subplots(1, 2, figsize=(10, 3.6))
    fig2, ax_s = plt.subplots(figsize=(5, 3.6))
    for label, workdir in runs.items():
        rows = read_metrics(workdir)
        steps = [r["step"] for r in rows]
        for key, style in (("score", "-"), ("gold", "--")):
            if rows and key in rows[0]:
                ax_r.plot(steps, [r[key] for r in rows], style, label=f"{label} {key}")
                samples = [s * rollout_batch[label] for s in steps]
                ax_s.plot(samples, [r[key] for r in rows], style, label=f"{label} {key}")
        ax_kl.plot(steps, [r["kl"] for r in rows], label=label)
    ax_r.set(xlabel="iteration", ylabel="reward", title="reward (RM score, gold)")
    ax_kl.set(xlabel="iteration", ylabel="KL(pi || pi_ref)", title="KL to the reference")
    ax_s.set(xlabel="completions sampled", ylabel="reward", title="reward against samples seen")
    paths = []
    for f, ax, name in ((fig, ax_r, "reward_kl.png"), (fig2, ax_s, "reward_vs_samples.png")):
        ax.legend(fontsize=7)
        f.tight_layout()
        paths.append(os.path.join(out_dir, name))
        f.savefig(paths[-1], dpi=110)
        plt.close(f)
    return paths


def step_curves(curves: dict[str, dict[str, list[float]]], out_dir: str, name: str = "generation_steps") -> str:
    """curves: policy label -> {"normalised_entropy": [...], "top_k_mass": [...]}; the
    RLOO paper's figure 7 (left: entropy, right: top-k mass) per policy, in <name>.png."""
    fig, (ax_h, ax_m) = plt.subplots(1, 2, figsize=(10, 3.6))
    styles = ("-", "--", "-.", ":")  # one colour per policy, one line style per k
    for i, (label, c) in enumerate(curves.items()):
        colour = f"C{i % 10}"
        ax_h.plot(range(1, len(c["normalised_entropy"]) + 1), c["normalised_entropy"], label=label, color=colour)
        keys = sorted((k for k in c if k.startswith("top_")), key=lambda k: int(k.split("_")[1]))
        for j, key in enumerate(keys):
            ax_m.plot(range(1, len(c[key]) + 1), c[key], label=f"{label} {key.replace('_mass', '')}", color=colour,
                      linestyle=styles[j % len(styles)])  # fmt: skip
    ax_h.set(xlabel="generation step", ylabel="H / log|V|", title="normalised entropy")
    ax_m.set(xlabel="generation step", ylabel="probability mass", title="mass of the top-k tokens")
    for ax in (ax_h, ax_m):
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out_dir, f"{name}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def study_curves(
    curves: dict[str, list[list[dict]]], keys: tuple[str, ...], out_dir: str, name: str = "curve", title: str = ""
) -> list[str]:
    """curves: group -> one training curve per seed (rows with "completions" and the
    metrics). Per key, <name>_<key>.png: the mean over seeds against completions sampled
    (steps for offline training), with the seeds' range shaded (a bar at a lone point)."""
    paths = []
    for key in keys:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        drawn = False
        for group, runs in curves.items():
            runs = [[r for r in run if key in r] for run in runs]
            runs = [run for run in runs if run]
            if not runs:
                continue
            n = min(len(run) for run in runs)
            first = runs[0][0]
            x_key = "completions" if first.get("completions") else "comparisons" if "comparisons" in first else "step"
            x = [r[x_key] for r in runs[0][:n]]
            y = np.asarray([[r[key] for r in run[:n]] for run in runs])
            mean = y.mean(0)
            (line,) = ax.plot(x, mean, marker="o" if n == 1 else None, label=f"{group} (n={len(runs)})")
            if len(runs) > 1 and n == 1:  # one point (one round): the seeds' range as an error bar
                yerr = [mean - y.min(0), y.max(0) - mean]
                ax.errorbar(x, mean, yerr=yerr, fmt="none", capsize=4, color=line.get_color())
            elif len(runs) > 1:
                ax.fill_between(x, y.min(0), y.max(0), alpha=0.2)
            drawn = True
        if drawn:
            xlabel = {"completions": "completions sampled", "comparisons": "comparisons labelled"}.get(x_key, x_key)
            ax.set(xlabel=xlabel, ylabel=key, title=title or f"{key} over training (mean over seeds)")
            ax.legend(fontsize=7)
            fig.tight_layout()
            paths.append(os.path.join(out_dir, f"{name}_{key}.png"))
            fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def against_n(table: dict[str, dict[str, dict]], path: str, title: str, x_label: str = "N (solutions per problem)",
              y_label: str = "accuracy") -> str:  # fmt: skip
    """table: line -> {N (str): {"mean", "low", "high"}}; one line per key against N on a
    log2 axis (best-of-N; a model's parameters), the 95% interval shaded where there is one."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, by_n in table.items():
        ns = sorted(by_n, key=int)
        x = [int(n) for n in ns]
        mean = [by_n[n]["mean"] for n in ns]
        ax.plot(x, mean, marker="o", markersize=3, label=name)
        low, high = [by_n[n]["low"] for n in ns], [by_n[n]["high"] for n in ns]
        if not np.isnan(low).any():
            ax.fill_between(x, low, high, alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set(xlabel=x_label, ylabel=y_label, title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def calibration(readings: dict[str, list[dict]], path: str, title: str) -> str:
    """readings: name -> bins ({"predicted", "positive", "steps"}, as
    `process_supervision.calibration` gives them); predicted P(positive) against the share of
    steps that are positive, marker area by the bin's steps, the diagonal for reference."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--")
    for name, bins in readings.items():
        steps = np.asarray([b["steps"] for b in bins], np.float64)
        x, y = [b["predicted"] for b in bins], [b["positive"] for b in bins]
        ax.plot(x, y, marker="o", markersize=3, label=name)
        ax.scatter(x, y, s=200 * steps / steps.sum(), alpha=0.3)
    ax.set(xlabel="predicted P(step positive)", ylabel="share of steps positive", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
