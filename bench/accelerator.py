"""The device bench: what one GPU or TPU host does with this code, against the card's own
peak and bandwidth, in at most about 8 minutes. It prints one markdown table naming the
device (commit it to bench/RESULTS.md with the card):

1. parity: a small Llama's float32 logits and 32 greedy tokens on the device against the
   CPU's (matmuls at full float32 precision on both);
2. train step in bfloat16 (float32 parameters and Adam, bf16 compute, full remat) at the
   largest model of a ladder that fits the device's memory: step time and MFU, the model
   FLOPs of Chowdhery et al. 2022 (appendix B: 6 N + 12 L H E T per token) over the card's
   dense bf16 peak; once with the einsum attention and once with `model.attention=auto`
   (cuDNN's or splash's fused kernel), the ratio measured in the same run;
3. decode: the sampler's tokens per second in bf16 at several batch sizes, against the HBM
   roofline (each step reads every bf16 weight and the KV cache slots it attends over);
4. the tiny RLOO run (`experiments/rl_summarization.py:tiny`) end to end: wall time.

    python bench/accelerator.py              # on the device host
    python bench/accelerator.py --tiny       # any machine, seconds: the same path at toy sizes (the tests')
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time

# (bf16 dense TFLOP/s, HBM TB/s) by device kind (vendors' data sheets), matched by substring
PEAKS = {
    "H200": (989.0, 4.8), "H100 PCIe": (756.0, 2.0), "H100": (989.0, 3.35), "A100-SXM4-80GB": (312.0, 2.04),
    "A100": (312.0, 1.56), "L4": (121.0, 0.3), "TPU v4": (275.0, 1.2), "TPU v5 lite": (197.0, 0.82),
    "TPU v5": (459.0, 2.77), "TPU v6 lite": (918.0, 1.64),
}  # fmt: skip
# the train-step ladder, largest first: (name, d_model, layers, heads, kv heads, d_ff), vocabulary 32000
LADDER = [
    ("llama-3b", 3072, 26, 24, 8, 8192), ("llama-1.1b", 2048, 22, 32, 4, 5632),
    ("llama-350m", 1024, 24, 16, 16, 2816), ("llama-60m", 512, 8, 8, 8, 1408),
]  # fmt: skip
TINY_LADDER = [("llama-tiny", 64, 2, 4, 2, 128)]


def peaks(kind: str) -> tuple[float, float] | None:
    """(FLOP/s, bytes/s) of a device kind, or None when it is not in PEAKS."""
    for name, (tflops, tbs) in PEAKS.items():
        if name in kind:
            return tflops * 1e12, tbs * 1e12
    return None


def llama(d: int, layers: int, heads: int, kv: int, ff: int, vocab: int = 32000, **run):
    from rlhf_jax.models.config import ModelConfig

    return ModelConfig(family="llama", vocab_size=vocab, d_model=d, n_layers=layers, n_heads=heads, n_kv_heads=kv,
                       d_ff=ff, max_positions=4096, **run)  # fmt: skip


def timed(fn, repeats: int) -> float:
    """Median seconds of `fn()` (its result blocked on) after one warm-up call."""
    import jax

    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def parity(device, tiny: bool) -> dict:
    import jax
    import numpy as np

    from rlhf_jax.models.transformer import init_model
    from rlhf_jax.sampling import Sampler, SamplingConfig

    cfg = llama(64, 2, 4, 2, 128, vocab=256) if tiny else llama(256, 4, 8, 4, 704, vocab=4096)
    prompts = np.random.default_rng(0).integers(1, cfg.vocab_size, size=(4, 16)).astype(np.int32)
    mask = np.ones_like(prompts)
    out = {}
    with jax.default_matmul_precision("highest"):
        for where in (jax.devices("cpu")[0], device):
            with jax.default_device(where):
                model, params = init_model(cfg, seed=0)
                logits = np.asarray(jax.jit(model.logits)(params, prompts, mask))
                greedy = Sampler(model, SamplingConfig(max_new_tokens=32, greedy=True, max_cache_len=48))
                out[where.platform] = (logits, np.asarray(greedy(params, prompts, mask, 0).tokens))
    (cpu_logits, cpu_tokens), (dev_logits, dev_tokens) = out["cpu"], out[device.platform]
    return {"max_abs_logit_diff": float(np.abs(cpu_logits - dev_logits).max()),
            "greedy_tokens_equal": bool((cpu_tokens == dev_tokens).all())}  # fmt: skip


def _step_seconds(cfg, batch, optimizer, repeats: int) -> float | None:
    """Median seconds of a train step of cfg on `batch`, or None when it does not fit."""
    import functools

    from rlhf_jax.losses.sft import sft_loss
    from rlhf_jax.models.transformer import init_model
    from rlhf_jax.train_step import init_state, make_train_step

    try:
        model, params = init_model(cfg, seed=0)
        live = [init_state(params, optimizer)]  # the step donates its state: each call takes the last's
        del params
        step = make_train_step(functools.partial(sft_loss, model=model), optimizer)

        def run():
            live[0], metrics = step(live[0], batch)
            return metrics["loss"]

        return timed(run, repeats)
    except Exception as e:  # too big for the device: the caller tries the next size down
        if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
            raise
        return None


def train_step(device, tiny: bool, peak: tuple[float, float] | None) -> dict:
    import jax
    import jax.numpy as jnp

    from rlhf_jax.batches import SFTBatch
    from rlhf_jax.models.transformer import abstract_model
    from rlhf_jax.train_step import OptimConfig, make_optimizer

    B, T = (2, 32) if tiny else (8, 2048)
    vocab = 256 if tiny else 32000
    optimizer = make_optimizer(OptimConfig(learning_rate=1e-5))
    tokens = jnp.asarray(jax.random.randint(jax.random.key(0), (B, T), 1, vocab), jnp.int32)
    batch = SFTBatch(tokens, jnp.ones_like(tokens), jnp.ones_like(tokens))
    for name, d, layers, heads, kv, ff in TINY_LADDER if tiny else LADDER:
        figures = {}
        for attention in ("einsum", "auto"):
            cfg = llama(d, layers, heads, kv, ff, vocab=vocab, dtype="bfloat16", remat="full", attention=attention)
            figures[attention] = _step_seconds(cfg, batch, optimizer, 3 if tiny else 5)
        if None in figures.values():
            continue
        shapes = jax.tree.leaves(abstract_model(cfg)[1])
        n = sum(math.prod(s.shape) for s in shapes) - vocab * d  # matmul parameters (not the embedding lookup)
        flops = B * T * (6 * n + 12 * layers * heads * (d // heads) * T)
        result = {"model": name, "params_m": round(n / 1e6), "tokens": B * T,
                  **{f"step_s_{k}": v for k, v in figures.items()},
                  "fused_speedup": figures["einsum"] / figures["auto"]}  # fmt: skip
        if peak:
            result.update({f"mfu_{k}": flops / v / peak[0] for k, v in figures.items()})
        return result
    return {"model": "none fits"}


def decode(device, tiny: bool, peak: tuple[float, float] | None) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from rlhf_jax.models.transformer import init_model, with_dtype
    from rlhf_jax.sampling import Sampler, SamplingConfig, mean_slots_read

    cfg = llama(64, 2, 4, 2, 128, vocab=256) if tiny else llama(2048, 22, 32, 4, 5632)
    P, C = (8, 8) if tiny else (128, 128)
    model, params = init_model(cfg, seed=0)
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)  # each step reads bf16 weights
    model = with_dtype(model, "bfloat16")
    weight_bytes = 2 * sum(x.size for x in jax.tree.leaves(params))
    rows = []
    for batch in (1, 4) if tiny else (1, 16, 64, 256):
        prompts = np.random.default_rng(0).integers(1, cfg.vocab_size, size=(batch, P)).astype(np.int32)
        mask = np.ones_like(prompts)
        seconds = {}
        for new in (1, C):
            sampling = SamplingConfig(max_new_tokens=new, max_cache_len=P + C)
            sampler = Sampler(model, sampling)
            seconds[new] = timed(lambda s=sampler: s(params, prompts, mask, 0).tokens, 3)
        per_step = (seconds[C] - seconds[1]) / (C - 1)
        read = mean_slots_read(P, C, SamplingConfig(max_new_tokens=C).cache_chunks)  # slots a step attends over
        kv_bytes = 2 * cfg.n_layers * batch * cfg.n_kv_heads * read * cfg.head_dim * 2
        if per_step <= 0:  # C tokens no slower than 1: a busy machine's noise exceeds the decode steps' time
            rows.append({"batch": batch, "tokens_per_s": None, "step_ms": None})
            continue
        row = {"batch": batch, "tokens_per_s": batch / per_step, "step_ms": per_step * 1e3}
        if peak:
            row["roofline_tokens_per_s"] = batch * peak[1] / (weight_bytes + kv_bytes)
            row["of_roofline"] = row["tokens_per_s"] / row["roofline_tokens_per_s"]
        rows.append(row)
    return rows


def rloo_run(tiny: bool) -> dict:
    import dataclasses as dc

    from rlhf_jax import loops
    from rlhf_jax.config import load_experiment

    cfg = load_experiment("experiments/rl_summarization.py:tiny")
    with tempfile.TemporaryDirectory() as workdir:
        cfg = dc.replace(cfg, train=dc.replace(cfg.train, steps=4 if tiny else 16))
        t0 = time.perf_counter()
        summary = loops.run(cfg, workdir)
        seconds = time.perf_counter() - t0
    return {"iterations": cfg.train.steps, "wall_s": seconds,
            "gold": summary["test"]["policies"]["policy"]["sampled"]["gold"]["mean"]}  # fmt: skip


def table(device, peak, figures: dict) -> str:
    p, t, r = figures["parity"], figures["train"], figures["rloo"]
    lines = [f"device: {device.device_kind} ({device.platform}); peak "
             + (f"{peak[0] / 1e12:.0f} TFLOP/s bf16, {peak[1] / 1e12:.2f} TB/s" if peak else "unknown"), "",
             "| measure | value |", "|---|---|",
             f"| logits vs CPU, float32 (max abs diff) | {p['max_abs_logit_diff']:.2e} |",
             f"| 32 greedy tokens equal to the CPU's | {'yes' if p['greedy_tokens_equal'] else 'no'} |"]  # fmt: skip
    if "step_s_einsum" in t:
        for k in ("einsum", "auto"):
            mfu = f", MFU {t[f'mfu_{k}']:.1%}" if f"mfu_{k}" in t else ""
            lines.append(f"| train step, {t['model']} ({t['params_m']}M), {t['tokens']} tokens, attention={k} | "
                         f"{t[f'step_s_{k}'] * 1e3:.1f} ms{mfu} |")  # fmt: skip
        lines.append(f"| fused attention speed-up (einsum time / auto time) | {t['fused_speedup']:.2f}x |")
    for row in figures["decode"]:
        if row["tokens_per_s"] is None:
            lines.append(
                f"| decode, batch {row['batch']}: tokens/s | under the timing noise (rerun on a quiet machine) |"
            )
            continue
        roof = f" ({row['of_roofline']:.0%} of {row['roofline_tokens_per_s']:,.0f})" if "of_roofline" in row else ""
        lines.append(f"| decode, batch {row['batch']}: tokens/s{' (of the HBM roofline)' if roof else ''} | "
                     f"{row['tokens_per_s']:,.0f}{roof} |")  # fmt: skip
    lines.append(
        f"| tiny RLOO run, {r['iterations']} iterations end to end | {r['wall_s']:.1f} s (gold {r['gold']:.3f}) |"
    )
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes: the whole path in seconds on any machine")
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args(argv)
    import jax

    device = jax.devices()[0]
    peak = peaks(device.device_kind)
    t0 = time.perf_counter()
    figures = {"parity": parity(device, args.tiny), "train": train_step(device, args.tiny, peak),
               "decode": decode(device, args.tiny, peak), "rloo": rloo_run(args.tiny)}  # fmt: skip
    figures["seconds"] = time.perf_counter() - t0
    print(table(device, peak, figures))
    print(f"\n({figures['seconds']:.0f} s in all)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device.device_kind, **figures}, f, indent=1, default=float)
    return figures


if __name__ == "__main__":
    main()
