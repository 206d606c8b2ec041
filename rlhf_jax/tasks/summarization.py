"""Synthetic summarisation, a stand-in for TL;DR with a known gold judge.

A document is a few sentences over a made-up vocabulary about k topic words: its first
sentence (the lede) names them all, they recur in the body, and every other content word
appears once, in the body. The gold reward of a summary (a short list of words) is

    r = coverage - lambda_len * max(0, |s| - target) / target - lambda_rep * repeated / |s|

with coverage the share of the document's k salient words the summary names, the
salient words being the k content words the document uses most (ties alphabetical; by
construction the topic words, with a margin), so the judge needs only the document and
the summary. SFT references are imperfect (salient words dropped, other document words
added, repeats). Most comparisons are between two summaries of the same length without
repeats (as two samples of one policy mostly are), so that they turn on what they say;
the rest (form_prob) between a summary and itself with one word deleted, repeated or
added. A
label is drawn from Bradley-Terry on the gold reward at a temperature; pairs of equal
gold reward are not asked about.
"""

from __future__ import annotations

import collections
import dataclasses
import math

import numpy as np

FUNCTION_WORDS = ("the", "a", "of", "and", "to", "in", "is", "was", "for", "on", "with", "as", "by", "at", "it")
PROMPT_SUFFIX = "\nTL;DR:"


def content_words(n: int = 400, seed: int = 1234) -> list[str]:
    """A fixed made-up vocabulary of pronounceable words (the same for every seed of the data)."""
    rng = np.random.default_rng(seed)
    onsets, vowels, codas = "bdfgklmnprstvz", "aeiou", ["", "n", "r", "s", "l", "m"]
    words: set[str] = set()
    while len(words) < n:
        syllables = rng.integers(2, 4)
        words.add(
            "".join(rng.choice(list(onsets)) + rng.choice(list(vowels)) + rng.choice(codas) for _ in range(syllables))
        )
    return sorted(words)


@dataclasses.dataclass(frozen=True)
class SummarizationConfig:
    n_topics: int = 4  # k salient words per document
    n_sentences: int = 4  # the lede and the body's sentences
    sentence_len: tuple[int, int] = (5, 9)  # a body sentence's words
    topic_prob: float = 0.3  # a body word is one of the topic words
    function_prob: float = 0.35  # ... a function word; else a content word used nowhere else
    target_len: int = 4
    length_penalty: float = 0.5
    repeat_penalty: float = 1.0
    drop_prob: float = 0.3  # reference summaries: chance to drop a salient word
    noise_words: tuple[int, int] = (0, 3)  # reference summaries: extra document words
    repeat_prob: float = 0.15  # reference summaries: chance of a repeated word
    pair_len: tuple[int, int] = (2, 6)  # comparisons: the length both summaries share
    form_prob: float = 0.25  # comparisons: chance of a summary against itself one word deleted, repeated or added
    bt_temperature: float = 0.05  # preference labels: P(a > b) = sigmoid((r_a - r_b) / T)


def make_document(rng: np.random.Generator, cfg: SummarizationConfig, vocab) -> str:
    """The lede (the topic words and one to three function words, shuffled), then body
    sentences of topic words, function words and content words used once each; every
    topic word recurs in the body, so the topic words are the k most frequent.
    (Single picks index with `rng.integers(n)`, the draw `rng.choice` makes, without its
    per-call array conversion: the data are those of `rng.choice`, several times faster.)"""
    vocab = np.asarray(vocab)
    topics = [str(w) for w in rng.choice(vocab, size=cfg.n_topics, replace=False)]
    lede = topics + [FUNCTION_WORDS[int(rng.integers(len(FUNCTION_WORDS)))] for _ in range(int(rng.integers(1, 4)))]
    rng.shuffle(lede)
    fresh = iter(rng.permutation(vocab[~np.isin(vocab, topics)]).tolist())
    body = []
    for _ in range(cfg.n_sentences - 1):
        words = []
        for _ in range(int(rng.integers(cfg.sentence_len[0], cfg.sentence_len[1] + 1))):
            u = rng.random()
            if u < cfg.topic_prob:
                words.append(topics[int(rng.integers(len(topics)))])
            elif u < cfg.topic_prob + cfg.function_prob:
                words.append(FUNCTION_WORDS[int(rng.integers(len(FUNCTION_WORDS)))])
            else:
                words.append(next(fresh))
        body.append(words)
    for topic in topics:
        if not any(topic in words for words in body):
            words = body[int(rng.integers(len(body)))]
            words.insert(int(rng.integers(len(words) + 1)), topic)
    return " ".join(" ".join(words) + " ." for words in [lede, *body])


