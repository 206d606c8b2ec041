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
