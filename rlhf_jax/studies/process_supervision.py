"""Process against outcome supervision (Lightman et al. 2023, "Let's verify step by step";
Uesato et al. 2022; the seeds' note 003, first half) on the built-in arithmetic task,
whose every step can be checked, so that labels are exact and free.

    python -m rlhf_jax.main --config experiments/process_supervision.py --workdir DIR

Each step a resumable stage in DIR (SIGKILL anywhere, rerun the same command; the samples
and label sets are made in `process_samples`):

    facts/          the base model: an LM from scratch on one-operation problems solved
                    right (arithmetic_facts: what a pretrained generator brings), or beside
                    them equations to check (arithmetic_checked); a study keeps one a seed
                    in its shared/ directory (`stage_configs`' base_dir)
    generator/      SFT from facts/ on step-format solutions whose final answer is wrong
                    (arithmetic_wrong; arithmetic_right is the control): it learns the
                    format, not the arithmetic
    pool/           pool.jsonl: the generator's `pool` solutions (temperature 1) to each of
                    `test_problems` held-out problems, labelled exactly; best-of-N draws
                    its subsets from these
    labels/uniform/ solutions.jsonl: `labelled` solutions of fresh train problems, one per
                    problem, drawn uniformly from the generator and labelled (outcome and
                    steps); held_out.jsonl: the first pool solution of each test problem
    orm/            the outcome reward model on labels/uniform (from facts/, or from
                    generator/: verifiers_from)
    prm_uniform/    the process reward model on the same solutions (from the same)
    labels/active<r>/, prm_active<r>/   the PRM's active learning, `rounds` rounds of
                    labelled / rounds solutions each (the same number of labels in all):
                    round 0 takes the first of the uniform solutions; round r samples
                    `candidates` solutions for each of its fresh train problems and labels,
                    per problem, the one the round r-1 PRM scores highest among those whose
                    final answer is wrong (a convincing wrong answer; the highest-scored of
                    all when none is wrong); each round's PRM trains from the ORM's start
                    on every round's labels so far
    rl_<reward>/    beyond the paper, for each of `rl_rewards`: RLOO (k and budget of the
                    `policy` stage, advantages whitened so that every reward's scale is the
                    same) from the generator against the verifiable reward ("gold"), the
                    ORM's score ("orm"), the last active PRM's product score ("prm") or its
                    per-step rewards at each step's last token with the token-level
                    leave-one-out estimator ("prm_steps": rloo_to_go, `eval.verifiers`)
    summary.json    best-of-N curves on the pool (`eval.best_of_n`): the ORM, each PRM read
                    three ways (`SCORES`), majority vote, the vote weighted by the ORM's
                    and the PRMs' P(right) ("+vote"), random choice and pass@N; each
                    verifier reading's AUROC against correctness over the pool and within
                    problems (the ranking best-of-N uses: `auroc_within_groups`); each
                    active round's PRM; the PRMs' step calibration; the reward models'
                    held-out figures; the generator's accuracy; each RL run's held-out
                    accuracy (plots/: its training curves, the PRMs' calibration)

A run given twins (`run`; a study's other cells of the seed) starts from a finished twin's
generator, labels and verifiers where its config differs from this one's only in names, the
held-out split and NOT_TRAINED (a seed's validation and test cells): see `twins`.

Reward models train for reward_epochs passes over their labels (the paper: 2 epochs). A
solution's steps are its non-blank lines, its final "The answer is" line among them (as
`tasks.arithmetic.label_solution` labels them); a PRM scores a solution without steps 0.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import numpy as np

from rlhf_jax import config as config_lib
from rlhf_jax import pipeline
from rlhf_jax.eval import plots
from rlhf_jax.eval.best_of_n import curves
from rlhf_jax.eval.metrics import auroc, auroc_within_groups
from rlhf_jax.eval.verifiers import SCORES, calibration
from rlhf_jax.experiment import ExperimentConfig
from rlhf_jax.studies import twins as twins_lib
from rlhf_jax.studies.process_samples import (
    Generator,
    Scorer,
    label_dir,
    make_active,
    make_pool,
    make_uniform,
    wrong_share,
)
from rlhf_jax.studies.records import loss_ends
from rlhf_jax.workdir import write_json

BASE_TASKS = ("arithmetic_checked", "arithmetic_facts")  # with checked equations (the verifiers read steps), or not
GENERATOR_TASKS = ("arithmetic_wrong", "arithmetic_right")
VERIFIERS_FROM = ("base", "generator")
RL_REWARDS = ("gold", "orm", "prm", "prm_steps")
STAGES = ("facts", "generator", "orm", "prm", "policy")  # ProcessConfig's stage templates
# the stages whose held-out rows are the study's problems (the base model's are its own
# task's one-operation facts and checks): one split for all of them, the pool's
HELD_OUT_STAGES = STAGES[1:]
# ProcessConfig's fields that no stage before the RL stages reads (the evaluation's; the RL
# stages'): runs that differ only in these can share their generator, labels and verifiers
NOT_TRAINED = ("test_problems", "pool", "ns", "draws", "policy", "rl_rewards")


@dataclasses.dataclass(frozen=True)
class ProcessConfig:
    """facts, generator: SFT stages (tasks arithmetic_facts and one of GENERATOR_TASKS);
    orm, prm: the reward models' stages (train.kind orm / prm; model, optimiser, batch;
    their steps follow from reward_epochs and the number of labels); policy: the RL
    stages' template (train.kind rl), run once per reward of rl_rewards (RL_REWARDS).
    verifiers_from: the checkpoint the ORM and PRMs start from, "base" (the facts stage)
    or "generator" (as InstructGPT's reward model starts from its SFT policy: the
    generator has read the solution layout and knows each step's next operand)."""

    name: str
    facts: ExperimentConfig
    generator: ExperimentConfig
    orm: ExperimentConfig
    prm: ExperimentConfig
    seed: int = 0
    test_problems: int = 200
    pool: int = 64
    ns: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    draws: int = 200
    labelled: int = 2000
    rounds: int = 4
    candidates: int = 8
    reward_epochs: float = 2.0
    temperature: float = 1.0
    policy: ExperimentConfig | None = None
    rl_rewards: tuple[str, ...] = ()
    verifiers_from: str = "base"

    def __post_init__(self):
        if self.verifiers_from not in VERIFIERS_FROM:
            raise ValueError(f"verifiers_from={self.verifiers_from!r}: expected one of {VERIFIERS_FROM}")
        positive = ("test_problems", "pool", "ns", "draws", "labelled", "rounds", "candidates")
        config_lib.check_numbers(self, {"seed": ">= 0", "reward_epochs": "> 0", "temperature": "> 0",
                                        **dict.fromkeys(positive, ">= 1")})  # fmt: skip
        if not self.ns:
            raise ValueError("ns: empty; give the N of best-of-N (e.g. 1,2,4)")
        kinds = (("facts", "sft"), ("generator", "sft"), ("orm", "orm"), ("prm", "prm"))
        for stage, kind in kinds:
            got = getattr(self, stage).train.kind
            if got != kind:
                raise ValueError(f"{stage}.train.kind={got!r}: the {stage} stage must be {kind!r}")
        if self.facts.data.task not in BASE_TASKS:
            raise ValueError(f"facts.data.task={self.facts.data.task!r}: expected one of {BASE_TASKS}")
        if self.generator.data.task not in GENERATOR_TASKS:
            raise ValueError(f"generator.data.task={self.generator.data.task!r}: expected one of {GENERATOR_TASKS}")
        if not 1 <= max(self.ns) <= self.pool or min(self.ns) < 1:
            raise ValueError(f"ns={self.ns}: each N must be in 1..pool={self.pool}")
        if self.rounds < 1 or self.labelled % self.rounds:
            raise ValueError(f"labelled={self.labelled}: must split evenly over rounds={self.rounds}")
        for stage in ("orm", "prm"):
            batch = getattr(self, stage).train.batch_size
            if batch > self.labelled // self.rounds:
                raise ValueError(
                    f"{stage}.train.batch_size={batch}: above the first active round's {self.labelled // self.rounds} "
                    f"labels (labelled={self.labelled} / rounds={self.rounds})"
                )
        need = self.labelled + (self.rounds - 1) * self.labelled // self.rounds
        if self.generator.data.n_train < need:
            raise ValueError(
                f"generator.data.n_train={self.generator.data.n_train}: the labels need {need} fresh train problems "
                f"(labelled={self.labelled} uniform, then {self.rounds - 1} active rounds of "
                f"{self.labelled // self.rounds})"
            )
        if self.generator.data.n_test < self.test_problems:
            raise ValueError(
                f"generator.data.n_test={self.generator.data.n_test}: below test_problems={self.test_problems}"
            )
        splits = {s: getattr(self, s).data.eval_split for s in HELD_OUT_STAGES if getattr(self, s) is not None}
        if len(set(splits.values())) > 1:
            raise ValueError(f"data.eval_split differs between stages ({splits}): the pool, the verifiers' held-out "
                             "solutions and the RL runs' accuracy must come from one split")  # fmt: skip
        unknown = [r for r in self.rl_rewards if r not in RL_REWARDS]
        if unknown:
            raise ValueError(f"rl_rewards: {unknown} unknown; expected some of {RL_REWARDS}")
        if self.rl_rewards and (self.policy is None or self.policy.train.kind != "rl"):
            raise ValueError("rl_rewards: need a policy stage of train.kind 'rl'")

    @property
    def eval_split(self) -> str:
        """The problems of the pool and of every held-out figure: "test", or "validation"
        (a run that chooses settings or measures gates reads no test problem)."""
        return self.generator.data.eval_split

    def wired_stages(self, workdir: str, data_dir: str = "", base_dir: str = "") -> dict[str, ExperimentConfig]:
        """Every training stage as it will run in workdir (`stage_configs`; preflight checks these)."""
        return stage_configs(self, workdir, data_dir, base_dir)


# ----------------------------------------------------------------------------- stages


def stage_configs(
    cfg: ProcessConfig, workdir: str, data_dir: str = "", base_dir: str = ""
) -> dict[str, ExperimentConfig]:
    """facts, generator, orm, prm_uniform and prm_active<r> as they run (seed, data dir,
    starting checkpoints, labels, steps). data_dir: the task data (default <workdir>/tfds;
    a study shares one); base_dir: where the base model (the facts stage) trains (default
    <workdir>/facts; a study shares one between the generators of a seed). The base's
    config names no generator, so that the runs of one seed agree on it."""
    data_dir = data_dir or os.path.join(workdir, "tfds")

    def wire(stage: ExperimentConfig, name: str, run_name: str = "", **model) -> ExperimentConfig:
        data = dataclasses.replace(stage.data, data_dir=stage.data.data_dir or data_dir)
        return dataclasses.replace(
            stage, name=run_name or f"{cfg.name}_{name}", data=data, model=dataclasses.replace(stage.model, **model),
            train=dataclasses.replace(stage.train, seed=cfg.seed),
        )  # fmt: skip

    facts_dir = base_dir or os.path.join(workdir, "facts")
    verifiers_init = os.path.join(workdir, "generator") if cfg.verifiers_from == "generator" else facts_dir

    def reward(stage: ExperimentConfig, name: str, labels: str, n_labels: int) -> ExperimentConfig:
        steps = max(1, math.ceil(cfg.reward_epochs * n_labels / stage.train.batch_size))
        stage = dataclasses.replace(
            stage,
            data=dataclasses.replace(stage.data, task=cfg.generator.data.task, solutions=labels),
            train=dataclasses.replace(stage.train, steps=steps, save_every=min(stage.train.save_every, steps)),
            optim=dataclasses.replace(stage.optim, total_steps=steps),
        )
        return wire(stage, name, init_from=verifiers_init)

    per_round = cfg.labelled // cfg.rounds
    out = {
        "facts": wire(cfg.facts, "facts", run_name=f"process_supervision_base_{cfg.facts.name}"),
        "generator": wire(cfg.generator, "generator", init_from=facts_dir),
        "orm": reward(cfg.orm, "orm", label_dir(workdir, "uniform"), cfg.labelled),
        "prm_uniform": reward(cfg.prm, "prm_uniform", label_dir(workdir, "uniform"), cfg.labelled),
    }
    for r in range(cfg.rounds):
        out[f"prm_active{r}"] = reward(cfg.prm, f"prm_active{r}", label_dir(workdir, f"active{r}"), (r + 1) * per_round)
    for name in cfg.rl_rewards:
        out[f"rl_{name}"] = rl_stage(cfg, workdir, name, wire)
    return out


def rl_stage(cfg: ProcessConfig, workdir: str, reward: str, wire) -> ExperimentConfig:
    """The RL stage against `reward` (see the module docstring), from the generator."""
    prm = os.path.join(workdir, f"prm_active{cfg.rounds - 1}")
    fields = {
        "gold": {"reward_model": "gold"},
        "orm": {"reward_model": os.path.join(workdir, "orm")},
        "prm": {"reward_model": prm, "prm_reading": "product"},
        "prm_steps": {"reward_model": prm, "prm_reading": "steps", "advantage": "rloo_to_go", "loss": "vanilla_pg"},
    }[reward]
    rl = dataclasses.replace(cfg.policy.rl, whiten_advantages=True, **fields)
    data = dataclasses.replace(cfg.policy.data, task=cfg.generator.data.task)
    stage = dataclasses.replace(cfg.policy, rl=rl, data=data)
    return wire(stage, f"rl_{reward}", init_from=os.path.join(workdir, "generator"))


# ----------------------------------------------------------------------------- the run


def best_of_n(cfg: ProcessConfig, gen: Generator, workdir: str, pool: list[dict]) -> dict:

    P = cfg.test_problems
    prompts, solutions = [x["prompt"] for x in pool], [x["completion"] for x in pool]
    correct = np.asarray([x["outcome"] for x in pool], np.float64).reshape(P, cfg.pool)
    answers = np.asarray([x["final"] for x in pool], dtype=object).reshape(P, cfg.pool)
    truth = [int(gen.data.row(p, "test")["answer"]) for p in range(P)]
    scores, calib = {}, {}
    orm = Scorer(os.path.join(workdir, "orm"), "orm", gen.data.tokenizer, gen.data.P, gen.data.C)
    scores["orm"] = orm(prompts, solutions)["orm"].reshape(P, cfg.pool)
    last = f"prm_active{cfg.rounds - 1}"
    for name in ("prm_uniform", *(f"prm_active{r}" for r in range(cfg.rounds))):
        out = Scorer(os.path.join(workdir, name), "prm", gen.data.tokenizer, gen.data.P, gen.data.C)(prompts, solutions)
        readings = SCORES if name in ("prm_uniform", last) else ("product",)
        for reading in readings:
            scores[f"{name}.{reading}"] = out[reading].reshape(P, cfg.pool)
        if name in ("prm_uniform", last):
            calib[name] = calibration(out["probs"], out["valid"], [x["step_labels"] for x in pool])
    votes = {k: scores[k] for k in ("prm_uniform.product", f"{last}.product")}  # weighted vote: Uesato et al. 2022
    votes["orm"] = 1 / (1 + np.exp(-scores["orm"]))  # P(right) from the ORM's logit
    by_n = curves(correct, answers, truth, scores, cfg.ns, cfg.draws, seed=cfg.seed, vote_weights=votes)
    verifiers = {
        name: {"auroc": auroc(S.ravel(), correct.ravel()), "auroc_within_problems": auroc_within_groups(S, correct)}
        for name, S in scores.items()
    }

    os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
    plots.calibration(calib, os.path.join(workdir, "plots", "calibration.png"), f"PRM calibration, seed {cfg.seed}")
    return {
        "curves": {name: {str(n): acc for n, acc in c.items()} for name, c in by_n.items()},
        "calibration": calib,
        "verifiers": verifiers,
        "generator_accuracy": float(correct.mean()),
    }


def run(cfg: ProcessConfig, workdir: str, data_dir: str = "", base_dir: str = "", twins: tuple[str, ...] = ()) -> dict:
    """Every stage not done yet, then the best-of-N evaluation; DIR/summary.json.
    data_dir, base_dir: as in `stage_configs`. twins: sibling runs' directories (a study's
    other cells of the seed); the first finished one of this config up to its name and
    held-out split lends its trained stages and labels (`twins`), stage by stage until one
    differs: a seed's test cell does not train again what its validation cell trained."""
    path = os.path.join(workdir, "summary.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    t0 = time.time()
    configs = stage_configs(cfg, workdir, data_dir, base_dir)
    results, seconds = {}, {}
    twin = twins_lib.find(config_lib.to_dict(cfg), workdir, twins, aside=NOT_TRAINED)

    def stage(name: str) -> bool:
        nonlocal twin
        t = time.time()
        directory = base_dir if name == "facts" and base_dir else os.path.join(workdir, name)
        if twin and name != "facts":  # the base is shared already
            theirs = twins_lib.trained(twin, name, config_lib.to_dict(configs[name]), workdir)
            if theirs:
                twins_lib.adopt(directory, theirs)
            else:  # the stages after it depend on it: they train here too
                twin = ""
        results[name] = pipeline.run_stage(name, configs[name], directory)
        if name in configs and configs[name].train.kind in ("orm", "prm"):
            results[name] = {**results[name], **loss_ends(directory)}
        seconds[name] = round(time.time() - t, 1)
        return not results[name].get("stopped")

    for name in ("facts", "generator"):
        if not stage(name):
            return {"stopped": True, "stage": name}
    gen = Generator(cfg, configs, workdir)
    t = time.time()
    pool = make_pool(cfg, gen, workdir)
    make_uniform(cfg, gen, workdir, pool, twin)
    seconds["sampling"] = round(time.time() - t, 1)
    for name in ("orm", "prm_uniform"):
        if not stage(name):
            return {"stopped": True, "stage": name}
    for r in range(cfg.rounds):
        make_active(cfg, gen, workdir, r, pool, twin)
        if not stage(f"prm_active{r}"):
            return {"stopped": True, "stage": f"prm_active{r}"}
    t = time.time()
    evaluation = best_of_n(cfg, gen, workdir, pool)
    seconds["best_of_n"] = round(time.time() - t, 1)
    for name in cfg.rl_rewards:
        if not stage(f"rl_{name}"):
            return {"stopped": True, "stage": f"rl_{name}"}
    rl = rl_figures(cfg, configs, results, workdir)
    summary = {
        "name": cfg.name,
        "seed": cfg.seed,
        "generator_task": cfg.generator.data.task,
        **evaluation,
        "reward_models": {k: v for k, v in results.items() if k not in ("facts", "generator") and k[:3] != "rl_"},
        "generator": results["generator"],
        "rl": rl,
        "labels": {
            "uniform_wrong_share": wrong_share(label_dir(workdir, "uniform")),
            **{f"active{r}_wrong_share": wrong_share(label_dir(workdir, f"active{r}")) for r in range(cfg.rounds)},
        },
        "seconds": {**seconds, "total": round(time.time() - t0, 1)},
    }
    write_json(path, summary)
    print(table(summary))
    return summary


def rl_figures(cfg: ProcessConfig, configs: dict, results: dict, workdir: str) -> dict:
    """Per RL run: held-out accuracy (sampled, the verifiable reward) of the policy and of
    the generator it started from, and the last logged training figures; plots/ gets
    their curves against completions sampled."""

    out = {}
    for name in cfg.rl_rewards:
        test = results[f"rl_{name}"]["test"]["policies"]
        out[name] = {
            "test_accuracy": test["policy"]["sampled"]["gold"]["mean"],
            "generator_test_accuracy": test["reference"]["sampled"]["gold"]["mean"],
            "train_gold_last": results[f"rl_{name}"]["train"].get("gold"),
        }
    if cfg.rl_rewards:
        os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
        runs = {name: os.path.join(workdir, f"rl_{name}") for name in cfg.rl_rewards}
        batch = {name: configs[f"rl_{name}"].rl.rollout_batch for name in cfg.rl_rewards}
        plots.training_curves(runs, batch, os.path.join(workdir, "plots"))
    return out


def study_figures(summary: dict) -> tuple[dict, list[dict]]:
    """A finished run as a study cell reports it: (metrics tree, one row per N). The tree:
    "best_of_n" (selector -> N -> accuracy), "generator_accuracy", each reward model's
    held-out figures, "verifiers" (each verifier reading's AUROC against correctness over
    the pool and within problems), the labels' wrong-answer shares; a row: "n" and each selector's
    accuracy at that N."""
    curves = summary["curves"]
    tree = {
        "best_of_n": curves,
        "verifiers": summary.get("verifiers", {}),
        "generator_accuracy": summary["generator_accuracy"],
        "reward_models": {
            name: {k: v for k, v in r.items() if k.startswith(("test_", "train_loss_"))}
            for name, r in summary["reward_models"].items()
        },  # fmt: skip
        "labels": summary["labels"],
        "rl": summary.get("rl", {}),
    }
    ns = sorted({int(n) for c in curves.values() for n in c})
    rows = [{"n": n, **{name: c[str(n)] for name, c in curves.items() if str(n) in c}} for n in ns]
    return tree, rows


def table(summary: dict) -> str:
    """Best-of-N accuracy, one line per selector, one column per N."""
    curves = summary["curves"]
    ns = sorted({int(n) for c in curves.values() for n in c})
    lines = [f"{'selector':<28}" + "".join(f"{'N=' + str(n):>8}" for n in ns)]
    for name, c in curves.items():
        lines.append(f"{name:<28}" + "".join(f"{c[str(n)]:>8.3f}" for n in ns))
    lines.append(f"generator accuracy (T=1): {summary['generator_accuracy']:.3f}")
    return "\n".join(lines)