def other_words(document: str, salient: list[str]) -> list[str]:
    """The document's content words that are not salient, in order of first use."""
    seen = dict.fromkeys(w for w in document.split() if w not in FUNCTION_WORDS and w != ".")
    return [w for w in seen if w not in salient]


def salient_words(document: str, k: int) -> list[str]:
    """The k most frequent content words of the document (ties broken alphabetically)."""
    counts = collections.Counter(w for w in document.split() if w not in FUNCTION_WORDS and w != ".")
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def gold_reward(document: str, summary: str, cfg: SummarizationConfig = SummarizationConfig()) -> float:
    """Coverage of the salient words minus the length and repetition penalties."""
    return reward_of_words(summary.split(), set(salient_words(document, cfg.n_topics)), cfg)


def reward_of_words(words: list[str], salient: set[str], cfg: SummarizationConfig = SummarizationConfig()) -> float:
    """`gold_reward` of a summary's words given the document's salient words."""
    if not words:
        return 0.0
    coverage = len(salient & set(words)) / max(len(salient), 1)
    too_long = max(0, len(words) - cfg.target_len) / cfg.target_len
    repeated = (len(words) - len(set(words))) / len(words)
    return coverage - cfg.length_penalty * too_long - cfg.repeat_penalty * repeated


def make_summary(rng: np.random.Generator, document: str, cfg: SummarizationConfig) -> str:
    """An imperfect human-like summary: each salient word kept with 1 - drop_prob, a few
    other content words of the document added, sometimes a word repeated; shuffled."""
    salient = salient_words(document, cfg.n_topics)
    others = other_words(document, salient)
    kept = [w for w in salient if rng.random() >= cfg.drop_prob]
    extra = min(int(rng.integers(cfg.noise_words[0], cfg.noise_words[1] + 1)), len(others))
    words = kept + [str(w) for w in rng.choice(others, size=extra, replace=False)]
    if not words:
        words = [str(rng.choice(others or salient))]
    if rng.random() < cfg.repeat_prob:
        words.append(str(rng.choice(words)))
    rng.shuffle(words)
    return " ".join(words)


def same_length_summary(rng: np.random.Generator, salient: list[str], others: list[str], length: int) -> str | None:
    """`length` distinct words of the document, a random number of them salient (as one
    policy's samples vary in what they name); None if the document has too few words."""
    low, high = max(0, length - len(others)), min(len(salient), length)
    if low > high:
        return None
    n_salient = int(rng.integers(low, high + 1))
    words = list(rng.choice(salient, size=n_salient, replace=False)) + list(
        rng.choice(others, size=length - n_salient, replace=False)
    )
    rng.shuffle(words)
    return " ".join(str(w) for w in words)


def prompt(document: str) -> str:
    return f"Document: {document}{PROMPT_SUFFIX}"


def sft_examples(n: int, seed: int, cfg: SummarizationConfig = SummarizationConfig()) -> list[dict]:
    """{"prompt", "completion", "document"}: a document and an imperfect reference summary."""
    rng = np.random.default_rng(seed)
    vocab = np.array(content_words())
    out = []
    for _ in range(n):
        doc = make_document(rng, cfg, vocab)
        out.append({"prompt": prompt(doc), "completion": " " + make_summary(rng, doc, cfg), "document": doc})
    return out


