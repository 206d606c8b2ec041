"""The pipeline's wiring and table, the plots, and one policy report on a tiny task: the
fast checks of what the quickstart runs end to end (tests/test_quickstart.py)."""

import dataclasses
import json
import os

import numpy as np
import pytest

from rlhf_jax import pipeline
from rlhf_jax.eval import plots
from rlhf_jax.experiment import ExperimentConfig, TrainSection
from rlhf_jax.main import load_experiment
from rlhf_jax.tasks import arithmetic


def tiny_quickstart(**rl):
    cfg = load_experiment("experiments/quickstart.py:tiny")
    return dataclasses.replace(cfg, policy=dataclasses.replace(cfg.policy, rl=dataclasses.replace(cfg.policy.rl, **rl)))


def test_stages_are_wired_to_each_other_in_the_workdir(tmp_path):
    cfg = dataclasses.replace(tiny_quickstart(), seed=3)
    stages = pipeline.stages(cfg, str(tmp_path))
    assert list(stages) == ["sft", "reward", "policy"]
    assert stages["reward"].model.init_from == str(tmp_path / "sft")
    assert stages["policy"].model.init_from == str(tmp_path / "sft")
    assert stages["policy"].rl.reward_model == str(tmp_path / "reward")
    assert {s.data.data_dir for s in stages.values()} == {str(tmp_path / "tfds")}
    assert {s.train.seed for s in stages.values()} == {3}
    assert cfg.method == "rloo"
    assert tiny_quickstart(advantage="grpo", loss="reinforce").method == "grpo+reinforce"
    with pytest.raises(ValueError, match="reward.train.kind='sft': the reward stage must be one of"):
        pipeline.PipelineConfig(reward=ExperimentConfig(train=TrainSection(kind="sft")))


def test_a_verifiable_reward_has_no_reward_stage_and_a_preference_stage_reads_the_judged_pairs(tmp_path):
    cfg = load_experiment("experiments/rlvr_arithmetic.py:grpo,tiny")
    stages = pipeline.stages(cfg, str(tmp_path))
    assert list(stages) == ["sft", "policy"] and cfg.trained_stages == ("sft", "policy")
    assert stages["policy"].rl.reward_model == "gold" and stages["policy"].model.init_from == str(tmp_path / "sft")
    dpo = load_experiment("experiments/rlvr_arithmetic.py:dpo,tiny")
    assert pipeline.stages(dpo, str(tmp_path))["policy"].data.comparisons == str(tmp_path / "pairs")
    policy = cfg.policy
    with pytest.raises(ValueError, match="reward_source=task: policy.rl.reward_model='/rm'"):
        dataclasses.replace(
            cfg, policy=dataclasses.replace(policy, rl=dataclasses.replace(policy.rl, reward_model="/rm"))
        )
    with pytest.raises(ValueError, match="set labelled_pairs"):
        dataclasses.replace(dpo, labelled_pairs=0)
    with pytest.raises(ValueError, match="policy.data.task=tldr has no gold judge"):
        dataclasses.replace(cfg, policy=dataclasses.replace(policy, data=dataclasses.replace(policy.data, task="tldr")))
    with pytest.raises(ValueError, match="reward_source='judge'"):
        dataclasses.replace(cfg, reward_source="judge")


@pytest.mark.slow
def test_a_verifiable_reward_pipeline_runs_rl_and_dpo_on_pairs_the_judge_tells_apart(tmp_path):
    dpo = load_experiment("experiments/rlvr_arithmetic.py:dpo,tiny")
    summary = pipeline.run(dpo, str(tmp_path))
    counts = json.loads((tmp_path / "pairs" / "counts.json").read_text())
    assert counts["labelled"] == dpo.labelled_pairs and counts["completions_judged"] == 2 * dpo.labelled_pairs
    pairs = [json.loads(line) for line in (tmp_path / "pairs" / "comparisons.jsonl").read_text().splitlines()]
    assert len(pairs) == counts["with_signal"] > 0
    for p in pairs:  # the chosen answer is right, the rejected one wrong
        assert arithmetic.verifiable_reward(p["prompt"], p["chosen"]) == 1.0
        assert arithmetic.verifiable_reward(p["prompt"], p["rejected"]) == 0.0
    assert not (tmp_path / "reward").exists() and summary["reward_model"] == {}
    for name in ("sft", "dpo"):
        v = summary["policies"][name]["verifiable"]
        assert 0 <= v["pass@1"] <= v["pass@8"] <= 1 and v["k"] == dpo.pass_k
    sft = summary["policies"]["sft"]
    assert sft["verifiable"]["pass@1"] == pytest.approx(sft["verifiable"]["right"])  # pass@1 is the share right

    grpo = load_experiment("experiments/rlvr_arithmetic.py:grpo,tiny")
    grpo = dataclasses.replace(grpo, policy=dataclasses.replace(
        grpo.policy, train=dataclasses.replace(grpo.policy.train, steps=4, save_every=4)))  # fmt: skip
    out = pipeline.run(grpo, str(tmp_path / "grpo"))
    assert "verifiable" in out["policies"]["grpo"] and not (tmp_path / "grpo" / "pairs").exists()


