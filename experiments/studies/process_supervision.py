"""Process against outcome supervision, Lightman et al. (2023) on the built-in arithmetic
task (`rlhf_jax/studies/process_supervision.py`, `experiments/process_supervision.py`):

    python -m rlhf_jax.main --config experiments/studies/process_supervision.py --workdir DIR \\
        --records studies/process_supervision [--jobs 2]

Fixed before any test figure is read: groups `wrong` (the generator fine-tuned on
step-format solutions whose final answer is wrong, as the issue's reading of the paper has
it) and `right` (on right solutions: the control), seeds 0-2. Every model has four layers
(at two, no verifier ranked a problem's solutions above AUROC 0.67 on validation). Each
seed's base model (shared by its two generators) learns the one-operation facts and,
beside them, to check an equation, "Check: a op b = c" (task arithmetic_checked); then
each cell: generator (wrong: 600 steps, right: 300, so that each is right 25-40% of the
time on validation), a pool of 256 solutions to each of 200 held-out problems, an ORM and
a PRM from the generator on the same 32,000 uniformly drawn labelled solutions (classes
weighted by their inverse frequency), a PRM from 2 active-learning rounds of 16,000 (a
selector on uniform labels, then its convincing wrong answers), best-of-N for N in 1..256
(200 subsets per N and problem; at N = 256 the whole pool). Beyond the paper, in
`wrong`'s test cells only: RLOO (k = 4, 100 steps of 64 completions) from the generator
against the verifiable reward, the ORM, the PRM's product score and its per-step rewards.

Gates, on one validation cell per generator (seed 0, the pool and every held-out solution
from the validation problems) before any test cell: the generator's accuracy in 20-60%;
the ORM above its majority-class baseline; the ORM, the PRM and the last active PRM each
ranking right above wrong solutions within a problem's pool at AUROC >= 0.75, and each
picking from the whole pool better than random choice (best-of-256 - random >= 0.02: a
ranking at AUROC 0.78 still put a wrong solution on top for 93.5% of problems); the
argmax claims wait on the last, the weighted votes' (Uesato et al. 2022) do not. The
report: best-of-256 accuracy per selector (the argmax, majority voting and the vote
weighted by the ORM's and the PRM's P(right)) with intervals over seeds; the curves against N; each
active round's PRM; the verifiers' AUROC; the RL runs' held-out accuracy. Variant: smoke
(the tiny sizes, one seed: the tests' size).
"""

import math

from experiments import process_supervision
from rlhf_jax.studies.claims import Arm, Claim, Diff, Gate, Trend
from rlhf_jax.studies.study import Cell, Figure, Metric, StudyConfig

SEEDS = (0, 1, 2)
GROUPS = {"wrong": "", "right": "right"}  # group -> variant of experiments/process_supervision.py
VALIDATION = {g: f"{g}_validation" for g in GROUPS}  # each generator's gates, measured on validation (seed 0)
SELECTORS = (
    "orm",
    "prm_uniform.product",
    "prm_uniform.min",
    "prm_uniform.first_error",
    "majority",
    "random",
    "orm+vote",
    "prm_uniform.product+vote",
)  # +vote: the answer with the most P(right), Uesato et al. 2022

MARGIN = 0.02
MARGIN_WHY = "4 of the 200 held-out problems"
AUROC = 0.75
PRM, ACTIVE = "prm_uniform.product", "prm_active{last}.product"
WHO = {"wrong": "wrong-answer generator, the paper's", "right": "right-answer generator, the control"}
READS = {"ORM": "orm", "PRM": PRM, "active PRM": ACTIVE}


