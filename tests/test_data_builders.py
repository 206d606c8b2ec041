"""TFDS builders on small files in the real HH-RLHF and TL;DR formats, the built-in tasks,
and bad records."""

import dataclasses
import gzip
import json
import threading

import numpy as np
import pytest

from rlhf_jax.data import builders, formats
from rlhf_jax.data.tasks import TASKS, collected_comparisons, labelled_solutions
from rlhf_jax.experiment import DataSection, ExperimentConfig, TrainSection
from rlhf_jax.loops.data import task_rows
from rlhf_jax.workdir import Lock


def write_jsonl(path, records, gz=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n"
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)


HH_PROMPT = "\n\nHuman: What is a good name for a cat?\n\nAssistant: Whiskers.\n\nHuman: Another one?\n\nAssistant:"


def hh_files(root):
    write_jsonl(
        root / "helpful-base" / "train.jsonl.gz",
        [
            {"chosen": HH_PROMPT + " How about Mittens?", "rejected": HH_PROMPT + " No."},
            {"chosen": "\n\nHuman: hi", "rejected": "\n\nHuman: hello"},  # no Assistant turn: skipped
            {"chosen": HH_PROMPT + " Sure, Tiger.", "rejected": HH_PROMPT + " "},  # empty response: skipped
        ],
        gz=True,
    )
    write_jsonl(
        root / "harmless-base" / "test.jsonl",
        [{"chosen": "\n\nHuman: Q?\n\nAssistant: A.", "rejected": "\n\nHuman: Q?\n\nAssistant: B."}],
    )


def test_hh_rlhf_builds_and_reads_back_exactly(tmp_path):
    hh_files(tmp_path / "src")
    builder = builders.prepare(builders.HhRlhf, str(tmp_path / "data"), str(tmp_path / "src"))
    train = builders.records(builder, "train")
    assert train == [{"prompt": HH_PROMPT, "chosen": " How about Mittens?", "rejected": " No."}]
    assert builders.records(builder, "test") == [
        {"prompt": "\n\nHuman: Q?\n\nAssistant:", "chosen": " A.", "rejected": " B."}
    ]
    again = builders.prepare(builders.HhRlhf, str(tmp_path / "data"), str(tmp_path / "src"))
    assert builders.records(again, "train") == train
    assert formats.hh_sft_view(train) == [{"prompt": HH_PROMPT, "completion": " How about Mittens?"}]


