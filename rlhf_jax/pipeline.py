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
import numpy as np

from rlhf_jax import config as config_lib
from rlhf_jax import loops
from rlhf_jax import mesh as mesh_lib
from rlhf_jax import workdir as workdir_lib
from rlhf_jax.eval import plots
from rlhf_jax.eval.judges import RewardModelJudge
from rlhf_jax.eval.policies import compare, sample_texts, verifiable_figures
from rlhf_jax.experiment import ExperimentConfig
from rlhf_jax.loops.common import load_scalar
from rlhf_jax.loops.data import task_data
from rlhf_jax.models.hf import load_hf
from rlhf_jax.workdir import checkpoint_dir, write_json, write_jsonl

REWARD_SOURCES = ("model", "task")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """seed: the training seed of every stage (the task data stay the same).
    reward_source: "model" (the reward stage trains a reward model; RL scores with it) or
    "task" (a verifiable reward: no reward stage; RL scores with the task's gold judge, and
    a preference policy stage trains on labelled_pairs train prompts' two SFT samples that
    the judge tells apart, `verifier_pairs`)."""

    name: str = "pipeline"
    seed: int = 0
    sft: ExperimentConfig = ExperimentConfig()
    reward: ExperimentConfig = ExperimentConfig()
    policy: ExperimentConfig = ExperimentConfig()
    reward_source: str = "model"
    labelled_pairs: int = 0
    pass_k: int = 8  # reward_source task: samples per test prompt for pass@k and right / wrong lengths

    def __post_init__(self):
        config_lib.check_numbers(self, {"seed": ">= 0", "labelled_pairs": ">= 0", "pass_k": ">= 1"})
        if self.reward_source not in REWARD_SOURCES:
            raise ValueError(f"reward_source={self.reward_source!r}: expected one of {REWARD_SOURCES}")
        for stage, kind in (("sft", ("sft",)), ("reward", ("reward",)), ("policy", ("rl", "preference"))):
            got = getattr(self, stage).train.kind
            if got not in kind and stage in self.trained_stages:
                raise ValueError(f"{stage}.train.kind={got!r}: the {stage} stage must be one of {kind}")
        if self.reward_source == "task":
            if self.policy.data.task_spec.judge is None:
                raise ValueError(f"reward_source=task: policy.data.task={self.policy.data.task} has no gold judge")
            if self.policy.train.kind == "rl" and self.policy.rl.reward_model != "gold":
                raise ValueError(f"reward_source=task: policy.rl.reward_model={self.policy.rl.reward_model!r}; the "
                                 "task's judge scores (leave it gold)")  # fmt: skip
            if self.policy.train.kind == "preference" and not self.labelled_pairs:
                raise ValueError("reward_source=task with a preference policy stage: set labelled_pairs (the train "
                                 "prompts whose two SFT samples the task's judge labels)")  # fmt: skip

    @property
    def trained_stages(self) -> tuple[str, ...]:
        """The stages that run, in order (no reward stage on a verifiable reward)."""
        return STAGES if self.reward_source == "model" else ("sft", "policy")

    @property
    def method(self) -> str:
        p, rl = self.policy, self.policy.rl
        if p.train.kind != "rl":
            return p.preference.objective
        return f"{rl.estimator.name}+{rl.objective.name}" if rl.advantage or rl.loss else rl.method


STAGES = ("sft", "reward", "policy")


def stage_dirs(workdir: str) -> dict[str, str]:
    """Where a pipeline in workdir runs its stages: <workdir>/<stage> (a study puts the
    stages its cells share elsewhere)."""
    return {name: os.path.join(workdir, name) for name in STAGES}


def wire(cfg: PipelineConfig, stage: ExperimentConfig, data_dir: str, **model) -> ExperimentConfig:
    """A stage's config as the pipeline runs it: the pipeline's seed, its data directory
    (unless the stage names one), model fields set (the checkpoint it starts from)."""
    data = dataclasses.replace(stage.data, data_dir=stage.data.data_dir or data_dir)
    train = dataclasses.replace(stage.train, seed=cfg.seed)
    return dataclasses.replace(stage, data=data, train=train, model=dataclasses.replace(stage.model, **model))


def stages(cfg: PipelineConfig, workdir: str, dirs: dict[str, str] | None = None, data_dir: str = ""):
    """Each stage's config with the pipeline's wiring applied: the reward model and the
    policy start from the SFT export, the RL stage scores with the reward model.
    dirs: the stages' directories (default `stage_dirs(workdir)`); data_dir: the prepared
    data (default <workdir>/tfds)."""
    dirs = dirs or stage_dirs(workdir)
    data_dir = data_dir or os.path.join(workdir, "tfds")
    sft_dir = dirs["sft"]
    policy = wire(cfg, cfg.policy, data_dir, init_from=cfg.policy.model.init_from or sft_dir)
    if cfg.reward_source == "task":  # the task's judge scores; a preference stage reads the judged pairs
        if policy.train.kind == "preference":
            pairs = dirs.get("pairs") or os.path.join(workdir, "pairs")
            policy = dataclasses.replace(policy, data=dataclasses.replace(policy.data, comparisons=pairs))
        return {"sft": wire(cfg, cfg.sft, data_dir), "policy": policy}
    if policy.train.kind == "rl" and policy.rl.reward_model == "gold":
        policy = dataclasses.replace(policy, rl=dataclasses.replace(policy.rl, reward_model=dirs["reward"]))
    return {
        "sft": wire(cfg, cfg.sft, data_dir),
        "reward": wire(cfg, cfg.reward, data_dir, init_from=cfg.reward.model.init_from or sft_dir),
        "policy": policy,
    }


