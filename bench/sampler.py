"""Sampler throughput: rlhf_jax's compiled sampler against transformers `generate`
(torch, CPU, default cache) on the same randomly initialised weights, and against Tunix's
sampler (`tunix.generate.sampler.Sampler` on its own Llama3 class, random weights of the
same shape as our Llama-family model).

Batch 64, 64 prompt tokens, 128 new tokens, EOS disabled, pure sampling (T = 1, no
top-k/top-p) everywhere. Each engine runs in a process of its own (two threading runtimes
in one process on 2 cores slow each other), kept alive between its timed calls. A round
makes one timed call per engine, so each ratio is taken between calls seconds apart (this
machine's speed drifts by up to 20% over minutes); the table gives the median of the
per-round ratios and their range. Compile and warm-up time are reported apart. Sizes
small / base / base50k are GPT-2 family (peer: HF generate); llama_small / llama_base
are Llama family (peers: HF generate and, given --tunix-python, Tunix).

rlhf_jax runs twice: on one XLA CPU device (`jax`), and on one device per core
(`jax_2dev` on 2 cores) with the batch split over the mesh's data axis and the parameters
replicated, the layout a pod slice uses. XLA's CPU runtime runs a program's small ops one
after another on one device, and on this model size about half of the decode step is
such ops (batched attention dots, the softmax, the draw), so a device per core keeps both
cores busy; HF and Tunix use every core through their own thread pools.

    python bench/sampler.py --sizes small base base50k --rounds 7
    python bench/sampler.py --sizes llama_small llama_base --tunix-python /tmp/tunix/bin/python

Tunix needs safetensors < 0.8, so it lives in its own venv:
    python -m venv /tmp/tunix && /tmp/tunix/bin/pip install google-tunix==0.1.7 'safetensors<0.8'
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import GPT2_SIZES, Worker, machine, paired_rounds, peak_gflops, ratio_cell, serve, word_tokenizer  # noqa: E402
from common import matmul_params as gpt2_matmul_params  # noqa: E402

LLAMA_SIZES = {
    "llama_small": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=4, intermediate_size=512),
    "llama_base": dict(num_hidden_layers=6, hidden_size=512, num_attention_heads=8, intermediate_size=2048),
}
SIZES = {**GPT2_SIZES, **LLAMA_SIZES}
BATCH, PROMPT, NEW, VOCAB_LLAMA = 64, 64, 128, 8192
# rlhf_jax engines: one XLA CPU device, or one per core with the batch split over them
CORES = os.cpu_count() or 1
JAX_DEVICES = {"jax": 1, **({f"jax_{CORES}dev": CORES} if CORES > 1 else {})}


def matmul_params(size: str) -> int:
    if size in GPT2_SIZES:
        return gpt2_matmul_params(GPT2_SIZES[size])
    s = LLAMA_SIZES[size]
    d, h = s["hidden_size"], s["intermediate_size"]
    return s["num_hidden_layers"] * (4 * d * d + 3 * d * h) + d * VOCAB_LLAMA


def make_checkpoint(size: str, directory: str) -> None:
    import torch
    import transformers as T

    torch.manual_seed(0)
    if size in GPT2_SIZES:
        cfg = T.GPT2Config(
            **GPT2_SIZES[size],
            n_positions=PROMPT + NEW,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            pad_token_id=0,
        )
        T.GPT2LMHeadModel(cfg).save_pretrained(directory)
    else:
        cfg = T.LlamaConfig(
            **LLAMA_SIZES[size],
            vocab_size=VOCAB_LLAMA,
            max_position_embeddings=PROMPT + NEW,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=1,
        )
        T.LlamaForCausalLM(cfg).save_pretrained(directory)


def prompts():
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.integers(1, 8000, size=(BATCH, PROMPT)), np.ones((BATCH, PROMPT), np.int64)


def setup_jax(directory: str, devices: int = 1):
    """devices > 1: that many XLA CPU devices (one per core), the batch split over the
    mesh's data axis and the parameters replicated (SAMPLE_RULES), as on a pod slice."""
    if devices > 1:
        flag = f"--xla_force_host_platform_device_count={devices}"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    import jax

    from rlhf_jax import mesh as mesh_lib
    from rlhf_jax.models.hf import load_hf
    from rlhf_jax.sampling import Sampler, SamplingConfig

    mesh = mesh_lib.make_mesh((devices, 1, 1)) if devices > 1 else None
    model, params = load_hf(directory, mesh=mesh, rules=mesh_lib.SAMPLE_RULES)
    sampler = Sampler(model, SamplingConfig(max_new_tokens=NEW), mesh)
    tokens, mask = prompts()
    t0 = time.perf_counter()  # trace, lower and compile alone; the first call then finds the program
    sampler.compile(params, tokens, mask)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(sampler(params, tokens, mask, 0).tokens)
    first = time.perf_counter() - t0
    seeds = itertools.count(1)

    def call() -> dict:
        t0 = time.perf_counter()
        out = sampler(params, tokens, mask, next(seeds))
        jax.block_until_ready(out.tokens)
        seconds = time.perf_counter() - t0
        assert int(out.mask.sum()) == BATCH * NEW
        return {"seconds": seconds}

    return {"compile_seconds": compile_s, "first_call_seconds": first}, call


