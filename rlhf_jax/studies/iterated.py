"""Iterated online RLHF (Bai et al. 2022, section 4.5; the seeds' note 001): rounds of
fresh comparisons of the current policy's samples, a reward model retrained on every
comparison so far, and policy training that continues from where it stopped.

    python -m rlhf_jax.main --config experiments/iterated_summarization.py --workdir DIR

The SFT stage runs once (DIR/sft). Then round r = 0 .. rounds - 1, each step a resumable
stage of its own in DIR/round<r>/ (SIGKILL anywhere, rerun the same command):

    comparisons/   the newest policy (round r-1's; the SFT's for r = 0) samples two
                   completions for each of comparisons_per_round train prompts that no
                   other round uses (or one, beside the SFT's or one at a second
                   temperature: `pairs`); the labeller prefers one (`label`: Bradley-Terry
                   on the task's gold reward at labeller_temperature, standing in for
                   people) or, with `ties`, says the two are equal; with budget "signal"
                   further prompts are labelled until comparisons_per_round have signal;
                   comparisons.jsonl holds these and every earlier round's, counts.json
                   what the round's budget bought (labelled, ties, with signal; with
                   measure_pairs, what each pair design gives on the eval prompts). held_out.jsonl: the same policy's
                   pairs on held_out_pairs test prompts, labelled by the gold reward
                   without noise (equal rewards left out; refilled to held_out_min)
    reward/        the reward model on comparisons.jsonl (`data.comparisons`; its held-out
                   accuracy and content probe still on the task's test pairs), from the
                   SFT (reward_init "scratch") or round r-1's reward model ("continue"),
                   for reward_epochs passes over the comparisons
    policy/        RL against that reward model from round r-1's policy (the SFT for
                   r = 0), policy.train.steps // rounds steps, the KL reference the SFT
                   (reference "sft") or round r-1's policy ("last")
    summary.json   the round's figures: the reward model's accuracy on held_out.jsonl
                   before retraining (round r-1's model) and after; the policy against
                   the SFT on the test prompts (gold reward, reward-model score, win-rates,
                   KL, length: `pipeline.evaluate`); the proxy-gold gap, the policy's gain
                   over the SFT in reward-model score less its gain in gold reward, each
                   in units of the SFT's standard deviation (sampled completions): above 0,
                   the reward model is being over-optimised

DIR/summary.json gathers the rounds. The labelling budget is rounds x
comparisons_per_round; one round of rounds x n comparisons of SFT samples is the
non-iterated baseline at the same budget.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np

from rlhf_jax import config as config_lib
from rlhf_jax import mesh as mesh_lib
from rlhf_jax import pipeline
from rlhf_jax.eval.judges import RewardModelJudge
from rlhf_jax.eval.policies import sample_texts
from rlhf_jax.loops.common import load_scalar
from rlhf_jax.loops.data import task_data
from rlhf_jax.models.hf import load_hf
from rlhf_jax.pipeline import PipelineConfig
from rlhf_jax.studies.records import split
from rlhf_jax.workdir import checkpoint_dir, read_jsonl, write_json, write_jsonl

REWARD_INITS = ("scratch", "continue")
REFERENCES = ("sft", "last")
TIES = ("off", "davidson", "drop")
PAIRS = ("policy", "policy_sft", "temperatures")
BUDGETS = ("labelled", "signal")
A, B, TIE = 1, -1, 0  # the labeller's answers


@dataclasses.dataclass(frozen=True)
class IteratedConfig:
    """pipeline: its sft stage (run once), reward stage (each round's reward model:
    model, optimiser, batch; steps from reward_epochs) and policy stage (an RL stage:
    train.steps in all, split evenly over the rounds)."""

    name: str
    pipeline: PipelineConfig
    rounds: int = 3
    comparisons_per_round: int = 1000
    reward_init: str = "scratch"
    reference: str = "sft"
    reward_epochs: float = 1.0
    labeller_temperature: float = 0.05
    held_out_pairs: int = 200
    # ties: "off" (equal gold rewards get a coin's preference), "davidson" (the labeller says
    # "same" when the gold rewards are within tie_tolerance; the reward model learns the tie,
    # `losses.reward`), "drop" (such pairs are left out of training); labelled pairs count
    # against comparisons_per_round either way
    ties: str = "off"
    tie_tolerance: float = 0.0
    # a pair's two completions: two samples of the newest policy ("policy"), one of it and
    # one of the SFT ("policy_sft": the earlier policy Bai et al. compare against), or two
    # of it at rl.temperature and at second_temperature ("temperatures")
    pairs: str = "policy"
    second_temperature: float = 1.5
    # at least this many held-out pairs that are not ties: fresh pairs of the test prompts
    # are drawn until there are (up to 20 passes); 0 = one pass over held_out_pairs prompts
    held_out_min: int = 0
    # what comparisons_per_round counts: pairs "labelled" (a tie, or a coin on equal gold
    # rewards, spends the budget too) or comparisons with "signal" (a preference between two
    # texts: the round draws further prompts of its share of the train set until it has them)
    budget: str = "labelled"
    # also record, each round, what every `pairs` design would give on held_out_pairs of the
    # eval split's prompts (shares identical, tied, with signal): how the design is chosen
    measure_pairs: bool = False

    def __post_init__(self):
        config_lib.check_numbers(self)
        if self.rounds < 1:
            raise ValueError(f"rounds={self.rounds}: must be >= 1")
        if self.comparisons_per_round < 1 or self.held_out_pairs < 1:
            raise ValueError("comparisons_per_round and held_out_pairs must be >= 1")
        if self.reward_init not in REWARD_INITS:
            raise ValueError(f"reward_init={self.reward_init!r}: expected one of {REWARD_INITS}")
        if self.reference not in REFERENCES:
            raise ValueError(f"reference={self.reference!r}: expected one of {REFERENCES}")
        if self.ties not in TIES:
            raise ValueError(f"ties={self.ties!r}: expected one of {TIES}")
        if self.pairs not in PAIRS:
            raise ValueError(f"pairs={self.pairs!r}: expected one of {PAIRS}")
        if self.budget not in BUDGETS:
            raise ValueError(f"budget={self.budget!r}: expected one of {BUDGETS}")
        if not self.second_temperature > 0:
            raise ValueError(f"second_temperature={self.second_temperature}: must be positive")
        if self.tie_tolerance < 0 or self.held_out_min < 0:
            raise ValueError("tie_tolerance and held_out_min must be >= 0")
        if not self.reward_epochs > 0 or not self.labeller_temperature > 0:
            raise ValueError("reward_epochs and labeller_temperature must be positive")
        policy = self.pipeline.policy
        if policy.train.kind != "rl":
            raise ValueError(f"pipeline.policy.train.kind={policy.train.kind!r}: the rounds train the policy by RL")
        if policy.train.steps % self.rounds:
            raise ValueError(
                f"pipeline.policy.train.steps={policy.train.steps}: must split evenly over rounds={self.rounds}"
            )
        if policy.data.task_spec.judge is None:
            raise ValueError(f"data.task={policy.data.task}: the labeller needs the task's gold reward")


def label(rng: np.random.Generator, gold_a: float, gold_b: float, temperature: float,
          tie_tolerance: float | None = None) -> int:  # fmt: skip
    """The labeller: TIE when the gold rewards are within tie_tolerance (None: it never
    says so); else A (a preferred) with probability sigmoid((r_a - r_b) / T), the
    Bradley-Terry model on the gold reward (T -> 0: always the better one; equal rewards
    without ties: a coin), B otherwise."""
    if tie_tolerance is not None and abs(gold_a - gold_b) <= tie_tolerance:
        return TIE
    z = (gold_a - gold_b) / temperature
    p_a = 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
    return A if rng.random() < p_a else B


# ----------------------------------------------------------------------------- layout


def round_dir(workdir: str, r: int) -> str:
    return os.path.join(workdir, f"round{r}")


def round_stages(cfg: IteratedConfig, workdir: str, r: int, sft_dir: str = "", data_dir: str = ""):
    """(stage configs as they run, their directories, the round's pipeline) of round r,
    wired like a pipeline's. sft_dir: the SFT stage's directory (default <workdir>/sft: a
    study shares one per seed); data_dir: the task data (default <workdir>/tfds)."""
    p = cfg.pipeline
    sft_dir = sft_dir or os.path.join(workdir, "sft")
    here, previous = round_dir(workdir, r), round_dir(workdir, r - 1)
    n_comparisons = (r + 1) * cfg.comparisons_per_round
    steps = max(1, math.ceil(cfg.reward_epochs * n_comparisons / p.reward.train.batch_size))
    reward = dataclasses.replace(
        p.reward,
        name=f"{p.reward.name}_round{r}",
        data=dataclasses.replace(p.reward.data, comparisons=os.path.join(here, "comparisons")),
        train=dataclasses.replace(p.reward.train, steps=steps, save_every=min(p.reward.train.save_every, steps)),
        optim=dataclasses.replace(p.reward.optim, total_steps=steps),
    )
    if cfg.reward_init == "continue" and r > 0:
        reward = dataclasses.replace(reward, model=dataclasses.replace(reward.model, init_from=f"{previous}/reward"))
    per_round = p.policy.train.steps // cfg.rounds
    policy = dataclasses.replace(
        p.policy,
        name=f"{p.policy.name}_round{r}",
        train=dataclasses.replace(
            p.policy.train, steps=per_round, save_every=min(p.policy.train.save_every, per_round)
        ),
        optim=dataclasses.replace(p.policy.optim, total_steps=per_round),
        rl=dataclasses.replace(p.policy.rl, reward_model=f"{here}/reward"),
    )
    if r > 0:
        reference = sft_dir if cfg.reference == "sft" else f"{previous}/policy"
        policy = dataclasses.replace(
            policy,
            model=dataclasses.replace(policy.model, init_from=f"{previous}/policy"),
            rl=dataclasses.replace(policy.rl, reference=reference),
        )
    wired = dataclasses.replace(p, reward=reward, policy=policy)
    dirs = {"sft": sft_dir, "reward": f"{here}/reward", "policy": f"{here}/policy"}
    return pipeline.stages(wired, workdir, dirs, data_dir), dirs, wired


# ----------------------------------------------------------------------------- comparisons


def collect(cfg: IteratedConfig, workdir: str, r: int, mesh=None, **layout) -> str:
    """Round r's comparisons/ (see the module docstring); written once, atomically: a
    rerun finds it."""
    out = os.path.join(round_dir(workdir, r), "comparisons")
    files = [os.path.join(out, f) for f in ("comparisons.jsonl", "held_out.jsonl")]
    if all(os.path.exists(f) for f in files):
        return out

    stages, dirs, _ = round_stages(cfg, workdir, r, **layout)
    policy_dir = dirs["sft"] if r == 0 else os.path.join(round_dir(workdir, r - 1), "policy")
    sft_model = dataclasses.replace(stages["sft"].model, init_from=dirs["sft"])  # its tokenizer
    data = task_data(dataclasses.replace(stages["policy"], model=sft_model), dirs["sft"], "sft")
    model, params = load_hf(checkpoint_dir(policy_dir), mesh=mesh)
    n, seed = cfg.comparisons_per_round, cfg.pipeline.seed
    order = np.random.default_rng([seed, 7]).permutation(len(data.train.kept))  # the rounds' disjoint prompts
    if len(order) < cfg.rounds * n:
        raise ValueError(
            f"comparisons_per_round={n} x rounds={cfg.rounds}: the task has {len(order)} train prompts "
            "(raise data.n_train)"
        )
    temperature = stages["policy"].rl.temperature
    pool = order[labelled_before(cfg, workdir, r) :]  # each round takes the prompts after the earlier rounds
    rng = np.random.default_rng([seed, r, 11])
    tolerance = None if cfg.ties == "off" else cfg.tie_tolerance
    new, counts = [], {"labelled": 0, "identical": 0, "equal_gold": 0, "ties": 0, "with_signal": 0}
    start, chunk = 0, 0
    while (counts["labelled"] if cfg.budget == "labelled" else counts["with_signal"]) < n:
        need = n - (counts["labelled"] if cfg.budget == "labelled" else counts["with_signal"])
        if start >= len(pool):
            raise ValueError(
                f"round {r}: {counts['with_signal']} comparisons with signal from the {len(pool)} train prompts "
                f"the earlier rounds left; budget=signal needs {n} (raise data.n_train or lower comparisons_per_round)"
            )
        mine = pool[start : start + need]  # a chunk: at least `need` more prompts to label
        texts = pair_texts(cfg, data, model, params, dirs["sft"], mine, temperature,
                           seed * 1000 + r + 10_000 * chunk, mesh)  # fmt: skip
        gold = data.gold(np.repeat(mine, 2), texts, "train")
        for i, row in enumerate(mine):
            a, b = texts[2 * i], texts[2 * i + 1]
            ga, gb = gold[2 * i], gold[2 * i + 1]
            answer = label(rng, ga, gb, cfg.labeller_temperature, tolerance)
            counts["labelled"] += 1
            counts["identical"] += a == b
            counts["equal_gold"] += bool(ga == gb)
            counts["ties"] += answer == TIE
            # with signal: a preference between two texts (a tie, or a coin on equal rewards, has none)
            signal = bool(answer != TIE and ga != gb)
            counts["with_signal"] += signal
            if a != b and not (answer == TIE and cfg.ties == "drop"):  # else labelled, nothing to train on
                record = data.row(int(row), "train")
                first = answer != B
                new.append({"prompt": record["prompt"], "chosen": a if first else b, "rejected": b if first else a,
                            "document": record.get("document", ""), "round": r, "tie": answer == TIE})  # fmt: skip
            if cfg.budget == "signal" and counts["with_signal"] == n:
                break
        start, chunk = start + len(mine), chunk + 1
    if cfg.measure_pairs:
        counts["designs"] = pair_designs(cfg, data, model, params, dirs["sft"], r, temperature, mesh)
    held_out = held_out_pairs(cfg, data, model, params, r, temperature, mesh)
    earlier = []
    if r > 0:
        earlier = read_jsonl(os.path.join(round_dir(workdir, r - 1), "comparisons", "comparisons.jsonl"))
    os.makedirs(out, exist_ok=True)
    write_jsonl(files[1], held_out)
    write_json(os.path.join(out, "counts.json"), counts)
    write_jsonl(files[0], earlier + new)  # last: its presence marks the step done
    print(f"== round {r}: {counts['labelled']} pairs labelled, {counts['with_signal']} with signal, "
          f"{counts['ties']} ties, {len(new)} comparisons to train on ({len(earlier) + len(new)} in all), "
          f"{len(held_out)} held-out pairs", flush=True)  # fmt: skip
    return out


def labelled_before(cfg: IteratedConfig, workdir: str, r: int) -> int:
    """The train prompts rounds 0 .. r-1 labelled (their counts.json; comparisons_per_round
    each for a round of before the counts)."""
    total = 0
    for q in range(r):
        path = os.path.join(round_dir(workdir, q), "comparisons", "counts.json")
        if os.path.exists(path):
            with open(path) as f:
                total += json.load(f)["labelled"]
        else:
            total += cfg.comparisons_per_round
    return total


def pair_texts(cfg: IteratedConfig, data, model, params, sft_dir: str, rows, temperature: float, seed: int,
               mesh=None, split: str = "train") -> list[str]:  # fmt: skip
    """The two completions of each prompt of `split` in `rows` (texts 2i, 2i + 1), as
    cfg.pairs says; the first is always the newest policy's at rl.temperature."""
    if cfg.pairs == "policy":
        return sample_texts(model, params, data, rows, split, n=2, temperature=temperature, seed=seed, mesh=mesh)
    first = sample_texts(model, params, data, rows, split, n=1, temperature=temperature, seed=seed, mesh=mesh)
    if cfg.pairs == "policy_sft":
        other_model, other_params = load_hf(checkpoint_dir(sft_dir), mesh=mesh)
        other_t = temperature
    else:
        other_model, other_params, other_t = model, params, cfg.second_temperature
    second = sample_texts(other_model, other_params, data, rows, split, n=1, temperature=other_t,
                          seed=seed + 77, mesh=mesh)  # fmt: skip
    return [t for pair in zip(first, second, strict=True) for t in pair]


def pair_designs(cfg: IteratedConfig, data, model, params, sft_dir: str, r: int, temperature: float,
                 mesh=None) -> dict[str, dict]:  # fmt: skip
    """What each `pairs` design gives the newest policy on held_out_pairs prompts of the
    eval split: {design: shares of "identical" texts, "ties" (gold rewards within the tie
    tolerance, or equal), "with_signal" (the rest)}. The same sampling seed for every design."""
    rows = np.arange(min(cfg.held_out_pairs, len(data.test.kept)))
    out = {}
    for design in PAIRS:
        texts = pair_texts(dataclasses.replace(cfg, pairs=design), data, model, params, sft_dir, rows, temperature,
                           cfg.pipeline.seed * 1000 + r + 900, mesh, split="test")  # fmt: skip
        gold = data.gold(np.repeat(rows, 2), texts, "test")
        a, b = texts[0::2], texts[1::2]
        tied = np.abs(gold[0::2] - gold[1::2]) <= cfg.tie_tolerance
        out[design] = {"identical": float(np.mean([x == y for x, y in zip(a, b, strict=True)])),
                       "ties": float(np.mean(tied)), "with_signal": float(np.mean(~tied))}  # fmt: skip
    return out


def held_out_pairs(cfg: IteratedConfig, data, model, params, r: int, temperature: float, mesh=None) -> list[dict]:
    """The policy's own pairs on the test prompts, labelled by the gold reward without
    noise, ties (equal rewards) left out: one pass over held_out_pairs prompts, or with
    held_out_min passes of fresh samples until that many are not ties (then exactly
    that many)."""
    held = np.arange(min(cfg.held_out_pairs, len(data.test.kept)))
    seed, pairs = cfg.pipeline.seed, []
    for attempt in range(20 if cfg.held_out_min else 1):
        texts = sample_texts(model, params, data, held, "test", n=2, temperature=temperature,
                             seed=seed * 1000 + r + 500 + 100_000 * attempt, mesh=mesh)  # fmt: skip
        gold = data.gold(np.repeat(held, 2), texts, "test")
        for i, row in enumerate(held):
            ga, gb = gold[2 * i], gold[2 * i + 1]
            if ga == gb:
                continue
            a, b = texts[2 * i], texts[2 * i + 1]
            record = data.row(int(row), "test")
            pairs.append({"prompt": record["prompt"], "chosen": a if ga > gb else b, "rejected": b if ga > gb else a})
        if len(pairs) >= cfg.held_out_min:
            break
    return pairs[: cfg.held_out_min] if cfg.held_out_min else pairs


# ----------------------------------------------------------------------------- figures


def pair_accuracy(reward_dir: str, data, pairs: list[dict], mesh=None) -> float:
    """The share of pairs whose chosen completion the reward model scores higher."""

    rm, rm_params = load_scalar(reward_dir, mesh)
    judge = RewardModelJudge(rm, rm_params, data.tokenizer, data.P, data.C)
    prompts = [p["prompt"] for p in pairs]
    chosen = judge(prompts, [p["chosen"] for p in pairs])
    rejected = judge(prompts, [p["rejected"] for p in pairs])
    return float(np.mean(chosen > rejected))


def proxy_gold_gap(sft: dict, policy: dict) -> float:
    """(score gain) / std_SFT(score) - (gold gain) / std_SFT(gold), sampled completions."""

    def gain(key):
        base, now = sft["sampled"][key], policy["sampled"][key]
        return (now["mean"] - base["mean"]) / max(math.sqrt(base["variance"]), 1e-8)

    return gain("reward_model") - gain("gold")


def run_round(cfg: IteratedConfig, workdir: str, r: int, mesh=None, **layout) -> dict:
    path = os.path.join(round_dir(workdir, r), "summary.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    collect(cfg, workdir, r, mesh, **layout)
    stages, dirs, wired = round_stages(cfg, workdir, r, **layout)
    results = {}
    for name in ("reward", "policy"):
        results[name] = pipeline.run_stage(name, stages[name], dirs[name])
        if results[name].get("stopped"):
            return {"stopped": True, "stage": f"round{r}/{name}"}
    results["sft"] = {}

    sft_model = dataclasses.replace(stages["sft"].model, init_from=dirs["sft"])
    data = task_data(dataclasses.replace(stages["policy"], model=sft_model), dirs["sft"], "sft")
    held_out = read_jsonl(os.path.join(round_dir(workdir, r), "comparisons", "held_out.jsonl"))
    before = pair_accuracy(os.path.join(round_dir(workdir, r - 1), "reward"), data, held_out, mesh) if r else None
    after = pair_accuracy(dirs["reward"], data, held_out, mesh)
    summary = pipeline.evaluate(wired, stages, dirs, results, os.path.join(round_dir(workdir, r), "plots"))
    m = wired.method
    counts_path = os.path.join(round_dir(workdir, r), "comparisons", "counts.json")
    counts = None  # a round of before the counts has none
    if os.path.exists(counts_path):
        with open(counts_path) as f:
            counts = json.load(f)
    out = {
        "round": r,
        "comparisons": (r + 1) * cfg.comparisons_per_round,
        "labelled": counts,
        "reward_model_on_policy_accuracy": {"before": before, "after": after, "pairs": len(held_out)},
        "reward_model": summary["reward_model"],
        "proxy_gold_gap": proxy_gold_gap(summary["policies"]["sft"], summary["policies"][m]),
        "policy": summary["policies"][m],
        "sft": summary["policies"]["sft"],
        "gold_win_rate_vs_sft": {
            "greedy": summary[f"gold_win_rate_{m}_vs_sft"],
            "sampled": summary[f"gold_win_rate_{m}_vs_sft_sampled"],
        },  # fmt: skip
    }
    write_json(path, out)
    return out


def run(cfg: IteratedConfig, workdir: str, sft_dir: str = "", data_dir: str = "") -> dict:
    """The SFT stage, then every round not done yet; DIR/summary.json and a table.
    sft_dir, data_dir: as in `round_stages`."""

    layout = {"sft_dir": sft_dir, "data_dir": data_dir}
    stages, dirs, _ = round_stages(cfg, workdir, 0, **layout)
    sft = pipeline.run_stage("sft", stages["sft"], dirs["sft"])
    if sft.get("stopped"):
        return {"stopped": True, "stage": "sft"}
    mesh = mesh_lib.make_mesh(stages["policy"].mesh)
    rounds = []
    for r in range(cfg.rounds):
        out = run_round(cfg, workdir, r, mesh, **layout)
        if out.get("stopped"):
            return out
        rounds.append(out)
    summary = {"name": cfg.name, "seed": cfg.pipeline.seed, "method": cfg.pipeline.method, "rounds": rounds}
    write_json(os.path.join(workdir, "summary.json"), summary)
    print(table(rounds))
    return summary


def study_figures(summary: dict) -> tuple[dict, list[dict]]:
    """A finished run as a study cell reports it: (metrics tree, one curve row per round).
    The tree: the last round's "policy" and "sft" (greedy figures, "sampled" apart),
    "policy_vs_sft", "reward_model" (its held-out figures and on-policy accuracy before /
    after), "proxy_gold_gap"; the rows: round, comparisons, sampled gold and score, the gap,
    the on-policy accuracies, the held-out pairs they rest on, what the round's labelling
    bought (labelled, ties, with_signal) and, with measure_pairs, each design's share of
    pairs with signal (signal_<design>)."""

    last = summary["rounds"][-1]
    acc = last["reward_model_on_policy_accuracy"]
    tree = {
        "policy": split(last["policy"]),
        "sft": split(last["sft"]),
        "policy_vs_sft": last["gold_win_rate_vs_sft"],
        "reward_model": {**last["reward_model"], "on_policy_before": acc["before"], "on_policy_after": acc["after"]},
        "proxy_gold_gap": last["proxy_gold_gap"],
    }
    rows = []
    for s in summary["rounds"]:
        sampled, acc = s["policy"]["sampled"], s["reward_model_on_policy_accuracy"]
        row = {"round": s["round"], "comparisons": s["comparisons"], "gold": sampled["gold"]["mean"],
               "score": sampled["reward_model"]["mean"], "proxy_gold_gap": s["proxy_gold_gap"],
               "rm_accuracy_after": acc["after"], "kl": s["policy"]["kl_to_reference"]}  # fmt: skip
        if acc["before"] is not None:
            row["rm_accuracy_before"] = acc["before"]
        counts = s.get("labelled") or {}  # a round of before the counts has none
        if counts:
            row.update(held_out_pairs=acc["pairs"], labelled=counts["labelled"], ties=counts["ties"],
                       with_signal=counts["with_signal"])  # fmt: skip
        for design, shares in counts.get("designs", {}).items():
            row[f"signal_{design}"] = shares["with_signal"]
        rows.append(row)
    return tree, rows


def table(rounds: list[dict]) -> str:
    """One line per round: comparisons, RM on-policy accuracy before / after, gold (sampled),
    RM score (sampled), proxy-gold gap, gold win-rate vs SFT (sampled), KL."""

    def f(x):
        return "-" if x is None else f"{x:.3f}"

    lines = ["round  comparisons  rm_acc_before  rm_acc_after  gold  rm_score  proxy_gold_gap  win_vs_sft  kl"]
    for s in rounds:
        acc, p = s["reward_model_on_policy_accuracy"], s["policy"]
        lines.append(
            f"{s['round']:>5}  {s['comparisons']:>11}  {f(acc['before']):>13}  {f(acc['after']):>12}  "
            f"{f(p['sampled']['gold']['mean'])}  {f(p['sampled']['reward_model']['mean'])}  "
            f"{f(s['proxy_gold_gap']):>14}  {f(s['gold_win_rate_vs_sft']['sampled'])}  {f(p['kl_to_reference'])}"
        )
    return "\n".join(lines)
