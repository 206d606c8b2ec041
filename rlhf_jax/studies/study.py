"""Studies: a grid of pipelines (methods x settings x seeds), run as one resumable whole and
reported with intervals over seeds.

    python -m rlhf_jax.main --config experiments/studies/X.py[:variant] --workdir DIR
        [--jobs N] [--cell NAME] [--records DIR] [--amend WHY]

A study module's `get_config(variant)` returns a `StudyConfig`: its cells (each a
`pipeline.PipelineConfig` at one seed, in a named group) and the metrics its report shows.
The grid, the seeds and the validation split are fixed in the module, before any result
is read; `--set` does not apply.

Layout of DIR:

    tfds/                      the task data, prepared once for every cell
    shared/<stage>-<key>/      a stage several cells have in common, run once (one SFT and
                               one reward model per seed, not per method); <key> is a hash
                               of the stage's config, its seed and the stages it starts from
    cells/<group>.seed<s>/     the cell's own stage (its policy), evaluation and plots
    logs/<job>.log             the console of each job run in a process of its own (--jobs)
    locks/<cell>/              held while a cell runs: a second study on DIR waits, then finds its record
    results.json, report.md, plots/

and each finished cell leaves a small record, `<records>/<cell>.json` (its metrics, config,
the commit and the machine that made it; --records, default DIR/records, where
report.md and plots/ then go too). Records are
what a study resumes from: commit them with the report, and a study cut off part-way
continues on any machine with only the cells that have no record of their current config.

Every stage is an ordinary resumable run (SIGKILL anywhere, rerun the same command). With
--jobs N, stages and cells run in N processes at a time, each job once the stages it
needs are done; --cell NAME runs one cell (and any shared stage it needs that is missing)
so that a cluster can run cells side by side: a stage's directory is locked while it runs,
so a second process that needs it waits and then finds it done.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import sys
import time

from rlhf_jax import config as config_lib
from rlhf_jax import pipeline
from rlhf_jax.pipeline import PipelineConfig
from rlhf_jax.studies import claims as study_claims
from rlhf_jax.studies import iterated, process_supervision, weak_to_strong
from rlhf_jax.studies import provenance as study_provenance
from rlhf_jax.studies import report as study_report
from rlhf_jax.studies.iterated import IteratedConfig
from rlhf_jax.studies.jobs import Job, run_jobs, run_logged
from rlhf_jax.studies.layout import Placed, place
from rlhf_jax.studies.process_supervision import ProcessConfig
from rlhf_jax.studies.records import (
    cell_key,
    cell_metrics,
    commit,
    flatten,
    generation_curves,
    machine,
    read_record,
    training_curve,
)
from rlhf_jax.studies.selection import Selection
from rlhf_jax.studies.weak_to_strong import WeakToStrongConfig
from rlhf_jax.workdir import Lock, finished, own_directory, write_json

CELL_NAME = re.compile(r"^[A-Za-z0-9_.=+-]+$")


def eval_split(run) -> str:
    """The split a cell's run evaluates its policy on (a pipeline's or iterated run's
    policy stage's data.eval_split; a process-supervision or weak-to-strong run's own)."""
    if isinstance(run, (ProcessConfig, WeakToStrongConfig)):  # runs that name their held-out split themselves
        return run.eval_split
    inner = run.pipeline if isinstance(run, IteratedConfig) else run
    policy = getattr(inner, "policy", None)
    return policy.data.eval_split if policy is not None else "test"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One pipeline of the grid at one seed (a `PipelineConfig`; an
    `iterated.IteratedConfig`: rounds of comparisons, reward model and policy, its SFT
    shared like a pipeline's; a `process_supervision.ProcessConfig`, whose stages are
    all its own; or a `weak_to_strong.WeakToStrongConfig`, its pretrained sizes shared).
    Cells of a group differ only in their seed:
    the report gives a group's mean and interval over them. settings: the grid coordinates
    of the group, for the report (e.g. (("method", "rloo"), ("k", "4"))). select_with: with
    a selection, the group whose chosen value this cell takes instead of one of its own
    (a variant of a method, e.g. PPO at another lambda, runs at the method's setting).
    split: "test", or "validation" for a cell that measures the instrument (gates, a design
    choice) on the validation split before any test cell: its records do not fix the grid."""

    group: str
    seed: int
    pipeline: PipelineConfig | IteratedConfig | ProcessConfig | WeakToStrongConfig
    settings: tuple[tuple[str, str], ...] = ()
    select_with: str = ""
    split: str = "test"

    def __post_init__(self):
        if self.split not in ("test", "validation"):
            raise ValueError(f"cell {self.name}: split={self.split!r}, expected test or validation")
        if self.split == "validation" and eval_split(self.pipeline) != "validation":
            raise ValueError(f"cell {self.name}: a validation cell whose policy evaluates on the "
                             f"{eval_split(self.pipeline)!r} split (set its data.eval_split=validation)")  # fmt: skip

    @property
    def seeded(self) -> PipelineConfig | IteratedConfig | ProcessConfig | WeakToStrongConfig:
        """The pipeline (or iterated run) at the cell's seed."""
        if isinstance(self.pipeline, IteratedConfig):
            return dataclasses.replace(
                self.pipeline, pipeline=dataclasses.replace(self.pipeline.pipeline, seed=self.seed)
            )
        return dataclasses.replace(self.pipeline, seed=self.seed)

    @property
    def name(self) -> str:
        return f"{self.group}.seed{self.seed}"


