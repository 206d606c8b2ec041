"""Process against outcome supervision, Lightman et al. (2023) on the built-in arithmetic
task (`rlhf_jax/studies/process_supervision.py`, `experiments/process_supervision.py`):

    python -m rlhf_jax.main --config experiments/studies/process_supervision.py --workdir DIR \\
        --records studies/process_supervision [--jobs 2]

Fixed before any figure is read: groups `wrong` (the generator fine-tuned on step-format
solutions whose final answer is wrong, as the issue's reading of the paper has it) and
`right` (on right solutions: the control), seeds 0-2, each the whole run: base model,
generator, a pool of 64 solutions to each of 200 held-out problems, an ORM and a PRM on
the same 2000 uniformly drawn labelled solutions, a PRM from 4 active-learning rounds of
500 (convincing wrong answers), best-of-N for N in 1..64 (200 subsets per N and problem).
Beyond the paper, in `wrong` only: RLOO (k = 4, 100 steps of 64 completions) from the
generator against the verifiable reward, the ORM, the PRM's product score and its per-step
rewards. The report: best-of-64 accuracy per selector with intervals over seeds; the curves
against N; each active round's PRM; the RL runs' held-out accuracy. Variant: smoke (the
tiny sizes, one seed: the tests' size).
"""

import math

from experiments import process_supervision
from rlhf_jax.studies.claims import Arm, Claim, Diff, Gate, Trend
from rlhf_jax.studies.study import Cell, Figure, Metric, StudyConfig

SEEDS = (0, 1, 2)
GROUPS = {"wrong": "", "right": "right"}  # group -> variant of experiments/process_supervision.py
SELECTORS = ("orm", "prm_uniform.product", "prm_uniform.min", "prm_uniform.first_error", "majority", "random")


POST_HOC = "test, post hoc"  # the gates were declared after the test records (see the provenance)
MARGIN = 0.02
MARGIN_WHY = "4 of the 200 held-out problems"
PRM, ACTIVE = "prm_uniform.product", "prm_active{last}.product"
WHO = {"wrong": "wrong-answer generator, the paper's", "right": "right-answer generator, the control"}


def gates(group: str, top: int, last: int) -> tuple[Gate, ...]:
    """The instrument's gates for one generator's cells."""

    def best(selector):
        return Arm(group, f"best_of_n.{selector}.{top}")

    def above_random(name, selector):
        return Gate(f"{group}: {name} above random", f"best-of-{top} by the {name} - random choice",
                    Diff(best(selector), best("random")), low=0.01, split=POST_HOC,
                    reason="a verifier that picks no better than chance does not verify (its AUROC was not "
                           "recorded)")  # fmt: skip

    return (
        Gate(f"{group}: generator headroom", "the generator's accuracy at T = 1",
             Arm(group, "generator_accuracy"), low=0.2, high=0.6, split=POST_HOC,
             reason="below 20% most pools of N hold few right answers; above 60% majority voting is hard to beat"),
        Gate(f"{group}: ORM above majority class", "the ORM's held-out accuracy - its majority-class baseline",
             Diff(Arm(group, "reward_models.orm.test_accuracy"),
                  Arm(group, "reward_models.orm.test_majority_baseline")),
             low=0.02, split=POST_HOC, reason="an ORM at its baseline predicts one class for every solution"),
        above_random("ORM", "orm"),
        above_random("PRM", PRM),
        above_random("active PRM", ACTIVE.format(last=last)),
    )  # fmt: skip


