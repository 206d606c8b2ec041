"""The study runner: its plan (shared stages once), the report's intervals on hand-made
records, and, end to end at smoke size, --cell, resuming after SIGKILL, and --jobs."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from rlhf_jax.main import load_experiment, main
from rlhf_jax.studies import provenance as study_provenance
from rlhf_jax.studies import report as study_report
from rlhf_jax.studies import study as study_lib
from rlhf_jax.studies.records import cell_key
from rlhf_jax.studies.selection import Selection

SMOKE = "experiments/studies/rloo_paper.py:smoke"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def selection_records(study, records, gold_by_lr):
    """Hand-made records of the selection cells: the validation gold reward per lr label."""
    records.mkdir(exist_ok=True)
    for cell in study.selection_cells:
        label = dict(cell.settings)["lr"]
        if label not in gold_by_lr:  # a value in reserve past the grid's edge
            continue
        rec = {"key": study_lib.cell_key(cell), "metrics": {"policy.greedy.gold.mean": gold_by_lr[label]}}
        (records / f"{cell.name}.json").write_text(json.dumps(rec))


def test_the_plan_runs_the_selection_first_then_the_test_cells_sharing_one_sft_and_reward_model_per_seed(tmp_path):
    study = load_experiment(SMOKE)
    records = tmp_path / "records"
    first = study_lib.plan(study, str(tmp_path), str(records))
    cells = [j.key for j in first if j.key.startswith("cells/")]
    assert sorted(cells) == sorted(f"cells/{c.name}" for c in study.selection_cells) and len(cells) == 4
    assert sorted(j.key.split("/")[1].split("-")[0] for j in first if j.key.startswith("shared/")) == ["reward", "sft"]
    with pytest.raises(ValueError, match="chosen on the validation split first"):
        study.cell("raft_k2.seed1", str(records))

    selection_records(study, records, {"0.01": 0.2, "0.03": 0.5})
    jobs = study_lib.plan(study, str(tmp_path), str(records))
    keys = [j.key for j in jobs]
    cells = [k for k in keys if k.startswith("cells/")]
    assert sorted(cells) == sorted(f"cells/{c.name}" for c in study.cells) and len(cells) == 5
    shared = [k for k in keys if k.startswith("shared/")]  # seed 0's were planned above; seed 1's only now
    assert sorted(k.split("/")[1].split("-")[0] for k in shared) == ["reward", "reward", "sft", "sft"]
    for job in jobs:
        assert all(keys.index(n) < keys.index(job.key) for n in job.needs)
        if job.key.startswith("cells/"):
            assert len(job.needs) == 2  # its seed's SFT and reward model
    by_seed = {}
    for cell in study.test_cells(str(records)) + study.selection_cells:
        by_seed.setdefault(cell.seed, set()).add(study_lib.place(cell, str(tmp_path)).shared)
    assert all(len(v) == 1 for v in by_seed.values()) and len(by_seed) == 2


def test_the_selection_takes_the_best_mean_on_validation_and_the_test_cells_run_with_it(tmp_path):
    study = load_experiment(SMOKE)
    for cell in study.selection_cells:  # the policy stage and its evaluation read the validation split
        assert cell.pipeline.policy.data.eval_split == "validation"
        assert cell.pipeline.sft.data.eval_split == cell.pipeline.reward.data.eval_split == "test"
    records = tmp_path / "records"
    selection_records(study, records, {"0.01": 0.2, "0.03": 0.5})
    chosen = study.chosen(str(records))
    assert {g: c["value"] for g, c in chosen.items()} == {"rloo_k2": 3e-2, "raft_k2": 3e-2}
    for cell in study.test_cells(str(records)):
        assert cell.pipeline.policy.optim.learning_rate == 3e-2 and dict(cell.settings)["lr"] == "0.03"
        assert cell.pipeline.policy.data.eval_split == "test"
    selection_records(study, records, {"0.01": 0.5, "0.03": 0.5})  # a tie: the first value of the grid
    assert {c["value"] for c in study.chosen(str(records)).values()} == {1e-2}
    text = study_report.selection_markdown(study, study.chosen(str(records)))
    assert "| rloo_k2 | **0.500** | 0.500 |" in text
    (records / f"{study.selection_cells[0].name}.json").unlink()  # rloo_k2's selection incomplete
    assert [c.group for c in study.test_cells(str(records))] == ["raft_k2", "raft_k2"]


def test_a_best_value_at_the_grids_edge_tries_the_next_value_past_it_until_interior_or_the_reserve_is_spent():
    sel = Selection("lr", (1e-2, 3e-2), lambda p, v: p, seeds=(0,), below=(3e-3, 1e-3), above=(1e-1,))
    assert sel.all_values == (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)

    def walk(means):
        return sel.walk(means.get)

    assert walk({1e-2: 0.2}) == ([1e-2, 3e-2], None)  # a record missing: no choice yet
    assert walk({1e-2: 0.2, 3e-2: 0.5}) == ([1e-2, 3e-2, 1e-1], None)  # best at the top: 0.1 joins
    tried, choice = walk({1e-2: 0.2, 3e-2: 0.5, 1e-1: 0.4})
    assert tried == [1e-2, 3e-2, 1e-1] and (choice["value"], choice["edge"]) == (3e-2, False)
    assert choice["means"] == {"0.01": 0.2, "0.03": 0.5, "0.1": 0.4}
    tried, choice = walk({1e-2: 0.2, 3e-2: 0.5, 1e-1: 0.6})  # the reserve above is spent: chosen at the edge
    assert (choice["value"], choice["edge"]) == (1e-1, True)
    assert walk({1e-2: 0.5, 3e-2: 0.2}) == ([3e-3, 1e-2, 3e-2], None)  # best at the bottom: the nearest below
    assert walk({1e-2: 0.5, 3e-2: 0.2, 3e-3: 0.6}) == ([1e-3, 3e-3, 1e-2, 3e-2], None)  # and the next
    tried, choice = walk({1e-2: 0.5, 3e-2: 0.2, 3e-3: 0.6, 1e-3: 0.55})
    assert (choice["value"], choice["edge"], tried[0]) == (3e-3, False, 1e-3)
    assert walk({1e-2: 0.5, 3e-2: 0.5, 3e-3: 0.1})[1]["value"] == 1e-2  # the first of equals, then interior
    assert Selection("lr", (1e-2, 3e-2), lambda p, v: p, seeds=(0,)).walk({1e-2: 0.5, 3e-2: 0.2}.get)[1]["edge"]
    with pytest.raises(ValueError, match="values must ascend"):
        Selection("lr", (3e-2, 1e-2), lambda p, v: p, seeds=(0,), above=(1e-1,))
    with pytest.raises(ValueError, match="values must ascend"):
        Selection("lr", (1e-2, 3e-2), lambda p, v: p, seeds=(0,), below=(1e-3, 3e-3))


def test_a_group_at_the_edge_runs_the_value_past_it_on_validation_before_its_test_cells(tmp_path):
    smoke = load_experiment(SMOKE)
    study = dataclasses.replace(smoke, selection=dataclasses.replace(smoke.selection, above=(0.1,)))
    records = tmp_path / "records"
    selection_records(study, records, {"0.01": 0.2, "0.03": 0.5})  # both groups' best is the top of the grid
    keys = [j.key for j in study_lib.plan(study, str(tmp_path), str(records))]
    assert sorted(k for k in keys if k.startswith("cells/")) == [
        "cells/select.raft_k2.lr=0.1.seed0", "cells/select.rloo_k2.lr=0.1.seed0"
    ]  # fmt: skip
    assert study.chosen(str(records)) == {} and study.test_cells(str(records)) == ()
    selection_records(study, records, {"0.01": 0.2, "0.03": 0.5, "0.1": 0.4})
    assert {g: c["value"] for g, c in study.chosen(str(records)).items()} == {"rloo_k2": 3e-2, "raft_k2": 3e-2}
    assert len(study.test_cells(str(records))) == len(study.cells)
    text = study_report.selection_markdown(study, study.chosen(str(records)))
    assert "| rloo_k2 | 0.200 | **0.500** | 0.400 |" in text and "lr=0.1 |" in text
    selection_records(study, records, {"0.01": 0.2, "0.03": 0.5, "0.1": 0.6})
    text = study_report.selection_markdown(study, study.chosen(str(records)))
    assert "| rloo_k2 (at the edge) | 0.200 | 0.500 | **0.600** |" in text


def test_a_variant_group_runs_no_selection_of_its_own_and_takes_its_base_groups_value(tmp_path):
    study = load_experiment(SMOKE)
    (variant,) = [c for c in study.cells if c.group == "rloo_k2.noise=3"]
    assert variant.select_with == "rloo_k2" and study.selecting_groups == ["rloo_k2", "raft_k2"]
    assert not [c for c in study.selection_cells if "noise" in c.name]
    records = tmp_path / "records"
    selection_records(study, records, {"0.01": 0.2, "0.03": 0.5})
    (records / "select.raft_k2.lr=0.03.seed0.json").write_text(
        json.dumps({"key": study_lib.cell_key(study.selection_cells[-1]), "metrics": {"policy.greedy.gold.mean": 0.0}})
    )  # raft_k2 now chooses 0.01, rloo_k2 (and its variant) 0.03
    got = {c.group: c for c in study.test_cells(str(records))}
    assert got["raft_k2"].pipeline.policy.optim.learning_rate == 1e-2
    noisy = got["rloo_k2.noise=3"].pipeline.policy
    assert noisy.optim.learning_rate == 3e-2 and (noisy.rl.reward_noise, noisy.rl.reward_noise_scale) == (
        3.0,
        "score_std",
    )
    assert study.cell("rloo_k2.noise=3.seed0", str(records)).pipeline.policy.optim.learning_rate == 3e-2
    with pytest.raises(ValueError, match="selects with 'ppo', which is not a group that runs the selection"):
        study_lib.StudyConfig("s", (*study.cells, study_lib.Cell("x", 0, variant.pipeline, select_with="ppo")),
                              selection=study.selection)  # fmt: skip
    with pytest.raises(ValueError, match=r"figure f names groups it does not have: \['ppo'\]"):
        study_lib.StudyConfig("s", study.cells, selection=study.selection,
                              figures=(study_lib.Figure("f", "t", ("rloo_k2", "ppo"), ("gold",)),))  # fmt: skip


def test_a_cell_with_a_current_record_is_not_planned_and_a_changed_one_is(tmp_path):
    study = load_experiment(SMOKE)
    records = tmp_path / "records"
    records.mkdir()
    cell = study.selection_cells[0]
    (records / f"{cell.name}.json").write_text(json.dumps({"key": study_lib.cell_key(cell)}))
    assert f"cells/{cell.name}" not in [j.key for j in study_lib.plan(study, str(tmp_path), str(records))]
    (records / f"{cell.name}.json").write_text(json.dumps({"key": "an-older-config"}))
    assert f"cells/{cell.name}" in [j.key for j in study_lib.plan(study, str(tmp_path), str(records))]
    rl = cell.pipeline.policy.rl  # an option at its default does not count; a changed value does
    same = dataclasses.replace(rl, reward_noise_scale="absolute")
    assert study_lib.cell_key(cell) == study_lib.cell_key(with_rl(cell, same))
    assert study_lib.cell_key(cell) != study_lib.cell_key(with_rl(cell, dataclasses.replace(rl, beta=0.5)))


def with_rl(cell, rl):
    policy = dataclasses.replace(cell.pipeline.policy, rl=rl)
    return dataclasses.replace(cell, pipeline=dataclasses.replace(cell.pipeline, policy=policy))


def test_a_validation_cells_record_leaves_the_grid_open_and_it_must_evaluate_on_validation(tmp_path):
    study = load_experiment("experiments/studies/iterated_rlhf.py:smoke")
    records = str(tmp_path / "records")
    validation = next(c for c in study.cells if c.split == "validation")
    os.makedirs(records)
    with open(os.path.join(records, f"{validation.name}.json"), "w") as f:
        json.dump({"cell": validation.name, "key": cell_key(validation)}, f)
    study_provenance.check(study, records)
    test = next(c for c in study.cells if c.split == "test")
    hotter = dataclasses.replace(test.pipeline, labeller_temperature=0.1)
    changed = dataclasses.replace(
        study, cells=tuple(dataclasses.replace(c, pipeline=hotter) if c is test else c for c in study.cells)
    )
    study_provenance.check(changed, records)  # no test record yet: the digests follow the grid
    with open(os.path.join(records, f"{test.name}.json"), "w") as f:
        json.dump({"cell": test.name, "key": cell_key(dataclasses.replace(test, pipeline=hotter))}, f)
    with pytest.raises(study_provenance.AmendmentNeeded):
        study_provenance.check(study, records)  # now a test record fixes it
    with pytest.raises(ValueError, match="validation cell whose policy evaluates on the 'test' split"):
        dataclasses.replace(validation, pipeline=test.pipeline)
    gold = "sft.sampled.gold.mean"
    found = [{"cell": c.name, "group": c.group, "seed": 0, "metrics": {gold: 9.0 if c is validation else 1.0},
              "commit": "", "machine": "", "seconds": 0} for c in study.cells]  # fmt: skip
    assert study_report.results(study, found)["rows"]["SFT"]["sampled gold reward"]["mean"] == 1.0  # the test split's
    assert [r["group"] for r in study_report.test_records(study, found)] == study.test_groups
    assert "validation" not in study.test_groups and "validation" in study.groups


def test_interval_is_the_t_interval_of_the_mean():
    got = study_report.interval([1.0, 2.0, 3.0])
    half = 4.302652729749464 * 1.0 / np.sqrt(3)  # t_{0.975, 2} * sd / sqrt(n)
    assert got["mean"] == 2.0 and got["n"] == 3
    np.testing.assert_allclose([got["low"], got["high"]], [2 - half, 2 + half], rtol=1e-9)
    one = study_report.interval([5.0])
    assert one["mean"] == 5.0 and np.isnan(one["low"]) and np.isnan(one["high"])


def record(cell, gold, sft_gold, win):
    return {
        "cell": cell.name, "group": cell.group, "seed": cell.seed, "commit": "abc", "machine": "m", "seconds": 1.0,
        "metrics": {"policy.greedy.gold.mean": gold, "sft.greedy.gold.mean": sft_gold, "policy_vs_sft.greedy": win},
        "curve": [],
    }  # fmt: skip


def test_the_report_gives_each_group_and_the_sft_its_mean_and_interval_and_names_missing_cells():
    study = load_experiment(SMOKE)
    metrics = (study_lib.Metric("gold", "{p}.greedy.gold.mean"), study_lib.Metric("win vs SFT", "policy_vs_sft.greedy"))
    study = study_lib.StudyConfig("s", study.cells[:4], metrics)
    a0, a1, b0, b1 = study.cells  # rloo_k2 seeds 0, 1; raft_k2 seeds 0, 1
    records = [record(a0, 1.0, 0.0, 0.6), record(a1, 3.0, 0.5, 0.8), record(b0, 2.0, 0.0, 0.7)]
    selecting = study_lib.Cell("select.rloo_k2.lr=1", 0, a0.pipeline)  # evaluated on validation: not in a row
    res = study_report.results(study, [*records, record(selecting, 9.0, 9.0, 1.0)])
    assert res["missing"] == [b1.name]
    assert res["rows"]["rloo_k2"]["gold"]["mean"] == 2.0 and res["rows"]["rloo_k2"]["gold"]["n"] == 2
    assert res["rows"]["SFT"]["gold"]["mean"] == 0.25 and "win vs SFT" not in res["rows"]["SFT"]  # one per seed
    assert res["rows"]["raft_k2"]["gold"]["n"] == 1
    half = 12.706204736174707 * np.std([1.0, 3.0], ddof=1) / np.sqrt(2)
    text = study_report.markdown(study, res)
    assert f"| rloo_k2 | 2 | 2.000 [{2 - half:.3f}, {2 + half:.3f}] | 0.700 [" in text
    assert "| raft_k2 | 1 | 2.000 (n=1) | 0.700 (n=1) |" in text and "| SFT | 2 | 0.250 [" in text
    assert f"Missing cells (1): {b1.name}." in text


def test_a_figure_tabulates_each_groups_mean_over_training_and_last_value_and_averages_generation_curves(
    tmp_path, monkeypatch
):
    smoke = load_experiment(SMOKE)
    a0, a1, b0 = smoke.cells[:3]  # rloo_k2 seeds 0, 1; raft_k2 seed 0
    figures = (
        study_lib.Figure("f", "gold of two methods", ("rloo_k2", "raft_k2"), ("gold",)),
        study_lib.Figure("g", "per step", ("SFT", "rloo_k2"), source="generation"),
    )
    study = study_lib.StudyConfig("s", smoke.cells[:4], figures=figures)
    recs = [record(c, 0.0, 0.0, 0.5) for c in (a0, a1, b0)]
    recs[0]["curve"] = [{"completions": 8, "gold": 1.0}, {"completions": 16, "gold": 3.0}]
    recs[1]["curve"] = [{"completions": 8, "gold": 3.0}, {"completions": 16, "gold": 5.0}]
    recs[2]["curve"] = [{"completions": 8, "gold": -1.0}]
    sfts, pols = ([0.5, 0.4], [0.7, 0.6], [0.5, 0.4]), ([0.2, 0.1], [0.4, 0.3], [0.0, 0.0])  # SFT: one per seed
    for r, sft, pol in zip(recs, sfts, pols, strict=True):
        r["generation"] = {"sft": {"normalised_entropy": sft}, "policy": {"normalised_entropy": pol}}
    table = study_report.figure_results(study, recs)["f"]
    assert table["rloo_k2"]["gold"]["mean"]["mean"] == 3.0 and table["rloo_k2"]["gold"]["last"]["mean"] == 4.0
    assert table["raft_k2"]["gold"]["last"] == {"mean": -1.0, "low": table["raft_k2"]["gold"]["last"]["low"], "high":
        table["raft_k2"]["gold"]["last"]["high"], "n": 1}  # fmt: skip
    text = study_report.figures_markdown(study, {"f": table})
    half = 12.706204736174707 * np.std([2.0, 4.0], ddof=1) / np.sqrt(2)
    assert f"| rloo_k2 | 2 | 3.000 [{3 - half:.3f}, {3 + half:.3f}] | 4.000 [" in text
    assert "| raft_k2 | 1 | -1.000 (n=1) | -1.000 (n=1) |" in text
    drawn = {}
    monkeypatch.setattr(study_report.plots, "step_curves", lambda curves, out, name: drawn.setdefault(name, curves))
    study_report.figure_plots(study, recs, str(tmp_path))
    got = drawn["g"]  # SFT: one curve per seed (seeds 0 and 1); rloo_k2: its two cells
    np.testing.assert_allclose(got["SFT (n=2)"]["normalised_entropy"], [0.6, 0.5])
    np.testing.assert_allclose(got["rloo_k2 (n=2)"]["normalised_entropy"], [0.3, 0.2])


def test_an_against_n_figure_gives_each_key_its_interval_at_every_n(tmp_path):
    ps = load_experiment("experiments/studies/process_supervision.py:smoke")
    cell = ps.cells[0]
    figure = study_lib.Figure("bon", "Best-of-N", (cell.group,), ("orm", "majority"), source="against_n")
    study = dataclasses.replace(ps, figures=(figure,))
    recs = []
    for seed, (o1, o4) in enumerate(((0.2, 0.5), (0.4, 0.7))):
        rec = {"cell": f"{cell.group}.seed{seed}", "group": cell.group, "seed": seed, "metrics": {}}
        rec["curve"] = [{"n": 1, "orm": o1, "majority": o1}, {"n": 4, "orm": o4}]
        recs.append(rec)
    table = study_report.figure_results(study, recs)["bon"][cell.group]
    assert table["orm"]["1"]["mean"] == pytest.approx(0.3) and table["orm"]["4"]["mean"] == pytest.approx(0.6)
    assert table["majority"]["1"]["n"] == 2 and "4" not in table["majority"]
    half = 12.706204736174707 * np.std([0.2, 0.4], ddof=1) / np.sqrt(2)
    text = study_report.figures_markdown(study, {"bon": {cell.group: table}})
    assert f"| orm | 0.300 [{0.3 - half:.3f}, {0.3 + half:.3f}] | 0.600 [" in text
    assert "| majority | 0.300 [" in text and text.rstrip().endswith("| - |")
    paths = study_report.figure_plots(study, recs, str(tmp_path))["bon"]
    assert [os.path.basename(p) for p in paths] == [f"bon_{cell.group}.png"] and os.path.exists(paths[0])


def test_a_study_refuses_set_and_an_unknown_cell_before_any_work(tmp_path, capsys):
    assert main(["--config", SMOKE, "--workdir", str(tmp_path / "a"), "--set", "seed=1"]) == 2
    assert "--set: not for a study" in capsys.readouterr().err
    assert main(["--config", SMOKE, "--workdir", str(tmp_path / "b"), "--cell", "nope.seed0"]) == 2
    assert "--cell nope.seed0: study rloo_paper_smoke has no such cell" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")


def records_in(directory):
    """The cells' records (provenance.json, the runner's own, left out)."""
    if not os.path.isdir(directory):
        return []
    return sorted(f for f in os.listdir(directory) if f.endswith(".json") and f != "provenance.json")


@pytest.mark.slow
def test_cell_runs_only_that_cell_and_the_shared_stages_it_needs(tmp_path):
    workdir, records = tmp_path / "study", tmp_path / "records"
    args = ["--config", SMOKE, "--workdir", str(workdir), "--records", str(records)]
    name = "select.raft_k2.lr=0.03.seed0"
    assert main([*args, "--cell", name]) == 0
    assert records_in(records) == [f"{name}.json"]
    assert sorted(os.listdir(workdir / "cells")) == [name]
    assert sorted(d.split("-")[0] for d in os.listdir(workdir / "shared")) == ["reward", "sft"]
    got = json.loads((records / f"{name}.json").read_text())
    assert got["settings"] == {"method": "raft", "k": "2", "lr": "0.03"} and got["key"] == study_lib.cell_key(
        load_experiment(SMOKE).cell(name, str(records))
    )
    assert np.isfinite(got["metrics"]["policy.greedy.gold.mean"]) and got["curve"][-1]["completions"] > 0
    assert "Missing cells (5)" in (workdir / "report.md").read_text()  # no test cell yet


@pytest.mark.slow
def test_a_study_killed_part_way_resumes_only_what_is_missing_and_trains_shared_stages_once(tmp_path):
    workdir, records = tmp_path / "study", tmp_path / "records"
    cmd = [sys.executable, "-m", "rlhf_jax.main", "--config", SMOKE, "--workdir", str(workdir)]
    cmd += ["--records", str(records)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while len(records_in(records)) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)  # part-way: one cell recorded, the next one under way
    proc.wait()
    first = records_in(records)
    assert 1 <= len(first) < 4, first  # selection cells
    done_before = {f: (records / f).read_text() for f in first}

    out = subprocess.run([*cmd, "--jobs", "2"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    study = load_experiment(SMOKE)
    assert records_in(records) == sorted(f"{c.name}.json" for c in study.cells + study.selection_cells)
    assert all((records / f).read_text() == text for f, text in done_before.items())  # not run again
    assert f"cells/{first[0][:-5]}" not in out.stdout  # only the missing cells were planned
    # one SFT and one reward model per seed, each trained once (its log holds one run of its steps)
    shared = sorted(os.listdir(workdir / "shared"))
    assert sorted(d.split("-")[0] for d in shared) == ["reward", "reward", "sft", "sft"]
    for d in shared:
        lines = (workdir / "shared" / d / "metrics.jsonl").read_text().splitlines()
        steps = [json.loads(line)["step"] for line in lines if line.strip()]
        summary = json.loads((workdir / "shared" / d / "summary.json").read_text())
        assert steps == sorted(set(steps)) and steps[-1] == summary["steps"], d
    res = json.loads((workdir / "results.json").read_text())
    assert res["missing"] == [] and set(res["rows"]) == {"SFT", "rloo_k2", "raft_k2", "rloo_k2.noise=3"}
    assert [row["greedy gold reward"]["n"] for row in res["rows"].values()] == [2, 2, 2, 1]
    assert os.path.exists(records / "plots" / "curve_gold.png") and os.path.exists(records / "report.md")
    assert set(res["figures"]["noise"]) == {"rloo_k2", "rloo_k2.noise=3"}  # the figure's table and plots
    assert os.path.exists(records / "plots" / "noise_gold.png") and os.path.exists(records / "plots" / "generation.png")
    assert (
        set(res["selection"]) == {"rloo_k2", "raft_k2"} and "lr chosen per group" in (records / "report.md").read_text()
    )


def test_records_that_name_a_file_are_refused(tmp_path, capsys):
    (tmp_path / "records").write_text("a file")
    argv = ["--config", SMOKE, "--workdir", str(tmp_path / "w"), "--records", str(tmp_path / "records")]
    assert main(argv) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_a_job_process_ends_when_the_study_process_is_killed(tmp_path):
    pid_file = tmp_path / "job.pid"
    parent = f"""
