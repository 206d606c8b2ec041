"""Weak-to-strong: the losses' hand values and the zero-weight reduction to plain
cross-entropy; the classifier's pair logits; the pipeline's label flow (no student reads
the gold labels of its split) and PGR; the study at smoke size."""

import dataclasses
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import weak_to_strong as experiment
from rlhf_jax.loops import classifier
from rlhf_jax.losses import weak_to_strong as W
from rlhf_jax.studies import weak_to_strong as pipeline
from rlhf_jax.tasks import classification


class WeakToStrongObjectivesTest(chex.TestCase):
    """Each test runs twice, jitted and eagerly (chex.variants)."""

    def call(self, fn, *args, **static):
        """fn(*args, **static) under the variant: jitted with the keyword arguments static."""
        return self.variant(lambda *a: fn(*a, **static))(*args)

    @chex.variants(with_jit=True, without_jit=True)
    def test_aux_confidence_with_weight_zero_is_cross_entropy_on_weak_labels(self):
        logits = jnp.array([[0.3, -0.2], [1.0, 2.0], [-1.0, 0.5]])
        weak = jnp.array([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5]])
        loss, _ = self.call(W.aux_confidence_objective, logits, weak, 0.0)
        np.testing.assert_allclose(loss, self.call(W.soft_cross_entropy, logits, weak), rtol=1e-6)
        logp = np.log(np.exp(logits) / np.exp(logits).sum(-1, keepdims=True))
        np.testing.assert_allclose(loss, -np.mean((np.asarray(weak) * logp).sum(-1)), rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_hardened_predictions_threshold_at_the_batch_median(self):
        logits = jnp.array([[0.0, 1.0], [0.0, 2.0], [0.0, -1.0], [0.0, -2.0]])
        np.testing.assert_array_equal(self.call(W.hardened_predictions, logits)[:, 1], [1, 1, 0, 0])
        # shifted so that every row prefers class 1: the adaptive threshold still splits the batch
        np.testing.assert_array_equal(
            self.call(W.hardened_predictions, logits + jnp.array([0.0, 5.0]))[:, 1], [1, 1, 0, 0]
        )
        three = jnp.array([[0.0, 1.0, 3.0], [2.0, 0.0, 0.0]])
        np.testing.assert_array_equal(self.call(W.hardened_predictions, three), [[0, 0, 1], [1, 0, 0]])

    @chex.variants(with_jit=True, without_jit=True)
    def test_aux_confidence_hand_value_and_no_gradient_through_the_hardened_labels(self):
        logits = jnp.array([[0.0, 1.0], [0.0, -1.0]])
        weak = jnp.array([[1.0, 0.0], [1.0, 0.0]])
        loss, _ = self.call(W.aux_confidence_objective, logits, weak, 0.5)
        target = np.array([[0.5, 0.5], [1.0, 0.0]])
        logp = np.asarray(jax.nn.log_softmax(logits))
        np.testing.assert_allclose(loss, -np.mean((target * logp).sum(-1)), rtol=1e-6)
        g = jax.grad(lambda x: W.aux_confidence_objective(x, weak, 0.5)[0])(logits)
        np.testing.assert_allclose(g, (np.exp(logp) - target) / 2, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_warmup_and_pgr(self):
        np.testing.assert_allclose(self.call(W.aux_confidence_weight, 5, alpha_max=0.75, warmup_steps=10), 0.375)
        np.testing.assert_allclose(self.call(W.aux_confidence_weight, 50, alpha_max=0.75, warmup_steps=10), 0.75)
        np.testing.assert_allclose(W.performance_gap_recovered(0.6, 0.7, 0.8), 0.5, rtol=1e-6)
        with pytest.raises(ValueError, match="no gap"):
            W.performance_gap_recovered(0.6, 0.7, 0.6)
        with pytest.raises(ValueError, match="targets must be probabilities"):
            W.soft_cross_entropy(jnp.zeros((1, 2)), jnp.array([[0.7, 0.7]]))


def test_pgr_hand_values_and_undefined_without_a_gap():
    assert pipeline.pgr(0.6, 0.7, 0.8, margin=0.02) == pytest.approx(0.5)
    assert pipeline.pgr(0.6, 0.55, 0.8, margin=0.02) == pytest.approx(-0.25)
    assert pipeline.pgr(0.6, 0.7, 0.61, margin=0.02) is None  # the ceiling barely beats the supervisor
    np.testing.assert_array_equal(pipeline.harden(np.array([[0.4, 0.6], [0.9, 0.1], [0.5, 0.5]])),
                                  [[0, 1], [1, 0], [1, 0]])  # fmt: skip


def test_no_evaluated_tasks_answer_appears_in_the_pretraining_text():
    """Parsed from the text itself: every part is " ; name value" with a name of RELATED
    (no task's name), a number for its value (never a yes or no), right about the string;
    and each task's answer follows from its one related fact by a rule written here by
    hand, not the task's code."""
    rows = classification.pretrain_examples(400, seed=3)
    rules = {"contains": lambda f, d: int(int(f["sevens"]) > 0), "majority": lambda f, d: int(2 * int(f["odds"]) > 9),
             "sorted": lambda f, d: int(f["descents"] == "0"), "band": lambda f, d: int(38 <= int(f["sum"]) <= 43),
             "near": lambda f, d: int(39 <= int(f["sum"]) <= 42),
             "parity": lambda f, d: int(int(f["sum"]) % 2 == 0)}  # fmt: skip
    for row in rows:
        digits = [int(t) for t in row["prompt"].split()]
        parts = row["completion"].split(" ; ")
        assert parts[0] == "" and len(parts) == len(classification.RELATED) + 1
        facts = dict(part.split(" ") for part in parts[1:])
        assert set(facts) == set(classification.RELATED) and not set(facts) & set(classification.TASKS)
        assert all(v.isdigit() for v in facts.values()), row  # no yes / no: no answer stated
        assert not set(row["completion"].split()) & {*classification.TASKS, "yes", "no"}
        assert (facts["sum"], facts["max"], facts["first"]) == (str(sum(digits)), str(max(digits)), str(digits[0]))
        for task, rule in rules.items():
            assert rule(facts, digits) == classification.label(task, row["prompt"]), (task, row)
            fact = classification.COMPOSED_FROM[task]
            assert classification.zero_shot_label(task, f" {facts[fact]}", row["prompt"]) == rule(facts, digits)
        assert classification.facts_reward(row["prompt"], row["completion"]) == 1.0
    assert classification.facts_reward("1 2 3", " ; sum 6 ; max 3 ; sum 5") == 2 / 8  # the first statement counts
    assert classification.zero_shot_label("band", " ;", "1 2 3") is None  # no number stated
    assert set(classification.COMPOSED) == set(classification.TASKS) == set(classification.DIFFICULTY)
    sorted_share = sum(dict(p.split() for p in r["completion"].split(" ; ")[1:])["descents"] == "0" for r in rows)
    assert sorted_share >= 80  # a quarter drawn sorted: the sorted task's fact has both values
    assert classification.question("band", "1 2 3") == {"prompt": "1 2 3", "completion": " ; sum"}
    band = [classification.label("band", e["text"]) for e in classification.examples("band", 200, seed=1)]
    assert sum(band) == 100  # balanced by construction
    near = [(classification.label("near", e["text"]), sum(map(int, e["text"].split())))
            for e in classification.examples("near", 200, seed=1)]  # fmt: skip
    assert sum(y for y, _ in near) == 100 and {v for y, v in near if y} <= set(range(39, 43))
    assert {v for y, v in near if not y} <= {35, 36, 37, 38, 43, 44, 45, 46}  # negatives just outside the band


def test_every_question_fits_after_the_related_pretraining_and_zero_shot_reads_the_stated_fact():
    """Its tokenizer never saw a task's name; the question is the related fact's, and a
    pretrained model's zero-shot answer is the number it states there, composed."""
    from rlhf_jax.data.tokenizer import train_tokenizer

    rows = classification.pretrain_examples(2000, seed=0)
    tok = train_tokenizer(r["prompt"] + r["completion"] for r in rows)
    digits = [" ".join(map(str, np.random.default_rng(i).integers(0, 10, 9))) for i in range(200)]
    for task in classification.DIFFICULTY:
        cfg = experiment.get_config(task)
        longest = max(len(tok(q["prompt"] + q["completion"])["input_ids"])
                      for q in (classification.question(task, d) for d in digits))  # fmt: skip
        assert longest <= cfg.length
    # a model that always states "41" answers band "yes" and parity "no" for every string
    cfg = experiment.get_config("band")
    texts = ["1 2 3 4 5 6 7 8 9", "0 0 0 0 0 0 0 0 1"]  # sums 45 and 1: band says no to both
    split = pipeline.Split(classifier.encode(tok, texts, [(" ; sum",)] * 2, cfg.length, eos=False), np.array([0, 0]),
                           texts)  # fmt: skip
    forty_one = tok(" 41", add_special_tokens=False)["input_ids"]
    assert len(forty_one) == 1

    class Constant:
        def logits(self, params, tokens, mask):
            return jax.nn.one_hot(jnp.full(tokens.shape, forty_one[0]), len(tok))

    assert pipeline.zero_shot(cfg, (Constant(), None), tok, split) == 0.0
    parity = dataclasses.replace(cfg, task="parity")
    assert pipeline.zero_shot(parity, (Constant(), None), tok, split) == 1.0  # 41 is odd: "no", as both are


@pytest.mark.slow  # 4 s
def test_a_pair_logit_is_the_reward_difference_and_flips_when_the_pair_does():
    from rlhf_jax.models.config import ModelConfig
    from rlhf_jax.models.transformer import init_model

    cfg = ModelConfig(family="llama", vocab_size=16, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_positions=16)
    model, params = init_model(cfg, head="scalar", seed=0)
    rng = np.random.default_rng(0)
    a, b = rng.integers(2, 16, (3, 6)), rng.integers(2, 16, (3, 6))
    mask = np.ones((3, 6), np.int32)
    pair = classifier.logits_Bx2(model, params, np.stack([a, b], 1), np.stack([mask, mask], 1))
    flipped = classifier.logits_Bx2(model, params, np.stack([b, a], 1), np.stack([mask, mask], 1))
    r_a, r_b = model.rewards(params, a, mask), model.rewards(params, b, mask)
    np.testing.assert_allclose(pair[:, 1], r_a - r_b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flipped[:, 1], -pair[:, 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pair[:, 0], 0.0)
    one = classifier.logits_Bx2(model, params, a[:, None], mask[:, None])
    np.testing.assert_allclose(one[:, 1], r_a, rtol=1e-6)


def test_fit_learns_a_separable_toy_task_and_leaves_the_callers_params_alone():
    """Sequences that end in token 3 are class 1, in token 4 class 0: after a few
    steps every one is classified right, with and without the confidence loss."""
    from rlhf_jax.models.config import ModelConfig
    from rlhf_jax.models.transformer import init_model

    cfg = ModelConfig(family="llama", vocab_size=8, d_model=16, n_layers=1, n_heads=2, d_ff=32, max_positions=8)
    model, params = init_model(cfg, head="scalar", seed=0)
    before = jax.tree.map(np.asarray, params)
    rng = np.random.default_rng(0)
    labels = np.arange(64) % 2
    tokens = np.concatenate([rng.integers(5, 8, (64, 3)), np.where(labels, 3, 4)[:, None]], 1)[:, None, :]
    inputs = classifier.Inputs(tokens.astype(np.int32), np.ones_like(tokens, np.int32))
    start = classifier.predict(model, classifier.zero_head(params), inputs, batch=48)
    np.testing.assert_array_equal(start, 0.5)  # a fine-tune's head starts at zero: every p is 1/2
    for alpha in (0.0, 0.5):
        fit = classifier.FitConfig(steps=60, batch_size=16, learning_rate=1e-2, aux_alpha=alpha)
        trained, loss = classifier.fit(model, params, inputs, pipeline.one_hot(labels), fit, seed=0)
        assert classifier.accuracy(classifier.predict(model, trained, inputs, batch=48), labels) == 1.0
        assert np.isfinite(loss)
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, params))


def test_settings_that_cannot_work_are_refused_before_any_stage_runs():
    cfg = experiment.get_config("tiny")
    with pytest.raises(ValueError, match="task='nope'"):
        dataclasses.replace(cfg, task="nope")
    with pytest.raises(ValueError, match=r"sizes\[0\].*'sft' on 'summarization'"):
        dataclasses.replace(cfg, task="preference")
    with pytest.raises(ValueError, match="bootstrap needs at least 3 sizes"):
        dataclasses.replace(cfg, sizes=cfg.sizes[:2])
    with pytest.raises(ValueError, match="unknown variant"):
        experiment.get_config("parity,sorted")
    with pytest.raises(ValueError, match="fits: 2 given for 3 sizes"):
        dataclasses.replace(cfg, fits=(cfg.fit, cfg.fit))
    with pytest.raises(ValueError, match=r"fits\[1\].batch_size=32: above n_split=16"):
        dataclasses.replace(cfg, fits=(cfg.fit, classifier.FitConfig(batch_size=32), cfg.fit))
    band = experiment.get_config("band,validation")
    assert band.eval_split == "validation" and [band.fit_of(i).learning_rate for i in range(4)] == [
        lr for lr, _ in experiment.FITS["band"]
    ]


@pytest.mark.slow  # 19 s: the four sizes' pretraining runs for real
def test_no_student_reads_the_gold_labels_of_its_split(tmp_path, monkeypatch):
    """With training replaced by a recorder (every model predicts 0.6 for class 1) and the
    gold labels of the students' splits all 0, only the ceilings and the from-scratch run
    are fitted to gold labels on those splits; every student gets the weak labels (soft,
    hardened, or the previous bootstrap step's). Four sizes: bootstrapping chains from
    supervisors 0 and 1."""
    cfg = experiment.get_config("tiny,band")
    top = cfg.sizes[-1]
    fourth = dataclasses.replace(top, name="pretrain_digits_related_d32l1",
                                 model=dataclasses.replace(top.model, d_model=32, d_ff=64))  # fmt: skip
    cfg = dataclasses.replace(cfg, sizes=(*cfg.sizes, fourth))
    S = len(cfg.sizes)
    rates = tuple((i + 1) * 1e-3 for i in range(S))  # each size its own learning rate
    cfg = dataclasses.replace(cfg, fits=tuple(dataclasses.replace(cfg.fit, learning_rate=r) for r in rates))
    widths = [s.model.d_model for s in cfg.sizes]
    fits, seen, rate_of, where = [], {}, [], []
    real_splits = pipeline.task_splits

    def splits(*args, **kwargs):
        out = real_splits(*args, **kwargs)
        for name in ("B", "B2", "B3"):
            out[name] = dataclasses.replace(out[name], labels=np.zeros_like(out[name].labels))
        seen.update(out)
        return out

    def fake_fit(model, params, inputs, targets, fit, seed):
        fits.append((next(n for n, s in seen.items() if s.inputs is inputs), np.asarray(targets), fit.aux_alpha))
        rate_of.append((widths.index(model.cfg.d_model), fit.learning_rate))
        where.append((fits[-1][0], rate_of[-1][0]))
        return params, 0.0

    monkeypatch.setattr(pipeline, "task_splits", splits)
    monkeypatch.setattr(classifier, "fit", fake_fit)
    monkeypatch.setattr(classifier, "predict", lambda m, p, inputs, batch=256: np.tile([0.4, 0.6], (len(inputs), 1)))
    summary = pipeline.run(cfg, str(tmp_path))
    gold_fits = [f for f in fits if f[0] != "A" and np.array_equal(f[1], pipeline.one_hot(np.zeros(len(f[1]), int)))]
    assert len(gold_fits) == (S - 1) + 1  # the ceilings and the from-scratch run
    students = [f for f in fits if f[0] != "A" and not np.array_equal(f[1], gold_fits[0][1])]
    n_pairs = S * (S - 1) // 2
    # naive, aux, hard for every pair; the bootstrap steps (from each supervisor i, one for each size past i + 1)
    assert len(students) == 3 * n_pairs + (S - 2) * (S - 1) // 2
    for split, targets, _ in students:
        assert split in ("B", "B2", "B3")
        assert np.allclose(targets, [0.4, 0.6]) or np.array_equal(targets, pipeline.one_hot(np.ones(len(targets), int)))
    assert sum(alpha == cfg.aux_alpha for *_, alpha in students) == n_pairs
    assert [f[0] for f in fits if f[0] == "A"] == ["A"] * (S - 1)  # the weak supervisors, on A's gold labels
    assert summary["pgr"]["naive"]["0-1"] is None  # every model the same: no gap to recover
    assert {rates[size] == r for size, r in rate_of} == {True} and {size for size, _ in rate_of} == set(range(S))
    assert (tmp_path / "runs" / "weak0.json").exists()
    # each bootstrap step (split, size): 0 -> 1 (B) -> 2 (B2) -> 3 (B3), and 1 -> 2 (B) -> 3 (B2)
    assert sorted(w for w in where if w[0] in ("B2", "B3")) == [("B2", 2), ("B2", 3), ("B3", 3)]
    assert set(summary["accuracy"]["bootstrap"]) == {"0-1", "0-2", "0-3", "1-2", "1-3"}
    before = len(fits)
    assert pipeline.run(cfg, str(tmp_path)) == json.loads((tmp_path / "summary.json").read_text())
    assert len(fits) == before  # a finished run fits nothing again


@pytest.mark.slow
def test_the_study_at_smoke_size_runs_every_pair_and_reports(tmp_path):
    from rlhf_jax.main import main

    spec = "experiments/studies/weak_to_strong.py:smoke"
    assert main(["--config", spec, "--workdir", str(tmp_path / "study")]) == 0
    records = tmp_path / "study" / "records"
    assert sorted(p.name for p in records.glob("*.seed0.json")) == ["band.seed0.json", "band_validation.seed0.json"]
    record = json.loads((records / "band.seed0.json").read_text())
    cfg = experiment.get_config("tiny,band")
    S = len(cfg.sizes)
    pairs = {f"{i}-{j}" for i in range(S - 1) for j in range(i + 1, S)}
    for kind in ("naive", "aux", "hard"):
        assert {k.split(".")[-1] for k in record["metrics"] if k.startswith(f"accuracy.{kind}.")} == pairs
    assert all(0.0 <= v <= 1.0 for k, v in record["metrics"].items() if k.startswith(("accuracy.", "zero_shot.")))
    assert {f"zero_shot.{i}" for i in range(S)} <= set(record["metrics"])  # measured, not given
    assert len(record["curve"]) == S and record["curve"][0]["n"] < record["curve"][-1]["n"]
    shared = sorted(p.name for p in (tmp_path / "study" / "shared").iterdir())
    assert [s.split("-")[0] for s in shared] == [f"pretrain{i}" for i in range(S)]
    report = (tmp_path / "study" / "report.md").read_text()
    assert "| band | 1 |" in report and "| band_validation | 1 |" in report and "params=" in report
    assert (tmp_path / "study" / "plots" / "naive_band.png").exists()
