"""Sampler throughput: rlhf_jax's compiled sampler against transformers `generate`
(torch, CPU, default cache) on the same randomly initialised GPT-2-family weights.

Batch 64, 64 prompt tokens, 128 new tokens, EOS disabled, pure sampling (T = 1, no
top-k/top-p) on both sides. Each measurement runs in its own process, the two engines in
alternating rounds (two threading runtimes in one process on 2 cores slow each other);
the figure is the median over rounds, compile / warm-up time reported apart.

    python bench/sampler.py --sizes small base base50k --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

SIZES = {
    "small": dict(n_layer=2, n_embd=128, n_head=4, vocab_size=8192),
    "base": dict(n_layer=6, n_embd=512, n_head=8, vocab_size=8192),
    "base50k": dict(n_layer=6, n_embd=512, n_head=8, vocab_size=50257),
}
BATCH, PROMPT, NEW = 64, 64, 128


def matmul_params(size: dict) -> int:
    d, layers, vocab = size["n_embd"], size["n_layer"], size["vocab_size"]
    return layers * (4 * d * d + 2 * d * 4 * d) + d * vocab


def make_checkpoint(size: str, directory: str) -> None:
    import torch
    import transformers as T

    torch.manual_seed(0)
    cfg = T.GPT2Config(
        **SIZES[size], n_positions=PROMPT + NEW, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=0
    )
    T.GPT2LMHeadModel(cfg).save_pretrained(directory)


def prompts():
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.integers(1, 8000, size=(BATCH, PROMPT)), np.ones((BATCH, PROMPT), np.int64)


def worker_jax(directory: str, repeats: int) -> dict:
    import jax

    from rlhf_jax.models.hf import load_hf
    from rlhf_jax.sampling import Sampler, SamplingConfig

    model, params = load_hf(directory)
    sampler = Sampler(model, SamplingConfig(max_new_tokens=NEW))
    tokens, mask = prompts()
    t0 = time.perf_counter()
    jax.block_until_ready(sampler(params, tokens, mask, 0).tokens)
    first = time.perf_counter() - t0
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        out = sampler(params, tokens, mask, i + 1)
        jax.block_until_ready(out.tokens)
        times.append(time.perf_counter() - t0)
        assert int(out.mask.sum()) == BATCH * NEW
    run = statistics.median(times)
    return {"seconds": run, "warmup_seconds": first, "compile_seconds": max(first - run, 0.0)}


def worker_hf(directory: str, repeats: int) -> dict:
    import torch
    import transformers as T

    torch.set_num_threads(os.cpu_count() or 2)
    model = T.GPT2LMHeadModel.from_pretrained(directory).eval()
    tokens, mask = (torch.tensor(x) for x in prompts())
    kw = dict(do_sample=True, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=NEW, min_new_tokens=NEW)
    kw.update(eos_token_id=None, pad_token_id=0)
    times = []
    with torch.no_grad():
        t0 = time.perf_counter()
        model.generate(input_ids=tokens, attention_mask=mask, **kw)
        first = time.perf_counter() - t0
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = model.generate(input_ids=tokens, attention_mask=mask, **kw)
            times.append(time.perf_counter() - t0)
            assert out.shape == (BATCH, PROMPT + NEW)
    return {"seconds": statistics.median(times), "warmup_seconds": first}


def run_worker(engine: str, directory: str, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", engine, "--dir", directory, "--repeats", str(repeats)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_gflops() -> float | None:
    path = os.path.join(os.path.dirname(__file__), "peak.py")
    out = subprocess.run([sys.executable, path, "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["best_gflops"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", choices=["jax", "hf"])
    parser.add_argument("--dir")
    args = parser.parse_args()
    if args.worker:
        fn = worker_jax if args.worker == "jax" else worker_hf
        print(json.dumps(fn(args.dir, args.repeats)))
        return
    peak = peak_gflops()
    print(f"practical f32 matmul peak: {peak:.0f} GFLOP/s")
    print("| size | rlhf_jax tok/s | HF generate tok/s | ratio | rlhf_jax % of peak | compile s |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as directory:
            make_checkpoint(size, directory)
            results = {"jax": [], "hf": []}
            for _ in range(args.rounds):
                for engine in ("jax", "hf"):
                    results[engine].append(run_worker(engine, directory, args.repeats))
        jax_s = statistics.median(r["seconds"] for r in results["jax"])
        hf_s = statistics.median(r["seconds"] for r in results["hf"])
        compile_s = statistics.median(r["compile_seconds"] for r in results["jax"])
        flops = 2 * matmul_params(SIZES[size]) * BATCH * (PROMPT + NEW)
        share = 100 * flops / jax_s / 1e9 / peak
        print(
            f"| {size} | {BATCH * NEW / jax_s:,.0f} | {BATCH * NEW / hf_s:,.0f} | {hf_s / jax_s:.2f}x | "
            f"{share:.0f}% | {compile_s:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