import sys, time
from rlhf_jax.studies.jobs import Job, run_jobs
child = [sys.executable, "-c", "import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"]
run_jobs([Job("cells/x", (), None)], 1, lambda key: child, {str(tmp_path / "logs")!r})
"""
    proc = subprocess.Popen([sys.executable, "-c", parent], cwd=ROOT)
    for _ in range(600):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.1)
    child = int(pid_file.read_text())
    proc.kill()  # SIGKILL: the parent cannot stop its jobs itself
    proc.wait()
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the job process outlived its killed parent")


def test_a_cell_another_process_holds_is_waited_for_and_not_computed_twice(tmp_path, monkeypatch):
    import threading

    from rlhf_jax.workdir import Lock

    study = load_experiment(SMOKE)
    records = tmp_path / "records"
    records.mkdir()
    cell = study.selection_cells[0]
    placed = study_lib.place(cell, str(tmp_path))
    monkeypatch.setattr(study_lib, "_run_cell", lambda *a: pytest.fail("the cell was computed a second time"))
    out = {}
    with Lock(os.path.join(str(tmp_path), "locks", cell.name)):  # the first study runs the cell
        thread = threading.Thread(target=lambda: out.update(got=study_lib.run_cell(study, placed, str(records))))
        thread.start()
        time.sleep(1.0)
        assert thread.is_alive()  # waiting
        record = {"cell": cell.name, "key": study_lib.cell_key(cell), "metrics": {"x": 1.0}}
        (records / f"{cell.name}.json").write_text(json.dumps(record))
    thread.join(timeout=30)
    assert out["got"]["metrics"] == {"x": 1.0}
