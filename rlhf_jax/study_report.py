"""A study's report from its cells' records: per group and metric, the mean and 95%
t-interval over seeds (`results`), as report.md (`markdown`) and results.json, with the
training curves against completions sampled (`write`). `study` is a study.StudyConfig."""

from __future__ import annotations

import os

import numpy as np

from rlhf_jax.eval import plots
from rlhf_jax.workdir import write_json


def interval(values) -> dict[str, float]:
    """Mean and its 95% t-interval over seeds (half-width nan for one seed)."""
    from scipy import stats

    x = np.asarray(values, np.float64)
    n = len(x)
    mean = float(x.mean())
    if n < 2:
        return {"mean": mean, "low": float("nan"), "high": float("nan"), "n": n}
    half = float(stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / np.sqrt(n))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def results(study, records: list[dict]) -> dict:
    """{"rows": {row: {metric label: interval}}, "cells": ..., "missing": [...]}; rows are
    "SFT" (one record per seed) and the groups, in the study's order."""
    by_group: dict[str, list[dict]] = {}
    for r in records:
        by_group.setdefault(r["group"], []).append(r)
    rows = {}
    if study.sft_row:  # from the test cells (a selection cell evaluates on the validation split)
        per_seed = {r["seed"]: r for r in records if r["group"] in study.groups}
        rows["SFT"] = _row(study, list(per_seed.values()), "sft")
    for group in study.groups:
        if group in by_group:
            rows[group] = _row(study, by_group[group], "policy")
    have = {r["cell"] for r in records}
    return {
        "study": study.name,
        "rows": rows,
        "cells": {r["cell"]: {k: r[k] for k in ("commit", "machine", "seconds")} for r in records},
        "missing": [c.name for c in study.cells if c.name not in have],
    }


def _row(study, records: list[dict], who: str) -> dict:
    row = {}
    for m in study.metrics:
        if who == "sft" and "{p}" not in m.path:
            continue
        path = m.path.format(p=who)
        values = [r["metrics"][path] for r in records if path in r["metrics"]]
        if values:
            row[m.label] = interval(values)
    return row


def markdown(study, res: dict) -> str:
    """report.md: one table, mean [95% interval] over seeds per metric, then each cell's
    commit, machine and time."""

    def fmt(v: dict | None) -> str:
        if v is None:
            return "-"
        if np.isnan(v["low"]):
            return f"{v['mean']:.3f} (n=1)"
        return f"{v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"

    labels = [m.label for m in study.metrics]
    lines = [f"# {study.name}", ""]
    if study.description:
        lines += [study.description, ""]
    lines += ["Mean over seeds [95% t-interval]; n = seeds.", ""]
    lines.append("| | n | " + " | ".join(labels) + " |")
    lines.append("|---|---|" + "---|" * len(labels))
    for name, row in res["rows"].items():
        n = max((v["n"] for v in row.values()), default=0)
        lines.append(f"| {name} | {n} | " + " | ".join(fmt(row.get(label)) for label in labels) + " |")
    if res["missing"]:
        lines += ["", f"Missing cells ({len(res['missing'])}): {', '.join(res['missing'])}."]
    if res.get("selection"):
        lines += ["", selection_markdown(study, res["selection"])]
    lines += ["", "| cell | commit | machine | seconds |", "|---|---|---|---|"]
    lines += [f"| {c} | {v['commit']} | {v['machine']} | {v['seconds']:.0f} |" for c, v in res["cells"].items()]
    return "\n".join(lines) + "\n"


def selection_markdown(study, chosen: dict[str, dict]) -> str:
    """The selection's table: per group, the mean validation metric of each value, the
    chosen one in bold."""
    sel = study.selection
    labels = [sel.label(v) for v in sel.values]
    lines = [
        f"{sel.name} chosen per group on the validation split ({sel.metric}, mean over seeds "
        f"{', '.join(map(str, sel.seeds))}; the chosen value in bold):",
        "",
        "| | " + " | ".join(f"{sel.name}={label}" for label in labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for group, c in chosen.items():
        cells = [f"**{c['means'][x]:.3f}**" if x == c["label"] else f"{c['means'][x]:.3f}" for x in labels]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write(study, workdir: str, records: str, found: list[dict]) -> dict:
    """results.json, report.md and the plots from the records found (in `records`), with
    the selection's choices when the study has one."""
    res = results(study, found)
    if study.selection is not None:
        res["selection"] = study.chosen(records)
    beside_records = os.path.abspath(records) != os.path.abspath(os.path.join(workdir, "records"))
    out_dir = os.path.join(records if beside_records else workdir, "plots")
    os.makedirs(out_dir, exist_ok=True)
    res["plots"] = plots.study_curves(
        {g: [r["curve"] for r in found if r["group"] == g] for g in study.groups}, study.curves, out_dir
    )
    write_json(os.path.join(workdir, "results.json"), res)
    text = markdown(study, res)
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write(text)
    if beside_records:  # the report and its plots beside the records, to commit together
        with open(os.path.join(records, "report.md"), "w") as f:
            f.write(text)
    print(text)
    print(f"report: {os.path.join(workdir, 'report.md')}")
    return res