def test_hh_rlhf_skips_are_counted():
    skips = formats.Skips()
    records = [
        {"chosen": "\n\nHuman: hi", "rejected": "\n\nHuman: hello"},
        {"chosen": HH_PROMPT + " x", "rejected": HH_PROMPT + "  "},
        {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: c\n\nAssistant: d"},
    ]
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.write("\n".join(json.dumps(r) for r in records))
    assert list(formats.hh_rlhf(f.name, skips)) == []
    assert skips == {"no Assistant turn": 1, "empty response": 1, "chosen and rejected prompts differ": 1}
    assert f"1 (chosen and rejected prompts differ, e.g. {f.name}:3)" in skips.report("hh")
    assert f"1 (no Assistant turn, e.g. {f.name}:1)" in skips.report("hh")


def test_tldr_sft_and_comparisons_build_and_read_back(tmp_path):
    post = dict(subreddit="cats", title="My cat", post="She sleeps all day.")
    write_jsonl(tmp_path / "sft" / "train.jsonl", [{"id": "t3_1", **post, "summary": " Cat sleeps. "}])
    write_jsonl(tmp_path / "sft" / "valid.jsonl", [{"id": "t3_2", **post, "summary": "Sleepy cat"}])
    sft = builders.prepare(builders.TldrSft, str(tmp_path / "data"), str(tmp_path / "sft"))
    prompt = "SUBREDDIT: r/cats\nTITLE: My cat\nPOST: She sleeps all day.\nTL;DR:"
    assert builders.records(sft, "train") == [{"prompt": prompt, "completion": " Cat sleeps."}]
    assert builders.records(sft, "valid") == [{"prompt": prompt, "completion": " Sleepy cat"}]

    comparison = lambda split, choice: {  # noqa: E731
        "info": {"id": "t3_1", **post},
        "summaries": [{"text": "first", "policy": "sup2"}, {"text": "second", "policy": "ref"}],
        "choice": choice,
        "split": split,
    }
    article = {"info": {"id": "cnn", "article": "News.", "title": "t"}, "summaries": [], "choice": 0, "split": "train"}
    write_jsonl(tmp_path / "cmp" / "batch3.json", [comparison("train", 1), comparison("valid1", 0), article])
    cmp = builders.prepare(builders.TldrComparisons, str(tmp_path / "data"), str(tmp_path / "cmp"))
    assert builders.records(cmp, "train") == [{"prompt": prompt, "chosen": " second", "rejected": " first"}]
    assert builders.records(cmp, "valid1") == [{"prompt": prompt, "chosen": " first", "rejected": " second"}]


def test_builtin_tasks_are_tfds_datasets_and_deterministic(tmp_path):
    cfg = builders.task_config("preference", seed=5, n_train=30, n_test=5)
    a = builders.records(builders.prepare(builders.SyntheticSummarization, str(tmp_path / "a"), config=cfg), "train")
    b = builders.records(builders.prepare(builders.SyntheticSummarization, str(tmp_path / "b"), config=cfg), "train")
    assert a == b and len(a) == 30 and set(a[0]) == {"prompt", "chosen", "rejected", "document"}
    arith = builders.prepare(builders.Arithmetic, str(tmp_path / "c"), config=builders.task_config(n_train=20))
    rows = builders.records(arith, "train")
    assert len(rows) == 20 and all(len(r["step_labels"]) == r["completion"].count("\n") + 1 for r in rows)  # lines


def test_a_data_dir_is_locked_while_a_dataset_is_prepared(tmp_path):
    """Processes sharing a data dir (a study's jobs) wait for the one preparing a dataset."""
    cfg = builders.task_config("preference", seed=5, n_train=4, n_test=2)
    done = []
    with Lock(str(tmp_path), wait=True):  # another process preparing (flock: per open file)
        worker = threading.Thread(
            target=lambda: done.append(builders.prepare(builders.SyntheticSummarization, str(tmp_path), config=cfg))
        )
        worker.start()
        worker.join(timeout=1.5)
        assert worker.is_alive() and not done  # waiting, nothing written
    worker.join(timeout=60)
    assert len(builders.records(done[0], "train")) == 4


def test_collected_comparisons_replace_the_tasks_preference_train_rows_only(tmp_path):
    rows = [
        {"prompt": "Document: a b .\nTL;DR:", "chosen": " a", "rejected": " b", "document": "a b ."},
        {"prompt": "Document: c .\nTL;DR:", "chosen": " c", "rejected": " c"},  # one text twice: skipped
        {"prompt": "Document: d .\nTL;DR:", "chosen": " d", "rejected": " e"},  # no document: ""
        {"prompt": "Document: f .\nTL;DR:", "chosen": " f", "rejected": " g", "tie": True},  # judged equal
    ]
    write_jsonl(tmp_path / "round0" / "comparisons.jsonl", rows)
    got = collected_comparisons(str(tmp_path / "round0"))
    want = [{**rows[0], "tie": 0}, {**rows[2], "document": "", "tie": 0}, {**rows[3], "document": "", "tie": 1}]
    assert sorted(got, key=lambda r: r["prompt"]) == want
    assert (tmp_path / "round0" / "tfds").is_dir()
    many = [{"prompt": f"p{i}", "chosen": f" a{i}", "rejected": f" b{i}"} for i in range(12)]
    for place in ("here", "elsewhere"):
        write_jsonl(tmp_path / place / "comparisons.jsonl", many)
    here = collected_comparisons(str(tmp_path / "here"))  # the order does not depend on where the file is
    assert here == collected_comparisons(str(tmp_path / "elsewhere")) and len(here) == 12
    write_jsonl(tmp_path / "bad" / "comparisons.jsonl", [{"prompt": "p", "chosen": "c"}])
    with pytest.raises(ValueError, match=r"comparisons.jsonl:1: missing field 'rejected'"):
        collected_comparisons(str(tmp_path / "bad"))
    write_jsonl(tmp_path / "bad_tie" / "comparisons.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r", "tie": 1}])
    with pytest.raises(ValueError, match=r"comparisons.jsonl:1: tie=1: expected true or false"):
        collected_comparisons(str(tmp_path / "bad_tie"))


def test_labelled_solutions_replace_the_tasks_labelled_train_rows_and_bad_labels_are_skipped(tmp_path, capsys):
    good = {"prompt": "Compute: 1 + 2\n", "completion": "1 + 2 = 3\nThe answer is 3", "outcome": 1, "step_labels": [2]}
    rows = [
        good,
        {**good, "completion": "1 + 2 = 4\n4 + 0 = 4\nThe answer is 4", "outcome": 0, "step_labels": [0, -1]},
        {**good, "outcome": 2},  # not an outcome: skipped
        {**good, "step_labels": [3]},  # not a step label: skipped
    ]
    write_jsonl(tmp_path / "labels" / "solutions.jsonl", rows)
    got, held_out = labelled_solutions(str(tmp_path / "labels"))
    assert sorted(got, key=lambda r: r["outcome"]) == [rows[1], rows[0]] and held_out is None
    assert "skipped 2" in capsys.readouterr().out
    cfg = ExperimentConfig(
        data=DataSection(task="arithmetic", n_train=8, n_test=4, solutions=str(tmp_path / "labels")),
        train=TrainSection(kind="prm"),
    )
    train, test = task_rows(cfg, str(tmp_path / "run"), "labelled")
    assert len(train) == 2 and {r["completion"] for r in train} == {rows[0]["completion"], rows[1]["completion"]}
    assert len(test) == 4 and all(r["prompt"].startswith("Compute: ") for r in test)  # the task's own
    write_jsonl(tmp_path / "both" / "solutions.jsonl", rows[:1])
    write_jsonl(tmp_path / "both" / "held_out.jsonl", rows[1:2])
    both = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, solutions=str(tmp_path / "both")))
    assert task_rows(both, str(tmp_path / "run2"), "labelled") == ([rows[0]], [rows[1]])


