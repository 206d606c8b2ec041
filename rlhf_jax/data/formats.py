"""Readers of the real data formats, as plain Python over local JSON-lines files.

- Anthropic HH-RLHF: lines {"chosen": dialogue, "rejected": dialogue}, dialogues in the
  "\\n\\nHuman: ... \\n\\nAssistant: ..." form. The prompt is the shared prefix through the
  last "\\n\\nAssistant:", the responses what follows it.
- TL;DR SFT (tldr_3_filtered): lines {id, subreddit, title, post, summary}.
- TL;DR comparisons (summarize_from_feedback): lines {info: {id, post, title, subreddit},
  summaries: [{text, policy, ...}, {...}], choice, split?}.
The TL;DR prompt is "SUBREDDIT: r/{subreddit}\\nTITLE: {title}\\nPOST: {post}\\nTL;DR:".

Bad records. A line that is not JSON, or lacks a required field, is an error naming the
file and line: the file is damaged or not of this format. A record that is well formed
but unusable (a dialogue with no Assistant turn, an empty response, chosen and rejected
with different prompts, a comparison of a news article rather than a post, a second
record with an id already seen) is skipped and counted in `Skips`, which data preparation
prints.
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import zlib
from collections.abc import Iterator
from typing import Any

ASSISTANT = "\n\nAssistant:"


class Skips(collections.Counter):
    """Counts of skipped records by reason, with the first few places (file:line) of each."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.where: dict[str, list[str]] = {}
        self.keys_seen: set[str] = set()

    def seen(self, key: str) -> bool:
        """Whether a record key was seen before (a duplicate); records it."""
        if key in self.keys_seen:
            return True
        self.keys_seen.add(key)
        return False

    def skip(self, reason: str, path: str, number: int) -> None:
        self[reason] += 1
        places = self.where.setdefault(reason, [])
        if len(places) < 3:
            places.append(f"{path}:{number}")

    def report(self, what: str) -> str:
        if not self:
            return f"{what}: nothing skipped"
        parts = [f"{n} ({reason}, e.g. {', '.join(self.where.get(reason, []))})" for reason, n in sorted(self.items())]
        return f"{what}: skipped " + "; ".join(parts)


def read_jsonl(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) of a .jsonl / .json-lines file, optionally gzipped."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        for number, line in enumerate(_lines(f, path), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: malformed JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            yield number, record


def _lines(f, path: str) -> Iterator[str]:
    """The lines of a file opened in binary, decoded one by one, so that a decoding error
    or a damaged gzip stream names the file and the line where it happened."""
    number = 0
    while True:
        number += 1
        try:
            raw = f.readline()
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise ValueError(f"{path}:{number}: damaged or truncated gzip file ({e})") from None
        if not raw:
            return
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}:{number}: not UTF-8 text ({e.reason} at byte {e.start} of the line)") from None


def _field(record: dict, key: str, path: str, number: int, kind=str):
    if key not in record or record[key] is None:
        raise ValueError(f"{path}:{number}: missing field {key!r}")
    if not isinstance(record[key], kind):
        raise ValueError(f"{path}:{number}: field {key!r} should be {kind.__name__}, got {type(record[key]).__name__}")
    return record[key]


def split_dialogue(dialogue: str) -> tuple[str, str] | None:
    """(prompt through the last Assistant marker, response) or None without an Assistant turn."""
    idx = dialogue.rfind(ASSISTANT)
    if idx < 0:
        return None
    cut = idx + len(ASSISTANT)
    return dialogue[:cut], dialogue[cut:]


def hh_rlhf(path: str, skips: Skips, split: str | None = None) -> Iterator[tuple[str, dict[str, str]]]:
    """(key, {"prompt", "chosen", "rejected"}) of an HH-RLHF file."""
    for number, record in read_jsonl(path):
        chosen = split_dialogue(_field(record, "chosen", path, number))
        rejected = split_dialogue(_field(record, "rejected", path, number))
        if chosen is None or rejected is None:
            skips.skip("no Assistant turn", path, number)
            continue
        if chosen[0] != rejected[0]:
            skips.skip("chosen and rejected prompts differ", path, number)
            continue
        if not chosen[1].strip() or not rejected[1].strip():
            skips.skip("empty response", path, number)
            continue
        yield f"{os.path.basename(path)}:{number}", {"prompt": chosen[0], "chosen": chosen[1], "rejected": rejected[1]}


