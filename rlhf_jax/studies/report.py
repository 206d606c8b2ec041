"""A study's report from its cells' records: per group and metric, the mean and 95%
t-interval over seeds (`results`), as report.md (`markdown`) and results.json, with the
training curves against completions sampled (`write`). `study` is a study.StudyConfig."""

from __future__ import annotations

import os

import numpy as np

from rlhf_jax.eval import plots
from rlhf_jax.studies import claims as study_claims
from rlhf_jax.studies import provenance as study_provenance
from rlhf_jax.workdir import write_json


def interval(values) -> dict[str, float]:
    """Mean and its 95% t-interval over seeds (half-width nan for one seed)."""
    from scipy import stats  # scipy takes a second; only reports need it

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
    if study.sft_row:  # from the test cells (selection and validation cells evaluate on the validation split)
        per_seed = {r["seed"]: r for r in records if r["group"] in study.test_groups}
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


def figure_results(study, records: list[dict]) -> dict:
    """Per training figure: {group: {key: {"mean": interval over seeds of the key's mean
    over training, "last": interval of its last logged value}}}; per "against_n" figure:
    {group: {key: {N: interval over seeds}}}."""
    out = {}
    for fig in study.figures:
        if fig.source == "against_n":
            out[fig.name] = {g: _against_n(fig, [r for r in records if r["group"] == g]) for g in fig.groups}
            out[fig.name] = {g: t for g, t in out[fig.name].items() if t}
            continue
        if fig.source != "training":
            continue
        table = {}
        for group in fig.groups:
            runs = [r["curve"] for r in records if r["group"] == group and r.get("curve")]
            row = {}
            for key in fig.keys:
                series = [[p[key] for p in run if key in p] for run in runs]
                series = [x for x in series if x]
                if series:
                    row[key] = {
                        "mean": interval([np.mean(x) for x in series]),
                        "last": interval([x[-1] for x in series]),
                    }
            if row:
                table[group] = row
        out[fig.name] = table
    return out


def _against_n(fig, records: list[dict]) -> dict:
    """{key: {N (str): interval over the records' seeds}} of the rows' keys at each "n"."""
    table: dict[str, dict[str, dict]] = {}
    for key in fig.keys:
        by_n: dict[str, list[float]] = {}
        for r in records:
            for row in r.get("curve", []):
                if key in row:
                    by_n.setdefault(str(row["n"]), []).append(row[key])
        if by_n:
            table[key] = {n: interval(v) for n, v in by_n.items()}
    return table


def figure_plots(study, records: list[dict], out_dir: str) -> dict[str, list[str]]:
    """Each figure's plots: training keys against completions sampled, or the curves per
    generation step averaged over seeds."""
    paths = {}
    tables = figure_results(study, records)
    for fig in study.figures:
        if fig.source == "against_n":
            paths[fig.name] = [
                plots.against_n(
                    table,
                    os.path.join(out_dir, f"{fig.name}_{group}.png"),
                    f"{fig.title}: {group}",
                    fig.x_label,
                    fig.y_label,
                )
                for group, table in tables.get(fig.name, {}).items()
            ]
            continue
        if fig.source == "training":
            curves = {g: [r["curve"] for r in records if r["group"] == g] for g in fig.groups}
            paths[fig.name] = plots.study_curves(curves, fig.keys, out_dir, name=fig.name, title=fig.title)
            continue
        averaged = {}
        for group in fig.groups:
            if group == "SFT":
                mine = list({r["seed"]: r["generation"]["sft"] for r in records if r["group"] in study.test_groups
                             and "sft" in r.get("generation", {})}.values())  # fmt: skip
            else:
                mine = [
                    r["generation"]["policy"]
                    for r in records
                    if r["group"] == group and "policy" in r.get("generation", {})
                ]
            if mine:
                keys = set.intersection(*(set(c) for c in mine))
                averaged[f"{group} (n={len(mine)})"] = {
                    k: np.mean([c[k][: min(len(x[k]) for x in mine)] for c in mine], axis=0).tolist() for k in keys
                }
        paths[fig.name] = [plots.step_curves(averaged, out_dir, name=fig.name)] if averaged else []
    return paths


