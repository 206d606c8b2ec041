"""Iterated online RLHF: the labeller on hand-made rewards, each round's wiring, and, end to
end at the tiny size, the rounds' data flow and a resume after SIGKILL inside a round's
reward-model retraining and inside its policy stage that ends bit-identical."""

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from rlhf_jax.main import load_experiment
from rlhf_jax.studies import iterated
from rlhf_jax.studies import study as study_lib

TINY = "experiments/iterated_summarization.py:tiny"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_labeller_is_bradley_terry_on_the_gold_reward_and_says_tie_within_its_tolerance():
    t, A, B, TIE = 0.05, iterated.A, iterated.B, iterated.TIE
    p = 0.75  # r_a - r_b = T ln 3: sigmoid = 3/4
    draws = [iterated.label(np.random.default_rng(i), t * math.log(3), 0.0, t) == A for i in range(4000)]
    assert abs(np.mean(draws) - p) < 0.025  # 4000 draws: sd 0.007
    rng, twin = np.random.default_rng(5), np.random.default_rng(5)
    assert [iterated.label(rng, 0.3, 0.2, t) for _ in range(50)] == [
        A if twin.random() < 1 / (1 + math.exp(-2.0)) else B for _ in range(50)
    ]
    assert all(iterated.label(np.random.default_rng(i), 1.0, 0.0, 1e-3) == A for i in range(100))  # T -> 0
    assert all(iterated.label(np.random.default_rng(i), 0.0, 1.0, 1e-3) == B for i in range(100))
    coins = [iterated.label(np.random.default_rng(i), 0.5, 0.5, t) == A for i in range(4000)]
    assert abs(np.mean(coins) - 0.5) < 0.03  # equal rewards, no ties: a coin
    assert iterated.label(np.random.default_rng(0), 0.5, 0.5, t, tie_tolerance=0.0) == TIE
    assert iterated.label(np.random.default_rng(0), 0.5, 0.54, t, tie_tolerance=0.05) == TIE
    assert iterated.label(np.random.default_rng(0), 0.5, 0.56, 1e-3, tie_tolerance=0.05) == B


def test_each_round_starts_from_the_last_ones_policy_and_trains_its_reward_model_on_all_comparisons(tmp_path):
    cfg = load_experiment(TINY)
    w = str(tmp_path)
    first, dirs0, _ = iterated.round_stages(cfg, w, 0)
    second, dirs1, _ = iterated.round_stages(cfg, w, 1)
    assert first["policy"].model.init_from == dirs0["sft"] == f"{w}/sft" and first["policy"].rl.reference == ""
    assert second["policy"].model.init_from == f"{w}/round0/policy" and second["policy"].rl.reference == f"{w}/sft"
    assert second["policy"].rl.reward_model == f"{w}/round1/reward" == dirs1["reward"]
    assert second["reward"].data.comparisons == f"{w}/round1/comparisons"
    assert second["reward"].model.init_from == f"{w}/sft"  # from scratch (the SFT backbone) each round
    assert (first["reward"].train.steps, second["reward"].train.steps) == (2, 4)  # 2 epochs of 8, then 16, at batch 8
    assert first["policy"].train.steps == second["policy"].train.steps == cfg.pipeline.policy.train.steps // 2
    moving = dataclasses.replace(cfg, reward_init="continue", reference="last")
    second, _, _ = iterated.round_stages(moving, w, 1)
    assert second["reward"].model.init_from == f"{w}/round0/reward"
    assert second["policy"].rl.reference == f"{w}/round0/policy"
    one = load_experiment("experiments/iterated_summarization.py:one_round,tiny")
    assert (one.rounds, one.comparisons_per_round) == (1, cfg.rounds * cfg.comparisons_per_round)