def hh_sft_view(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """HH-RLHF as SFT data: the prompt and its chosen response."""
    return [{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows]


def tldr_prompt(subreddit: str, title: str, post: str) -> str:
    return f"SUBREDDIT: r/{subreddit}\nTITLE: {title}\nPOST: {post}\nTL;DR:"


def tldr_sft(path: str, skips: Skips, split: str | None = None) -> Iterator[tuple[str, dict[str, str]]]:
    """(key, {"prompt", "completion"}) of a TL;DR SFT file; the completion is " " + summary."""
    for number, record in read_jsonl(path):
        prompt = tldr_prompt(*(_field(record, k, path, number) for k in ("subreddit", "title", "post")))
        summary = _field(record, "summary", path, number).strip()
        if not summary:
            skips.skip("empty summary", path, number)
            continue
        key = str(record.get("id") or f"{os.path.basename(path)}:{number}")
        if skips.seen(key):
            skips.skip("duplicate id", path, number)
            continue
        yield key, {"prompt": prompt, "completion": " " + summary}


def tldr_comparisons(path: str, skips: Skips, split: str | None = None) -> Iterator[tuple[str, dict[str, str]]]:
    """(key, {"prompt", "chosen", "rejected"}) of a TL;DR comparisons file, keeping only
    records of `split` when the records carry one."""
    for number, record in read_jsonl(path):
        if split is not None and record.get("split", "train") != split:
            continue
        info = _field(record, "info", path, number, dict)
        if info.get("post") is None and info.get("article") is not None:
            skips.skip("news article, not a post", path, number)
            continue
        prompt = tldr_prompt(*(_field(info, k, path, number) for k in ("subreddit", "title", "post")))
        summaries = _field(record, "summaries", path, number, list)
        choice = _field(record, "choice", path, number, int)
        if len(summaries) != 2 or choice not in (0, 1):
            raise ValueError(f"{path}:{number}: expected 2 summaries and choice 0 or 1")
        if not all(isinstance(s, dict) for s in summaries):
            raise ValueError(f"{path}:{number}: each entry of 'summaries' should be an object with a 'text'")
        texts = [_field(s, "text", path, number).strip() for s in summaries]
        if not all(texts):
            skips.skip("empty summary", path, number)
            continue
        yield (
            f"{os.path.basename(path)}:{number}",
            {
                "prompt": prompt,
                "chosen": " " + texts[choice],
                "rejected": " " + texts[1 - choice],
            },
        )


def collected_comparisons(path: str, skips: Skips, split: str | None = None) -> Iterator[tuple[str, dict[str, str]]]:
    """(key, {"prompt", "chosen", "rejected", "document", "tie"}) of comparisons an iterated
    run collected (`iterated.py`: one JSON object per line with those fields; document may
    be empty; tie, true where the labeller judged the two equal, may be absent), skipping
    pairs of one text (a tie of a text with itself teaches nothing)."""
    for number, record in read_jsonl(path):
        row = {k: _field(record, k, path, number) for k in ("prompt", "chosen", "rejected")}
        if row["chosen"] == row["rejected"]:
            skips.skip("chosen and rejected are the same text", path, number)
            continue
        tie = record.get("tie", False)
        if not isinstance(tie, bool):
            raise ValueError(f"{path}:{number}: tie={tie!r}: expected true or false")
        row["document"] = str(record.get("document") or "")
        row["tie"] = int(tie)
        yield str(number), row


def labelled_solutions(path: str, skips: Skips, split: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, {"prompt", "completion", "outcome", "step_labels"}) of solutions a run
    labelled (`process_supervision.py`: one JSON object per line; outcome 0 or 1, a step
    label per step line, each of NO_STEP, NEGATIVE, NEUTRAL, POSITIVE), skipping lines
    whose labels are not those."""
    for number, record in read_jsonl(path):
        row = {k: _field(record, k, path, number) for k in ("prompt", "completion")}
        outcome, labels = record.get("outcome"), record.get("step_labels")
        if outcome not in (0, 1) or not isinstance(labels, list) or any(x not in (-1, 0, 1, 2) for x in labels):
            skips.skip("outcome must be 0 or 1 and step_labels a list of -1, 0, 1, 2", path, number)
            continue
        yield str(number), {**row, "outcome": int(outcome), "step_labels": [int(x) for x in labels]}


def find_files(directory: str, names: tuple[str, ...] = (), prefix: str | None = None) -> list[str]:
    """JSON-lines files under `directory` (recursively), sorted: those named one of
    `names`, or whose name starts with `prefix`."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: data directory not found")
    found = []
    for root, _, files in os.walk(directory):
        for f in files:
            if f in names or (prefix is not None and f.startswith(prefix) and ".json" in f):
                found.append(os.path.join(root, f))
    return sorted(found)
