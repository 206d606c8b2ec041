"""Logits parity with the transformers PyTorch models, and the round trip back to them."""

import jax
import numpy as np
import pytest
import torch
import transformers as T
from conftest import FAMILIES, make_hf_model

from rlhf_jax.models.hf import load_hf, save_hf


def torch_logits(model, tokens, mask):
    positions = np.maximum(np.cumsum(mask, -1) - 1, 0)  # HF derives no positions from the mask
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(tokens),
            attention_mask=torch.tensor(mask),
            position_ids=torch.tensor(positions),
        )
    return out.logits.numpy()


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_transformers_on_left_padded_batch(family, hf_checkpoints, padded_batch):
    directory, hf_model = hf_checkpoints[family]
    tokens, mask = padded_batch
    model, params = load_hf(directory)
    ours = np.asarray(jax.jit(model.logits)(params, tokens, mask))
    ref = torch_logits(hf_model, tokens, mask)
    real = mask.astype(bool)
    assert np.abs(ours - ref)[real].max() <= 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_export_reloads_in_transformers_with_same_logits(family, hf_checkpoints, padded_batch, tmp_path):
    directory, hf_model = hf_checkpoints[family]
    tokens, mask = padded_batch
    model, params = load_hf(directory)
    save_hf(model, params, str(tmp_path))
    reloaded = T.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    real = mask.astype(bool)
    diff = np.abs(torch_logits(reloaded, tokens, mask) - torch_logits(hf_model, tokens, mask))
    assert diff[real].max() <= 1e-6


def test_sharded_safetensors_round_trip(hf_checkpoints, padded_batch, tmp_path):
    directory, _ = hf_checkpoints["llama"]
    tokens, mask = padded_batch
    model, params = load_hf(directory)
    save_hf(model, params, str(tmp_path), max_shard_bytes=20_000)
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 1
    model2, params2 = load_hf(str(tmp_path))
    np.testing.assert_array_equal(
        jax.jit(model.logits)(params, tokens, mask), jax.jit(model2.logits)(params2, tokens, mask)
    )
    reloaded = T.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    assert reloaded.config.num_key_value_heads == 2


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_reward_head_matches_sequence_classification(family, tmp_path):
    hf_model = make_hf_model(family, head="scalar", seed=1)
    hf_model.save_pretrained(str(tmp_path))
    tokens = np.random.default_rng(1).integers(3, 97, size=(4, 6))
    with torch.no_grad():
        ref = hf_model(input_ids=torch.tensor(tokens)).logits[:, 0].numpy()
    model, params = load_hf(str(tmp_path), head="scalar")
    ours = np.asarray(jax.jit(model.rewards)(params, tokens, np.ones_like(tokens)))
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    save_hf(model, params, str(tmp_path / "export"), token_ids={"pad_token_id": 0})
    again = T.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "export")).eval()
    with torch.no_grad():
        np.testing.assert_allclose(again(input_ids=torch.tensor(tokens)).logits[:, 0].numpy(), ref, atol=1e-6)


def test_tokenizer_saved_and_loaded_from_the_checkpoint_directory(hf_checkpoints, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    from rlhf_jax.models.hf import load_tokenizer

    vocab = {"[PAD]": 0, "[EOS]": 1, "hello": 2, "world": 3, "[UNK]": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = T.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", eos_token="[EOS]")
    directory, _ = hf_checkpoints["gpt2"]
    model, params = load_hf(directory)
    save_hf(model, params, str(tmp_path), tokenizer=fast)
    loaded = load_tokenizer(str(tmp_path))
    assert loaded("hello world")["input_ids"] == [2, 3]
    assert loaded.pad_token_id == 0
    assert T.AutoConfig.from_pretrained(str(tmp_path)).eos_token_id == 1
