"""The preference loop (every objective) and the ORM / PRM reward-model loops: each runs
and its training loss falls on the built-in tasks; the PRM's step positions and the
KTO batches are laid out as documented."""

import dataclasses
import json
import os

import numpy as np
import pytest

from rlhf_jax import loops
from rlhf_jax.batches import NO_STEP
from rlhf_jax.experiment import PreferenceSection
from rlhf_jax.loops.data import task_data
from rlhf_jax.loops.offline import kto_rows
from rlhf_jax.loops.supervised import prm_batch, step_ends
from rlhf_jax.losses.preference import OBJECTIVES
from rlhf_jax.main import load_experiment

pytestmark = pytest.mark.slow  # end-to-end runs: the whole suite, not `-m "not slow"`


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def config(spec, tfds_dir, train=None, **sections):
    cfg = load_experiment(spec)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, data_dir=tfds_dir))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **(train or {})))
    for name, fields in sections.items():
        cfg = dataclasses.replace(cfg, **{name: dataclasses.replace(getattr(cfg, name), **fields)})
    return cfg


def losses(workdir):
    return [json.loads(line)["loss"] for line in open(os.path.join(workdir, "metrics.jsonl"))]


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_preference_objective_trains(objective, tfds_dir, tmp_path):
    cfg = config(
        "experiments/preference_summarization.py:tiny",
        tfds_dir,
        train={"steps": 12, "log_every": 1},
        preference={"objective": objective},
    )
    summary = loops.run(cfg, str(tmp_path))
    loss = losses(tmp_path)
    assert len(loss) == 12 and np.mean(loss[-3:]) < np.mean(loss[:3]) - 0.02, loss
    if objective in ("dpo", "kto"):  # the policy starts as the reference: log 2 and 1/2
        assert loss[0] == pytest.approx({"dpo": np.log(2), "kto": 0.5}[objective], abs=0.02)
    assert np.isfinite(summary["held_out"]["loss"])
    test = summary["test"]
    assert test["policies"]["reference"]["kl_to_reference"] == 0.0
    assert 0 <= test["policy_vs_reference"]["sampled"]["gold_win_rate"] <= 1


def test_preference_reference_from_an_earlier_run(tfds_dir, tmp_path):
    sft = config("experiments/sft_summarization.py:tiny", tfds_dir)
    loops.run(sft, str(tmp_path / "sft"))
    cfg = config(
        "experiments/preference_summarization.py:tiny",
        tfds_dir,
        train={"steps": 2, "log_every": 1},
        model={"init_from": str(tmp_path / "sft")},
        preference={"reference": str(tmp_path / "sft")},
    )
    summary = loops.run(cfg, str(tmp_path / "dpo"))
    assert losses(tmp_path / "dpo")[0] == pytest.approx(np.log(2), abs=1e-5)  # same start as its reference
    assert list(summary["test"]["policies"]) == ["policy"]  # a separate reference model is not sampled


def test_bad_preference_settings_name_the_field():
    with pytest.raises(ValueError, match="preference.objective='dpop'"):
        PreferenceSection(objective="dpop")
    with pytest.raises(ValueError, match="preference.beta=0"):
        PreferenceSection(beta=0.0)


def test_kto_batches_pair_each_prompt_with_the_next_completion(tfds_dir, tmp_path):
    cfg = config("experiments/preference_summarization.py:tiny", tfds_dir)
    data = task_data(cfg, str(tmp_path), "preference")
    batch = kto_rows(data, [0, 1, 2])
    assert batch.tokens_BxT.shape[0] == 6 and list(batch.desirable_B) == [1, 1, 1, 0, 0, 0]
    P = data.P
    # row 0's KL example: prompt 0 with the completion of row 1 (the chosen of pair 1)
    np.testing.assert_array_equal(batch.kl_tokens_BxT[0, :P], batch.tokens_BxT[0, :P])
    np.testing.assert_array_equal(batch.kl_tokens_BxT[0, P:], batch.tokens_BxT[1, P:])
    np.testing.assert_array_equal(batch.kl_tokens_BxT[5, P:], batch.tokens_BxT[0, P:])  # cyclic


@pytest.mark.parametrize("kind", ["orm", "prm"])
def test_outcome_and_process_reward_models_train(kind, tfds_dir, tmp_path):
    cfg = config("experiments/reward_arithmetic.py:tiny", tfds_dir, train={"kind": kind, "steps": 24, "log_every": 1})
    summary = loops.run(cfg, str(tmp_path))
    loss = losses(tmp_path)
    assert np.mean(loss[-4:]) < np.mean(loss[:4]) - 0.02, loss
    key = "test_accuracy" if kind == "orm" else "test_step_accuracy"
    assert 0.0 <= summary[key] <= 1.0
    # the held-out ranking of right above wrong solutions: the ORM's score, each PRM reading
    readings = ["test_auroc"] if kind == "orm" else ["test_auroc_product", "test_auroc_min", "test_auroc_first_error"]
    assert all(0.0 <= summary[r] <= 1.0 for r in readings), summary
    balanced = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=2, class_balance=True))
    weights = loops.run(balanced, str(tmp_path / "balanced"))["class_weights"]
    present = [w for w in weights if w]  # the task's default solutions restate no step: no neutral class
    assert len(weights) == (2 if kind == "orm" else 3) and len(present) == 2 and max(present) > 1.0 > min(present)


def test_prm_steps_are_read_at_each_step_lines_last_token(tfds_dir, tmp_path):
    cfg = config("experiments/reward_arithmetic.py:tiny", tfds_dir)
    data = task_data(cfg, str(tmp_path), "sft")
    record = data.row(0)
    lines = record["completion"].splitlines()
    ends = step_ends(data.tokenizer, record["completion"], len(lines))  # every line a step, the answer too
    ids = data.tokenizer(record["completion"], add_special_tokens=False)["input_ids"]
    for line_no, end in enumerate(ends):  # decoding up to the end token gives whole lines
        text = data.tokenizer.decode(ids[: end + 1])
        assert text.rstrip("\n").endswith(lines[line_no].rstrip()) and "\n".join(lines[: line_no + 1]) in text
    batch = prm_batch(data, [0], max_steps=8)
    n = len(record["step_labels"])
    assert list(batch["step_labels_BxS"][0, :n]) == list(record["step_labels"])
    assert (batch["step_labels_BxS"][0, n:] == NO_STEP).all()
    np.testing.assert_array_equal(batch["step_positions_BxS"][0, :n], data.P + np.asarray(ends))