@dataclasses.dataclass(frozen=True)
class Metric:
    """A column of the report: `path` is a dotted key of a cell record's metrics; "{p}" in
    it stands for "policy" (the cell's trained policy) or "sft" (the SFT row)."""

    label: str
    path: str


DEFAULT_METRICS = (
    Metric("greedy gold reward", "{p}.greedy.gold.mean"),
    Metric("greedy win-rate vs reference", "{p}.greedy.gold_win_rate_vs_reference"),
    Metric("greedy win-rate vs SFT", "policy_vs_sft.greedy"),
    Metric("sampled gold reward", "{p}.sampled.gold.mean"),
    Metric("sampled win-rate vs SFT", "policy_vs_sft.sampled"),
    Metric("KL to SFT", "{p}.greedy.kl_to_reference"),
)


FIGURE_SOURCES = ("training", "generation", "against_n")


@dataclasses.dataclass(frozen=True)
class Figure:
    """A comparison of some groups that the report draws and tabulates, mean over seeds.
    source "training": the policy stage's logged `keys` (of the study's curves) against
    completions sampled, and a table of each key's mean over training and last logged
    value per group, with intervals. source "generation": the evaluation's curves per
    generation step (the RLOO paper's appendix A: normalised entropy, top-k mass) of the
    groups' policies; "SFT" names the SFT policy. source "against_n": per group, each key
    of the cells' rows (a process-supervision cell's selectors) against N, the rows' "n"
    (best-of-N), with 95% intervals over seeds, drawn and tabulated."""

    name: str
    title: str
    groups: tuple[str, ...]
    keys: tuple[str, ...] = ()
    source: str = "training"
    x: str = "N"  # "against_n": the rows' "n" is this (the tables' columns, the plots' axis)
    x_label: str = "N (solutions per problem)"
    y_label: str = "accuracy"


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """A grid of cells and what its report shows. sft_row: a first row with the SFT
    policy's figures (one per seed: the SFT is shared by the seed's cells). curves: the
    training metrics plotted against completions sampled, mean over seeds per group.
    selection: a setting chosen per group on the validation split first; `cells` are
    then the test cells before it is applied (`test_cells` gives them with it).
    figures: comparisons of a few groups each (`Figure`). claims, gates: what the study
    tests and the measurements that show its instrument works (`study_claims`), fixed with
    the grid; earlier: choices and amendments made before the runner kept provenance, with
    their commits (the report lists them). withhold: a group's test cells wait until the
    gates measured on validation let one of its claims be tested (`withheld`; off for the
    tests' smoke sizes, whose tiny models pass no gate)."""

    name: str
    cells: tuple[Cell, ...]
    metrics: tuple[Metric, ...] = DEFAULT_METRICS
    sft_row: bool = True
    curves: tuple[str, ...] = ("gold", "score", "kl")
    description: str = ""
    selection: Selection | None = None
    figures: tuple[Figure, ...] = ()
    claims: tuple[study_claims.Claim, ...] = ()
    gates: tuple[study_claims.Gate, ...] = ()
    earlier: tuple[str, ...] = ()
    withhold: bool = True

    def __post_init__(self):
        validation = [self.selection.group(g, v) for g in self.selecting_groups for v in self.selection.all_values] if (
            self.selection is not None) else []  # fmt: skip
        validation += [g for g in self.groups if g not in self.test_groups]
        study_claims.check(self.claims, self.gates, self.test_groups, self.name, validation)
        if self.selection is not None and any(not isinstance(c.pipeline, PipelineConfig) for c in self.cells):
            raise ValueError(f"study {self.name}: a selection runs pipeline cells only, not iterated or other runs")
        groups = set(self.groups)
        for c in self.cells:
            if c.select_with and (c.select_with not in self.selecting_groups or self.selection is None):
                raise ValueError(
                    f"study {self.name}: cell {c.name} selects with {c.select_with!r}, which is not a group "
                    "that runs the selection"
                )
        for f in self.figures:
            if f.source not in FIGURE_SOURCES:
                raise ValueError(
                    f"study {self.name}: figure {f.name}: source {f.source!r}, expected one of {FIGURE_SOURCES}"
                )
            unknown = [g for g in f.groups if g not in groups and not (f.source == "generation" and g == "SFT")]
            if unknown:
                raise ValueError(f"study {self.name}: figure {f.name} names groups it does not have: {unknown}")
            if f.source == "training" and not set(f.keys) <= set(self.curves):
                raise ValueError(f"study {self.name}: figure {f.name}: keys {f.keys} not all in curves {self.curves}")
        names = [c.name for c in self.cells + self.selection_cells]
        if not names:
            raise ValueError(f"study {self.name}: no cells")
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"study {self.name}: cells named twice: {duplicated}")
        bad = [n for n in names if not CELL_NAME.match(n)]
        if bad:
            raise ValueError(f"study {self.name}: cell names may hold letters, digits and _.=+- only: {bad}")

    def cell(self, name: str, records: str) -> Cell:
        """The selection or test cell of that name (a test cell once its group's value is chosen)."""
        for c in self.selection_cells:
            if c.name == name:
                return c
        for c in self.cells:
            if c.name == name:
                chosen = self.test_cells(records)
                if c.group not in {t.group for t in chosen}:
                    raise ValueError(
                        f"--cell {name}: its {self.selection.name} is chosen on the validation split first: "
                        f"run the cells select.{c.select_with or c.group}.* (or the whole study) before it"
                    )
                return next(t for t in chosen if t.name == name)
        known = [c.name for c in self.selection_cells + self.cells]
        raise ValueError(f"--cell {name}: study {self.name} has no such cell; it has {known}")

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(c.group for c in self.cells))

    @property
    def test_groups(self) -> list[str]:
        """The groups of the test cells (not the validation cells, `Cell.split`)."""
        return list(dict.fromkeys(c.group for c in self.cells if c.split == "test"))

    @property
    def selecting_groups(self) -> list[str]:
        """The groups that choose their own value (those whose cells select with no other)."""
        return list(dict.fromkeys(c.group for c in self.cells if not c.select_with))

    @property
    def selection_cells(self) -> tuple[Cell, ...]:
        """Every selection cell the grid may run (its reserves `below` and `above` too)."""
        return self._selection_cells({g: self.selection.all_values for g in self.selecting_groups} if (
            self.selection is not None) else {})  # fmt: skip

    def due_selection_cells(self, records: str) -> tuple[Cell, ...]:
        """The selection cells of the values each group tries now (`Selection.walk`)."""
        return self._selection_cells({g: tried for g, (tried, _) in self._walks(records).items()})

    def _selection_cells(self, values: dict[str, tuple]) -> tuple[Cell, ...]:
        sel, out = self.selection, []
        for group, group_values in values.items():
            template = next(c for c in self.cells if c.group == group)
            for value in group_values:
                for seed in sel.seeds:
                    c = sel.applied(dataclasses.replace(template, seed=seed), value, sel.group(group, value))
                    policy = c.pipeline.policy
                    policy = dataclasses.replace(policy, data=dataclasses.replace(policy.data, eval_split="validation"))
                    out.append(dataclasses.replace(c, pipeline=dataclasses.replace(c.pipeline, policy=policy)))
        return tuple(out)

    def _walks(self, records: str) -> dict[str, tuple[list, dict | None]]:
        sel = self.selection
        if sel is None:
            return {}
        cells = {c.name: c for c in self.selection_cells}

        def mean(group, value):
            found = [read_record(records, cells[f"{sel.group(group, value)}.seed{s}"]) for s in sel.seeds]
            if any(r is None or sel.metric not in r.get("metrics", {}) for r in found):
                return None
            return sum(r["metrics"][sel.metric] for r in found) / len(found)

        return {g: sel.walk(functools.partial(mean, g)) for g in self.selecting_groups}

    def chosen(self, records: str) -> dict[str, dict]:
        """Per group whose selection is done (`Selection.walk`): {"value", "label", "means"
        (label -> mean metric on the validation split), "edge"}."""
        return {g: choice for g, (_, choice) in self._walks(records).items() if choice is not None}

    def withheld(self, records: str) -> dict[str, list[str]]:
        """{test group: the gates on validation (failed, or not yet measured) that keep its
        test cells from running} (`study_claims.withheld`)."""
        if not self.withhold:
            return {}
        cells = self.selection_cells + tuple(c for c in self.cells if c.split != "test")
        validation = [r for c in cells if (r := read_record(records, c))]
        status = {
            g.name: study_claims.gate_status(g, [], validation)
            for g in self.gates
            if study_claims.on_validation(g, self.test_groups)
        }
        return study_claims.withheld(self.claims, status, self.test_groups)

    def test_cells(self, records: str) -> tuple[Cell, ...]:
        """The test cells that can run: all of them without a selection, else those of the
        groups whose value is chosen, with it applied."""
        if self.selection is None:
            return self.cells
        chosen = self.chosen(records)
        return tuple(
            self.selection.applied(c, chosen[c.select_with or c.group]["value"])
            for c in self.cells
            if (c.select_with or c.group) in chosen
        )


