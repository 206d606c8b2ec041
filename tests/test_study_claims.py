"""Verdicts by the rule (study_claims) on hand-made records, the runner's provenance
(a changed grid or claim refused without --amend, listed with it), and the committed
reports: their claim tables are what the rule gives from the committed records, and the
README shows the same tables."""

import dataclasses
import glob
import json
import math
import os
import shutil

import numpy as np
import pytest

from rlhf_jax import docs
from rlhf_jax.main import load_experiment, main
from rlhf_jax.studies import claims as study_claims
from rlhf_jax.studies import provenance as study_provenance
from rlhf_jax.studies import report as study_report
from rlhf_jax.studies import study as study_lib
from rlhf_jax.studies.claims import SFT, Arm, Claim, Diff, Gate, Trend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "experiments/studies/rloo_paper.py:smoke"


def records(a_by_seed, b_by_seed=None, extra=None):
    """Records of groups "a" and "b" whose metric "m" takes the given per-seed values."""
    out = [{"group": "a", "seed": s, "metrics": {"m": v, **(extra or {})}} for s, v in enumerate(a_by_seed)]
    if b_by_seed is not None:
        out += [{"group": "b", "seed": s, "metrics": {"m": v}} for s, v in enumerate(b_by_seed)]
    return out


def claim(direction=+1, margin=0.01, gates=(), comparisons=None):
    comparisons = comparisons or (Diff(Arm("a", "m"), Arm("b", "m")),)
    return Claim("c", "a beats b", comparisons, direction, margin, "hand", gates)


def verdict(a, b, **kw):
    return study_claims.evaluate_claim(claim(**kw), records(a, b), {})["verdict"]


def test_the_paired_interval_and_p_values_by_hand():
    got = study_claims.paired([1.0, 2.0, 3.0])  # mean 2, sd 1, se 1/sqrt(3), t(0.975, 2) = 4.302653
    half = 4.302653 / math.sqrt(3)
    assert got["n"] == 3 and got["mean"] == pytest.approx(2.0)
    assert (got["low"], got["high"]) == pytest.approx((2 - half, 2 + half), abs=1e-5)
    assert got["p"] == pytest.approx(0.07418, abs=1e-4)  # t = 2 sqrt(3) on 2 degrees of freedom
    assert got["sign_p"] == pytest.approx(2 / 8)  # only all-plus and all-minus reach |mean| 2
    assert study_claims.sign_flip_p([1.0, -1.0, 2.0, 0.5]) == pytest.approx(8 / 16)  # |mean| >= 0.625: by hand
    flat = study_claims.paired([0.05, 0.05, 0.05])
    assert (flat["low"], flat["high"], flat["p"]) == pytest.approx((0.05, 0.05, 0.0))
    one = study_claims.paired([0.3])
    assert math.isnan(one["low"]) and math.isnan(one["p"])


def test_holm_on_a_hand_example():
    # sorted: 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04, raised to 0.06 (monotone); nan is not counted
    assert study_claims.holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    got = study_claims.holm([0.02, math.nan])
    assert got[0] == pytest.approx(0.02) and math.isnan(got[1])
    assert study_claims.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def test_each_verdict_of_the_rule():
    assert verdict([0.30, 0.32, 0.31], [0.10, 0.11, 0.10]) == "agrees"
    assert verdict([0.10, 0.11, 0.10], [0.30, 0.32, 0.31]) == "disagrees"
    assert verdict([0.100, 0.101, 0.099], [0.100, 0.100, 0.100], margin=0.05) == "equal here"
    assert verdict([0.3, 0.1, 0.2], [0.1, 0.3, 0.2], margin=0.01) == "cannot tell"
    assert verdict([0.30, 0.32, 0.31], [0.10, 0.11, 0.10], direction=-1) == "disagrees"
    # the paper says equal: inside the margin agrees, a difference found disagrees
    assert verdict([0.100, 0.101, 0.099], [0.100, 0.100, 0.100], direction=0, margin=0.05) == "agrees"
    assert verdict([0.30, 0.32, 0.31], [0.10, 0.11, 0.10], direction=0) == "disagrees"
    # inside the margin comes before a difference found: a difference too small to matter
    assert verdict([0.101, 0.102, 0.101], [0.100, 0.100, 0.100], margin=0.05) == "equal here"
    assert verdict([0.3], [0.1]) == "not tested"  # one seed: no interval


