"""The RLOO paper's experiment modules: every variant resolves to the appendix C settings
and traces one iteration at full size (`jax.eval_shape`, 6.9B / 7B parameters, nothing
allocated; each variant once over the three modules, each program of each model family
once); each module runs its stages for one step with a tiny stand-in model on small
files in the real TL;DR and HH-RLHF formats."""

import importlib.util
import json
import os

import jax
import numpy as np
import pytest
from test_data_builders import HH_PROMPT, write_jsonl

from rlhf_jax.data.tokenizer import train_tokenizer
from rlhf_jax.dry_run import abstract_iteration
from rlhf_jax.main import load_experiment, main
from rlhf_jax.models.config import ModelConfig
from rlhf_jax.models.hf import save_hf
from rlhf_jax.models.transformer import init_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = {
    "tldr_pythia": ("tldr", "gpt_neox", 448, 0.03),
    "hh_pythia": ("hh", "gpt_neox", 348, 0.10),
    "hh_llama": ("hh", "llama", 348, 0.10),
}
VARIANTS = ("sft", "reward", "rloo_k2", "rloo_k4", "raft_k2", "raft_k4", "reinforce", "vanilla_pg", "ppo", "dpo")


def spec(module, variant):
    return f"experiments/rloo_paper_{module}.py:{variant}"


def test_the_settings_are_the_papers():
    cfg = load_experiment(spec("tldr_pythia", "rloo_k4"))
    assert (cfg.model.preset, cfg.data.task, cfg.data.max_prompt_len, cfg.data.n_test) == (
        "pythia-6.9b",
        "tldr",
        448,
        1000,
    )
    assert cfg.data.max_prompt_len + cfg.data.max_completion_len == 512
    rl = cfg.rl
    assert (rl.method, rl.k, rl.rollout_batch, rl.minibatch, rl.beta) == ("rloo", 4, 512, 256, 0.03)
    assert rl.steps_per_iteration == 2 and cfg.train.steps == 600
    assert cfg.optim.learning_rate == 1e-6 and cfg.optim.schedule == "constant"
    assert cfg.optim.warmup_steps == 36 and cfg.optim.total_steps == 1200  # 3% of 600 x 2 gradient steps
    llama = load_experiment(spec("hh_llama", "ppo"))
    assert (llama.rl.rollout_batch, llama.rl.minibatch, llama.rl.updates_per_batch, llama.rl.beta) == (
        2048,
        2048,
        2,
        0.1,
    )
    assert llama.rl.steps_per_iteration == 2
    sft = load_experiment(spec("hh_pythia", "sft"))
    assert (sft.optim.learning_rate, sft.optim.schedule, sft.train.steps) == (
        2e-5,
        "cosine",
        3500,
    )  # 2 epochs of 112k / 64
    assert load_experiment(spec("hh_llama", "sft")).train.steps == 1750  # 1 epoch
    reward = load_experiment(spec("tldr_pythia", "reward"))
    assert (reward.train.kind, reward.optim.learning_rate, reward.train.steps) == ("reward", 1e-5, 1451)
    with pytest.raises(ValueError, match="unknown variant 'rloo'"):
        load_experiment(spec("hh_pythia", "rloo"))


def test_every_stage_has_the_pod_settings_and_lora_is_appended_to_any():
    for module in MODULES:
        for variant in VARIANTS:
            cfg = load_experiment(spec(module, variant))
            assert cfg.model.scan_layers and cfg.model.remat == "full" and tuple(cfg.mesh) == (1, -1, 1)
            assert cfg.train.kind != "rl" or cfg.rl.sampler_weights == "sharded"
    llama, llama_lora = load_experiment(spec("hh_llama", "ppo")), load_experiment(spec("hh_llama", "ppo,lora"))
    assert (llama_lora.model.lora_rank, llama_lora.model.lora_alpha) == (16, 16.0)
    assert llama_lora.model.lora_targets == ("q", "k", "v", "o", "gate", "up", "down")
    assert llama_lora.optim.learning_rate == 1e-5 and llama.optim.learning_rate == 1e-6
    assert llama_lora.name == "rloo_paper_hh_llama_ppo_lora" and llama_lora.rl == llama.rl
    pythia = load_experiment(spec("tldr_pythia", "sft,lora"))  # GPT-NeoX has no gate projection
    assert pythia.model.lora_targets == ("q", "k", "v", "o", "up", "down") and pythia.optim.learning_rate == 2e-4
    with pytest.raises(ValueError, match="unknown variant 'ppo,qlora'"):
        load_experiment(spec("hh_llama", "ppo,qlora"))


