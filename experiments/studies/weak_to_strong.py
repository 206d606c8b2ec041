"""Weak-to-strong generalisation, Burns et al. (2023), on built-in tasks
(`rlhf_jax/studies/weak_to_strong.py`, `experiments/weak_to_strong.py`):

    python -m rlhf_jax.main --config experiments/studies/weak_to_strong.py --workdir DIR \\
        --records studies/weak_to_strong [--jobs 2]

Fixed on the validation split: three task kinds like the paper's, `easy` (majority: more
odd digits than even?, the digit task where every size's fine-tuned accuracy is at least
0.9 and the smallest leaves the largest gap, 0.08, to the others), `sharp` (sorted: are
the digits in order?, where accuracy climbs most with size: 0.51, 0.92, 1.00) and
`preference` (the summarisation task's comparisons); seeds 0-2 of the
fine-tuning (head, order, task data); the four sizes of `experiments/weak_to_strong.py`,
pretrained once per domain and shared by every seed; every (weak, strong) pair naive, with
the auxiliary confidence loss (alpha 0.75, warmed up over 20% of the steps), on hardened
labels, and bootstrapped through the intermediate sizes; the largest size from scratch.
The report: per group, each size's weak and ceiling accuracy, the students' accuracy and
PGR per pair and method, with intervals over seeds; the curves against the student's
parameters. Variant: smoke (the tiny sizes, one seed: the tests' size).
"""

from experiments import weak_to_strong
from rlhf_jax.studies.claims import Arm, Claim, Diff, Gate, Trend
from rlhf_jax.studies.study import Cell, Figure, Metric, StudyConfig

SEEDS = (0, 1, 2)
GROUPS = {"easy": "majority", "sharp": "sorted", "preference": "preference"}  # group -> task
METHODS = ("naive", "aux", "hard", "bootstrap")


POST_HOC = "test, post hoc"  # the gates were declared after the test records (see the provenance)
PGR_MARGIN = 0.1
PGR_WHY = "a tenth of the weak-strong gap"
GAP, SUPERVISOR = 0.05, 0.55
EARLIER = (
    "5fb9f52 (2026-12-04): the study's first test cell (easy, seed 0) was run with the easy task `contains` and the "
    "score head of scalar_from_lm initialised at random; two of its five confidence-loss students locked into the "
    "inverted classifier (0.046, 0.014). Its record was discarded (not committed), the head is now zero-initialised "
    "as in Burns et al.'s code, and the easy task became `majority` (chosen on validation: `contains` left the "
    "smallest supervisor at 0.988, no gap). All 9 recorded cells were made after that change, at 5fb9f52",
)


def pairs(sizes: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(sizes - 1) for j in range(i + 1, sizes)]


def pair_gates(group: str, i: int, j: int) -> tuple[str, str]:
    return (f"{group} {i}-{j} gap", f"{group} {i} supervisor")


def gates(groups, sizes: int) -> tuple[Gate, ...]:
    out = []
    for g in groups:
        out += [Gate(f"{g} {i} supervisor", f"size {i}'s accuracy as a supervisor", Arm(g, f"accuracy.weak.{i}"),
                     low=SUPERVISOR, split=POST_HOC, reason="a supervisor within 0.05 of chance carries no signal "
                     "to elicit") for i in range(sizes - 1)]  # fmt: skip
        out += [Gate(f"{g} {i}-{j} gap", f"ceiling {j} - weak {i}",
                     Diff(Arm(g, f"accuracy.ceiling.{j}"), Arm(g, f"accuracy.weak.{i}")), low=GAP, split=POST_HOC,
                     reason="PGR divides by the gap: under 0.05 (50 of 1,000 test examples) the ceiling's and the "
                     "supervisor's noise dominate it") for i, j in pairs(sizes)]  # fmt: skip
    return tuple(out)