def figures_markdown(study, tables: dict) -> str:
    """Each training figure's table: per group and key, the mean over training and the
    last logged value, mean [95% interval] over seeds."""
    lines = []
    for fig in study.figures:
        table = tables.get(fig.name)
        if not table:
            continue
        if fig.source == "against_n":
            lines += _against_n_markdown(fig, table)
            continue
        lines += [f"{fig.title} (mean over training / last logged value; mean [95% interval] over seeds):", ""]
        lines.append("| | n | " + " | ".join(f"{k} (mean) | {k} (last)" for k in fig.keys) + " |")
        lines.append("|---|---|" + "---|---|" * len(fig.keys))
        for group, row in table.items():
            n = max(v["mean"]["n"] for v in row.values())
            cells = [f"{_fmt(row[k]['mean'])} | {_fmt(row[k]['last'])}" if k in row else "- | -" for k in fig.keys]
            lines.append(f"| {group} | {n} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _against_n_markdown(fig, table: dict) -> list[str]:
    lines = []
    for group, by_key in table.items():
        ns = sorted({n for by_n in by_key.values() for n in by_n}, key=int)
        lines += [f"{fig.title}, {group} (mean [95% interval] over seeds):", ""]
        lines.append("| | " + " | ".join(f"{fig.x}={n}" for n in ns) + " |")
        lines.append("|---|" + "---|" * len(ns))
        for key, by_n in by_key.items():
            lines.append(f"| {key} | " + " | ".join(_fmt(by_n.get(n)) for n in ns) + " |")
        lines.append("")
    return lines


def _fmt(v: dict | None) -> str:
    if v is None:
        return "-"
    if np.isnan(v["low"]):
        return f"{v['mean']:.3f} (n=1)"
    return f"{v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"


def markdown(study, res: dict) -> str:
    """report.md: one table, mean [95% interval] over seeds per metric, then each cell's
    commit, machine and time."""
    fmt = _fmt
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
    if res.get("figures"):
        lines += ["", figures_markdown(study, res["figures"])]
    if res.get("verdicts"):
        lines += ["", *claims_markdown(study, res["verdicts"])]
    lines += ["", *study_provenance.markdown(study, res.get("provenance"))]
    lines += ["| cell | commit | machine | seconds |", "|---|---|---|---|"]
    lines += [f"| {c} | {v['commit']} | {v['machine']} | {v['seconds']:.0f} |" for c, v in res["cells"].items()]
    return "\n".join(lines) + "\n"


def selection_markdown(study, chosen: dict[str, dict]) -> str:
    """The selection's table: per group, the mean validation metric of each value it tried
    (a value past the grid's edge only where a group's best reached that edge), the chosen
    one in bold; a choice still at an edge of what was tried is marked."""
    sel = study.selection
    tried = {x for c in chosen.values() for x in c["means"]}
    labels = [sel.label(v) for v in sel.all_values if sel.label(v) in tried]
    grows = bool(sel.below or sel.above)
    lines = [
        f"{sel.name} chosen per group on the validation split ({sel.metric}, mean over seeds "
        f"{', '.join(map(str, sel.seeds))}; the chosen value in bold"
        + (
            "; a value past the grid joins a group whose best sits at that edge; 'at the edge': the reserve "
            "there is spent"
            if grows
            else ""
        )
        + "):",
        "",
        "| | " + " | ".join(f"{sel.name}={label}" for label in labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for group, c in chosen.items():
        cells = [
            "" if x not in c["means"] else f"**{c['means'][x]:.3f}**" if x == c["label"] else f"{c['means'][x]:.3f}"
            for x in labels
        ]
        edge = " (at the edge)" if grows and c.get("edge") else ""
        lines.append(f"| {group}{edge} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write(study, workdir: str, records: str, found: list[dict]) -> dict:
    """results.json, report.md and the plots from the records found (in `records`), with
    the selection's choices when the study has one, the claims' verdicts by the rule over
    the test records and the provenance."""
    res = results(study, found)
    if study.selection is not None:
        res["selection"] = study.chosen(records)
    if study.claims or study.gates:
        res["verdicts"] = verdicts(study, found)
    res["provenance"] = study_provenance.read(records)
    os.makedirs(workdir, exist_ok=True)
    beside_records = os.path.abspath(records) != os.path.abspath(os.path.join(workdir, "records"))
    out_dir = os.path.join(records if beside_records else workdir, "plots")
    os.makedirs(out_dir, exist_ok=True)
    res["plots"] = plots.study_curves(
        {g: [r["curve"] for r in found if r["group"] == g] for g in study.groups}, study.curves, out_dir
    )
    if study.figures:
        res["figures"] = figure_results(study, found)
        res["figure_plots"] = figure_plots(study, found, out_dir)
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


# ----------------------------------------------------------------------------- claims


def test_records(study, found: list[dict]) -> list[dict]:
    """The records of the test cells (selection and validation cells are measured on the
    validation split)."""
    return [r for r in found if r["group"] in study.test_groups]


def verdicts(study, found: list[dict]) -> dict:
    """The claims' verdicts by the rule over the test records; the gates over those and the
    validation records (the selection's, the validation cells')."""
    validation = [r for r in found if r["group"] not in study.test_groups]
    return study_claims.evaluate(study.claims, study.gates, test_records(study, found), validation)


def _signed(x: float) -> str:
    return "nan" if np.isnan(x) else f"{x:+.3f}"


def _difference(row: dict) -> str:
    if np.isnan(row["low"]):
        return f"{_signed(row['mean'])} (n={row['n']})"
    return f"{_signed(row['mean'])} [{_signed(row['low'])}, {_signed(row['high'])}] ({row['n']})"


def _measured(claim, ev: dict) -> str:
    """One comparison: its paired difference; several: how their verdicts fall."""
    rows = ev["comparisons"]
    if len(rows) == 1:
        return f"{rows[0]['name']}: {_difference(rows[0])}"
    tested = [r for r in rows if r["verdict"] != "not tested"]
    counts = {v: sum(r["verdict"] == v for r in tested) for v in study_claims.VERDICTS}
    plural = {"agrees": "agree", "disagrees": "disagree"}
    said = ", ".join(f"{n} {plural.get(v, v) if n > 1 else v}" for v, n in counts.items() if n)
    means = [r["mean"] for r in tested]
    spread = f"; means {_signed(min(means))} to {_signed(max(means))}" if means else ""
    return f"{len(rows)} comparisons, {len(tested)} tested ({said or 'none'}){spread}"


def claim_table(study, verdicts: dict) -> list[str]:
    """The claim table the README shows: claim, measured, margin, gates, verdict."""
    lines = [f"<!-- claims:{study.name} -->", "| claim | measured: paired difference [95% interval] (seeds) | margin "
             "| gates | verdict |", "|---|---|---|---|---|"]  # fmt: skip
    for claim, ev in zip(study.claims, verdicts["claims"], strict=True):
        names = list(claim.gates) + sorted({g for c in claim.comparisons for g in c.gates})
        failed = set(ev["failed_gates"]) | {g for r in ev["comparisons"] for g in r["failed_gates"]}
        gates = "-" if not names else ("passed" if not failed else f"{len(failed)} of {len(names)} failed")
        lines.append(f"| {claim.statement} | {_measured(claim, ev)} | {claim.margin:.3g} | {gates} | "
                     f"**{ev['verdict']}** |")  # fmt: skip
    return lines + [f"<!-- /claims:{study.name} -->"]


def claims_markdown(study, verdicts: dict) -> list[str]:
    """The report's claims: the gates first (what the instrument showed, where measured),
    then the claim table, each comparison and the margins."""
    lines = ["## Claims", ""]
    if study.gates:
        lines += ["Gates, before any claim (mean over seeds, range over seeds):", "",
                  "| gate | what | mean (range) | required | measured on | status |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for g in study.gates:
            s = verdicts["gates"][g.name]
            value = "-" if not s["n"] else f"{s['mean']:.3f} ({s['min']:.3f} to {s['max']:.3f})"
            status = "passed" if s["passed"] else f"**failed** ({s['why']})"
            lines.append(f"| {g.name} | {g.what} | {value} | {_range(g.low, g.high)} | {g.split} | {status} |")
        lines.append("")
    lines += ["Verdicts by the rule of `rlhf_jax/studies/claims.py`, computed from the test records: "
              "`not tested` when a gate failed; `equal here` when every paired 95% interval lies inside the margin; "
              "`disagrees` when a difference is found against the paper (Holm-adjusted p < 0.05 over the claim's "
              "comparisons); `agrees` when every comparison's interval excludes 0 in the paper's direction; "
              "`cannot tell` otherwise.", ""]  # fmt: skip
    lines += claim_table(study, verdicts) + [""]
    lines += ["Each comparison (per-seed differences; p: two-sided t-test over seeds, then Holm-adjusted within the "
              "claim; sign-flip: the exact randomisation test over seeds, a second opinion):", "",
              "| claim | comparison | paired difference [95% interval] (seeds) | p | Holm p | sign-flip p | verdict |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for ev in verdicts["claims"]:
        for r in ev["comparisons"]:
            gate = f" (gate failed: {', '.join(r['failed_gates'])})" if r["failed_gates"] else ""
            ps = " | ".join(_p(r[k]) for k in ("p", "p_holm", "sign_p"))
            lines.append(f"| {ev['claim']} | {r['name']} | {_difference(r)} | {ps} | {r['verdict']}{gate} |")
    lines += ["", "Margins and why:", "", "| claim | margin | why |", "|---|---|---|"]
    lines += [f"| {c.name} | {c.margin:.3g} | {c.margin_reason} |" for c in study.claims]
    return lines + [""]


def _p(p: float) -> str:
    return "-" if np.isnan(p) else f"{p:.3f}"


def _range(low: float, high: float) -> str:
    if np.isinf(high):
        return f">= {low:g}"
    if np.isinf(low):
        return f"<= {high:g}"
    return f"{low:g} to {high:g}"
