"""Compile time against depth: the unrolled layer stack (one traced block per layer) and
the scanned one (`model.scan_layers`: one block under `lax.scan`), for the training step
(forward, backward under remat "full", AdamW) and the sampler's program (prefill and
decode loop), at n_layers 4 / 16 / 32 of a Llama-family model; then the time of a training
step and of a sampler call in both layouts at the smallest depth (what the scan costs at
run time: the scanned decode step reads each layer's cache slice out of the stacked cache).

Each (layout, depth) compiles in a fresh process with no persistent compilation cache, so
every figure is a cold compile; the two layouts alternate.

    python bench/compile_depth.py [--layers 4 16 32] [--d-model 256]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, run_json  # noqa: E402

BATCH, T, NEW_TOKENS = 8, 128, 32


def worker(n_layers: int, d_model: int, scan: bool, steps: int) -> dict:
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from rlhf_jax.models.config import ModelConfig
    from rlhf_jax.models.transformer import init_model
    from rlhf_jax.sampling import Sampler, SamplingConfig

    cfg = ModelConfig(family="llama", vocab_size=8192, d_model=d_model, n_layers=n_layers, n_heads=8,
                      d_ff=4 * d_model, max_positions=T + NEW_TOKENS, remat="full", scan_layers=scan)  # fmt: skip
    model, params = init_model(cfg)
    opt = optax.adamw(1e-4)
    tokens = jnp.asarray(np.random.default_rng(0).integers(3, 8192, (BATCH, T)))
    mask = jnp.ones_like(tokens)

    def step(params, opt_state):
        loss, grads = jax.value_and_grad(lambda p: -model.token_logps(p, tokens, mask).mean())(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = opt.init(params)
    t0 = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state).compile()
    train_compile = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        params, opt_state, loss = compiled(params, opt_state)
        loss.block_until_ready()
        times.append(time.perf_counter() - t0)
    sampler = Sampler(model, SamplingConfig(max_new_tokens=NEW_TOKENS))
    prompts = np.asarray(tokens[:, : T - NEW_TOKENS])
    t0 = time.perf_counter()
    sampler.compile(params, prompts, np.ones_like(prompts))
    sample_compile = time.perf_counter() - t0
    sample_times = []
    for i in range(steps):
        t0 = time.perf_counter()
        np.asarray(sampler(params, prompts, np.ones_like(prompts), i).tokens)
        sample_times.append(time.perf_counter() - t0)
    median = lambda xs: sorted(xs)[len(xs) // 2] if xs else None  # noqa: E731
    return {"train_compile_s": train_compile, "sample_compile_s": sample_compile, "step_s": median(times),
            "sample_s": median(sample_times)}  # fmt: skip


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, nargs="+", default=[4, 16, 32])
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5, help="timed steps at the smallest depth")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(**json.loads(args.worker))))
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_PERSISTENT_CACHE")}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    rows = []
    for n in args.layers:
        for scan in (False, True):
            spec = dict(n_layers=n, d_model=args.d_model, scan=scan, steps=args.steps if n == min(args.layers) else 0)
            out = run_json([sys.executable, __file__, "--worker", json.dumps(spec)], env=env)
            rows.append({**spec, **out})
            print(json.dumps(rows[-1]), flush=True)
    print(f"\nmachine: {machine()}; d_model {args.d_model}, batch {BATCH} x {T} tokens, {NEW_TOKENS} new tokens\n")
    print("| layers | train step compile, unrolled / scanned (s) | sampler compile, unrolled / scanned (s) |")
    print("|---|---|---|")
    for n in args.layers:
        u, s = (r for r in rows if r["n_layers"] == n)
        print(f"| {n} | {u['train_compile_s']:.1f} / {s['train_compile_s']:.1f} "
              f"| {u['sample_compile_s']:.1f} / {s['sample_compile_s']:.1f} |")  # fmt: skip
    u, s = (r for r in rows if r["n_layers"] == min(args.layers))
    for key, what in (("step_s", "training step"), ("sample_s", "sampler call")):
        print(f"{what} at {min(args.layers)} layers: unrolled {u[key]:.3f} s, scanned {s[key]:.3f} s "
              f"(scanned / unrolled {s[key] / u[key]:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