# ----------------------------------------------------------------------------- jobs


def run_cell(study: StudyConfig, placed: Placed, records: str) -> dict:
    """The cell's pipeline (its shared stages are found done, or run) and its record. The
    cell is locked while it runs: a second study on the same workdir waits, then finds its
    record and computes nothing."""
    lock = os.path.join(os.path.dirname(os.path.dirname(placed.directory)), "locks", placed.cell.name)
    with Lock(lock, wait=True):
        found = read_record(records, placed.cell)
        if found is not None:
            print(f"== cell {placed.cell.name}: recorded meanwhile by another process", flush=True)
            return found
        return _run_cell(study, placed, records)


def _run_cell(study: StudyConfig, placed: Placed, records: str) -> dict:
    t0 = time.time()
    cell = placed.cell
    own_directory(placed.directory, config_lib.to_dict(cell.seeded))
    if isinstance(cell.pipeline, ProcessConfig):
        siblings = tuple(os.path.join(os.path.dirname(placed.directory), c.name) for c in study.cells
                         if c.seed == cell.seed and c.name != cell.name)  # fmt: skip
        summary = process_supervision.run(
            cell.seeded, placed.directory, placed.data_dir, placed.dirs["facts"], siblings
        )
        if summary.get("stopped"):
            return summary
        tree, curve = process_supervision.study_figures(summary)
        metrics, generation = flatten(tree), {}
    elif isinstance(cell.pipeline, WeakToStrongConfig):
        summary = weak_to_strong.run(cell.seeded, placed.directory, placed.dirs, placed.data_dir)
        if summary.get("stopped"):
            return summary
        tree, curve = weak_to_strong.study_figures(summary)
        metrics, generation = flatten(tree), {}
    elif isinstance(cell.pipeline, IteratedConfig):
        summary = iterated.run(cell.seeded, placed.directory, placed.dirs["sft"], placed.data_dir)
        if summary.get("stopped"):
            return summary
        tree, curve = iterated.study_figures(summary)
        metrics, generation = flatten(tree), {}
    else:
        summary = pipeline.run(cell.seeded, placed.directory, placed.dirs, placed.data_dir)
        if summary.get("stopped"):
            return summary
        policy = placed.configs["policy"]
        per_step = policy.rl.rollout_batch * policy.rl.draws if policy.train.kind == "rl" else 0  # DAPO draws more
        metrics, generation = cell_metrics(summary), generation_curves(summary)
        curve = training_curve(placed.dirs["policy"], study.curves, per_step)
    record = {
        "cell": cell.name,
        "group": cell.group,
        "seed": cell.seed,
        "settings": dict(cell.settings),
        "key": cell_key(cell),
        "metrics": metrics,
        "curve": curve,
        "generation": generation,
        "config": config_lib.to_dict(cell.pipeline),
        "commit": commit(),
        "machine": machine(),
        "seconds": round(time.time() - t0, 1),
        "stages_seconds": summary.get("seconds", {}),
    }
    write_json(os.path.join(records, f"{cell.name}.json"), record)
    print(f"== cell {cell.name}: done, record {os.path.join(records, cell.name + '.json')}", flush=True)
    return record


