"""What a study's test records were made under, kept by the runner in
`<records>/provenance.json`: a digest of the grid (every cell's config and seed, the
selection) and one of the claims and gates; and every amendment, each with its date,
commit, reason and the records it discarded.

Once a test cell has a record, the grid and the claims are fixed: a study whose grid or
claims differ from those its records were made under is refused before any work, unless
the run is told why (`--amend "why"`). Then the records of changed or removed cells move to
`<records>/discarded/` (never deleted) and the amendment is appended; the report lists
them all. Before the first test record (the selection, the gates on validation) the grid
may still change and the digests simply follow it (a validation cell's record, `Cell.split`,
is not a test record).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil

from rlhf_jax.studies import claims as study_claims
from rlhf_jax.studies.records import cell_key, commit, digest
from rlhf_jax.workdir import write_json

FILE = "provenance.json"
DISCARDED = "discarded"
NOT_RECORDS = (FILE, "results.json")


class AmendmentNeeded(ValueError):
    """The study differs from what its test records were made under, and no --amend says why."""


def digests(study) -> dict[str, str]:
    """{"grid": the cells' names and keys with the selection, "claims": claims and gates}."""
    sel = study.selection
    selection = None if sel is None else [sel.name, [repr(v) for v in sel.values], list(sel.seeds), sel.metric]
    cells = sorted((c.name, cell_key(c)) for c in study.cells + study.selection_cells)
    claims = study_claims.definition(study.claims, study.gates)
    return {"grid": digest(cells, selection), "claims": digest(claims)}


def read(records: str) -> dict | None:
    path = os.path.join(records, FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            prov = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable ({e}); restore it from git, or remove it and rerun with --amend") from e
    if not isinstance(prov, dict) or not {"grid", "claims", "amendments"} <= set(prov):
        raise ValueError(f"{path}: not a study's provenance (needs grid, claims, amendments)")
    return prov


def record_names(records: str) -> list[str]:
    """The cell names that have a record file in `records`."""
    if not os.path.isdir(records):
        return []
    return sorted(f[: -len(".json")] for f in os.listdir(records) if f.endswith(".json") and f not in NOT_RECORDS)


def _stale(study, records: str) -> list[str]:
    """Records of cells that the grid no longer has, or of a config the cell cannot have (a
    test cell: with none of the selection's values)."""
    keys = {c.name: {cell_key(c)} for c in study.selection_cells + study.cells}
    if study.selection is not None:
        for c in study.cells:
            keys[c.name] = {cell_key(study.selection.applied(c, v)) for v in study.selection.all_values}
    out = []
    for name in record_names(records):
        try:
            with open(os.path.join(records, f"{name}.json")) as f:
                key = json.load(f).get("key")
        except (OSError, ValueError, AttributeError):
            key = None
        if key not in keys.get(name, ()):
            out.append(name)
    return out


def check(study, records: str, amend: str | None = None) -> dict:
    """Refuse a study whose grid or claims changed after a test record existed (unless
    `amend` gives the reason: then discard the stale records and log the amendment); write
    or update provenance.json. Returns the provenance."""
    os.makedirs(records, exist_ok=True)
    prov, now = read(records), digests(study)
    tested = [c for c in study.cells if c.split == "test"]
    tests = [c.name for c in tested if os.path.exists(os.path.join(records, f"{c.name}.json"))]
    # records of cells the grid no longer has (a group renamed or dropped) were made too: a
    # grid without them is an amendment, and they move to discarded/ with it
    names = {c.name for c in study.selection_cells + study.cells}
    tests += [n for n in record_names(records) if n not in names]
    adopting = prov is None and bool(tests)
    if prov is None:
        prov = {"study": study.name, **now, "amendments": []}
    changed = ["records adopted"] if adopting else [k for k in ("grid", "claims") if prov[k] != now[k]]
    if changed and tests and not amend:
        if adopting:
            raise AmendmentNeeded(
                f"study {study.name}: {len(tests)} test records in {records} but no {FILE}, so what they were "
                f'made under is unknown; rerun with --amend "why" to adopt them (the report lists it)'
            )
        stale = _stale(study, records)
        raise AmendmentNeeded(
            f"study {study.name}: its {' and '.join(changed)} changed since its {len(tests)} test records were made"
            + (f" (records of another config or of no cell: {', '.join(stale)})" if stale else "")
            + '; rerun with --amend "why" to continue (stale records move to '
            f"{os.path.join(records, DISCARDED)}; the report lists the amendment), or restore the study module"
        )
    if changed and tests:
        discarded = discard(records, _stale(study, records))
        prov["amendments"].append({
            "date": datetime.date.today().isoformat(),
            "commit": commit(),
            "why": amend,
            "changed": changed,
            "test_records": len(tests),
            "discarded": discarded,
        })  # fmt: skip
        print(f"amendment recorded in {os.path.join(records, FILE)}: {amend}", flush=True)
    elif amend:
        print(f"--amend: study {study.name} is as its test records were made (or has none); nothing to amend",
              flush=True)  # fmt: skip
    prov.update(now)
    write_json(os.path.join(records, FILE), prov)
    return prov


def discard(records: str, names: list[str]) -> list[str]:
    """Move these cells' records to records/discarded/<name>.<n>.json; returns the new paths
    relative to records."""
    out = []
    target = os.path.join(records, DISCARDED)
    for name in names:
        os.makedirs(target, exist_ok=True)
        n = sum(f.startswith(f"{name}.") for f in os.listdir(target))
        dest = os.path.join(DISCARDED, f"{name}.{n}.json")
        shutil.move(os.path.join(records, f"{name}.json"), os.path.join(records, dest))
        out.append(dest)
    return out


def markdown(study, prov: dict | None) -> list[str]:
    """The report's provenance section: earlier choices, amendments, discarded records."""
    lines = ["## Provenance", ""]
    if prov is not None:
        lines += [f"Grid digest `{prov['grid']}`, claims digest `{prov['claims']}` ({FILE} beside the records).", ""]
    if study.earlier:
        lines += ["Before the runner kept provenance (from the git history):", ""]
        lines += [f"- {e}" for e in study.earlier] + [""]
    amendments = (prov or {}).get("amendments", [])
    if amendments:
        lines += ["Amendments (made after test records existed):", "", "| date | commit | why | changed | discarded |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for a in amendments:
            gone = ", ".join(f"`{d}`" for d in a["discarded"]) or "none"
            lines.append(f"| {a['date']} | {a['commit']} | {a['why']} | {', '.join(a['changed'])} | {gone} |")
        lines.append("")
    if not study.earlier and not amendments:
        lines += ["No amendments: the grid, claims and gates are those the first test record was made under.", ""]
    return lines
