"""Weak-to-strong generalisation, Burns et al. (2023), on built-in tasks
(`rlhf_jax/weak_to_strong.py`, `experiments/weak_to_strong.py`):

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
from rlhf_jax.study import Cell, Figure, Metric, StudyConfig

SEEDS = (0, 1, 2)
GROUPS = {"easy": "majority", "sharp": "sorted", "preference": "preference"}  # group -> task
METHODS = ("naive", "aux", "hard", "bootstrap")


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
        description="Weak-to-strong generalisation with PGR (experiments/studies/weak_to_strong.py).",
    )