def test_a_failed_or_unmeasured_gate_makes_the_claim_not_tested():
    recs = records([0.30, 0.32, 0.31], [0.10, 0.11, 0.10], extra={"acc": 0.6})
    low = Gate("rm", "accuracy", Arm("a", "acc"), low=0.7)
    high = Gate("rm", "accuracy", Arm("a", "acc"), low=0.5)
    missing = Gate("rm", "accuracy", Arm("a", "absent"), low=0.5)
    for gate, want in ((low, "not tested"), (high, "agrees"), (missing, "not tested")):
        ev = study_claims.evaluate((claim(gates=("rm",)),), (gate,), recs)
        assert ev["claims"][0]["verdict"] == want
    assert study_claims.evaluate((), (missing,), recs)["gates"]["rm"]["why"] == "not measured"
    # a comparison's own gate: that comparison is not tested, the others decide
    two = (Diff(Arm("a", "m"), Arm("b", "m")), Diff(Arm("a", "m"), 0.5, gates=("rm",)))
    ev = study_claims.evaluate((claim(comparisons=two),), (low,), recs)["claims"][0]
    assert ev["verdict"] == "agrees" and [r["verdict"] for r in ev["comparisons"]] == ["agrees", "not tested"]
    # a gate named twice by a comparison (a trend over pairs sharing a supervisor) is listed once
    twice = (Diff(Arm("a", "m"), 0.5, gates=("rm", "rm")),)
    assert study_claims.evaluate((claim(comparisons=twice),), (low,), recs)["claims"][0]["comparisons"][0][
        "failed_gates"
    ] == ["rm"]


def test_many_comparisons_combine_all_for_agreement_and_holm_against():
    # each comparison's interval above 0: all hold, each at 0.05 (intersection-union), no correction
    a = [0.30, 0.32, 0.31]
    ev = study_claims.evaluate_claim(
        claim(comparisons=(Diff(Arm("a", "m"), 0.1), Diff(Arm("a", "m"), 0.2))), records(a), {}
    )
    assert ev["verdict"] == "agrees" and ev["tested"] == 2
    # one comparison against the paper at p = 0.042, another at p = 0.9: Holm makes it 0.084, not found
    d1 = np.array([-0.0135, -0.01, -0.0065])  # mean -0.01, se 0.002: t = 4.95 on 2 degrees, p 0.038
    recs = [{"group": "a", "seed": s, "metrics": {"x": float(v), "y": float(w)}} for s, (v, w) in
            enumerate(zip(d1, [0.01, -0.012, 0.0], strict=True))]  # fmt: skip
    c = claim(comparisons=(Diff(Arm("a", "x"), 0.0), Diff(Arm("a", "y"), 0.0)), margin=0.001)
    ev = study_claims.evaluate_claim(c, recs, {})
    p = [r["p"] for r in ev["comparisons"]]
    assert p[0] < 0.05 < 2 * p[0] and ev["comparisons"][0]["p_holm"] == pytest.approx(2 * p[0])
    assert ev["verdict"] == "cannot tell"
    alone = study_claims.evaluate_claim(claim(comparisons=(Diff(Arm("a", "x"), 0.0),), margin=0.001), recs, {})
    assert alone["verdict"] == "disagrees"


def test_a_comparison_not_yet_measured_leaves_the_claim_not_tested_not_agreed():
    # "a" beats 0.1 at 3 seeds; group "c" has no record yet (a study still running)
    c = claim(comparisons=(Diff(Arm("a", "m"), 0.1), Diff(Arm("c", "m"), 0.1)))
    ev = study_claims.evaluate_claim(c, records([0.30, 0.32, 0.31]), {})
    assert ev["verdict"] == "not tested" and ev["why"] == "1 of 2 comparisons have fewer than 2 seeds"
    assert [r["verdict"] for r in ev["comparisons"]] == ["agrees", "not tested"] and ev["tested"] == 1
    # a comparison its own gate leaves out is not missing: the rest decide
    gated = claim(comparisons=(Diff(Arm("a", "m"), 0.1), Diff(Arm("c", "m"), 0.1, gates=("g",))))
    assert study_claims.evaluate_claim(gated, records([0.30, 0.32, 0.31]), {"g": {"passed": False}})["verdict"] == (
        "agrees"
    )