def run_stage(name: str, cfg: ExperimentConfig, directory: str) -> dict:
    """Run one stage in `directory` unless it holds a finished run of this config; the
    directory is locked while it runs (another process that needs the same stage, such as
    a study's cell run alongside, waits and then finds it done)."""
    with workdir_lib.Lock(directory, wait=True):
        resolved = config_lib.to_dict(cfg)
        if workdir_lib.finished(directory, resolved):
            print(f"== {name}: already done ({directory})")
            with open(os.path.join(directory, "summary.json")) as f:
                return json.load(f)
        if jax.process_index() == 0:
            workdir_lib.retire_summary(directory)  # a summary of another config does not finish this one
            write_json(os.path.join(directory, "config.json"), resolved)
        print(f"== {name}: {cfg.name} ({cfg.train.kind}) in {directory}", flush=True)
        return loops.run(cfg, directory)


def verifier_pairs(cfg: PipelineConfig, configs: dict[str, ExperimentConfig], dirs: dict[str, str], out: str) -> str:
    """A verifiable reward's comparisons for a preference policy stage (reward_source task):
    the SFT samples two completions (at rl.temperature) for each of labelled_pairs train
    prompts (a permutation by the seed); the task's judge scores both, and a pair it tells
    apart is a comparison (the higher chosen). The same for the eval split's prompts:
    held_out.jsonl, the stage's test pairs. counts.json: what the labels bought. Written
    once, comparisons.jsonl last (its presence marks the step done); returns `out`."""
    done = os.path.join(out, "comparisons.jsonl")
    if os.path.exists(done):
        return out
    policy = configs["policy"]
    sft_model = dataclasses.replace(configs["sft"].model, init_from=dirs["sft"])
    data = task_data(dataclasses.replace(policy, model=sft_model), dirs["sft"], "sft")
    mesh = mesh_lib.make_mesh(policy.mesh)
    model, params = load_hf(checkpoint_dir(dirs["sft"]), mesh=mesh)
    n = cfg.labelled_pairs
    if n > len(data.train.kept):
        raise ValueError(f"labelled_pairs={n}: the task has {len(data.train.kept)} train prompts (raise data.n_train)")

    def judged(rows, split: str, seed: int) -> tuple[list[dict], int]:
        texts = sample_texts(model, params, data, rows, split, n=2, temperature=policy.rl.temperature, seed=seed,
                             mesh=mesh)  # fmt: skip
        gold = data.gold(np.repeat(rows, 2), texts, split)
        pairs = []
        for i, row in enumerate(rows):
            a, b, ga, gb = texts[2 * i], texts[2 * i + 1], gold[2 * i], gold[2 * i + 1]
            if ga != gb and a != b:
                prompt = data.row(int(row), split)["prompt"]
                pairs.append({"prompt": prompt, "chosen": a if ga > gb else b, "rejected": b if ga > gb else a})
        return pairs, len(rows)

    rows = np.random.default_rng([cfg.seed, 13]).permutation(len(data.train.kept))[:n]
    train, labelled = judged(rows, "train", cfg.seed * 1000 + 1)
    held_out, _ = judged(np.arange(len(data.test.kept)), "test", cfg.seed * 1000 + 2)
    if not train or not held_out:
        raise ValueError(f"the SFT's two samples of {n} prompts: {len(train)} pairs the judge tells apart (train), "
                         f"{len(held_out)} (held out); a preference stage needs some of each")  # fmt: skip
    if jax.process_index() == 0:
        os.makedirs(out, exist_ok=True)
        counts = {"labelled": labelled, "completions_judged": 2 * labelled, "with_signal": len(train),
                  "held_out": len(held_out)}  # fmt: skip
        write_json(os.path.join(out, "counts.json"), counts)
        write_jsonl(os.path.join(out, "held_out.jsonl"), held_out)
        write_jsonl(done, train)
    mesh_lib.barrier("verifier pairs written")  # the other processes read them next
    print(f"== pairs: the judge tells apart {len(train)} of {labelled} pairs of SFT samples "
          f"({len(held_out)} held out)", flush=True)  # fmt: skip
    return out


