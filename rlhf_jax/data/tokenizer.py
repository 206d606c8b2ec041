"""A small tokenizer for the built-in tasks, trained with `tokenizers` and saved in
Hugging Face format (AutoTokenizer loads it back); real data use the model's own.

Byte-level BPE (GPT-2's scheme) over the tasks' texts: decoding is exact (any number or
word round-trips, none is unknown), and with a vocabulary of 2048 every word of the
summarisation task is a single token (at 1024 only half are): sequences stay short, and a
tiny model copies a document word in one step instead of spelling it piece by piece.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

PAD, EOS = "<pad>", "<eos>"


def train_tokenizer(texts: Iterable[str], directory: str | None = None, vocab_size: int = 2048):
    """A PreTrainedTokenizerFast (<pad> = 0, <eos> = 1) over `texts`, saved to `directory`
    if given; prompts pad on the left."""
    from transformers import PreTrainedTokenizerFast  # transformers takes seconds to import

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,  # its bar prints blank lines into logs
    )
    tok.train_from_iterator(texts, trainer)
    # padding_side given here is saved with the tokenizer (an attribute set later is not)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, padding_side="left")
    if directory is not None:
        fast.save_pretrained(directory)
    return fast


def decode(tokenizer, ids) -> str:
    """Text of token ids, special tokens (padding, EOS) dropped."""
    return tokenizer.decode(list(ids), skip_special_tokens=True)


def completion_texts(tokenizer, tokens_NxL, mask_NxL) -> tuple[list[str], list[list[int]]]:
    """(texts, token ids) of sampled completions: the real tokens up to the mask's end,
    EOS dropped, decoded without special tokens. The one place samples become text."""
    eos = tokenizer.eos_token_id
    tokens, mask = np.asarray(tokens_NxL), np.asarray(mask_NxL)
    ids = [
        [int(t) for t, m in zip(row, m_row, strict=True) if m and t != eos]
        for row, m_row in zip(tokens, mask, strict=True)
    ]
    return tokenizer.batch_decode(ids, skip_special_tokens=True), ids
