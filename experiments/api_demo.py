"""The Python API end to end on a tiny model, offline: create -> save as a Hugging Face
checkpoint -> load onto a mesh of every local device -> logits and per-token log-probs.

    python -m experiments.api_demo --workdir /tmp/rlhf_jax_demo
"""

import argparse

import jax
import jax.numpy as jnp

from rlhf_jax import mesh as mesh_lib
from rlhf_jax.models.config import ModelConfig
from rlhf_jax.models.hf import load_hf, save_hf
from rlhf_jax.models.transformer import count_params, init_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/rlhf_jax_demo")
    args = parser.parse_args()

    cfg = ModelConfig(family="llama", vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128)
    model, params = init_model(cfg, seed=0)
    save_hf(model, params, args.workdir, token_ids={"pad_token_id": 0, "eos_token_id": 1})
    print(f"saved a {count_params(params):,}-parameter {cfg.family} checkpoint to {args.workdir}")

    mesh = mesh_lib.make_mesh((-1, 1, 1))
    model, params = load_hf(args.workdir, mesh=mesh)
    tokens = jnp.array([[0, 0, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14]])
    mask = (tokens != 0).astype(jnp.int32)
    with mesh_lib.use_mesh(mesh):
        logits = jax.jit(model.logits)(params, tokens, mask)
        logps = jax.jit(model.token_logps)(params, tokens, mask)
    print(f"mesh {dict(mesh.shape)}; logits {logits.shape} {logits.dtype}")
    print("per-token log-probs (0 where nothing is predicted):")
    print(jnp.round(logps, 3))
    print(f"sequence log-probs: {logps.sum(-1)}")


if __name__ == "__main__":
    main()
