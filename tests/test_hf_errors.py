"""Bad checkpoint directories give errors that name the file or tensor."""

import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from rlhf_jax.models.hf import load_hf


def copy_checkpoint(src, dst):
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return str(dst)


def test_missing_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf(str(tmp_path))


def test_missing_weights_file(hf_checkpoints, tmp_path):
    d = copy_checkpoint(hf_checkpoints["llama"][0], tmp_path)
    os.remove(os.path.join(d, "model.safetensors"))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_hf(d)


def test_unknown_model_type(hf_checkpoints, tmp_path):
    d = copy_checkpoint(hf_checkpoints["llama"][0], tmp_path)
    path = os.path.join(d, "config.json")
    cfg = json.load(open(path))
    cfg["model_type"] = "mamba"
    json.dump(cfg, open(path, "w"))
    with pytest.raises(ValueError, match=r"config.json: unknown model_type 'mamba'"):
        load_hf(d)


def test_missing_tensor_is_named(hf_checkpoints, tmp_path):
    d = copy_checkpoint(hf_checkpoints["qwen2"][0], tmp_path)
    path = os.path.join(d, "model.safetensors")
    tensors = load_file(path)
    del tensors["model.layers.1.self_attn.k_proj.bias"]
    save_file(tensors, path)
    with pytest.raises(KeyError, match=r"layers.1.self_attn.k_proj.bias"):
        load_hf(d)


def test_wrong_shape_tensor_is_named_with_its_file(hf_checkpoints, tmp_path):
    d = copy_checkpoint(hf_checkpoints["gpt_neox"][0], tmp_path)
    path = os.path.join(d, "model.safetensors")
    tensors = load_file(path)
    tensors["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"] = np.zeros((65, 32), np.float32)
    save_file(tensors, path)
    with pytest.raises(ValueError, match=r"model.safetensors: tensor 'gpt_neox.layers.0.mlp.dense_h_to_4h.weight'"):
        load_hf(d)


def test_missing_shard_is_named(hf_checkpoints, tmp_path):
    d = copy_checkpoint(hf_checkpoints["gpt2"][0], tmp_path)
    tensors = load_file(os.path.join(d, "model.safetensors"))
    os.remove(os.path.join(d, "model.safetensors"))
    index = {"weight_map": {name: "model-00002-of-00002.safetensors" for name in tensors}}
    json.dump(index, open(os.path.join(d, "model.safetensors.index.json"), "w"))
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002.safetensors"):
        load_hf(d)


def test_an_export_carries_the_tokenizers_special_ids_and_null_for_the_missing(tmp_path, caplog):
    import logging

    import transformers

    from rlhf_jax.data.tokenizer import train_tokenizer
    from rlhf_jax.models.config import ModelConfig
    from rlhf_jax.models.hf import save_hf
    from rlhf_jax.models.transformer import init_model

    tokenizer = train_tokenizer(["a few words to learn from", "and a few more"], vocab_size=300)  # no bos
    model, params = init_model(ModelConfig(family="gpt2", vocab_size=len(tokenizer), d_model=16, n_layers=1,
                                           n_heads=2, d_ff=32, max_positions=16))  # fmt: skip
    save_hf(model, params, str(tmp_path), tokenizer=tokenizer)
    config = json.load(open(tmp_path / "config.json"))
    assert (config["pad_token_id"], config["eos_token_id"]) == (tokenizer.pad_token_id, tokenizer.eos_token_id)
    assert config["bos_token_id"] is None  # not GPT-2's 50256, outside this vocabulary
    with caplog.at_level(logging.WARNING):
        loaded = transformers.AutoConfig.from_pretrained(str(tmp_path))
    assert loaded.bos_token_id is None and "bos_token_id" not in caplog.text


def truncated(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 3)


def emptied(path):
    open(path, "wb").close()


def garbage(path):
    with open(path, "wb") as f:
        f.write(b"\x00\xff not safetensors at all" * 10)


@pytest.mark.parametrize("damage", [truncated, emptied, garbage])
def test_a_damaged_safetensors_file_is_named_before_any_work(damage, hf_checkpoints, tmp_path):
    from rlhf_jax import preflight

    d = copy_checkpoint(hf_checkpoints["llama"][0], tmp_path)
    damage(os.path.join(d, "model.safetensors"))
    with pytest.raises(ValueError, match=r"model.init_from=.*: not a usable checkpoint \(.*model.safetensors"):
        preflight._checkpoint(d, "model.init_from", "lm")


def test_a_config_of_another_family_beside_the_weights_is_named(hf_checkpoints, tmp_path):
    from rlhf_jax import preflight

    d = copy_checkpoint(hf_checkpoints["llama"][0], tmp_path)
    shutil.copy(os.path.join(hf_checkpoints["gpt2"][0], "config.json"), os.path.join(d, "config.json"))
    with pytest.raises(ValueError, match=r"config.json describes a gpt2 model, but the safetensors files lack"):
        preflight._checkpoint(d, "model.init_from", "lm")


def test_a_checkpoint_without_tokenizer_files_says_which_tokenizer_is_used(hf_checkpoints, tmp_path, capsys):
    import dataclasses

    from rlhf_jax.loops.data import tokenizer_for
    from rlhf_jax.main import load_experiment

    d = copy_checkpoint(hf_checkpoints["llama"][0], tmp_path / "ckpt")  # saved by transformers: no tokenizer files
    assert not os.path.exists(os.path.join(d, "tokenizer.json"))
    cfg = load_experiment("experiments/sft_summarization.py:tiny")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init_from=d))
    tokenizer_for(cfg, [{"prompt": "a b c", "completion": " d e"}] * 4, str(tmp_path / "run"))
    out = capsys.readouterr().out
    assert f"model.init_from={d}: no tokenizer.json there; the task's tokenizer is used" in out