def gates(group: str, top: int, last: int) -> tuple[Gate, ...]:
    """The instrument's gates for one generator, on its validation cell: the pool and the
    verifiers' held-out solutions from the validation problems."""
    val = VALIDATION[group]

    def verifies(name):
        reading = READS[name].format(last=last)
        return Gate(f"{group}: {name} verifies", f"the {name}'s AUROC against correctness within each problem's "
                    "pool, averaged over problems (the ranking best-of-N uses)",
                    Arm(val, f"verifiers.{reading}.auroc_within_problems"), low=AUROC,
                    reason="0.5 is chance; the last run's verifiers: 0.52-0.56, picking below random")  # fmt: skip

    def picks(name):
        reading = READS[name].format(last=last)
        return Gate(f"{group}: {name} picks from {top}", f"best-of-{top} by the {name} - random choice",
                    Diff(Arm(val, f"best_of_n.{reading}.{top}"), Arm(val, f"best_of_n.random.{top}")), low=MARGIN,
                    reason="its argmax is right only where a right solution tops every wrong one of the pool; at "
                    "AUROC 0.78 within problems a PRM did for 6.5% of problems: best-of-256 0.065, random 0.517 "
                    "(docs/notes.md, 2026-12-07); two argmaxes below random compare nothing")  # fmt: skip

    return (
        Gate(f"{group}: generator headroom", "the generator's accuracy at T = 1",
             Arm(val, "generator_accuracy"), low=0.2, high=0.6,
             reason="below 20% most pools of N hold few right answers; above 60% majority voting is hard to beat"),
        Gate(f"{group}: ORM above majority class", "the ORM's held-out accuracy - its majority-class baseline",
             Diff(Arm(val, "reward_models.orm.test_accuracy"), Arm(val, "reward_models.orm.test_majority_baseline")),
             low=0.02, reason="an ORM at its baseline predicts one class for every solution"),
        *(verifies(name) for name in READS),
        *(picks(name) for name in READS),
    )  # fmt: skip


def claims(group: str, ns: tuple[int, ...], last: int) -> tuple[Claim, ...]:
    """The paper's claims for one generator, on its test cells, each behind its gates."""
    top = max(ns)

    def best(selector, n=top):
        return Arm(group, f"best_of_n.{selector}.{n}")

    def sound(verifier):  # its gates: ranks within a problem, and picks from the largest pool
        return (f"{group}: {verifier} verifies", f"{group}: {verifier} picks from {top}")

    headroom = f"{group}: generator headroom"
    orm = (f"{group}: ORM above majority class", *sound("ORM"))
    lead = tuple(
        Trend(tuple((math.log2(n), Diff(best(PRM, n), best(other, n))) for n in ns), f"slope of PRM - {other} over "
              "log2 N")
        for other in ("orm", "majority")
    )  # fmt: skip
    who = WHO[group]
    return (
        Claim(f"{group}: prm over orm", f"best-of-{top} by the PRM beats the ORM ({who})",
              (Diff(best(PRM), best("orm"), "PRM - ORM"),), +1, MARGIN, MARGIN_WHY,
              (headroom, *orm, *sound("PRM"))),
        Claim(f"{group}: prm over majority", f"best-of-{top} by the PRM beats majority voting ({who})",
              (Diff(best(PRM), best("majority"), "PRM - majority"),), +1, MARGIN, MARGIN_WHY,
              (headroom, *sound("PRM"))),
        Claim(f"{group}: lead grows with N", f"the PRM's lead over the ORM and majority voting grows with N ({who})",
              lead, +1, MARGIN / math.log2(top), f"{MARGIN_WHY} across N = 1 to {top}",
              (headroom, *orm, *sound("PRM"))),
        Claim(f"{group}: prm vote equals orm vote", f"the vote weighted by the PRM's and by the ORM's P(right) are "
              f"right equally often at N = {top} (Uesato et al. 2022: outcome and process supervision give similar "
              f"final-answer error; {who})", (Diff(best(PRM + "+vote"), best("orm+vote"), "PRM vote - ORM vote"),), 0,
              MARGIN, MARGIN_WHY, (headroom, f"{group}: ORM above majority class", f"{group}: ORM verifies",
                                   f"{group}: PRM verifies")),
        Claim(f"{group}: prm vote over majority", f"the vote weighted by the PRM's P(right) beats majority voting at "
              f"N = {top} (Uesato et al. 2022's RM-weighted decoding; {who})",
              (Diff(best(PRM + "+vote"), best("majority"), "PRM vote - majority"),), +1, MARGIN, MARGIN_WHY,
              (headroom, f"{group}: PRM verifies")),
        Claim(f"{group}: active over uniform", f"a PRM on active-learning labels (convincing wrong answers) beats one "
              f"on uniform labels at equal labels, best-of-{top} ({who})",
              (Diff(best(ACTIVE.format(last=last)), best(PRM), "active PRM - PRM"),), +1, MARGIN, MARGIN_WHY,
              (headroom, *sound("PRM"), *sound("active PRM"))),
    )  # fmt: skip