def test_a_trend_is_the_per_seed_slope_of_the_differences():
    recs = [{"group": f"g{x}", "seed": s, "metrics": {"m": 0.1 * x * (s + 1) + s}} for x in (0, 1, 2) for s in (0, 1)]
    trend = Trend(tuple((float(x), Diff(Arm(f"g{x}", "m"), 0.0)) for x in (0, 1, 2)), "slope")
    assert study_claims.comparison_values(recs, trend) == pytest.approx({0: 0.1, 1: 0.2})


def test_measures_read_metrics_curves_generation_config_and_functions():
    rec = {
        "group": "a",
        "seed": 0,
        "metrics": {"policy.x": 1.0, "sft.x": 2.0},
        "curve": [{"round": 0, "acc": 0.5, "gold": 1.0}, {"round": 1, "acc": 0.7, "gold": 3.0}],
        "generation": {"policy": {"h": [0.2, 0.4, float("nan")]}},
        "config": {"policy": {"rl": {"minibatch": 16}}},
    }
    m = study_claims.measure
    assert (m(rec, "{p}.x"), m(rec, "{p}.x", "sft"), m(rec, "nothing")) == (1.0, 2.0, None)
    assert (m(rec, "curve.mean:gold"), m(rec, "curve.last:gold"), m(rec, "curve[round=1]:acc")) == (2.0, 3.0, 0.7)
    assert m(rec, "curve[round=2]:acc") is None
    assert m(rec, "generation.{p}.first2:h") == pytest.approx(0.3) and m(rec, "generation.{p}.first3:h") is None
    assert m(rec, "config:policy.rl.minibatch") == 16.0 and m(rec, lambda r: r["seed"] + 0.5) == 0.5
    sft = study_claims.arm_values([rec, {**rec, "group": "b", "seed": 1}], Arm(SFT, "{p}.x"))
    assert sft == {0: 2.0, 1: 2.0}  # the SFT arm: any record at the seed, read as the SFT


def test_a_gate_may_read_the_selections_validation_records_and_the_sft_arm_only_the_test_records():
    selection = [{"group": "select.a.lr=0.1", "seed": s, "metrics": {"sft.m": 0.3, "m": 2.0}} for s in (0, 1)]
    test = [{"group": "a", "seed": s, "metrics": {"sft.m": 0.1, "m": 1.0}} for s in (0, 1)]
    on_validation = Gate("v", "a selection group's figure", Arm("select.a.lr=0.1", "m"), low=1.5)
    sft = Gate("s", "the test SFT's figure", Arm(SFT, "{p}.m"), high=0.2)
    status = study_claims.evaluate((), (on_validation, sft), test, selection)["gates"]
    assert status["v"]["passed"] and status["v"]["mean"] == 2.0
    assert status["s"]["passed"] and status["s"]["mean"] == 0.1  # not the selection's 0.3
    study_claims.check((), (on_validation,), ["a"], "s", ["select.a.lr=0.1"])
    with pytest.raises(ValueError, match="claim c names groups it does not have"):
        study_claims.check((claim(comparisons=(Diff(Arm("select.a.lr=0.1", "m"), Arm("a", "m")),)),), (), ["a", "b"],
                           "s", ["select.a.lr=0.1"])  # fmt: skip


def test_a_groups_test_cells_wait_until_one_of_its_claims_passes_its_gates_on_validation():
    def gate(name):
        return Gate(name, "on validation", Arm("a_validation", name), low=0.5)

    a_gated = claim(gates=("g1",), comparisons=(Diff(Arm("a", "m"), 0.0),))
    a_pair = Claim("p", "a beats b, pair by pair", (Diff(Arm("a", "m"), Arm("b", "m"), gates=("g2",)),
                   Diff(Arm("a", "n"), Arm("b", "n"), gates=("g3",))), +1, 0.01, "hand")  # fmt: skip
    c_free = Claim("f", "c above 0", (Diff(Arm("c", "m"), 0.0),), +1, 0.01, "hand")
    post_hoc = Gate("t", "on test", Arm("c", "m"), low=9.0, split="test, post hoc")
    tests = ["a", "b", "c", "d"]
    assert [g.name for g in (gate("g1"), post_hoc) if study_claims.on_validation(g, tests)] == ["g1"]
    assert not study_claims.on_validation(Gate("s", "sft", Arm(SFT, "{p}.m")), tests)

    def withheld(passed):
        status = {n: {"passed": n in passed} for n in ("g1", "g2", "g3")}
        return study_claims.withheld((a_gated, a_pair, c_free), status, tests)

    # nothing measured yet: a and b wait (each claim reading them has a gate that fails), c
    # (its claim has no gate on validation) and d (no claim reads it) run
    assert withheld(set()) == {"a": ["g1", "g2", "g3"], "b": ["g2", "g3"]}
    assert withheld({"g1"}) == {"b": ["g2", "g3"]}  # a's first claim can be tested; b's only claim cannot
    assert withheld({"g3"}) == {}  # one comparison of the pair claim is enough for a and b
    assert withheld({"g1", "g2", "g3"}) == {}


