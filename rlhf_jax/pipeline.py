"""The whole RLHF pipeline as one experiment: SFT -> reward model -> policy optimisation
(online RL, or an offline preference objective) -> evaluation of the SFT and the final
policy side by side, as the RLOO paper reports them.

Each stage is an ordinary run in <workdir>/<stage> (resumable; a finished stage, one with
summary.json, is not run again). The pipeline wires them: the reward model and the policy
start from the SFT export, the RL stage scores with the reward model, every stage uses
the pipeline's seed and one prepared data directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax

from rlhf_jax import config as config_lib
from rlhf_jax import loops
from rlhf_jax import mesh as mesh_lib
from rlhf_jax.eval import plots
from rlhf_jax.eval.judges import GoldJudge, RewardModelJudge
from rlhf_jax.eval.policies import compare
from rlhf_jax.experiment import ExperimentConfig
from rlhf_jax.loops.common import load_scalar
from rlhf_jax.loops.data import task_data
from rlhf_jax.models.hf import load_hf
from rlhf_jax.workdir import checkpoint_dir, write_json


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """seed: the training seed of every stage (the task data stay the same)."""

    name: str = "pipeline"
    seed: int = 0
    sft: ExperimentConfig = ExperimentConfig()
    reward: ExperimentConfig = ExperimentConfig()
    policy: ExperimentConfig = ExperimentConfig()

    def __post_init__(self):
        for stage, kind in (("sft", ("sft",)), ("reward", ("reward",)), ("policy", ("rl", "preference"))):
            got = getattr(self, stage).train.kind
            if got not in kind:
                raise ValueError(f"{stage}.train.kind={got!r}: the {stage} stage must be one of {kind}")

    @property
    def method(self) -> str:
        p, rl = self.policy, self.policy.rl
        if p.train.kind != "rl":
            return p.preference.objective
        return f"{rl.estimator.name}+{rl.objective.name}" if rl.advantage or rl.loss else rl.method


def stages(cfg: PipelineConfig, workdir: str) -> dict[str, ExperimentConfig]:
    """Each stage's config with the pipeline's wiring applied."""

    def wire(stage: ExperimentConfig, **model) -> ExperimentConfig:
        data = dataclasses.replace(stage.data, data_dir=stage.data.data_dir or os.path.join(workdir, "tfds"))
        train = dataclasses.replace(stage.train, seed=cfg.seed)
        return dataclasses.replace(stage, data=data, train=train, model=dataclasses.replace(stage.model, **model))

    sft_dir, reward_dir = os.path.join(workdir, "sft"), os.path.join(workdir, "reward")
    policy = wire(cfg.policy, init_from=cfg.policy.model.init_from or sft_dir)
    if policy.train.kind == "rl" and policy.rl.reward_model == "gold":
        policy = dataclasses.replace(policy, rl=dataclasses.replace(policy.rl, reward_model=reward_dir))
    return {
        "sft": wire(cfg.sft),
        "reward": wire(cfg.reward, init_from=cfg.reward.model.init_from or sft_dir),
        "policy": policy,
    }


def run_stage(name: str, cfg: ExperimentConfig, directory: str) -> dict:
    summary_path = os.path.join(directory, "summary.json")
    os.makedirs(directory, exist_ok=True)
    config_path = os.path.join(directory, "config.json")
    resolved = config_lib.to_dict(cfg)
    if os.path.exists(summary_path) and os.path.exists(config_path):
        with open(config_path) as f:
            if not config_lib.differences(json.load(f), resolved):
                print(f"== {name}: already done ({directory})")
                with open(summary_path) as f:
                    return json.load(f)
    with open(config_path, "w") as f:
        json.dump(resolved, f, indent=2)
    print(f"== {name}: {cfg.name} ({cfg.train.kind}) in {directory}", flush=True)
    return loops.run(cfg, directory)


def run(cfg: PipelineConfig, workdir: str) -> dict:
    t0 = time.time()
    configs = stages(cfg, workdir)
    results, timings = {}, {}
    for name, stage in configs.items():
        t = time.time()
        results[name] = run_stage(name, stage, os.path.join(workdir, name))
        timings[name] = round(time.time() - t, 1)
        if results[name].get("stopped"):
            return {"stopped": True, "stage": name}
    t = time.time()
    summary = evaluate(cfg, configs, workdir, results)
    timings["evaluation"] = round(time.time() - t, 1)
    summary["seconds"] = {**timings, "total": round(time.time() - t0, 1)}
    if jax.process_index() == 0:
        write_json(os.path.join(workdir, "summary.json"), summary)
    print(table(summary, cfg.method))
    return summary


def evaluate(cfg: PipelineConfig, configs: dict[str, ExperimentConfig], workdir: str, results: dict) -> dict:
    """The SFT and the final policy on the test prompts (greedy and sampled completions), judged by the
    task's gold reward and the reward model; plots in the workdir."""
    policy_cfg = configs["policy"]
    mesh = mesh_lib.make_mesh(policy_cfg.mesh)
    sft_model = dataclasses.replace(configs["sft"].model, init_from=os.path.join(workdir, "sft"))  # its tokenizer
    data = task_data(dataclasses.replace(policy_cfg, model=sft_model), workdir, "sft")
    model, sft_params = load_hf(checkpoint_dir(os.path.join(workdir, "sft")), mesh=mesh)
    _, final_params = load_hf(checkpoint_dir(os.path.join(workdir, "policy")), mesh=mesh)
    rm, rm_params = load_scalar(os.path.join(workdir, "reward"), mesh)
    rm_judge = RewardModelJudge(rm, rm_params, data.tokenizer, data.P, data.C)
    m = cfg.method
    result = compare(
        model, {"sft": sft_params, m: final_params}, sft_params, data, pairs=[(m, "sft")],
        gold=GoldJudge(policy_cfg.data.task), rm_judge=rm_judge, temperature=policy_cfg.rl.temperature,
        seed=cfg.seed, mesh=mesh,
    )  # fmt: skip
    figures, curves, versus = result["policies"], result["curves"], result[f"{m}_vs_sft"]

    out_dir = os.path.join(workdir, "plots")
    os.makedirs(out_dir, exist_ok=True)
    written = [plots.step_curves(curves, out_dir)]
    if policy_cfg.train.kind == "rl":
        runs = {cfg.method: os.path.join(workdir, "policy")}
        written += plots.training_curves(runs, {cfg.method: policy_cfg.rl.rollout_batch}, out_dir)
    return {
        "name": cfg.name,
        "seed": cfg.seed,
        "method": cfg.method,
        "test_prompts": len(data.test.kept),
        "reward_model": {
            "test_accuracy": results["reward"]["test_accuracy"],
            "test_pairs": results["reward"]["test_pairs"],
        },
        "policies": figures,
        f"gold_win_rate_{m}_vs_sft": versus["greedy"]["gold_win_rate"],
        f"gold_win_rate_{m}_vs_sft_sampled": versus["sampled"]["gold_win_rate"],
        "curves": curves,
        "plots": written,
    }