def _fit():
    """tpu/fit.py, which compiles every variant for its slice (libtpu) and keeps a record of each."""
    path = os.path.join(ROOT, "tpu", "fit.py")
    module_spec = importlib.util.spec_from_file_location("fit", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_every_variant_was_fitted_to_its_slice_as_configured_today_and_the_pod_docs_show_it():
    fit = _fit()
    records = []
    for module, variant in fit.variants():
        record = fit.read(module, variant)  # None when missing or of another config: fit it again
        assert record is not None, f"not fitted as configured: python tpu/fit.py --only {module}:{variant}"
        assert record["fits"] and all(p["total"] <= 0.9 * record["hbm_gib"] * 2**30 for p in record["programs"])
        records.append(record)
    assert len(records) == 3 * (len(VARIANTS) + 3)
    pods = open(os.path.join(ROOT, "docs", "pods.md")).read()
    assert fit.table(records) in pods  # python tpu/fit.py --table


TRACED = {  # module -> the variants traced at full size: every variant, and every program of each family, once
    "tldr_pythia": ("sft", "reward", "rloo_k4", "ppo", "dpo"),
    "hh_pythia": ("rloo_k2", "raft_k2", "raft_k4", "reinforce", "vanilla_pg"),
    "hh_llama": ("sft", "reward", "rloo_k4", "ppo", "dpo"),
}


def test_every_variant_resolves_to_its_modules_task_and_beta():
    for module, (task, _, P, beta) in MODULES.items():
        for variant in VARIANTS:
            cfg = load_experiment(spec(module, variant))
            assert cfg.data.task == task and cfg.data.max_prompt_len == P
            if cfg.train.kind == "rl":
                assert cfg.rl.beta == beta
    assert sorted({v for traced in TRACED.values() for v in traced}) == sorted(VARIANTS)


@pytest.mark.slow
@pytest.mark.parametrize("module", MODULES)
def test_variants_trace_at_full_size(module):
    for variant in TRACED[module]:  # about 6 s each: 32 layers of forward and backward traced
        cfg = load_experiment(spec(module, variant))
        out = abstract_iteration(cfg)
        billions = out["params"] / 1e9 / (2 if variant in ("ppo", "vanilla_pg") else 1)  # with a critic
        assert 6.5 < billions < 7.0, (variant, billions)
        assert np.isfinite(out["state_bytes"]) and out["state_bytes"] > 3 * 4 * out["params"] - 1  # params + 2 moments
        if cfg.train.kind == "rl":
            assert out["rollout"].tokens_BxT.shape == (cfg.rl.rollout_batch, 512)
            assert out["samples"].tokens.shape == (cfg.rl.rollout_batch, 512 - cfg.data.max_prompt_len)


# ----------------------------------------------------------------------------- one step, tiny


def _data(root):
    """Small TL;DR (SFT split + comparisons) and HH-RLHF files in their real formats."""
    posts = [
        dict(subreddit="cats", title=f"Cat {i}", post=f"My cat number {i} sleeps all day long.") for i in range(24)
    ]
    sft = [{"id": f"t3_{i}", **p, "summary": f" Cat {i} sleeps."} for i, p in enumerate(posts)]
    write_jsonl(root / "tldr" / "sft" / "train.jsonl", sft[:16])
    write_jsonl(root / "tldr" / "sft" / "test.jsonl", sft[16:])
    pairs = [
        {"info": {"id": f"t3_{i}", **p}, "summaries": [{"text": f" Cat {i} sleeps."}, {"text": " no"}],
         "choice": 0, "split": "train" if i < 16 else "valid1"}
        for i, p in enumerate(posts)
    ]  # fmt: skip
    write_jsonl(root / "tldr" / "comparisons" / "batch1.json", pairs)
    dialogue = [{"chosen": HH_PROMPT + f" Try name {i}.", "rejected": HH_PROMPT + " No."} for i in range(24)]
    write_jsonl(root / "hh" / "train.jsonl.gz", dialogue[:16], gz=True)
    write_jsonl(root / "hh" / "test.jsonl", dialogue[16:])
    texts = [json.dumps(r) for r in sft + pairs + dialogue]
    return train_tokenizer(texts, str(root / "tokenizer"), vocab_size=300)


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """Tiny base models of both families (with the tokenizer) and a tiny reward model."""
    root = tmp_path_factory.mktemp("paper")
    tokenizer = _data(root)
    dirs = {}
    for family in ("gpt_neox", "llama"):
        cfg = ModelConfig(family=family, vocab_size=len(tokenizer), d_model=16, n_layers=1, n_heads=2, d_ff=32,
                          max_positions=512, rotary_pct=0.25 if family == "gpt_neox" else 1.0)  # fmt: skip
        for head in ("lm", "scalar"):
            model, params = init_model(cfg, head=head, seed=1)
            dirs[family, head] = str(root / f"{family}_{head}")
            save_hf(model, params, dirs[family, head], tokenizer=tokenizer)
    return root, dirs


RUNS = {  # module -> the stages run for one step (every data kind and loop kind is covered)
    "tldr_pythia": ("sft", "reward", "rloo_k2", "ppo", "dpo"),
    "hh_pythia": ("sft", "raft_k4"),
    "hh_llama": ("reward", "reinforce"),
}


@pytest.mark.slow
@pytest.mark.parametrize("module", RUNS)
def test_one_step_with_a_tiny_stand_in(module, stand_ins, tmp_path):
    root, dirs = stand_ins
    task, family, P, _ = MODULES[module]
    for variant in RUNS[module]:
        cfg = load_experiment(spec(module, variant))
        small = ["--set", "train.steps=1", "--set", f"data.source_dir={root / task}"]
        small += ["--set", f"data.data_dir={tmp_path / 'tfds'}", "--set", f"model.init_from={dirs[family, 'lm']}"]
        if cfg.train.kind == "rl":  # a rollout of 8 sequences, 2 gradient steps as in the paper
            minibatch = 8 if cfg.rl.updates_per_batch == 2 else 4
            small += ["--set", f"rl.minibatch={minibatch}", "--set", "rl.rollout_batch=8"]  # each --set is checked
            small += ["--set", f"rl.reward_model={dirs[family, 'scalar']}"]
        else:
            small += ["--set", "train.batch_size=8"]
        workdir = tmp_path / variant
        assert main(["--config", spec(module, variant), "--workdir", str(workdir), *small]) == 0, variant
        summary = json.load(open(workdir / "summary.json"))
        assert summary["steps"] == 1
        resolved = json.load(open(workdir / "config.json"))
        assert resolved["data"]["max_prompt_len"] == P and resolved["mesh"] == [1, -1, 1]
        if cfg.train.kind == "rl":
            assert np.isfinite(summary["train"]["loss"])
            test = summary["test"]
            assert "gold" not in test["policies"]["policy"]["sampled"]  # no gold judge: the reward model ranks
            assert 0 <= test["policy_vs_reference"]["sampled"]["reward_model_win_rate"] <= 1
        metrics = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
        assert [m["step"] for m in metrics] == [1] and np.isfinite(metrics[0]["loss"])
    jax.clear_caches()