def test_bad_settings_are_refused_before_any_work():
    cfg = load_experiment(TINY)
    with pytest.raises(ValueError, match="ties='sometimes'"):
        dataclasses.replace(cfg, ties="sometimes")
    with pytest.raises(ValueError, match="pairs='mixed'"):
        dataclasses.replace(cfg, pairs="mixed")
    with pytest.raises(ValueError, match="reward_init='warm'"):
        dataclasses.replace(cfg, reward_init="warm")
    with pytest.raises(ValueError, match="must split evenly over rounds=3"):
        dataclasses.replace(cfg, rounds=3)
    dpo = load_experiment("experiments/quickstart.py:dpo,tiny")
    with pytest.raises(ValueError, match="kind='preference': the rounds train the policy by RL"):
        dataclasses.replace(cfg, pipeline=dpo)


def rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def run_until(cmd, path, timeout=600):
    """Start cmd, SIGKILL it once `path` exists (a stage has started); False if it ended first."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not os.path.exists(path) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return killed


@pytest.mark.slow
def test_rounds_resume_after_sigkill_in_reward_retraining_and_in_the_policy_stage_bit_identical(tmp_path):
    cmd = [sys.executable, "-m", "rlhf_jax.main", "--config", TINY, "--workdir"]
    whole = tmp_path / "whole"
    out = subprocess.run([*cmd, str(whole)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads((whole / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    first, second = (rows(whole / f"round{r}" / "comparisons" / "comparisons.jsonl") for r in (0, 1))
    assert second[: len(first)] == first and {r["round"] for r in second[len(first) :]} == {1}
    assert not {r["prompt"] for r in first} & {r["prompt"] for r in second[len(first) :]}  # fresh prompts
    r1 = summary["rounds"][1]
    assert r1["comparisons"] == 16 and r1["reward_model_on_policy_accuracy"]["before"] is not None
    assert np.isfinite(r1["proxy_gold_gap"]) and "gold" in r1["policy"]["sampled"]

    cut = tmp_path / "cut"
    assert run_until([*cmd, str(cut)], cut / "round1" / "reward" / "config.json")  # inside round 1's retraining
    assert not (cut / "round1" / "reward" / "summary.json").exists()
    assert run_until([*cmd, str(cut)], cut / "round1" / "policy" / "config.json")  # inside its policy stage
    assert not (cut / "round1" / "policy" / "summary.json").exists()
    out = subprocess.run([*cmd, str(cut)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (cut / "summary.json").read_text() == (whole / "summary.json").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("pairs", ["temperatures", "policy_sft"])
def test_ties_are_labelled_counted_against_the_budget_and_learnt_and_the_held_out_pairs_refilled(pairs, tmp_path):
    cfg = load_experiment(TINY)
    policy = cfg.pipeline.policy
    policy = dataclasses.replace(policy, train=dataclasses.replace(policy.train, steps=2))
    pipe = dataclasses.replace(cfg.pipeline, policy=policy)
    cfg = dataclasses.replace(cfg, rounds=1, ties="davidson", held_out_min=6, pipeline=pipe, pairs=pairs)
    summary = iterated.run(cfg, str(tmp_path))
    comparisons = tmp_path / "round0" / "comparisons"
    counts = json.loads((comparisons / "counts.json").read_text())
    assert counts["labelled"] == cfg.comparisons_per_round  # every labelled pair spends the budget
    assert counts["with_signal"] == counts["labelled"] - counts["ties"] and counts["ties"] >= counts["identical"]
    collected = rows(comparisons / "comparisons.jsonl")
    ties = [r for r in collected if r["tie"]]
    assert (
        len(collected) == counts["labelled"] - counts["identical"] and len(ties) == counts["ties"] - counts["identical"]
    )
    assert len(rows(comparisons / "held_out.jsonl")) == 6  # refilled past the 4 prompts' one pass
    assert summary["rounds"][0]["labelled"] == counts
    reward = json.loads((tmp_path / "round0" / "reward" / "summary.json").read_text())
    assert np.isfinite(reward["train_loss"])


@pytest.mark.slow
def test_a_budget_of_signal_labels_further_prompts_until_it_has_its_comparisons_and_designs_are_measured(tmp_path):
    cfg = load_experiment(TINY)
    policy = cfg.pipeline.policy
    policy = dataclasses.replace(policy, train=dataclasses.replace(policy.train, steps=2))
    pipe = dataclasses.replace(cfg.pipeline, policy=policy)
    cfg = dataclasses.replace(cfg, rounds=1, ties="davidson", pipeline=pipe, budget="signal", measure_pairs=True)
    iterated.run(cfg, str(tmp_path))
    counts = json.loads((tmp_path / "round0" / "comparisons" / "counts.json").read_text())
    n = cfg.comparisons_per_round
    assert counts["with_signal"] == n and counts["labelled"] == n + counts["ties"] > n  # the tiny SFT ties often
    collected = rows(tmp_path / "round0" / "comparisons" / "comparisons.jsonl")
    assert len(collected) == counts["labelled"] - counts["identical"]
    assert sum(not r["tie"] for r in collected) == n  # every untied comparison carries a preference
    designs = counts["designs"]
    assert set(designs) == set(iterated.PAIRS)
    for shares in designs.values():
        assert shares["identical"] <= shares["ties"] and shares["ties"] + shares["with_signal"] == pytest.approx(1)


def round_summary(r, gold, score, gap, before, after):
    figures = {"kl_to_reference": 0.1 * (r + 1), "sampled": {"gold": {"mean": gold}, "reward_model": {"mean": score}}}
    return {"round": r, "comparisons": 8 * (r + 1), "proxy_gold_gap": gap, "policy": figures, "sft": figures,
            "reward_model": {"test_accuracy": 0.7}, "gold_win_rate_vs_sft": {"greedy": 0.5, "sampled": 0.6},
            "reward_model_on_policy_accuracy": {"before": before, "after": after, "pairs": 4}}  # fmt: skip


def test_an_iterated_study_cell_shares_only_its_sft_and_records_one_curve_row_per_round(tmp_path):
    study = load_experiment("experiments/studies/iterated_rlhf.py:smoke")
    placed = [study_lib.place(c, str(tmp_path)) for c in study.cells]
    assert [p.shared[0][0] for p in placed] == ["sft"] * 5 and all(len(p.shared) == 1 for p in placed)
    assert len({p.shared for p in placed}) == 1  # one SFT for every group at a seed, the validation cell's too
    jobs = study_lib.plan(study, str(tmp_path), str(tmp_path / "records"))
    assert [j.key.split("/")[0] for j in jobs] == ["shared"] + ["cells"] * 5
    assert all(j.needs == (jobs[0].key,) for j in jobs[1:])
    summary = {"rounds": [round_summary(0, -0.5, 0.2, 0.3, None, 0.6), round_summary(1, -0.2, 0.9, 0.4, 0.55, 0.7)]}
    tree, rows = iterated.study_figures(summary)
    assert tree["proxy_gold_gap"] == 0.4 and tree["policy_vs_sft"]["sampled"] == 0.6
    assert tree["reward_model"]["on_policy_before"] == 0.55 and tree["policy"]["sampled"]["gold"]["mean"] == -0.2
    assert [r["comparisons"] for r in rows] == [8, 16] and [r["gold"] for r in rows] == [-0.5, -0.2]
    assert "rm_accuracy_before" not in rows[0] and rows[1]["rm_accuracy_before"] == 0.55
    assert "labelled" not in rows[0]  # a round of before the counts
    counts = {"labelled": 11, "ties": 3, "with_signal": 8, "designs": {"policy_sft": {"with_signal": 0.7}}}
    summary["rounds"][1]["labelled"] = counts
    row = iterated.study_figures(summary)[1][1]
    assert (row["labelled"], row["ties"], row["with_signal"], row["held_out_pairs"]) == (11, 3, 8, 4)
    assert row["signal_policy_sft"] == 0.7
