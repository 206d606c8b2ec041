"""Synthetic summarisation, a stand-in for TL;DR with a known gold judge.

A document is a few sentences over a made-up vocabulary, built around k topic words that
recur. The gold reward of a summary (a short list of words) is

    r = coverage - lambda_len * max(0, |s| - target) / target - lambda_rep * repeated / |s|

with coverage the share of the document's k salient words the summary names, the
salient words being the k content words the document uses most (ties alphabetical), so
the judge needs only the document and the summary. SFT references are imperfect
(salient words dropped, document words added, repeats), and preference pairs are
labelled by the gold reward through Bradley-Terry with a temperature: noisy, like people.
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
    n_sentences: int = 4
    sentence_len: tuple[int, int] = (5, 9)
    topic_prob: float = 0.5  # a document word is one of its topic words
    function_prob: float = 0.35  # ... a function word; else any word of the vocabulary
    target_len: int = 4
    length_penalty: float = 0.5
    repeat_penalty: float = 1.0
    drop_prob: float = 0.3  # reference summaries: chance to drop a salient word
    noise_words: tuple[int, int] = (0, 3)  # reference summaries: extra document words
    bt_temperature: float = 0.1  # preference labels: P(a > b) = sigmoid((r_a - r_b) / T)
    degenerate_prob: float = 0.3  # preference pairs: chance a summary is an early policy's (repeats, rambling)


def make_document(rng: np.random.Generator, cfg: SummarizationConfig, vocab: list[str]) -> str:
    topics = list(rng.choice(vocab, size=cfg.n_topics, replace=False))
    sentences = []
    for _ in range(cfg.n_sentences):
        n = int(rng.integers(cfg.sentence_len[0], cfg.sentence_len[1] + 1))
        words = []
        for _ in range(n):
            u = rng.random()
            if u < cfg.topic_prob:
                words.append(str(rng.choice(topics)))
            elif u < cfg.topic_prob + cfg.function_prob:
                words.append(str(rng.choice(FUNCTION_WORDS)))
            else:
                words.append(str(rng.choice(vocab)))
        sentences.append(" ".join(words) + " .")
    return " ".join(sentences)


def salient_words(document: str, k: int) -> list[str]:
    """The k most frequent content words of the document (ties broken alphabetically)."""
    counts = collections.Counter(w for w in document.split() if w not in FUNCTION_WORDS and w != ".")
    return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def gold_reward(document: str, summary: str, cfg: SummarizationConfig = SummarizationConfig()) -> float:
    """Coverage of the salient words minus the length and repetition penalties."""
    words = summary.split()
    if not words:
        return 0.0
    salient = set(salient_words(document, cfg.n_topics))
    coverage = len(salient & set(words)) / max(len(salient), 1)
    too_long = max(0, len(words) - cfg.target_len) / cfg.target_len
    repeated = (len(words) - len(set(words))) / len(words)
    return coverage - cfg.length_penalty * too_long - cfg.repeat_penalty * repeated


def make_summary(rng: np.random.Generator, document: str, cfg: SummarizationConfig, quality: float = 1.0) -> str:
    """An imperfect human-like summary; lower `quality` drops more salient words."""
    salient = salient_words(document, cfg.n_topics)
    drop = 1 - quality * (1 - cfg.drop_prob)
    kept = [w for w in salient if rng.random() >= drop]
    doc_words = [w for w in document.split() if w != "."]
    extra = int(rng.integers(cfg.noise_words[0], cfg.noise_words[1] + 1))
    words = kept + [str(rng.choice(doc_words)) for _ in range(extra)]
    if words and rng.random() < 0.15:
        words.append(str(rng.choice(words)))
    rng.shuffle(words)
    return " ".join(words) if words else str(rng.choice(doc_words))


def degenerate(rng: np.random.Generator, document: str, summary: str) -> str:
    """What an early policy writes: a word of the summary repeated, or document words
    run on past the target length."""
    words = summary.split()
    if rng.random() < 0.5:
        at = int(rng.integers(len(words)))
        words[at + 1 : at + 1] = [words[at]] * int(rng.integers(1, 6))
    else:
        doc_words = [w for w in document.split() if w != "."]
        words += [str(rng.choice(doc_words)) for _ in range(int(rng.integers(3, 8)))]
    return " ".join(words)


def prompt(document: str) -> str:
    return f"Document: {document}{PROMPT_SUFFIX}"


def sft_examples(n: int, seed: int, cfg: SummarizationConfig = SummarizationConfig()) -> list[dict]:
    """{"prompt", "completion", "document"}: a document and an imperfect reference summary."""
    rng = np.random.default_rng(seed)
    vocab = content_words()
    out = []
    for _ in range(n):
        doc = make_document(rng, cfg, vocab)
        out.append({"prompt": prompt(doc), "completion": " " + make_summary(rng, doc, cfg), "document": doc})
    return out


def preference_examples(n: int, seed: int, cfg: SummarizationConfig = SummarizationConfig()) -> list[dict]:
    """{"prompt", "chosen", "rejected", "document", "gold_margin"}: two summaries of varied
    quality (some degenerate, as comparison data sampled from several policies include),
    the label drawn from Bradley-Terry on the gold reward at `bt_temperature`."""
    rng = np.random.default_rng(seed)
    vocab = content_words()
    out = []
    for _ in range(n):
        doc = make_document(rng, cfg, vocab)
        a, b = (make_summary(rng, doc, cfg, quality=float(rng.uniform(0.2, 1.0))) for _ in range(2))
        a, b = (degenerate(rng, doc, x) if rng.random() < cfg.degenerate_prob else x for x in (a, b))
        ra, rb = gold_reward(doc, a, cfg), gold_reward(doc, b, cfg)
        p_a = 1.0 / (1.0 + math.exp(-(ra - rb) / cfg.bt_temperature))
        chosen, rejected = (a, b) if rng.random() < p_a else (b, a)
        margin = gold_reward(doc, chosen, cfg) - gold_reward(doc, rejected, cfg)
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
    vocab = content_words()
    out = []
    while len(out) < n:
        doc = make_document(rng, cfg, vocab)
        salient = salient_words(doc, cfg.n_topics)
        others = sorted({w for w in doc.split() if w not in FUNCTION_WORDS and w != "." and w not in salient})
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