def form_edit(rng: np.random.Generator, summary: str, others: list[str]) -> str:
    """The summary with one word fewer, one of its words repeated, or one more word of the
    document that is not salient (the gold reward then differs by a salient word lost or
    by its penalties)."""
    words = summary.split()
    extra = [w for w in others if w not in words]
    kind = int(rng.integers(3)) if extra else int(rng.integers(2))
    if kind == 0 and len(words) > 1:
        del words[int(rng.integers(len(words)))]
    else:
        word = str(rng.choice(words)) if kind < 2 else str(rng.choice(extra))
        words.insert(int(rng.integers(len(words) + 1)), word)
    return " ".join(words)


def preference_examples(n: int, seed: int, cfg: SummarizationConfig = SummarizationConfig()) -> list[dict]:
    """{"prompt", "chosen", "rejected", "document", "gold_margin"}: two summaries of one
    length (drawn from pair_len) without repeats that name different numbers of salient
    words or, with form_prob, a summary and its `form_edit`; the label drawn from
    Bradley-Terry on the gold reward at `bt_temperature`."""
    rng = np.random.default_rng(seed)
    vocab = np.array(content_words())
    out = []
    while len(out) < n:
        doc = make_document(rng, cfg, vocab)
        salient = salient_words(doc, cfg.n_topics)
        others = other_words(doc, salient)
        length = int(rng.integers(cfg.pair_len[0], cfg.pair_len[1] + 1))
        a, b = (same_length_summary(rng, salient, others, length) for _ in range(2))
        if a is None or b is None:
            continue
        if rng.random() < cfg.form_prob:
            b = form_edit(rng, a, others)
        ra, rb = (reward_of_words(x.split(), set(salient), cfg) for x in (a, b))
        if ra == rb:
            continue
        p_a = 1.0 / (1.0 + math.exp(-(ra - rb) / cfg.bt_temperature))
        chosen, rejected = (a, b) if rng.random() < p_a else (b, a)
        margin = (ra - rb) if chosen is a else (rb - ra)
        out.append(
            {
                "prompt": prompt(doc),
                "chosen": " " + chosen,
                "rejected": " " + rejected,
                "document": doc,
                "gold_margin": margin,
            }
        )
    return out


def content_probe_examples(n: int, seed: int, cfg: SummarizationConfig = SummarizationConfig()) -> list[dict]:
    """{"prompt", "chosen", "rejected", "document"}: two summaries of target_len distinct
    words in the same order that differ in one word only: a salient word of the document
    in "chosen", a non-salient word of the document in "rejected". Their gold rewards
    differ by exactly 1 / n_topics (coverage; length and repeats are equal), so a reward
    model ranks them right only by what the summary says, not by its form. Documents with
    too few distinct non-salient words are skipped."""
    rng = np.random.default_rng(seed)
    vocab = np.array(content_words())
    out = []
    while len(out) < n:
        doc = make_document(rng, cfg, vocab)
        salient = salient_words(doc, cfg.n_topics)
        others = other_words(doc, salient)
        n_salient = int(rng.integers(1, min(len(salient), cfg.target_len) + 1))
        n_others = cfg.target_len - n_salient
        if len(others) < n_others + 1:
            continue
        picked = [str(w) for w in rng.choice(salient, size=n_salient, replace=False)]
        fillers = [str(w) for w in rng.choice(others, size=n_others + 1, replace=False)]
        words = picked + fillers[:n_others]
        order = rng.permutation(len(words))
        chosen = [words[i] for i in order]
        swapped = int(np.flatnonzero(order == int(rng.integers(n_salient)))[0])  # where one salient word landed
        rejected = list(chosen)
        rejected[swapped] = fillers[-1]
        out.append({"prompt": prompt(doc), "chosen": " " + " ".join(chosen), "rejected": " " + " ".join(rejected),
                    "document": doc})  # fmt: skip
    return out


def document_of(prompt_text: str) -> str:
    """The document inside a prompt (for judging a completion given only the prompt)."""
    if not prompt_text.startswith("Document: ") or not prompt_text.endswith(PROMPT_SUFFIX):
        raise ValueError(f"not a summarisation prompt: {prompt_text[:60]!r}")
    return prompt_text[len("Document: ") : -len(PROMPT_SUFFIX)]
