"""Training-step FLOP utilisation: rlhf_jax's compiled SFT step (token-mean NLL over every
token, AdamW, global-norm clipping, the train state donated) against a PyTorch step of
transformers' GPT2LMHeadModel (loss from labels, AdamW, clip_grad_norm_) on the same
randomly initialised GPT-2-family weights, on CPU.

Model FLOP/s = 6N per trained token (N the matmul parameters, LM head included), as a
share of the machine's practical f32 matmul peak (bench/peak.py). Median step time over
steps after warm-up and over rounds, each engine in its own process, engines alternating.

    python bench/train_step.py --sizes base --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import GPT2_SIZES, alternate, machine, matmul_params, median_seconds, peak_gflops, run_json  # noqa: E402

BATCH, T, LR = 32, 128, 1e-4


def make_checkpoint(size: str, directory: str) -> None:
    import torch
    import transformers as T_

    torch.manual_seed(0)
    cfg = T_.GPT2Config(
        **GPT2_SIZES[size],
        n_positions=T,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    T_.GPT2LMHeadModel(cfg).save_pretrained(directory)


def tokens():
    import numpy as np

    return np.random.default_rng(0).integers(0, 8000, size=(BATCH, T))


def worker_jax(directory: str, steps: int, warmup: int) -> dict:
    import functools

    import jax
    import jax.numpy as jnp

    from rlhf_jax.batches import SFTBatch
    from rlhf_jax.losses.sft import sft_loss
    from rlhf_jax.models.hf import load_hf
    from rlhf_jax.train_step import OptimConfig, init_state, make_optimizer, make_train_step

    model, params = load_hf(directory)
    optimizer = make_optimizer(OptimConfig(learning_rate=LR))
    state = init_state(params, optimizer)
    step = make_train_step(functools.partial(sft_loss, model=model), optimizer)
    ids = jnp.asarray(tokens(), jnp.int32)
    ones = jnp.ones_like(ids)
    batch = SFTBatch(ids, ones, ones)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(times[warmup:]), "first_seconds": times[0], "loss": float(metrics["loss"])}


def worker_torch(directory: str, steps: int, warmup: int) -> dict:
    import torch
    import transformers as T_

    torch.set_num_threads(os.cpu_count() or 2)
    model = T_.GPT2LMHeadModel.from_pretrained(directory).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    ids = torch.tensor(tokens())
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(times[warmup:]), "first_seconds": times[0], "loss": float(loss)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", default=["base"], choices=list(GPT2_SIZES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--worker", choices=["jax", "torch"])
    parser.add_argument("--dir")
    args = parser.parse_args()
    if args.worker:
        fn = worker_jax if args.worker == "jax" else worker_torch
        print(json.dumps(fn(args.dir, args.steps, args.warmup)))
        return
    steps = ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    peak = peak_gflops()
    print(f"machine: {machine()}; practical f32 matmul peak: {peak:.0f} GFLOP/s; batch {BATCH} x {T} tokens")
    print("| size | engine | s per step | model GFLOP/s | % of peak | rlhf_jax / engine | first step s |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as directory:
            make_checkpoint(size, directory)
            cmd = lambda e: [sys.executable, __file__, "--worker", e, "--dir", directory, *steps]  # noqa: E731
            results = alternate(["jax", "torch"], args.rounds, lambda e: run_json(cmd(e)))
        flops = 6 * matmul_params(GPT2_SIZES[size]) * BATCH * T
        seconds = median_seconds(results)
        for engine, rs in results.items():
            s = seconds[engine]
            g = flops / s / 1e9
            first = statistics.median(r["first_seconds"] for r in rs)
            print(
                f"| {size} | {engine} | {s:.3f} | {g:.0f} | {100 * g / peak:.0f}% | {s / seconds['jax']:.2f}x | "
                f"{first:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
