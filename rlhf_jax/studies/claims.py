"""A study's claims and validity gates, and the rule that turns paired differences into
verdicts (DESIGN.md, "Studies: how a claim gets its verdict").

A claim is declared in the study module next to its grid: the paper's statement, one or
more comparisons (arm a against arm b, or against a constant; or the per-seed slope of such
differences against a setting), the direction the paper gives (+1: a > b, -1: a < b, 0:
a = b), an equivalence margin with its reason, and the gates it depends on. Arms at one
seed share their stages (SFT, reward model, pretrained sizes), so every comparison is the
per-seed difference, with its 95% t-interval over seeds.

The rule, for a claim with m tested comparisons (m = 1: its 95% interval):
1. `not tested` when a gate it depends on failed (or was not measured), or a comparison
   whose own gates passed has fewer than two seeds (a study still running: a comparison
   not yet measured is no evidence either way, and steps 3-4 count every comparison);
2. `equal here` when every comparison's 95% interval lies inside (-margin, +margin): a
   difference that small does not matter on this task, whatever its sign (each interval at
   95%: the intersection-union test needs no multiplicity correction);
3. `disagrees` when a comparison's difference is found against the paper's direction: its
   Holm-adjusted p (two-sided t-test over seeds, Holm 1979 over the m comparisons) < 0.05
   (one such difference refutes the claim, so the m chances of finding one are corrected);
4. `agrees` when every comparison's 95% interval excludes 0 in the paper's direction (all
   must hold, so each is tested at 0.05 and no correction is needed: intersection-union);
5. `cannot tell` otherwise.
For an equality claim (direction 0) step 2 gives `agrees` and a difference found in
either direction `disagrees`. The exact sign-flip test over seeds is reported beside the
t-test as a second opinion (with n seeds its smallest two-sided p is 2 / 2^n).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Callable

import numpy as np

VERDICTS = ("agrees", "disagrees", "equal here", "cannot tell", "not tested")
ALPHA = 0.05
SFT = "SFT"  # an arm's group: the SFT policy of the seed's cells (metrics read with {p} = "sft")

Metric = str | Callable[[dict], float | None]


@dataclasses.dataclass(frozen=True)
class Arm:
    """A figure of one group's cell at each seed. metric: a dotted key of the record's
    metrics ("{p}" stands for "policy", or "sft" when group is SFT); "curve.mean:KEY" /
    "curve.last:KEY" (the mean / last value of KEY over the cell's curve rows);
    "curve[FIELD=V]:KEY" (KEY of the curve row whose FIELD is V); "generation.{p}.firstN:KEY"
    (the mean of an evaluation curve over the first N generation steps; None where a step
    has no value: every row had ended); "config:DOTTED.PATH" (a
    number of the cell's config); or a function of the record."""

    group: str
    metric: Metric

    def __str__(self) -> str:
        return f"{self.group} {_metric_name(self.metric)}"


@dataclasses.dataclass(frozen=True)
class Diff:
    """Arm a minus arm b (or minus a constant) at each seed; gates: those this comparison
    alone depends on (e.g. one weak-strong pair's gap)."""

    a: Arm
    b: Arm | float
    label: str = ""
    gates: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        if isinstance(self.b, Arm):
            return f"{self.a.group} - {self.b.group}" if self.b.metric == self.a.metric else f"{self.a} - {self.b}"
        return f"{self.a} - {self.b:g}"


@dataclasses.dataclass(frozen=True)
class Trend:
    """The per-seed least-squares slope of the differences against x (e.g. gold reward
    against PPO's lambda): points (x, Diff)."""

    points: tuple[tuple[float, Diff], ...]
    label: str
    gates: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.label


@dataclasses.dataclass(frozen=True)
class Gate:
    """A measurement showing the instrument works, with the range it must fall in: the mean
    over seeds of `value` (an Arm, or a Diff of two) within [low, high]. split: where it was
    measured ("validation", before any test cell; "test, post hoc" where a study predates its
    gates)."""

    name: str
    what: str
    value: Arm | Diff
    low: float = -math.inf
    high: float = math.inf
    reason: str = ""
    split: str = "validation"


@dataclasses.dataclass(frozen=True)
class Claim:
    """A paper's statement as a test: comparisons, direction (+1 a > b, -1 a < b, 0 equal),
    an equivalence margin (the smallest difference that would matter on this task) and its
    reason, the gates it depends on (each comparison may name its own)."""

    name: str
    statement: str
    comparisons: tuple[Diff | Trend, ...]
    direction: int
    margin: float
    margin_reason: str
    gates: tuple[str, ...] = ()
    source: str = ""

    def __post_init__(self):
        if self.direction not in (-1, 0, 1):
            raise ValueError(f"claim {self.name}: direction {self.direction}, expected -1, 0 or +1")
        if not self.margin >= 0 or not math.isfinite(self.margin):
            raise ValueError(f"claim {self.name}: margin {self.margin} must be a finite number >= 0")
        if not self.margin_reason:
            raise ValueError(f"claim {self.name}: the margin needs its reason")
        if not self.comparisons:
            raise ValueError(f"claim {self.name}: no comparisons")


# ----------------------------------------------------------------------------- measures

_CURVE = re.compile(r"^curve(?:\[(\w+)=([^\]]+)\])?(?:\.(mean|last))?:(.+)$")
_GENERATION = re.compile(r"^generation\.(\w+)\.first(\d+):(.+)$")


def _metric_name(metric: Metric) -> str:
    return metric if isinstance(metric, str) else getattr(metric, "__name__", repr(metric))


def measure(record: dict, metric: Metric, who: str = "policy") -> float | None:
    """The figure `metric` names in a cell's record (None where the record lacks it)."""
    if callable(metric):
        return _number(metric(record))
    path = metric.replace("{p}", who)
    if path.startswith("config:"):
        node = record.get("config", {})
        for key in path[len("config:") :].split("."):
            node = node.get(key) if isinstance(node, dict) else None
        return _number(node)
    if m := _CURVE.match(path):
        field, at, how, key = m.groups()
        rows = [r for r in record.get("curve", []) if key in r]
        if field is not None:
            rows = [r for r in rows if str(r.get(field)) == at]
            return _number(rows[0][key]) if rows else None
        if not rows:
            return None
        return _number(rows[-1][key]) if how == "last" else float(np.mean([r[key] for r in rows]))
    if m := _GENERATION.match(path):
        curve = record.get("generation", {}).get(m.group(1), {}).get(m.group(3)) or []
        first = curve[: int(m.group(2))]
        return _number(float(np.mean(first))) if len(first) == int(m.group(2)) else None
    return _number(record.get("metrics", {}).get(path))


def _number(x) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def arm_values(records: list[dict], arm: Arm) -> dict[int, float]:
    """{seed: value} of an arm over the test records (the SFT arm: any record at the seed)."""
    out: dict[int, float] = {}
    for r in records:
        if arm.group == SFT and r["seed"] not in out:
            v = measure(r, arm.metric, "sft")
        elif r["group"] == arm.group:
            v = measure(r, arm.metric)
        else:
            continue
        if v is not None:
            out[r["seed"]] = v
    return out


def diff_values(records: list[dict], diff: Diff) -> dict[int, float]:
    a = arm_values(records, diff.a)
    if isinstance(diff.b, Arm):
        b = arm_values(records, diff.b)
        return {s: a[s] - b[s] for s in sorted(a) if s in b}
    return {s: a[s] - float(diff.b) for s in sorted(a)}


def comparison_values(records: list[dict], comparison: Diff | Trend) -> dict[int, float]:
    """{seed: the paired difference (Diff) or slope of the differences (Trend)}; a seed
    missing any point of a trend is left out."""
    if isinstance(comparison, Diff):
        return diff_values(records, comparison)
    xs = [x for x, _ in comparison.points]
    series = [diff_values(records, d) for _, d in comparison.points]
    seeds = sorted(set.intersection(*(set(s) for s in series)))
    return {s: float(np.polyfit(xs, [v[s] for v in series], 1)[0]) for s in seeds}


# ----------------------------------------------------------------------------- statistics


def paired(values) -> dict:
    """Mean, 95% t-interval and two-sided t-test p of per-seed differences, with the exact
    sign-flip test's p. Differences without spread: a zero-width interval (p 0 unless the
    mean is 0). Fewer than two seeds: no interval (nan)."""
    x = np.asarray(list(values), np.float64)
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": math.nan, "low": math.nan, "high": math.nan, "p": math.nan, "sign_p": math.nan}
    mean = float(x.mean())
    out = {"n": n, "mean": mean, "sign_p": sign_flip_p(x)}
    if n < 2:
        return {**out, "low": math.nan, "high": math.nan, "p": math.nan}
    from scipy import stats  # scipy's import takes a second; only reports need it

    se = float(x.std(ddof=1) / math.sqrt(n))
    if se <= 1e-12 * max(1.0, abs(mean)):
        return {**out, "low": mean, "high": mean, "p": 1.0 if mean == 0 else 0.0}
    half = float(stats.t.ppf(1 - ALPHA / 2, n - 1)) * se
    p = float(2 * stats.t.sf(abs(mean) / se, n - 1))
    return {**out, "low": mean - half, "high": mean + half, "p": p}


def sign_flip_p(x) -> float:
    """Two-sided exact randomisation p: the share of the 2^n sign patterns whose |mean| is at
    least the observed one (exact up to 12 seeds; beyond, 4096 of them at random, seeded)."""
    x = np.asarray(x, np.float64)
    n = len(x)
    if n == 0:
        return math.nan
    if n <= 12:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    else:
        signs = np.random.default_rng(0).choice((1.0, -1.0), size=(4096, n))
    observed = abs(x.mean())
    return float(np.mean(np.abs(signs @ x / n) >= observed - 1e-12 * max(1.0, observed)))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values: sorted ascending, p_(i) * (m - i + 1), made
    monotone and capped at 1 (nan stays nan and does not count in m)."""
    finite = [(p, i) for i, p in enumerate(pvalues) if not math.isnan(p)]
    m = len(finite)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(finite)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


# ----------------------------------------------------------------------------- the rule


def gate_status(gate: Gate, records: list[dict], validation: list[dict] = ()) -> dict:
    """{"passed", "mean", "min", "max", "n"} of the gate over the seeds' records: the test
    records and the validation ones (a selection's, a validation cell's: a gate may name
    their groups; an SFT arm reads the test records' SFT)."""

    def values_of(arm: Arm) -> dict[int, float]:
        return arm_values(records if arm.group == SFT else list(records) + list(validation), arm)

    if isinstance(gate.value, Diff):
        a = values_of(gate.value.a)
        b = values_of(gate.value.b) if isinstance(gate.value.b, Arm) else {s: float(gate.value.b) for s in a}
        values = {s: a[s] - b[s] for s in sorted(a) if s in b}
    else:
        values = values_of(gate.value)
    v = list(values.values())
    if not v:
        return {"passed": False, "n": 0, "mean": math.nan, "min": math.nan, "max": math.nan, "why": "not measured"}
    mean = float(np.mean(v))
    passed = gate.low <= mean <= gate.high
    return {
        "passed": passed,
        "n": len(v),
        "mean": mean,
        "min": min(v),
        "max": max(v),
        "why": "" if passed else "out of range",
    }


def _decide(stats: list[dict], direction: int, margin: float) -> str:
    """The rule's steps 2-5 on comparisons already tested (each with "low", "high", "mean",
    "p_holm")."""
    if all(-margin < s["low"] and s["high"] < margin for s in stats):
        return "agrees" if direction == 0 else "equal here"
    found = [s for s in stats if s["p_holm"] < ALPHA]
    if direction == 0:
        return "disagrees" if found else "cannot tell"
    if any(s["mean"] * direction < 0 for s in found):
        return "disagrees"
    if all(s["low"] > 0 if direction > 0 else s["high"] < 0 for s in stats):
        return "agrees"
    return "cannot tell"


def evaluate_claim(claim: Claim, records: list[dict], gates: dict[str, dict]) -> dict:
    """The claim's comparisons (per-seed values, interval, Holm p, own verdict) and its
    verdict by the rule. gates: {name: gate_status(...)}."""
    failed = [g for g in claim.gates if not gates.get(g, {}).get("passed")]
    rows = []
    for c in claim.comparisons:
        values = comparison_values(records, c)
        own_failed = [g for g in dict.fromkeys(c.gates) if not gates.get(g, {}).get("passed")]  # each gate once
        rows.append({"name": c.name, "values": values, "failed_gates": own_failed, **paired(values.values())})
    tested = [r for r in rows if not r["failed_gates"] and r["n"] >= 2] if not failed else []
    for r, p in zip(tested, holm([r["p"] for r in tested]), strict=True):
        r["p_holm"] = p
    for r in rows:
        if r in tested:
            r["verdict"] = _decide([r], claim.direction, claim.margin)
        else:
            r["p_holm"] = math.nan
            r["verdict"] = "not tested"
    missing = [r for r in rows if not r["failed_gates"] and r["n"] < 2]
    if failed:
        verdict, why = "not tested", "gate failed: " + ", ".join(failed)
    elif missing and tested:
        verdict, why = "not tested", f"{len(missing)} of {len(rows)} comparisons have fewer than 2 seeds"
    elif not tested:
        why = "every comparison's gate failed" if all(r["failed_gates"] for r in rows) else "fewer than 2 seeds"
        verdict = "not tested"
    else:
        verdict, why = _decide(tested, claim.direction, claim.margin), ""
    return {"claim": claim.name, "verdict": verdict, "why": why, "failed_gates": failed, "comparisons": rows,
            "tested": len(tested)}  # fmt: skip


def evaluate(claims: tuple[Claim, ...], gates: tuple[Gate, ...], records: list[dict],
             validation: list[dict] = ()) -> dict:  # fmt: skip
    """{"gates": {name: status}, "claims": [evaluate_claim(...)]} over the test records
    (the gates also over the validation records: the selection's, the validation cells')."""
    status = {g.name: gate_status(g, records, validation) for g in gates}
    return {"gates": status, "claims": [evaluate_claim(c, records, status) for c in claims]}


def arms(x: Arm | Diff | Trend) -> list[Arm]:
    """The arms a comparison (or a gate's value) reads."""
    if isinstance(x, Arm):
        return [x]
    if isinstance(x, Diff):
        return [x.a] + ([x.b] if isinstance(x.b, Arm) else [])
    return [a for _, d in x.points for a in arms(d)]


def on_validation(gate: Gate, test_groups: list[str]) -> bool:
    """A gate measured before any test cell: split "validation" and every arm a group that
    is neither a test group nor the SFT row (a selection's, a validation cell's)."""
    return gate.split == "validation" and all(a.group not in (*test_groups, SFT) for a in arms(gate.value))


def withheld(claims: tuple[Claim, ...], status: dict[str, dict], test_groups: list[str]) -> dict[str, list[str]]:
    """{test group: the validation gates that keep its test cells from running}. status:
    {name: gate_status} of the gates measured on validation alone (`on_validation`). A
    claim could be tested when each of its gates there passes and, for one of its
    comparisons at least, each of that comparison's own; a group's test cells run while
    one claim that reads the group could be tested, or no claim reads it (DESIGN.md: the
    instrument is shown to work on validation before any test cell)."""

    def failing(names):
        return [n for n in names if n in status and not status[n]["passed"]]

    def testable(c):
        return not failing(c.gates) and any(not failing(x.gates) for x in c.comparisons)

    out: dict[str, list[str]] = {}
    for group in test_groups:
        reading = [c for c in claims if any(a.group == group for x in c.comparisons for a in arms(x))]
        if reading and not any(testable(c) for c in reading):
            names = [
                n for c in reading for n in failing(c.gates) + [m for x in c.comparisons for m in failing(x.gates)]
            ]
            out[group] = list(dict.fromkeys(names))
    return out


def check(claims: tuple[Claim, ...], gates: tuple[Gate, ...], groups: list[str], study: str,
          validation_groups: list[str] = ()) -> None:  # fmt: skip
    """Claims and gates name only the study's test groups (a gate also its validation
    groups: the selection's, the validation cells') and gates it declares."""
    names = [g.name for g in gates]
    if len(set(names)) != len(names):
        raise ValueError(f"study {study}: gates named twice")
    if len({c.name for c in claims}) != len(claims):
        raise ValueError(f"study {study}: claims named twice")
    known = set(groups) | {SFT}
    for owner, comparisons, gate_names in [(f"claim {c.name}", c.comparisons, c.gates) for c in claims] + [
        (f"gate {g.name}", (g.value,), ()) for g in gates
    ]:
        allowed = known | set(validation_groups) if owner.startswith("gate ") else known
        unknown = sorted({a.group for x in comparisons for a in arms(x)} - allowed)
        if unknown:
            raise ValueError(f"study {study}: {owner} names groups it does not have: {unknown}")
        own = [n for x in comparisons if not isinstance(x, Arm) for n in x.gates]
        missing = sorted((set(gate_names) | set(own)) - set(names))
        if missing:
            raise ValueError(f"study {study}: {owner} depends on gates it does not declare: {missing}")


def definition(claims: tuple[Claim, ...], gates: tuple[Gate, ...]) -> list:
    """The claims and gates as plain data (functions by their qualified name), for hashing."""

    def plain(x):
        if callable(x) and not isinstance(x, type):
            return f"{getattr(x, '__module__', '')}.{getattr(x, '__qualname__', repr(x))}"
        if dataclasses.is_dataclass(x):
            return [type(x).__name__] + [plain(getattr(x, f.name)) for f in dataclasses.fields(x)]
        if isinstance(x, (tuple, list)):
            return [plain(v) for v in x]
        if isinstance(x, float) and not math.isfinite(x):
            return str(x)
        return x

    return [plain(claims), plain(gates)]