def test_the_table_shows_both_policies_and_the_head_to_head():
    def figures(gold, kl):
        block = {"gold": {"mean": gold, "variance": 0.01}, "reward_model": {"mean": 0.5, "variance": 0.1},
                 "gold_win_rate_vs_reference": 0.25, "length": 4.0}  # fmt: skip
        return {**block, "distinct_1": 0.3, "distinct_2": 0.4, "perplexity_of_reference": 9.0,
                "kl_to_reference": kl, "sampled": block}  # fmt: skip

    summary = {
        "policies": {"sft": figures(-0.2, 0.0), "rloo": figures(0.1, 0.7)},
        "gold_win_rate_rloo_vs_sft": 0.6,
        "gold_win_rate_rloo_vs_sft_sampled": 0.65,
        "reward_model": {"test_accuracy": 0.7},
    }
    lines = pipeline.table(summary, "rloo").splitlines()
    assert lines[0].split() == ["SFT", "rloo"]
    assert "greedy: gold reward (mean)" in lines[6] and lines[6].split()[-2:] == ["-0.2000", "0.1000"]
    assert [line.split()[-1] for line in lines if "gold win-rate vs SFT" in line] == ["0.6500", "0.6000"]
    assert lines[-1] == "reward model held-out pairwise accuracy: 0.700"


def test_plots_are_written_from_metrics_and_curves(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "metrics.jsonl", "w") as f:
        for step in (1, 2, 3):
            f.write(json.dumps({"step": step, "score": 0.1 * step, "gold": -0.1 * step, "kl": 0.2 * step}) + "\n")
    written = plots.training_curves({"rloo": str(run)}, {"rloo": 64}, str(tmp_path))
    curves = {"sft": {"normalised_entropy": [0.9, 0.8], "top_1_mass": [0.2, 0.3], "top_16_mass": [0.7, 0.8]}}
    written.append(plots.step_curves(curves, str(tmp_path)))
    assert [os.path.basename(p) for p in written] == ["reward_kl.png", "reward_vs_samples.png", "generation_steps.png"]
    for path in written:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_policy_report_on_a_tiny_task(tmp_path):
    from rlhf_jax.eval.policies import compare, evaluate_policy
    from rlhf_jax.loops.data import task_data
    from rlhf_jax.models.config import ModelConfig
    from rlhf_jax.models.transformer import init_model

    stage = pipeline.stages(tiny_quickstart(), str(tmp_path))["sft"]
    stage = dataclasses.replace(stage, data=dataclasses.replace(stage.data, n_train=16, n_test=6))
    data = task_data(stage, str(tmp_path / "sft"), "sft")
    cfg = ModelConfig(family="gpt2", vocab_size=len(data.tokenizer), d_model=16, n_layers=1, n_heads=2, d_ff=32,
                      max_positions=data.P + data.C)  # fmt: skip
    model, params = init_model(cfg, seed=0)
    result = compare(model, {"a": params, "b": params}, params, data, [("a", "b")], gold=data.task.gold)
    figures, curves = result["policies"]["a"], result["curves"]["a"]
    assert result["policies"]["b"] == figures  # the same policy, the same seed
    assert result["a_vs_b"] == {"greedy": {"gold_win_rate": 0.5}, "sampled": {"gold_win_rate": 0.5}}  # all ties
    n = len(data.test.kept)
    assert figures["kl_to_reference"] == 0.0  # the policy is its own reference
    assert 0 <= figures["gold_win_rate_vs_reference"] <= 1 and 0 < figures["length"] <= data.C
    assert np.isfinite(figures["perplexity_of_reference"]) and figures["perplexity_of_reference"] > 1
    # sampled in chunks of 4 prompts (the loops' way), the figures have the same names
    chunked, _, completions = evaluate_policy(model, params, params, data, gold=data.task.gold, chunk=4,
                                              greedy=False)  # fmt: skip
    assert len(completions["sampled"].texts) == n and set(chunked) == {
        "perplexity_of_reference",
        "kl_to_reference",
        "sampled",
    }
    assert chunked["sampled"].keys() == figures["sampled"].keys()
    gold = data.task.gold([data.row(i, "test") for i in range(n)], completions["sampled"].texts)
    np.testing.assert_allclose(chunked["sampled"]["gold"]["mean"], gold.mean())
    assert len(curves["normalised_entropy"]) == data.C and set(curves) >= {"top_1_mass", "top_64_mass"}
