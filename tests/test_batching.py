"""The task tokenizer, padding layout, prompt-length filtering and the resumable loader."""

import numpy as np
import pytest
import transformers as T

from rlhf_jax.data import batching
from rlhf_jax.data.tokenizer import decode, train_tokenizer
from rlhf_jax.tasks import arithmetic, summarization


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    texts = [ex["prompt"] + ex["completion"] for ex in summarization.sft_examples(50, 0)]
    texts += [ex["prompt"] + ex["completion"] for ex in arithmetic.examples(50, 0)]
    directory = str(tmp_path_factory.mktemp("tok"))
    train_tokenizer(texts, directory)
    return T.AutoTokenizer.from_pretrained(directory, local_files_only=True)


def test_tokenizer_round_trips_task_text_and_loads_with_autotokenizer(tokenizer):
    assert tokenizer.pad_token_id == 0 and tokenizer.eos_token_id == 1
    assert tokenizer.padding_side == "left"  # saved with it: the sampler takes left-padded prompts
    ex = arithmetic.examples(3, 1)[0]
    ids = tokenizer(ex["completion"], add_special_tokens=False)["input_ids"]
    assert decode(tokenizer, ids + [tokenizer.eos_token_id, 0]) == ex["completion"]
    assert decode(tokenizer, tokenizer("12345 + 67890 = 80235")["input_ids"]) == "12345 + 67890 = 80235"
    doc = summarization.sft_examples(1, 0)[0]
    prompt_ids = tokenizer(doc["prompt"], add_special_tokens=False)["input_ids"]
    assert decode(tokenizer, prompt_ids) == doc["prompt"]
    assert len(prompt_ids) < 2 * len(doc["prompt"].split())  # whole words or pairs of pieces


def test_layout_filtering_and_truncation(tokenizer):
    examples = [
        {"prompt": "Compute: 1 + 2\n", "completion": "1 + 2 = 3"},
        {"prompt": "Compute: ((1 + 2) * 3) - 4 + 5 * 6\n", "completion": "x"},  # prompt too long: dropped
        {"prompt": "Compute: 2\n", "completion": "2 + 0 = 2\n2 + 0 = 2\n2 + 0 = 2"},  # truncated
    ]
    enc = batching.encode(tokenizer, examples, max_prompt_len=8, max_completion_len=6)
    assert enc.kept == [0, 2] and enc.dropped_long_prompt == 1 and enc.truncated_completion == 1
    assert "dropped 1 with prompts over the limit" in enc.report()
    batch = batching.sft_batch(enc, [0, 1], P=8, C=6, pad_id=0)
    tokens, mask, cmask = (np.asarray(x) for x in (batch.tokens_BxT, batch.mask_BxT, batch.completion_mask_BxT))
    n_prompt = len(enc.fields["prompt"][0])
    assert mask[0, : 8 - n_prompt].sum() == 0 and mask[0, 8 - n_prompt : 8].all()  # left-padded prompt
    n_completion = len(enc.fields["completion"][0])
    assert cmask[0, 8 : 8 + n_completion].all() and not cmask[0, 8 + n_completion :].any()  # right-padded
    assert tokens[0, 8 + n_completion - 1] == tokenizer.eos_token_id
    assert not cmask[:, :8].any()


def test_encoding_in_blocks_gives_each_texts_own_ids(tokenizer):
    examples = summarization.preference_examples(40, 3)
    enc = batching.encode(tokenizer, examples, 200, 12, completions=("chosen", "rejected"))
    blocks = batching.token_ids(tokenizer, [ex["chosen"] for ex in examples], block=7)
    for i, ex in enumerate(examples):
        one = tokenizer(ex["chosen"], add_special_tokens=False)["input_ids"]
        assert blocks[i] == one and enc.fields["chosen"][i] == (one + [tokenizer.eos_token_id])[:12]
        assert enc.fields["prompt"][i] == tokenizer(ex["prompt"], add_special_tokens=False)["input_ids"]
    assert batching.encode(tokenizer, [], 8, 6).kept == []


def test_loader_is_deterministic_and_resumable():
    a = batching.Loader(10, 4, seed=1)
    first = [next(a) for _ in range(5)]
    b = batching.Loader(10, 4, seed=1)
    assert all((x == y).all() for x, y in zip(first, [next(b) for _ in range(5)], strict=True))
    assert len(set(np.concatenate(first[:2]).tolist())) == 8  # no repeats within an epoch
    resumed = batching.Loader(10, 4, seed=1)
    c = batching.Loader(10, 4, seed=1)
    for _ in range(3):
        next(c)
    state = c.state()
    resumed.restore(state)
    assert all((x == y).all() for x, y in zip([next(resumed) for _ in range(2)], first[3:], strict=True))
    with pytest.raises(ValueError, match="saved seed 2"):
        batching.Loader(10, 4, seed=1).restore({"epoch": 0, "position": 4, "seed": 2})