def setup_hf(directory: str):
    import torch
    import transformers as T

    torch.set_num_threads(os.cpu_count() or 2)
    model = T.AutoModelForCausalLM.from_pretrained(directory).eval()
    tokens, mask = (torch.tensor(x) for x in prompts())
    kw = dict(do_sample=True, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=NEW, min_new_tokens=NEW)
    kw.update(eos_token_id=None, pad_token_id=0)
    with torch.no_grad():
        model.generate(input_ids=tokens, attention_mask=mask, **kw)  # warm-up

    def call() -> dict:
        with torch.no_grad():
            t0 = time.perf_counter()
            out = model.generate(input_ids=tokens, attention_mask=mask, **kw)
            seconds = time.perf_counter() - t0
        assert out.shape == (BATCH, PROMPT + NEW)
        return {"seconds": seconds}

    return {}, call


def setup_tunix(size: str):
    """Tunix's sampler on its Llama3 class with random weights of the shape of `size`;
    prompts go in as strings (its API) through a word-level tokenizer, one token a word."""
    from flax import nnx
    from tunix.generate import sampler as tunix_sampler
    from tunix.models.llama3 import model as tunix_llama

    s = LLAMA_SIZES[size]
    d, heads, layers = s["hidden_size"], s["num_attention_heads"], s["num_hidden_layers"]
    tokenizer = word_tokenizer(VOCAB_LLAMA)
    cfg = tunix_llama.ModelConfig(
        num_layers=layers,
        vocab_size=VOCAB_LLAMA,
        embed_dim=d,
        hidden_dim=s["intermediate_size"],
        num_heads=heads,
        head_dim=d // heads,
        num_kv_heads=heads,
        rope_theta=10000,
        norm_eps=1e-6,
    )
    model = tunix_llama.Llama3(cfg, rngs=nnx.Rngs(0))
    cache = tunix_sampler.CacheConfig(
        cache_size=PROMPT + NEW, num_layers=layers, num_kv_heads=heads, head_dim=d // heads
    )
    sampler = tunix_sampler.Sampler(model, tokenizer, cache)
    texts = [" ".join(f"w{t}" for t in row) for row in prompts()[0]]
    kw = dict(max_generation_steps=NEW, max_prompt_length=PROMPT, temperature=1.0, top_p=1.0, pad_output=True)
    kw["eos_tokens"] = [VOCAB_LLAMA + 1]  # an id no draw can produce: EOS disabled
    t0 = time.perf_counter()
    sampler(texts, seed=0, **kw)
    first = time.perf_counter() - t0  # Tunix's sampler has no ahead-of-time compile: this includes it
    seeds = itertools.count(1)

    def call() -> dict:
        t0 = time.perf_counter()
        out = sampler(texts, seed=next(seeds), **kw)
        seconds = time.perf_counter() - t0
        assert len(out.tokens) == BATCH and all(len(t) == NEW for t in out.tokens)
        return {"seconds": seconds}

    return {"first_call_seconds": first}, call


def start_worker(engine: str, directory: str, size: str, python: str = sys.executable) -> Worker:
    cmd = [python, __file__, "--worker", engine, "--dir", directory, "--size", size]
    env = dict(os.environ, PYTHONPATH="") if engine == "tunix" else None
    return Worker(cmd, env)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", default=list(GPT2_SIZES), choices=list(SIZES))
    parser.add_argument("--rounds", type=int, default=7, help="timed calls per engine, one per round")
    parser.add_argument("--tunix-python", help="a Python with google-tunix (Llama sizes only)")
    parser.add_argument("--worker", choices=[*JAX_DEVICES, "hf", "tunix"])
    parser.add_argument("--dir")
    parser.add_argument("--size")
    args = parser.parse_args()
    if args.worker == "tunix":
        return serve(lambda: setup_tunix(args.size))
    if args.worker == "hf":
        return serve(lambda: setup_hf(args.dir))
    if args.worker:
        return serve(lambda: setup_jax(args.dir, devices=JAX_DEVICES[args.worker]))
    peak = peak_gflops()
    print(f"machine: {machine()}; practical f32 matmul peak: {peak:.0f} GFLOP/s")
    ours = list(JAX_DEVICES)
    ratios = " | ".join(f"{e} vs it (range)" for e in ours)
    print(f"| size | engine | new tok/s | {ratios} | model GFLOP/s | % of peak | compile s | first call extra s |")
    print("|---|---|---|" + "---|" * len(ours) + "---|---|---|---|")
    for size in args.sizes:
        engines = [*JAX_DEVICES, "hf"] + (["tunix"] if size in LLAMA_SIZES and args.tunix_python else [])
        with tempfile.TemporaryDirectory() as directory:
            make_checkpoint(size, directory)
            python = lambda e: args.tunix_python if e == "tunix" else sys.executable  # noqa: E731
            workers = {}
            try:
                for e in engines:  # one at a time: no set-up overlaps another's
                    workers[e] = start_worker(e, directory, size, python(e))
                seconds = paired_rounds(workers, args.rounds)
            finally:
                for w in workers.values():
                    w.close()
        flops = 2 * matmul_params(size) * BATCH * (PROMPT + NEW)
        for engine, ts in seconds.items():
            s = statistics.median(ts)
            setup = workers[engine].setup
            compile_s = f"{setup['compile_seconds']:.1f}" if "compile_seconds" in setup else ""
            extra_s = f"{setup['first_call_seconds'] - s:.1f}" if "first_call_seconds" in setup else ""
            gflops = flops / s / 1e9
            print(
                f"| {size} | {engine} | {BATCH * NEW / s:,.0f} | "
                + "".join(f"{'1.00x' if e == engine else ratio_cell(ts, seconds[e])} | " for e in ours)
                + f"{gflops:.0f} | "
                f"{100 * gflops / peak:.0f}% | {compile_s} | {extra_s} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
