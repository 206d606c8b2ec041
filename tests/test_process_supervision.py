"""Process against outcome supervision (`process_supervision.py`): a PRM's readings of
hand-made step probabilities, step positions in the token layout, calibration bins, the
settings a run refuses, and the whole run at smoke size (labels flow, active rounds)."""

import dataclasses
import json

import numpy as np
import pytest
from test_batching import tokenizer  # noqa: F401 - the fixture

from experiments import process_supervision as experiment
from rlhf_jax.batches import NEGATIVE, NEUTRAL, NO_STEP, POSITIVE
from rlhf_jax.eval import verifiers as V
from rlhf_jax.studies import process_samples
from rlhf_jax.studies import process_supervision as PS


def probs(*steps):
    """[1, S, 3] class probabilities from (negative, neutral, positive) triples."""
    return np.asarray([steps], np.float64)


def test_a_prms_three_readings_on_hand_made_steps():
    p = probs((0.1, 0.3, 0.6), (0.4, 0.1, 0.5), (0.0, 0.0, 1.0))
    valid = np.array([[True, True, False]])  # the third step was cut off: not read
    out = V.prm_scores(p, valid)
    assert out["product"][0] == pytest.approx(0.6 * 0.5)
    assert out["min"][0] == pytest.approx(0.5)
    assert out["first_error"][0] == pytest.approx(0.9 * 0.6)  # a neutral step is no error
    two = np.concatenate([probs((0, 0, 0.7), (0, 0, 0.7)), probs((0, 0, 0.6), (0, 0, 1.0))])
    ranked = V.prm_scores(two, np.ones((2, 2), bool))  # product: 0.49 < 0.6; min: 0.7 > 0.6
    assert ranked["product"][0] < ranked["product"][1] and ranked["min"][0] > ranked["min"][1]
    none = V.prm_scores(probs((0.0, 0.0, 1.0)), np.array([[False]]))
    assert all(v[0] == 0.0 for v in none.values())  # no step shown: no credit


def test_steps_are_non_blank_lines_the_answer_among_them_and_their_last_tokens_are_found(tokenizer):  # noqa: F811
    raw = "3 + 4 = 7\n\n7 - 2 = 5  \nThe answer is 5"
    assert [raw[e] for e in V.step_char_ends(raw)] == ["7", "5", "5"]  # the answer line is a step
    solution = process_samples.clean(raw)
    assert solution == "3 + 4 = 7\n7 - 2 = 5  \nThe answer is 5"
    assert V.step_char_ends("3 + 4 = 7") == [8]  # no answer line: every line a step
    assert V.token_of_chars([0, 2, 3, 9], [2, 1, 4]) == [0, 1, 2, None]  # tokens of 2, 1 and 4 characters
    prompt = "Compute: (3 + 4) - 2\n"
    b = V.solution_batch(tokenizer, [prompt, prompt], [solution, "The answer is 5"], P=16, C=24, max_steps=4)
    assert b["step_valid_BxS"].tolist() == [[True, True, True, False], [True, False, False, False]]
    for k, pos in enumerate(b["step_positions_BxS"][0, :3]):
        upto = tokenizer.decode(b["tokens_BxT"][0, 16 : pos + 1])
        assert upto.endswith(solution.split("\n")[k].rstrip())
    short = V.solution_batch(tokenizer, [prompt], [solution], P=16, C=6, max_steps=4)
    assert short["step_valid_BxS"][0].tolist() == [True, False, False, False]  # the second step is past C


def test_step_rewards_telescope_the_product_and_charge_the_step_that_drops_it():
    p = probs((0.0, 0.0, 0.9), (0.0, 0.0, 0.5), (0.0, 0.0, 1.0))
    r = V.step_rewards(p, np.array([[True, True, False]]))
    np.testing.assert_allclose(r, [[0.9 - 1.0, 0.45 - 0.9, 0.0]])
    assert r.sum() == pytest.approx(V.prm_scores(p, np.array([[True, True, False]]))["product"][0] - 1)
    np.testing.assert_allclose(V.step_rewards(p, np.zeros((1, 3), bool)), [[-1.0, 0.0, 0.0]])  # no step: 0 - 1


