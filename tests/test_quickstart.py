"""The quickstart pipeline and every variant run end to end at test size: SFT -> reward
model -> policy optimisation -> evaluation, with the table's figures, plots and the
stages' reuse on a rerun."""

import json
import os
import shutil

import numpy as np
import pytest

from rlhf_jax.main import main

pytestmark = pytest.mark.slow  # end-to-end runs: the whole suite, not `-m "not slow"`

METHODS = ("ppo", "reinforce", "vanilla_pg", "raft", "dpo")


def sets(tfds_dir, shared):
    """One prepared data directory for every stage; the reward model starts from the
    shared SFT run, so that copied SFT and reward stages are reused, not rerun."""
    pairs = [f"{stage}.data.data_dir={tfds_dir}" for stage in ("sft", "reward", "policy")]
    pairs.append(f"reward.model.init_from={shared}/sft")
    return sum((["--set", p] for p in pairs), [])


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("quickstart")
    tfds_dir, workdir = str(root / "tfds"), str(root / "rloo")
    assert main(["--config", "experiments/quickstart.py:tiny", "--workdir", workdir, *sets(tfds_dir, workdir)]) == 0
    return tfds_dir, workdir


def check_summary(workdir, method):
    summary = json.load(open(os.path.join(workdir, "summary.json")))
    assert summary["method"] == method and 8 <= summary["test_prompts"] <= 16
    for label in ("sft", method):
        figures = summary["policies"][label]
        assert np.isfinite(figures["gold"]["mean"]) and figures["gold"]["variance"] >= 0
        assert 0 <= figures["gold_win_rate_vs_reference"] <= 1
        assert figures["perplexity_of_reference"] > 1 and 0 <= figures["distinct_1"] <= 1
        assert 0 < figures["length"] <= 16 and np.isfinite(figures["reward_model"]["mean"])
        sampled = figures["sampled"]
        assert np.isfinite(sampled["gold"]["mean"]) and np.isfinite(sampled["reward_model"]["mean"])
        assert 0 <= sampled["gold_win_rate_vs_reference"] <= 1 and 0 < sampled["length"] <= 16
        curves = summary["curves"][label]
        assert len(curves["normalised_entropy"]) == 16  # one per generation step
        ok = ~np.isnan(curves["top_1_mass"])
        assert (np.asarray(curves["top_1_mass"])[ok] <= np.asarray(curves["top_64_mass"])[ok] + 1e-6).all()
    assert summary["policies"]["sft"]["kl_to_reference"] == 0.0
    for suffix in ("", "_sampled"):
        assert 0 <= summary[f"gold_win_rate_{method}_vs_sft{suffix}"] <= 1
    rm = summary["reward_model"]
    assert 0 <= rm["test_accuracy"] <= 1 and 0 <= rm["content_probe_accuracy"] <= 1
    assert 1 <= rm["content_probe_pairs"] <= 16  # the probe's test pairs that fit data.max_prompt_len
    for path in summary["plots"]:
        assert os.path.getsize(path) > 1000
    return summary


def test_the_quickstart_runs_end_to_end(shared, capsys):
    tfds_dir, workdir = shared
    summary = check_summary(workdir, "rloo")
    assert {os.path.basename(p) for p in summary["plots"]} == {
        "generation_steps.png",
        "reward_kl.png",
        "reward_vs_samples.png",
    }
    # a rerun of the finished pipeline changes nothing; without its summary, it reuses every
    # finished stage and evaluates again
    args = ["--config", "experiments/quickstart.py:tiny", "--workdir", workdir, *sets(tfds_dir, workdir)]
    capsys.readouterr()
    assert main(args) == 0 and "finished already" in capsys.readouterr().out
    os.remove(os.path.join(workdir, "summary.json"))
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("already done") == 3 and "gold win-rate vs SFT" in out


@pytest.mark.parametrize("variant", [*METHODS, "dpo,lora"])
def test_every_variant_runs_end_to_end(variant, shared, tmp_path):
    tfds_dir, base = shared
    method = variant.split(",")[0]
    for stage in ("sft", "reward"):
        shutil.copytree(os.path.join(base, stage), tmp_path / stage)
    args = ["--config", f"experiments/quickstart.py:{variant},tiny", "--workdir", str(tmp_path), *sets(tfds_dir, base)]
    assert main(args) == 0
    check_summary(tmp_path, method)
    policy_config = json.load(open(tmp_path / "policy" / "config.json"))
    assert policy_config["model"]["lora_rank"] == (8 if "lora" in variant else 0)
    if method == "dpo":
        assert policy_config["train"]["kind"] == "preference"
    else:
        assert policy_config["rl"]["method"] == method
        assert policy_config["rl"]["reward_model"] == str(tmp_path / "reward")


def test_unknown_variants_are_refused(capsys):
    assert main(["--config", "experiments/quickstart.py:ppo,dpo", "--workdir", "/tmp/unused_qs"]) == 2
    assert "unknown variant" in capsys.readouterr().err