FIELDS = {
    "sft": {"prompt", "completion"},
    "preference": {"prompt", "chosen", "rejected"},
    "labelled": {"prompt", "completion", "outcome", "step_labels"},
    "probe": {"prompt", "chosen", "rejected"},
}


@pytest.mark.parametrize("name", [n for n, t in TASKS.items() if t.generated])
def test_every_generated_task_gives_each_kind_it_offers_with_its_fields_and_a_gold_judge(name, tmp_path):
    task, data = TASKS[name], DataSection(task=name, n_train=6, n_test=3, seed=2)
    for kind in task.offers:
        source = task.source(kind)
        train, test = source.rows(source.prepare(data, str(tmp_path / kind)), data)
        n_train = getattr(source, "n_train", 0) or 6  # the probe's train split holds one row
        assert (len(train), len(test)) == (n_train, 3) and all(FIELDS[kind] <= set(r) for r in train + test), kind
        assert train != test
        validation = dataclasses.replace(data, eval_split="validation")
        held_out = source.rows(source.prepare(validation, str(tmp_path / kind)), validation)[1]
        assert len(held_out) == 3 and not {r["prompt"] for r in held_out} & {r["prompt"] for r in test}, kind
    rows = task.source("sft").rows(task.source("sft").prepare(data, str(tmp_path / "sft")), data)[1]
    gold = task.judge(rows, [r["completion"] for r in rows])  # the references score as the judge says
    assert gold.shape == (3,) and np.isfinite(gold).all()
    with pytest.raises(ValueError, match="offers"):
        task.source("no-such-kind")


def test_a_task_read_from_files_needs_its_directory_and_has_no_gold_judge():
    task = TASKS["tldr"]
    assert not task.generated and task.judge is None
    with pytest.raises(ValueError, match="data.source_dir"):
        task.source("sft").prepare(DataSection(task="tldr"), "/tmp/unused")
    with pytest.raises(ValueError, match="data.eval_split='nope'"):
        DataSection(eval_split="nope")


def test_bad_records_name_the_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    write_jsonl(
        path, [{"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"}, "{not json"]
    )
    with pytest.raises(ValueError, match=r"train.jsonl:2: malformed JSON"):
        list(formats.hh_rlhf(str(path), formats.Skips()))
    write_jsonl(path, [{"chosen": "\n\nHuman: a\n\nAssistant: b"}])
    with pytest.raises(ValueError, match=r"train.jsonl:1: missing field 'rejected'"):
        list(formats.hh_rlhf(str(path), formats.Skips()))
    write_jsonl(path, [{"id": "x", "subreddit": "s", "title": "t", "summary": "y"}])
    with pytest.raises(ValueError, match=r"train.jsonl:1: missing field 'post'"):
        list(formats.tldr_sft(str(path), formats.Skips()))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "README.txt").write_text("not data")
    with pytest.raises(FileNotFoundError, match=r"other: none of \['test.jsonl'"):
        builders.prepare(builders.TldrSft, str(tmp_path / "data"), str(tmp_path / "other"))


def test_undecodable_and_damaged_files_name_the_file_and_line(tmp_path):
    good = json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"})
    path = tmp_path / "train.jsonl"
    path.write_bytes((good + "\n" + good[:20]).encode() + b"\xff\xfe" + good[20:].encode() + b"\n")
    with pytest.raises(ValueError, match=r"train.jsonl:2: not UTF-8 text"):
        list(formats.hh_rlhf(str(path), formats.Skips()))
    gz = tmp_path / "test.jsonl.gz"
    write_jsonl(gz, [good] * 2000, gz=True)
    data = gz.read_bytes()
    gz.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"test.jsonl.gz:\d+: damaged or truncated gzip file"):
        list(formats.hh_rlhf(str(gz), formats.Skips()))


def test_tldr_records_of_the_wrong_type_are_named_and_duplicate_ids_skipped(tmp_path):
    post = dict(subreddit="cats", title="My cat", post="She sleeps all day.")
    path = tmp_path / "batch1.json"
    write_jsonl(path, [{"info": {"id": "t3_1", **post}, "summaries": [3, 4], "choice": 0}])
    with pytest.raises(ValueError, match=r"batch1.json:1: each entry of 'summaries' should be an object"):
        list(formats.tldr_comparisons(str(path), formats.Skips()))
    rows = [{"id": "t3_1", **post, "summary": "one"}, {"id": "t3_1", **post, "summary": "two"}]
    write_jsonl(tmp_path / "sft" / "train.jsonl", rows)
    write_jsonl(tmp_path / "sft" / "test.jsonl", [{"id": "t3_9", **post, "summary": "three"}])
    built = builders.prepare(builders.TldrSft, str(tmp_path / "data"), str(tmp_path / "sft"))
    assert [r["completion"] for r in builders.records(built, "train")] == [" one"]
    assert built.skips["train"] == {"duplicate id": 1}
    assert f"duplicate id, e.g. {tmp_path / 'sft' / 'train.jsonl'}:2" in built.skips["train"].report("tldr")