def plan(study: StudyConfig, workdir: str, records: str, only: str | None = None) -> list[Job]:
    """The jobs still to run, in an order where each comes after the jobs it needs: the
    shared stages of cells without a current record (unless done), then those cells."""
    cells = (
        [study.cell(only, records)] if only else list(study.due_selection_cells(records) + study.test_cells(records))
    )
    withheld = study.withheld(records)
    if only and cells[0].split == "test" and cells[0].group in withheld:
        raise ValueError(f"--cell {only}: its claims' gates on validation fail or are not measured yet "
                         f"({', '.join(withheld[cells[0].group])}): run the validation cells first")  # fmt: skip
    cells = [c for c in cells if c.split != "test" or c.group not in withheld]
    jobs: dict[str, Job] = {}
    for cell in cells:
        if read_record(records, cell) is not None:
            continue
        placed = place(cell, workdir)
        needs: list[str] = []  # the shared stages still to run, in order (the reward model needs the SFT)
        for stage, key in placed.shared:
            cfg, directory = placed.configs[stage], placed.dirs[stage]
            if key not in jobs and not finished(directory, config_lib.to_dict(cfg)):
                jobs[key] = Job(key, tuple(needs), functools.partial(pipeline.run_stage, stage, cfg, directory))
            if key in jobs:
                needs.append(key)
        key = f"cells/{cell.name}"
        jobs[key] = Job(key, tuple(needs), functools.partial(run_cell, study, placed, records))
    return list(jobs.values())