def claims(groups, sizes: int) -> tuple[Claim, ...]:
    def pgr(method, g, i, j):
        return Arm(g, f"pgr.{method}.{i}-{j}")

    every = [(g, i, j) for g in groups for i, j in pairs(sizes)]
    naive = tuple(Diff(pgr("naive", g, i, j), 0.0, f"{g} {i}-{j}", pair_gates(g, i, j)) for g, i, j in every)
    aux = tuple(Diff(pgr("aux", g, i, j), pgr("naive", g, i, j), f"{g} {i}-{j}: aux - naive", pair_gates(g, i, j))
                for g, i, j in every)  # fmt: skip
    boot = tuple(Diff(pgr("bootstrap", g, 0, j), pgr("naive", g, 0, j), f"{g} 0-{j}: bootstrap - naive",
                      pair_gates(g, 0, j)) for g in groups for j in range(2, sizes))  # fmt: skip
    size = tuple(Trend(tuple((float(j), Diff(pgr("naive", g, 0, j), 0.0)) for j in range(1, sizes)),
                       f"{g}: slope of naive PGR 0-j over j",
                       tuple(x for j in range(1, sizes) for x in pair_gates(g, 0, j)))
                 for g in groups)  # fmt: skip
    top = sizes - 1
    latent = tuple(Diff(Arm(g, f"accuracy.ceiling.{top}"), Arm(g, "accuracy.scratch"), f"{g}: pretrained - scratch")
                   for g in groups)  # fmt: skip
    return (
        Claim("naive pgr > 0", "naive fine-tuning on weak labels recovers part of the gap (PGR > 0)", naive, +1,
              PGR_MARGIN, PGR_WHY),
        Claim("confidence loss", "the auxiliary confidence loss raises PGR over naive fine-tuning", aux, +1, PGR_MARGIN,
              PGR_WHY),
        Claim("bootstrapping", "bootstrapping through the intermediate sizes raises PGR over naive fine-tuning",
              boot, +1, PGR_MARGIN, PGR_WHY),
        Claim("pgr grows with size", "PGR grows with the strong student's size (naive, from the smallest supervisor; "
              "slope per size step)", size, +1, PGR_MARGIN / 2, f"{PGR_WHY} across the two size steps"),
        Claim("latent capability", f"the pretrained size {top} fine-tuned on gold labels beats the same size trained "
              "from scratch", latent, +1, 0.01, "10 of the 1,000 test examples"),
    )  # fmt: skip


def get_config(variant: str | None = None) -> StudyConfig:
    if variant not in (None, "smoke"):
        raise ValueError(f"weak_to_strong study: unknown variant {variant!r}; known: smoke")
    smoke = variant == "smoke"
    groups = {"easy": GROUPS["easy"]} if smoke else GROUPS
    configs = {
        g: weak_to_strong.get_config(",".join((task, "tiny") if smoke else (task,))) for g, task in groups.items()
    }
    S = len(next(iter(configs.values())).sizes)
    big = f"0-{S - 1}"  # the largest gap: the smallest supervisor, the largest student
    metrics = (
        *(Metric(f"weak (size {i}) accuracy", f"accuracy.weak.{i}") for i in range(S - 1)),
        *(Metric(f"ceiling (size {j}) accuracy", f"accuracy.ceiling.{j}") for j in range(1, S)),
        Metric(f"size {S - 1} from scratch accuracy", "accuracy.scratch"),
        *(Metric(f"{m} {big} accuracy", f"accuracy.{m}.{big}") for m in METHODS),
        *(Metric(f"{m} {big} PGR", f"pgr.{m}.{big}") for m in METHODS),
        *(
            Metric(f"naive {i}-{j} PGR", f"pgr.naive.{i}-{j}")
            for i in range(S - 1)
            for j in range(i + 1, S)
            if f"{i}-{j}" != big
        ),  # fmt: skip
        *(
            Metric(f"aux {i}-{j} PGR", f"pgr.aux.{i}-{j}")
            for i in range(S - 1)
            for j in range(i + 1, S)
            if f"{i}-{j}" != big
        ),  # fmt: skip
        *(Metric(f"zero-shot (size {i})", f"zero_shot.{i}") for i in range(S)),
    )
    cells = tuple(
        Cell(group, seed, cfg, settings=(("task", cfg.task),))
        for group, cfg in configs.items()
        for seed in ((0,) if smoke else SEEDS)
    )
    weak = tuple(f"weak{i}" for i in range(S - 1))
    against = dict(x="params", x_label="student parameters")
    figures = (
        Figure("naive", "Test accuracy, naive fine-tuning on weak labels", tuple(configs),
               ("weak", "ceiling", *(f"naive.{w}" for w in weak)), "against_n", **against),
        Figure("pgr_naive", "PGR, naive", tuple(configs), tuple(f"pgr.naive.{w}" for w in weak), "against_n",
               y_label="PGR", **against),
        Figure("aux", "Test accuracy, auxiliary confidence loss", tuple(configs),
               ("weak", "ceiling", *(f"aux.{w}" for w in weak)), "against_n", **against),
        Figure("pgr_aux", "PGR, auxiliary confidence loss", tuple(configs), tuple(f"pgr.aux.{w}" for w in weak),
               "against_n", y_label="PGR", **against),
        Figure("methods", "PGR from the smallest supervisor, by method", tuple(configs),
               tuple(f"pgr.{m}.weak0" for m in METHODS), "against_n", y_label="PGR", **against),
    )  # fmt: skip
    return StudyConfig(
        name="weak_to_strong_smoke" if smoke else "weak_to_strong",
        cells=cells,
        metrics=metrics,
        sft_row=False,
        curves=(),
        figures=figures,
        claims=claims(tuple(configs), S),
        gates=gates(tuple(configs), S),
        earlier=() if smoke else EARLIER,
        description="Weak-to-strong generalisation with PGR (experiments/studies/weak_to_strong.py).",
    )