def claims(group: str, ns: tuple[int, ...], last: int) -> tuple[Claim, ...]:
    top = max(ns)

    def best(selector, n=top):
        return Arm(group, f"best_of_n.{selector}.{n}")

    g = {k: f"{group}: {k}" for k in ("generator headroom", "ORM above majority class", "ORM above random",
                                      "PRM above random", "active PRM above random")}  # fmt: skip
    lead = tuple(
        Trend(tuple((math.log2(n), Diff(best(PRM, n), best(other, n))) for n in ns), f"slope of PRM - {other} over "
              "log2 N")
        for other in ("orm", "majority")
    )  # fmt: skip
    who = WHO[group]
    both = (g["generator headroom"], g["ORM above majority class"], g["ORM above random"], g["PRM above random"])
    return (
        Claim(f"{group}: prm over orm", f"best-of-{top} by the PRM beats the ORM ({who})",
              (Diff(best(PRM), best("orm"), "PRM - ORM"),), +1, MARGIN, MARGIN_WHY, both),
        Claim(f"{group}: prm over majority", f"best-of-{top} by the PRM beats majority voting ({who})",
              (Diff(best(PRM), best("majority"), "PRM - majority"),), +1, MARGIN, MARGIN_WHY,
              (g["generator headroom"], g["PRM above random"])),
        Claim(f"{group}: lead grows with N", f"the PRM's lead over the ORM and majority voting grows with N ({who})",
              lead, +1, MARGIN / math.log2(top), f"{MARGIN_WHY} across N = 1 to {top}", both),
        Claim(f"{group}: active over uniform", f"a PRM on active-learning labels (convincing wrong answers) beats one "
              f"on uniform labels at equal labels, best-of-{top} ({who})",
              (Diff(best(ACTIVE.format(last=last)), best(PRM), "active PRM - PRM"),), +1, MARGIN, MARGIN_WHY,
              (g["generator headroom"], g["PRM above random"], g["active PRM above random"])),
    )  # fmt: skip


def get_config(variant: str | None = None) -> StudyConfig:
    if variant not in (None, "smoke"):
        raise ValueError(f"process_supervision: unknown variant {variant!r}; known: smoke")
    smoke = variant == "smoke"
    configs = {g: process_supervision.get_config(",".join(p for p in (v, "tiny" if smoke else "") if p))
               for g, v in GROUPS.items()}  # fmt: skip
    if smoke:
        configs = {"wrong": configs["wrong"]}
    some = next(iter(configs.values()))
    top, last = str(max(some.ns)), f"prm_active{some.rounds - 1}"
    active = tuple(f"{last}.{r}" for r in ("product", "min", "first_error"))
    metrics = (
        Metric("generator accuracy (T=1)", "generator_accuracy"),
        *(Metric(f"best-of-{top} {s}", f"best_of_n.{s}.{top}") for s in (*SELECTORS, active[0], "pass@N")),
        Metric("ORM held-out accuracy", "reward_models.orm.test_accuracy"),
        Metric("PRM (uniform) held-out step accuracy", "reward_models.prm_uniform.test_step_accuracy"),
        Metric(f"PRM ({last}) held-out step accuracy", f"reward_models.{last}.test_step_accuracy"),
        Metric("labels: wrong answers, uniform", "labels.uniform_wrong_share"),
        Metric(f"labels: wrong answers, {last}", f"labels.{last.replace('prm_', '')}_wrong_share"),
        *(Metric(f"RLOO vs {r}: test accuracy", f"rl.{r}.test_accuracy") for r in some.rl_rewards),
    )
    cells = tuple(
        Cell(group, seed, cfg, settings=(("generator data", cfg.generator.data.task),))
        for group, cfg in configs.items()
        for seed in ((0,) if smoke else SEEDS)
    )
    rounds = tuple(f"prm_active{r}.product" for r in range(some.rounds))
    figures = (
        Figure("best_of_n", "Best-of-N accuracy", tuple(configs), (*SELECTORS, *active, "pass@N"), "against_n"),
        Figure("active_rounds", "Best-of-N by the PRM of each active round", tuple(configs), rounds, "against_n"),
    )
    return StudyConfig(
        name="process_supervision_smoke" if smoke else "process_supervision",
        cells=cells,
        metrics=metrics,
        sft_row=False,
        curves=(),
        figures=figures,
        claims=tuple(c for g in configs for c in claims(g, some.ns, some.rounds - 1)),
        gates=tuple(x for g in configs for x in gates(g, max(some.ns), some.rounds - 1)),
        description="Process against outcome supervision with best-of-N (experiments/studies/process_supervision.py).",
    )