def run(study: StudyConfig, workdir: str, records: str = "", jobs: int = 1, only: str | None = None,
        job: str | None = None, spec: str = "", amend: str | None = None) -> dict:  # fmt: skip
    """Run what is missing of the study (or of one cell: `only`; or one planned `job`, as
    a process of `run_jobs` does), then write the results and the report. spec: the
    --config the study was named by (for the job processes). A study whose grid or claims
    changed after a test record existed is refused unless `amend` says why
    (`study_provenance.check`)."""
    records = records or os.path.join(workdir, "records")
    os.makedirs(records, exist_ok=True)
    if job is None:  # a job process's parent has checked
        study_provenance.check(study, records, amend)
    todo = plan(study, workdir, records, only)
    if job is not None:
        found = [j for j in todo if j.key == job]
        out = found[0].run() if found else None
        return {"job": job, "stopped": isinstance(out, dict) and bool(out.get("stopped"))}
    phase = 0
    while todo:  # with a selection: its cells (and each value a group's edge adds), then the test cells
        phase += 1
        if phase > 3 + (len(study.selection.below) + len(study.selection.above) if study.selection else 0):
            raise RuntimeError(f"study {study.name}: cells still to run after they ran: {[j.key for j in todo]}")
        out = _run_planned(study, todo, workdir, records, jobs, spec)
        if out is not None:
            return out
        todo = [] if only else plan(study, workdir, records)
    for group, gates in study.withheld(records).items():
        print(f"study {study.name}: the test cells of {group} wait: gates on validation fail: {', '.join(gates)}")
    cells = study.selection_cells + study.test_cells(records)
    return study_report.write(study, workdir, records, [r for c in cells if (r := read_record(records, c))])


def _run_planned(study: StudyConfig, todo: list[Job], workdir: str, records: str, jobs: int, spec: str):
    """Run planned jobs; {"stopped", "job"} when one was stopped, else None."""
    n_cells, n_shared = (sum(j.key.startswith(kind) for j in todo) for kind in ("cells/", "shared/"))
    n_all = len(study.cells) + len(study.selection_cells)
    print(f"study {study.name}: {n_all} cells, {n_cells} to run now, {n_shared} shared stages to run; "
          f"records in {records}", flush=True)  # fmt: skip
    if jobs > 1 and len(todo) > 1:
        command = lambda key: [  # noqa: E731
            sys.executable, "-m", "rlhf_jax.main", "--config", spec, "--workdir", workdir, "--records", records,
            "--job", key,
        ]  # fmt: skip
        failed = run_jobs(todo, jobs, command, os.path.join(workdir, "logs"))
        if failed:
            raise RuntimeError(f"study {study.name}: jobs failed: {failed}; their logs are in {workdir}/logs")
    else:
        for j in todo:
            out = run_logged(j, os.path.join(workdir, "logs"))
            if isinstance(out, dict) and out.get("stopped"):
                return {"stopped": True, "job": j.key}
    return None
