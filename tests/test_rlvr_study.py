"""The verifiable-reward study (experiments/studies/rlvr_arithmetic.py): its grid at equal
completions sampled, and at smoke size end to end (the learning rate chosen on
validation, the gates read from the selection's validation records, pass@k and the
lengths of right and wrong answers in every record)."""

import json

import pytest

from rlhf_jax.main import load_experiment, main
from rlhf_jax.studies import report as study_report
from rlhf_jax.studies import study as study_lib

SPEC = "experiments/studies/rlvr_arithmetic.py"


def test_every_online_method_samples_and_steps_alike_and_dpo_judges_as_many_completions():
    study = load_experiment(SPEC)
    main_cells = [c for c in study.cells if not c.select_with and c.seed == 0]
    assert sorted(c.group for c in main_cells) == sorted(
        ["rloo_k2", "rloo_k4", "raft_k2", "raft_k4", "reinforce", "vanilla_pg", "ppo", "dpo", "grpo", "dr_grpo",
         "dapo", "gspo", "cispo", "reinforce_pp"]
    )  # fmt: skip
    online = [c.pipeline.policy for c in main_cells if c.group != "dpo"]
    budget = {p.rl.rollout_batch * p.rl.draws * p.train.steps for p in online}
    assert budget == {6400, 64 * 3 * 33}  # DAPO draws 3 batches an iteration: a third of the iterations
    assert {p.rl.rollout_batch // p.rl.minibatch for p in online} == {4}
    assert {p.rl.reward_model for p in online} == {"gold"} and {p.rl.beta for p in online} == {0.0}
    dpo = next(c.pipeline for c in main_cells if c.group == "dpo")
    assert 2 * dpo.labelled_pairs == 6400 and dpo.reward_source == "task"
    assert {c.pipeline.reward_source for c in study.cells} == {"task"}
    assert len(study.selection_cells) == 14 * 6 * 2 and len(study.cells) == 14 * 5 + 13 * 3  # 2 values in reserve
    assert len(study.due_selection_cells("no-records")) == 14 * 4 * 2
    flips = [c for c in study.cells if "noise" in c.group]
    assert {c.pipeline.policy.rl.reward_noise_scale for c in flips} == {"flip"}


@pytest.mark.slow
def test_the_smoke_study_chooses_on_validation_gates_on_it_and_records_pass_at_k(tmp_path):
    records = tmp_path / "records"
    argv = ["--config", f"{SPEC}:smoke", "--workdir", str(tmp_path / "w"), "--records", str(records)]
    assert main(argv) == 0
    study = load_experiment(f"{SPEC}:smoke")
    found = [r for c in study.selection_cells + study.test_cells(str(records))
             if (r := study_lib.read_record(str(records), c))]  # fmt: skip
    assert len(found) == len(study.selection_cells) + len(study.cells)
    test = study_report.test_records(study, found)
    for r in test:
        m = r["metrics"]
        assert 0 <= m["policy.verifiable.pass@1"] <= m["policy.verifiable.pass@8"] <= 1
        assert "policy.verifiable.wrong_length" in m and r["curve"] and "gold" in r["curve"][-1]
    gates = study_report.verdicts(study, found)["gates"]
    assert {g.name for g in study.gates} == set(gates) and all(s["n"] == 1 for s in gates.values())
    sft = next(r for r in found if r["group"].startswith("select."))["metrics"]["sft.verifiable.pass@1"]
    assert gates["headroom"]["mean"] == pytest.approx(sft)  # read from a validation record
    report = (records / "report.md").read_text()
    assert "lr chosen per group on the validation split" in report and "## Claims" in report
    assert json.loads((records / "provenance.json").read_text())["study"] == "rlvr_arithmetic_smoke"