def get_config(variant: str | None = None) -> StudyConfig:
    if variant not in (None, "smoke"):
        raise ValueError(f"process_supervision: unknown variant {variant!r}; known: smoke")
    smoke = variant == "smoke"

    def run(group, *more):
        return process_supervision.get_config(",".join(p for p in (GROUPS[group], *more, "tiny" if smoke else "") if p))

    groups = ("wrong",) if smoke else tuple(GROUPS)
    configs = {g: run(g) for g in groups}
    some = next(iter(configs.values()))
    top, last = str(max(some.ns)), f"prm_active{some.rounds - 1}"
    active = tuple(f"{last}.{r}" for r in ("product", "min", "first_error"))
    metrics = (
        Metric("generator accuracy (T=1)", "generator_accuracy"),
        *(Metric(f"best-of-{top} {s}", f"best_of_n.{s}.{top}") for s in (*SELECTORS, active[0], "pass@N")),
        *(Metric(f"{name} AUROC within problems", f"verifiers.{r.format(last=some.rounds - 1)}.auroc_within_problems")
          for name, r in READS.items()),
        *(Metric(f"{name} train loss, {part} tenth", f"reward_models.{stage}.train_loss_{part}")
          for name, stage in (("ORM", "orm"), ("PRM", "prm_uniform")) for part in ("first", "last")),
        Metric("ORM held-out accuracy", "reward_models.orm.test_accuracy"),
        Metric("ORM majority baseline", "reward_models.orm.test_majority_baseline"),
        Metric("PRM (uniform) held-out step accuracy", "reward_models.prm_uniform.test_step_accuracy"),
        Metric(f"PRM ({last}) held-out step accuracy", f"reward_models.{last}.test_step_accuracy"),
        Metric("labels: wrong answers, uniform", "labels.uniform_wrong_share"),
        Metric(f"labels: wrong answers, {last}", f"labels.{last.replace('prm_', '')}_wrong_share"),
        *(Metric(f"RLOO vs {r}: test accuracy", f"rl.{r}.test_accuracy") for r in some.rl_rewards),
    )  # fmt: skip
    cells = tuple(
        Cell(VALIDATION[g], 0, run(g, "validation"), settings=(("generator data", configs[g].generator.data.task),
             ("split", "validation")), split="validation")
        for g in groups
    ) + tuple(
        Cell(g, seed, cfg, settings=(("generator data", cfg.generator.data.task),))
        for g, cfg in configs.items()
        for seed in ((0,) if smoke else SEEDS)
    )  # fmt: skip
    rounds = tuple(f"prm_active{r}.product" for r in range(some.rounds))
    figures = (
        Figure("best_of_n", "Best-of-N accuracy", groups, (*SELECTORS, *active, "pass@N"), "against_n"),
        Figure("active_rounds", "Best-of-N by the PRM of each active round", groups, rounds, "against_n"),
    )
    return StudyConfig(
        name="process_supervision_smoke" if smoke else "process_supervision",
        cells=cells,
        metrics=metrics,
        sft_row=False,
        curves=(),
        figures=figures,
        claims=tuple(c for g in groups for c in claims(g, some.ns, some.rounds - 1)),
        gates=tuple(x for g in groups for x in gates(g, max(some.ns), some.rounds - 1)),
        withhold=not smoke,  # the tiny models pass no gate; the smoke run checks the path
        description="Process against outcome supervision with best-of-N (experiments/studies/process_supervision.py).",
    )