def test_a_verifier_scores_each_distinct_solution_once_and_its_copies_alike():
    calls = []

    def score(prompts, solutions):
        calls.append(list(zip(prompts, solutions, strict=True)))
        return {"len": np.asarray([len(p) + len(s) for p, s in zip(prompts, solutions, strict=True)]),
                "rows": np.asarray([[len(s), 0] for s in solutions])}  # fmt: skip

    prompts = ["a", "a", "bb", "a", "bb"]
    solutions = ["xy", "xy", "xy", "z", "xy"]  # ("a", "xy") twice, ("bb", "xy") twice: same text, other problem
    out = V.once_each(score, prompts, solutions)
    assert calls == [[("a", "xy"), ("bb", "xy"), ("a", "z")]]
    np.testing.assert_array_equal(out["len"], [3, 3, 4, 2, 4])
    np.testing.assert_array_equal(out["rows"], [[2, 0], [2, 0], [2, 0], [1, 0], [2, 0]])
    with pytest.raises(ValueError):
        V.once_each(score, prompts, solutions[:-1])


def test_rl_step_rewards_land_on_the_sampled_token_that_ends_each_step(tokenizer):  # noqa: F811
    import types

    from rlhf_jax.loops.online import Scorer

    scorer = Scorer.__new__(Scorer)  # only its data's P and tokenizer are read
    scorer.data = types.SimpleNamespace(P=4, tokenizer=tokenizer)
    texts = ["3 + 4 = 7\n7 - 2 = 5\nThe answer is 5", "The answer is 5"]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    judged = {"step_rewards": np.array([[-0.1, -0.4, 0.0], [-1.0, 0.0, 0.0]]),
              "valid": np.array([[True, True, False], [False, False, False]])}  # fmt: skip
    out = scorer.spread(judged, texts, ids, T=4 + 40)
    offsets = tokenizer(texts[0], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    ends = [next(i for i, (a, z) in enumerate(offsets) if a <= e < z) for e in (8, 18)]  # the "7" and the "5"
    want = np.zeros(44)
    want[4 + ends[0]], want[4 + ends[1]] = -0.1, -0.4
    np.testing.assert_allclose(out[0], want)
    assert out[1, 4] == -1.0 and out[1].sum() == -1.0  # no step shown: its -1 on the first token


def test_a_process_reward_model_as_the_rl_reward_is_named_and_read_one_way():
    from rlhf_jax.experiment import RLSection

    with pytest.raises(ValueError, match="rl.prm_reading='steps': name the process reward model"):
        RLSection(prm_reading="steps")
    with pytest.raises(ValueError, match="rl.prm_reading='sum': expected one of"):
        RLSection(prm_reading="sum", reward_model="/prm")
    with pytest.raises(ValueError, match="a process reward model has no scalar head"):
        RLSection(method="ppo", prm_reading="product", reward_model="/prm")
    rl = RLSection(prm_reading="steps", reward_model="/prm", advantage="rloo_to_go", loss="vanilla_pg")
    assert rl.estimator.level == "token"


def test_calibration_bins_predicted_against_actual_leaving_unlabelled_steps_out():
    p = probs((0.0, 0.05, 0.95), (0.0, 0.1, 0.9), (0.9, 0.05, 0.05), (0.0, 0.0, 1.0))
    labels = [[POSITIVE, NEUTRAL, NEGATIVE, NO_STEP]]
    bins = V.calibration(p, np.ones((1, 4), bool), labels, bins=10)
    assert bins == [
        {"bin": "0.0-0.1", "steps": 1, "predicted": pytest.approx(0.05), "positive": 0.0},
        {"bin": "0.9-1.0", "steps": 2, "predicted": pytest.approx(0.925), "positive": 0.5},
    ]


def test_settings_that_cannot_work_are_refused_before_any_stage_runs():
    cfg = experiment.get_config("tiny")
    with pytest.raises(ValueError, match="each N must be in 1..pool=4"):
        dataclasses.replace(cfg, ns=(1, 8))
    with pytest.raises(ValueError, match="labelled=15: must split evenly over rounds=2"):
        dataclasses.replace(cfg, labelled=15)
    with pytest.raises(ValueError, match=r"generator.data.n_train=32: the labels need 48 fresh train problems"):
        dataclasses.replace(cfg, labelled=32)
    with pytest.raises(ValueError, match=r"orm.train.batch_size=8: above the first active round's 4 labels"):
        dataclasses.replace(cfg, labelled=8)
    facts = dataclasses.replace(cfg.facts, data=dataclasses.replace(cfg.facts.data, task="arithmetic_wrong"))
    with pytest.raises(ValueError, match="facts.data.task='arithmetic_wrong': expected one of"):
        dataclasses.replace(cfg, facts=facts)
    with pytest.raises(ValueError, match="unknown variant 'wrong'"):
        experiment.get_config("wrong")
    assert experiment.get_config("right").generator.data.task == "arithmetic_right"
    valid = experiment.get_config("right,validation")  # a run on validation reads no test problem anywhere
    assert valid.eval_split == "validation" and {getattr(valid, s).data.eval_split for s in PS.HELD_OUT_STAGES} == {
        "validation"
    }
    generator = dataclasses.replace(
        cfg.generator, data=dataclasses.replace(cfg.generator.data, eval_split="validation")
    )
    with pytest.raises(ValueError, match="data.eval_split differs between stages"):
        dataclasses.replace(cfg, generator=generator)


def test_a_study_trains_one_base_model_a_seed_that_both_generators_start_from(tmp_path):
    from experiments.studies import process_supervision as study_module
    from rlhf_jax.studies.study import place

    placed = {c.name: place(c, str(tmp_path)) for c in study_module.get_config().cells}
    base = {name: p.dirs["facts"] for name, p in placed.items()}
    assert base["wrong.seed0"] == base["right.seed0"] != base["wrong.seed1"] == base["right.seed1"]
    assert base["wrong_validation.seed0"] == base["wrong.seed0"]  # its held-out rows are no study problem
    for p in placed.values():
        assert p.shared == (("facts", "shared/" + base[p.cell.name].split("/shared/")[1]),)
        assert p.configs["generator"].model.init_from == p.dirs["facts"]
        # the study's verifiers start from the cell's own generator (chosen on validation: docs/notes.md)
        assert {p.configs[s].model.init_from for s in ("orm", "prm_uniform")} == {p.directory + "/generator"}
        assert ("rl_gold" in p.configs) == (p.cell.name.startswith("wrong.")), p.cell.name  # no RL on validation


def test_the_verifiers_start_from_the_base_or_from_the_generator(tmp_path):
    cfg = experiment.get_config("tiny")
    verifiers = ["orm", "prm_uniform", *(f"prm_active{r}" for r in range(cfg.rounds))]
    for start, directory in (("base", "facts"), ("generator", "generator")):
        configs = PS.stage_configs(dataclasses.replace(cfg, verifiers_from=start), str(tmp_path))
        assert {configs[v].model.init_from for v in verifiers} == {str(tmp_path / directory)}
        assert configs["generator"].model.init_from == str(tmp_path / "facts")
    with pytest.raises(ValueError, match="verifiers_from='policy': expected one of"):
        dataclasses.replace(cfg, verifiers_from="policy")


def test_a_generators_test_cells_wait_for_its_gates_on_validation(tmp_path):
    from experiments.studies import process_supervision as study_module
    from rlhf_jax.studies import claims as study_claims
    from rlhf_jax.studies import study as study_lib

    study, records = study_module.get_config(), tmp_path / "records"
    records.mkdir()

    def planned():
        return sorted(j.key for j in study_lib.plan(study, str(tmp_path), str(records)) if j.key.startswith("cells/"))

    assert planned() == ["cells/right_validation.seed0", "cells/wrong_validation.seed0"]  # nothing measured yet
    last = f"prm_active{study.cells[0].pipeline.rounds - 1}.product"
    metrics = {"generator_accuracy": 0.4, "reward_models.orm.test_accuracy": 0.8,
               "reward_models.orm.test_majority_baseline": 0.6, "verifiers.orm.auroc_within_problems": 0.8,
               "verifiers.prm_uniform.product.auroc_within_problems": 0.8,
               f"verifiers.{last}.auroc_within_problems": 0.8, "best_of_n.random.256": 0.5,
               **{f"best_of_n.{v}.256": 0.6 for v in ("orm", "prm_uniform.product", last)}}  # fmt: skip
    for cell in study.cells[:2]:
        ok = cell.group == "right_validation"  # the wrong generator's PRM ranks at chance
        rec = {
            "group": cell.group,
            "seed": 0,
            "key": study_lib.cell_key(cell),
            "metrics": {**metrics, **({} if ok else {"verifiers.prm_uniform.product.auroc_within_problems": 0.5})},
        }
        (records / f"{cell.name}.json").write_text(json.dumps(rec))
    assert planned() == [f"cells/right.seed{s}" for s in study_module.SEEDS]
    assert study.withheld(str(records)) == {"wrong": ["wrong: PRM verifies"]}
    # verifiers that rank well within problems but whose argmax over the pool is no better than random:
    # the argmax claims wait, the weighted votes' are still tested
    rec = json.loads((records / "right_validation.seed0.json").read_text())
    rec["metrics"].update({f"best_of_n.{v}.256": 0.51 for v in ("orm", "prm_uniform.product", last)})
    (records / "right_validation.seed0.json").write_text(json.dumps(rec))
    validation = [json.loads((records / f"{c.name}.json").read_text()) for c in study.cells[:2]]
    failed = [g.name for g in study.gates if not study_claims.gate_status(g, [], validation)["passed"]]
    assert failed == ["wrong: PRM verifies"] + [f"right: {v} picks from 256" for v in ("ORM", "PRM", "active PRM")]
    assert planned() == [f"cells/right.seed{s}" for s in study_module.SEEDS]
    with pytest.raises(ValueError, match=r"--cell wrong.seed1: its claims' gates on validation fail .*PRM verifies"):
        study_lib.plan(study, str(tmp_path), str(records), only="wrong.seed1")


def test_a_study_checks_its_cells_while_another_job_is_running_one(tmp_path):
    # A job's preflight reads every cell; a stage another job has started (its workdir
    # holds config.json, no export yet) is one this pipeline writes, not a bad checkpoint.
    from experiments.studies import process_supervision as study
    from rlhf_jax import preflight

    cfg = study.get_config("smoke")
    cell = cfg.cells[0]
    started = tmp_path / "cells" / cell.name / "facts"
    started.mkdir(parents=True)
    (started / "config.json").write_text('{"name": "facts"}')
    preflight.check(cfg, str(tmp_path))  # no error
    elsewhere = dataclasses.replace(cell.seeded.generator.model, init_from=str(started))
    with pytest.raises(ValueError, match="model.init_from=.*not a usable checkpoint"):
        preflight.check_experiment(dataclasses.replace(cell.seeded.generator, model=elsewhere))


def test_the_dry_run_traces_every_stage_the_reward_models_included(tmp_path):
    from rlhf_jax.dry_run import abstract_iteration

    stages = experiment.get_config("tiny").wired_stages(str(tmp_path))
    assert list(stages) == ["facts", "generator", "orm", "prm_uniform", "prm_active0", "prm_active1", "rl_prm",
                            "rl_prm_steps"]  # fmt: skip
    for name, stage in stages.items():
        out = abstract_iteration(stage, vocab_size=64)
        assert "loss" in out["metrics"], name
    assert "accuracy" in abstract_iteration(stages["orm"], 64)["metrics"]
    assert "step_accuracy" in abstract_iteration(stages["prm_uniform"], 64)["metrics"]


@pytest.mark.slow
def test_the_study_at_smoke_size_labels_exactly_picks_convincing_wrong_answers_and_reports(tmp_path):
    from rlhf_jax.main import main
    from rlhf_jax.tasks.arithmetic import label_completion

    spec = "experiments/studies/process_supervision.py:smoke"
    assert main(["--config", spec, "--workdir", str(tmp_path / "study")]) == 0
    workdir = tmp_path / "study" / "cells" / "wrong.seed0"
    summary = json.loads((workdir / "summary.json").read_text())
    cfg = experiment.get_config("tiny")
    pool = [json.loads(line) for line in open(workdir / "pool" / "pool.jsonl")]
    assert len(pool) == cfg.test_problems * cfg.pool
    for x in pool:  # every label is the task's exact label of the text
        assert (x["step_labels"], x["outcome"]) == tuple(label_completion(x["prompt"], x["completion"]))
    uniform = [json.loads(line) for line in open(workdir / "labels" / "uniform" / "solutions.jsonl")]
    assert len(uniform) == cfg.labelled and len({x["problem"] for x in uniform}) == cfg.labelled
    assert not {x["prompt"] for x in pool} & {x["prompt"] for x in uniform}  # no held-out problem is trained on
    per_round = cfg.labelled // cfg.rounds
    active = [json.loads(line) for line in open(workdir / "labels" / "active1" / "solutions.jsonl")]
    assert active[:per_round] == [{**x, "round": 0} for x in uniform[:per_round]]
    fresh = active[per_round:]
    assert len(fresh) == per_round and not {x["problem"] for x in fresh} & {x["problem"] for x in uniform}
    assert all(x["outcome"] == 0 for x in fresh if x["wrong_candidates"])  # a convincing wrong answer when any
    curves = summary["curves"]
    for n in map(str, cfg.ns):
        assert curves["pass@N"][n] >= max(c[n] for c in curves.values()) - 1e-12
    assert set(curves) >= {"orm", "prm_uniform.product", "prm_active1.first_error", "majority", "random"}
    assert summary["generator_accuracy"] == pytest.approx(np.mean([x["outcome"] for x in pool]))
    verifiers = summary["verifiers"]  # every verifier reading's ranking, over the pool and within problems
    voted = {f"{v}+vote" for v in ("orm", "prm_uniform.product", "prm_active1.product")}  # the weighted votes
    assert set(verifiers) == set(curves) - {"majority", "random", "pass@N"} - voted
    for v in verifiers.values():
        assert all(np.isnan(x) or 0.0 <= x <= 1.0 for x in (v["auroc"], v["auroc_within_problems"]))
    for name in cfg.rl_rewards:  # RL against the PRM's score and its per-step rewards ran and was judged
        assert 0.0 <= summary["rl"][name]["test_accuracy"] <= 1.0
        metrics = [json.loads(line) for line in open(workdir / f"rl_{name}" / "metrics.jsonl")]
        assert metrics and all(np.isfinite(m["loss"]) for m in metrics)
    assert (workdir / "plots" / "reward_vs_samples.png").exists()
    record = json.loads((tmp_path / "study" / "records" / "wrong.seed0.json").read_text())
    assert record["metrics"]["best_of_n.orm.4"] == curves["orm"]["4"]
    assert "verifiers.prm_uniform.product.auroc_within_problems" in record["metrics"]
    for name in ("orm", "prm_uniform"):  # whether each reward model learnt: its loss, first and last tenth
        losses = [json.loads(line)["loss"] for line in open(workdir / name / "metrics.jsonl")]
        assert record["metrics"][f"reward_models.{name}.train_loss_first"] == pytest.approx(losses[0])
        assert record["metrics"][f"reward_models.{name}.train_loss_last"] == pytest.approx(losses[-1])
    assert [row["n"] for row in record["curve"]] == list(cfg.ns)
    report = (tmp_path / "study" / "report.md").read_text()
    assert "| wrong | 1 |" in report and "Best-of-N accuracy, wrong (mean [95% interval] over seeds):" in report
    assert (tmp_path / "study" / "plots" / "best_of_n_wrong.png").exists()

    # the test cell trained nothing its validation twin had: each stage resumed at its last
    # step from the twin's checkpoint, to the same weights, labels and losses; its held-out
    # solutions are its own split's
    twin = tmp_path / "study" / "cells" / "wrong_validation.seed0"
    theirs = json.loads((twin / "summary.json").read_text())
    for name in ("generator", "orm", "prm_uniform", "prm_active0", "prm_active1"):
        mine = summary["generator"] if name == "generator" else summary["reward_models"][name]
        assert mine["resumed_from"] == [mine["steps"]], name
        assert (workdir / name / "hf" / "model.safetensors").read_bytes() == (
            twin / name / "hf" / "model.safetensors"
        ).read_bytes(), name
    assert summary["reward_models"]["orm"]["train_loss"] == theirs["reward_models"]["orm"]["train_loss"]
    for labels in ("uniform", "active1"):
        assert (workdir / "labels" / labels / "solutions.jsonl").read_text() == (
            twin / "labels" / labels / "solutions.jsonl"
        ).read_text()
    assert (workdir / "labels" / "uniform" / "held_out.jsonl").read_text() == "".join(
        json.dumps(x) + "\n" for x in pool[:: cfg.pool]
    )
    validation = [json.loads(line) for line in open(twin / "labels" / "uniform" / "held_out.jsonl")]
    assert not {x["prompt"] for x in validation} & {x["prompt"] for x in pool}