def test_claims_naming_unknown_groups_or_gates_are_refused():
    study = load_experiment(SMOKE)
    bad = claim(comparisons=(Diff(Arm("rloo_k2", "m"), Arm("ppo", "m")),))
    with pytest.raises(ValueError, match=r"claim c names groups it does not have: \['ppo'\]"):
        dataclasses.replace(study, claims=(bad,), gates=())
    with pytest.raises(ValueError, match=r"depends on gates it does not declare: \['rm'\]"):
        dataclasses.replace(study, claims=(claim(gates=("rm",), comparisons=(Diff(Arm("rloo_k2", "m"), 0.0),)),))
    with pytest.raises(ValueError, match="the margin needs its reason"):
        Claim("c", "s", (Diff(Arm("a", "m"), 0.0),), +1, 0.1, "")


# ----------------------------------------------------------------------------- provenance


def smoke_with_test_record(tmp_path):
    """The smoke study with its selection decided and one test cell recorded."""
    study = load_experiment(SMOKE)
    recs = tmp_path / "records"
    recs.mkdir(parents=True)
    for cell in study.selection_cells:
        rec = {"key": study_lib.cell_key(cell), "metrics": {"policy.greedy.gold.mean": 0.1}}
        (recs / f"{cell.name}.json").write_text(json.dumps(rec))
    study_provenance.check(study, str(recs))  # the grid is fixed from here on
    test = study.test_cells(str(recs))[0]
    (recs / f"{test.name}.json").write_text(json.dumps({"key": study_lib.cell_key(test), "metrics": {}}))
    return study, recs, test


def test_a_changed_grid_or_claim_is_refused_after_a_test_record_and_listed_with_amend(tmp_path):
    study, recs, test = smoke_with_test_record(tmp_path)
    assert study_provenance.check(study, str(recs))["amendments"] == []  # unchanged: runs on
    cells = tuple(dataclasses.replace(c, pipeline=dataclasses.replace(c.pipeline, seed=7)) if c.group == test.group
                  else c for c in study.cells)  # fmt: skip
    changed = dataclasses.replace(study, cells=cells)
    with pytest.raises(
        study_provenance.AmendmentNeeded, match=rf"its grid changed since its 1 test records.*{test.name}"
    ):
        study_provenance.check(changed, str(recs))
    assert (recs / f"{test.name}.json").exists()
    stricter = dataclasses.replace(study, claims=(dataclasses.replace(study.claims[0], margin=0.5),))
    with pytest.raises(study_provenance.AmendmentNeeded, match="its claims changed"):
        study_provenance.check(stricter, str(recs))

    prov = study_provenance.check(changed, str(recs), amend="seed 7 for the rloo_k2 cells")
    (a,) = prov["amendments"]
    assert a["why"] == "seed 7 for the rloo_k2 cells" and a["changed"] == ["grid"]
    # the test record and the rloo_k2 selection records were made under the old config
    assert f"discarded/{test.name}.0.json" in a["discarded"] and len(a["discarded"]) == 3
    assert not (recs / f"{test.name}.json").exists()
    assert (recs / "discarded" / f"{test.name}.0.json").exists()
    text = "\n".join(study_provenance.markdown(changed, study_provenance.read(str(recs))))
    assert "seed 7 for the rloo_k2 cells" in text and f"`discarded/{test.name}.0.json`" in text
    assert study_provenance.check(changed, str(recs))["amendments"] == prov["amendments"]  # now current


def test_records_of_cells_the_grid_no_longer_has_need_an_amendment_and_are_discarded_with_it(tmp_path):
    study, recs, test = smoke_with_test_record(tmp_path)
    dropped = dataclasses.replace(study, cells=tuple(c for c in study.cells if c.name != test.name))
    with pytest.raises(study_provenance.AmendmentNeeded, match=rf"its grid changed.*{test.name}"):
        study_provenance.check(dropped, str(recs))  # no cell of the new grid has a record, but one was made
    (a,) = study_provenance.check(dropped, str(recs), amend="the cell dropped")["amendments"]
    assert f"discarded/{test.name}.0.json" in a["discarded"] and not (recs / f"{test.name}.json").exists()