def table(summary: dict, method: str) -> str:
    """The SFT vs final policy table printed at the end."""
    rows = [
        ("sampled: gold reward (mean)", lambda f: f["sampled"]["gold"]["mean"]),
        ("sampled: gold reward (var)", lambda f: f["sampled"]["gold"]["variance"]),
        ("sampled: reward model score", lambda f: f["sampled"]["reward_model"]["mean"]),
        ("sampled: win-rate vs ref", lambda f: f["sampled"]["gold_win_rate_vs_reference"]),
        ("sampled: length (tokens)", lambda f: f["sampled"]["length"]),
        ("greedy: gold reward (mean)", lambda f: f["gold"]["mean"]),
        ("greedy: gold reward (var)", lambda f: f["gold"]["variance"]),
        ("greedy: reward model score", lambda f: f["reward_model"]["mean"]),
        ("greedy: win-rate vs ref", lambda f: f["gold_win_rate_vs_reference"]),
        ("greedy: length (tokens)", lambda f: f["length"]),
        ("greedy: distinct-1", lambda f: f["distinct_1"]),
        ("greedy: distinct-2", lambda f: f["distinct_2"]),
        ("perplexity of reference", lambda f: f["perplexity_of_reference"]),
        ("KL to SFT", lambda f: f["kl_to_reference"]),
    ]
    p = summary["policies"]
    lines = [f"{'':28s} {'SFT':>10s} {method:>10s}"]
    lines += [f"{name:28s} {get(p['sft']):10.4f} {get(p[method]):10.4f}" for name, get in rows]
    for decoding, suffix in (("sampled", "_sampled"), ("greedy", "")):
        win = summary[f"gold_win_rate_{method}_vs_sft{suffix}"]
        lines.append(f"{decoding + ': gold win-rate vs SFT':28s} {'':10s} {win:10.4f}")
    lines.append(f"reward model held-out pairwise accuracy: {summary['reward_model']['test_accuracy']:.3f}")
    return "\n".join(lines)