def run(cfg: PipelineConfig, workdir: str, dirs: dict[str, str] | None = None, data_dir: str = "") -> dict:
    """Run the stages in order (each resumable, a finished one skipped), then `evaluate`;
    writes <workdir>/summary.json and prints the table. dirs, data_dir: as in `stages`."""
    t0 = time.time()
    dirs = dirs or stage_dirs(workdir)
    configs = stages(cfg, workdir, dirs, data_dir)
    results, timings = {}, {}
    for name, stage in configs.items():
        t = time.time()
        if name == "policy" and stage.data.comparisons and cfg.reward_source == "task":
            verifier_pairs(cfg, configs, dirs, stage.data.comparisons)
        results[name] = run_stage(name, stage, dirs[name])
        timings[name] = round(time.time() - t, 1)
        if results[name].get("stopped"):
            return {"stopped": True, "stage": name}
    t = time.time()
    summary = evaluate(cfg, configs, dirs, results, os.path.join(workdir, "plots"))
    timings["evaluation"] = round(time.time() - t, 1)
    summary["seconds"] = {**timings, "total": round(time.time() - t0, 1)}
    if jax.process_index() == 0:
        write_json(os.path.join(workdir, "summary.json"), summary)
    print(table(summary, cfg.method))
    return summary


def evaluate(cfg: PipelineConfig, configs: dict[str, ExperimentConfig], dirs: dict[str, str], results: dict,
             out_dir: str) -> dict:  # fmt: skip
    """The SFT and the final policy on the test prompts (greedy and sampled completions),
    judged by the task's gold reward and the reward model (on a verifiable reward: pass@k
    and the lengths of right and wrong answers, `verifiable_figures`); plots in out_dir."""
    policy_cfg = configs["policy"]
    mesh = mesh_lib.make_mesh(policy_cfg.mesh)
    sft_model = dataclasses.replace(configs["sft"].model, init_from=dirs["sft"])  # its tokenizer
    data = task_data(dataclasses.replace(policy_cfg, model=sft_model), dirs["sft"], "sft")
    model, sft_params = load_hf(checkpoint_dir(dirs["sft"]), mesh=mesh)
    _, final_params = load_hf(checkpoint_dir(dirs["policy"]), mesh=mesh)
    rm_judge = None
    if "reward" in configs:
        rm, rm_params = load_scalar(dirs["reward"], mesh)
        rm_judge = RewardModelJudge(rm, rm_params, data.tokenizer, data.P, data.C)
    m = cfg.method
    result = compare(
        model, {"sft": sft_params, m: final_params}, sft_params, data, pairs=[(m, "sft")],
        gold=data.task.judge, rm_judge=rm_judge, temperature=policy_cfg.rl.temperature,
        seed=cfg.seed, mesh=mesh,
    )  # fmt: skip
    figures, curves, versus = result["policies"], result["curves"], result[f"{m}_vs_sft"]
    if cfg.reward_source == "task":  # pass@k and the lengths of right and wrong answers
        for name, params in (("sft", sft_params), (m, final_params)):
            figures[name]["verifiable"] = verifiable_figures(
                model, params, data, k=cfg.pass_k, temperature=policy_cfg.rl.temperature, seed=cfg.seed, mesh=mesh
            )

    os.makedirs(out_dir, exist_ok=True)
    written = [plots.step_curves(curves, out_dir)]
    if policy_cfg.train.kind == "rl":
        runs = {cfg.method: dirs["policy"]}
        written += plots.training_curves(runs, {cfg.method: policy_cfg.rl.rollout_batch}, out_dir)
    return {
        "name": cfg.name,
        "seed": cfg.seed,
        "method": cfg.method,
        "test_prompts": len(data.test.kept),
        "reward_model": {
            k: results["reward"][k]
            for k in ("test_accuracy", "test_pairs", "content_probe_accuracy", "content_probe_pairs")
            if k in results.get("reward", {})
        },
        "policies": figures,
        f"gold_win_rate_{m}_vs_sft": versus["greedy"]["gold_win_rate"],
        f"gold_win_rate_{m}_vs_sft_sampled": versus["sampled"]["gold_win_rate"],
        "curves": curves,
        "plots": written,
    }


def table(summary: dict, method: str) -> str:
    """The SFT vs final policy table printed at the end."""
    scored = "reward_model" in summary["policies"]["sft"]["sampled"]  # no reward model on a verifiable reward
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
    rows = [(name, get) for name, get in rows if scored or "reward model" not in name]
    p = summary["policies"]
    lines = [f"{'':28s} {'SFT':>10s} {method:>10s}"]
    lines += [f"{name:28s} {get(p['sft']):10.4f} {get(p[method]):10.4f}" for name, get in rows]
    for decoding, suffix in (("sampled", "_sampled"), ("greedy", "")):
        win = summary[f"gold_win_rate_{method}_vs_sft{suffix}"]
        lines.append(f"{decoding + ': gold win-rate vs SFT':28s} {'':10s} {win:10.4f}")
    rm = summary["reward_model"]
    if "test_accuracy" in rm:
        line = f"reward model held-out pairwise accuracy: {rm['test_accuracy']:.3f}"
        if "content_probe_accuracy" in rm:
            line += f"; content probe: {rm['content_probe_accuracy']:.3f}"
        lines.append(line)
    return "\n".join(lines)