def test_before_any_test_record_the_grid_may_change_and_records_without_provenance_need_amend(tmp_path):
    study = load_experiment(SMOKE)
    recs = tmp_path / "records"
    study_provenance.check(study, str(recs))
    changed = dataclasses.replace(study, claims=())
    assert study_provenance.check(changed, str(recs))["amendments"] == []  # no test record: no amendment
    _, recs2, _ = smoke_with_test_record(tmp_path / "two")
    (recs2 / study_provenance.FILE).unlink()
    with pytest.raises(study_provenance.AmendmentNeeded, match="but no provenance.json"):
        study_provenance.check(study, str(recs2))
    prov = study_provenance.check(study, str(recs2), amend="adopted")
    assert prov["amendments"][0]["changed"] == ["records adopted"]


def test_the_command_line_refuses_a_changed_study_without_amend(tmp_path, capsys, monkeypatch):
    study, recs, test = smoke_with_test_record(tmp_path)
    stricter = dataclasses.replace(study, claims=(dataclasses.replace(study.claims[0], margin=0.5),))
    assert main(["--config", "experiments/quickstart.py", "--workdir", str(tmp_path / "q"), "--amend", "x"]) == 2
    assert "--amend are for studies" in capsys.readouterr().err
    monkeypatch.setattr("rlhf_jax.main.load_experiment", lambda spec: stricter)
    argv = ["--config", SMOKE, "--workdir", str(tmp_path / "w"), "--records", str(recs)]
    assert main(argv) == 2
    assert "rerun with --amend" in capsys.readouterr().err
    assert main([*argv, "--amend", " "]) == 2
    assert "--amend: say why" in capsys.readouterr().err


def test_a_damaged_record_is_named(tmp_path):
    study = load_experiment(SMOKE)
    cell = study.selection_cells[0]
    for text in ('{"key": "x", ', "[1, 2]", b"\xff\xfe".decode("latin-1")):
        (tmp_path / f"{cell.name}.json").write_text(text, encoding="latin-1")
        with pytest.raises(ValueError, match=rf"study record .*{cell.name}\.json is damaged"):
            study_lib.read_record(str(tmp_path), cell)


# ----------------------------------------------------------------------------- the committed studies

STUDIES = sorted(os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(ROOT, "studies/*/report.md")))


@pytest.mark.parametrize("name", STUDIES)
def test_each_reports_claim_table_is_the_rules_on_its_records_and_the_readme_shows_it(name):
    study = load_experiment(os.path.join(ROOT, f"experiments/studies/{name}.py"))
    recs = os.path.join(ROOT, "studies", name)
    found = [r for c in study.selection_cells + study.test_cells(recs) if (r := study_lib.read_record(recs, c))]
    verdicts = study_report.verdicts(study, found)
    block = "\n".join(study_report.claim_table(study, verdicts))
    with open(os.path.join(recs, "report.md")) as f:
        report = f.read()
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert docs.blocks(report)[("claims", study.name)] == block, f"{name}/report.md is stale: rerun the study"
    # the README shows it; a study still running may show it in docs/studies.md instead
    with open(os.path.join(ROOT, "docs", "studies.md")) as f:
        shown = docs.blocks(readme).get(("claims", study.name)) or docs.blocks(f.read()).get(("claims", study.name))
    assert shown == block, (
        f"the README's (or docs/studies.md's) {name} claims differ from the report: python -m rlhf_jax.docs"
    )
    prov = study_provenance.read(recs)
    assert prov is not None and prov["grid"] == study_provenance.digests(study)["grid"]
    assert prov["claims"] == study_provenance.digests(study)["claims"]


def test_a_study_with_every_record_current_writes_its_report_into_a_new_workdir(tmp_path):
    recs = tmp_path / "records"
    shutil.copytree(os.path.join(ROOT, "studies", "rloo_paper"), recs)  # complete, not being rerun
    (recs / "report.md").unlink()
    workdir = tmp_path / "not" / "yet"
    argv = ["--config", "experiments/studies/rloo_paper.py", "--workdir", str(workdir), "--records", str(recs)]
    assert main(argv) == 0
    assert (workdir / "results.json").exists() and "## Claims" in (recs / "report.md").read_text()
