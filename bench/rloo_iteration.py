"""RLOO iteration throughput: rlhf_jax's RL loop against TRL's `RLOOTrainer` on CPU.

One iteration = sample k = 4 completions for each of 16 prompts (64 prompt tokens, 64
completion tokens), score them with a reward model, reference log-probs, one policy update
(beta 0.05, one update per rollout, dropout off). Both engines load the same randomly
initialised GPT-2-family policy and GPT-2 sequence-classification reward model from one
Hugging Face directory, with a word-level tokenizer (one token per word, so a prompt
string is exactly 64 tokens on both sides).

- rlhf_jax: `loops.online.Iteration`, the code `loops.online.rl` drives (log pi_old comes from
  the sampler; one compiled sampler, experience step and scanned update).
- TRL: `RLOOTrainer.train`, timed per optimiser step by a callback: its default config
  (gradient checkpointing on) and with gradient checkpointing off.

Episodes per second (completions per second), median over steps after warm-up and over
rounds (each round a fresh process per engine, engines alternating). rlhf_jax's
compilations after the first iteration are counted (must be 0).

    python bench/rloo_iteration.py --sizes small base --rounds 3
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
from common import GPT2_SIZES, alternate, machine, matmul_params, median_seconds, run_json, word_tokenizer  # noqa: E402

PROMPTS, K, P, C, BETA, LR = 16, 4, 64, 64, 0.05, 1e-6
ENGINES = ("jax", "trl", "trl_nogc")


def make_checkpoints(size: str, directory: str) -> None:
    """policy/ (GPT2LMHeadModel) and reward/ (GPT2ForSequenceClassification), each with
    the tokenizer: <pad> 0, <eos> 1, then words w2 .. w{V-1}."""
    import torch
    import transformers as T

    fast = word_tokenizer(GPT2_SIZES[size]["vocab_size"])
    torch.manual_seed(0)
    cfg = T.GPT2Config(
        **GPT2_SIZES[size],
        n_positions=P + C,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
        num_labels=1,
    )
    for name, cls in (("policy", T.GPT2LMHeadModel), ("reward", T.GPT2ForSequenceClassification)):
        cls(cfg).save_pretrained(os.path.join(directory, name))
        fast.save_pretrained(os.path.join(directory, name))


def prompt_ids(steps: int):
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.integers(2, 8000, size=(steps * PROMPTS, P))


def build_jax(directory: str, method: str = "rloo"):
    """(iteration, state, progress) of rlhf_jax's RL loop on the bench checkpoints, built
    as `loops.online.rl` builds them; PPO's critic starts from the reward model (TRL's default)."""
    import jax
    import jax.numpy as jnp

    from rlhf_jax import mesh as mesh_lib
    from rlhf_jax import rollout as rl_math
    from rlhf_jax.experiment import ExperimentConfig, ModelSection, RLSection
    from rlhf_jax.loops.online import Iteration, RLProgress, build_models
    from rlhf_jax.train_step import OptimConfig, init_state, make_optimizer

    mesh = mesh_lib.make_mesh((1, 1, 1))
    k = K if method == "rloo" else 1
    reward_dir = os.path.join(directory, "reward")
    batch = PROMPTS * K
    rl = RLSection(method=method, k=k, rollout_batch=batch, minibatch=batch, beta=BETA, reward_model=reward_dir)
    model = ModelSection(init_from=os.path.join(directory, "policy"))
    cfg = ExperimentConfig(model=model, rl=rl, optim=OptimConfig(learning_rate=LR), mesh=(1, 1, 1))
    policy, params, ref_params, critic, rm, rm_params = build_models(cfg, 0, mesh)
    rm_scores = jax.jit(rm.rewards)
    scorer = lambda samples, sequences, rows, split: (rm_scores(rm_params, *sequences[:2]), None, None)  # noqa: E731
    state = init_state(params, make_optimizer(cfg.optim))
    iteration = Iteration(cfg, policy, critic, ref_params, scorer, state, 1, 0, C, mesh)
    progress = RLProgress(loader=None, beta=jnp.float32(BETA), baseline=rl_math.BaselineState.init())
    return iteration, state, progress


def worker_jax(directory: str, steps: int, warmup: int, method: str = "rloo") -> dict:
    import jax
    import numpy as np

    from rlhf_jax.compiles import CompileCounter

    iteration, state, progress = build_jax(directory, method)
    n_prompts = iteration.rl.n_prompts
    ids = np.tile(prompt_ids(steps), (K if method != "rloo" else 1, 1))
    times = []
    with CompileCounter() as compiles:
        for i in range(steps):
            rows = np.arange(i * n_prompts, (i + 1) * n_prompts)
            t0 = time.perf_counter()
            state, metrics = iteration(state, progress, ids[rows], np.ones((n_prompts, P), np.int32), rows, i)
            jax.block_until_ready((state, metrics))
            times.append(time.perf_counter() - t0)
            if i == 0:
                first, compiles_first = times[0], compiles.take()
        assert float(metrics["length"]) > 0.9 * C, metrics
    step = statistics.median(times[warmup:])
    after = compiles.take()
    return {"seconds": step, "first_seconds": first, "compiles_first": compiles_first, "compiles_after": after}


def worker_trl(directory: str, steps: int, warmup: int, checkpointing: bool) -> dict:
    import datasets
    import torch
    import transformers as T
    import trl

    torch.set_num_threads(os.cpu_count() or 2)
    policy_dir, reward_dir = os.path.join(directory, "policy"), os.path.join(directory, "reward")
    tokenizer = T.AutoTokenizer.from_pretrained(policy_dir)
    texts = [" ".join(f"w{t}" for t in row) for row in prompt_ids(steps)]
    assert len(tokenizer(texts[0])["input_ids"]) == P
    args = trl.RLOOConfig(
        output_dir=os.path.join(directory, "trl_out"),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=PROMPTS * K,
        num_generations=K,
        max_completion_length=C,
        beta=BETA,
        learning_rate=LR,
        max_steps=steps,
        gradient_checkpointing=checkpointing,
        disable_dropout=True,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
    )

    class Timer(T.TrainerCallback):
        times: list[float] = []

        def on_step_begin(self, *a, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **kw):
            self.times.append(time.perf_counter() - self.t0)

    timer = Timer()
    trainer = trl.RLOOTrainer(
        model=T.AutoModelForCausalLM.from_pretrained(policy_dir),
        reward_funcs=T.AutoModelForSequenceClassification.from_pretrained(reward_dir),
        args=args,
        train_dataset=datasets.Dataset.from_dict({"prompt": texts}),
        processing_class=tokenizer,
        reward_processing_classes=tokenizer,
        callbacks=[timer],
    )
    trainer.train()
    assert len(timer.times) == steps, len(timer.times)
    return {"seconds": statistics.median(timer.times[warmup:]), "first_seconds": timer.times[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", default=["small", "base"], choices=["small", "base"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6, help="iterations per process, warm-up included")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--worker", choices=ENGINES)
    parser.add_argument("--dir")
    args = parser.parse_args()
    if args.worker:
        if args.worker == "jax":
            out = worker_jax(args.dir, args.steps, args.warmup)
        else:
            out = worker_trl(args.dir, args.steps, args.warmup, checkpointing=args.worker == "trl")
        print(json.dumps(out))
        return
    steps = ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    print(f"machine: {machine()}")
    print("| size | engine | episodes/s | s per iteration | first iteration s | vs TRL default | vs TRL no-ckpt |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as directory:
            make_checkpoints(size, directory)
            cmd = lambda e: [sys.executable, __file__, "--worker", e, "--dir", directory, *steps]  # noqa: E731
            results = alternate(args.engines, args.rounds, lambda e: run_json(cmd(e)))
        seconds = median_seconds(results)
        for engine, rs in results.items():
            s = seconds[engine]
            ratios = [f"{seconds[p] / s:.2f}x" if p in seconds else "" for p in ("trl", "trl_nogc")]
            first = statistics.median(r["first_seconds"] for r in rs)
            print(f"| {size} | {engine} | {PROMPTS * K / s:.1f} | {s:.3f} | {first:.1f} | {' | '.join(ratios)} |")
        if "jax" in results:
            after = [r["compiles_after"] for r in results["jax"]]
            first = [r["compiles_first"] for r in results["jax"]]
            print(f"rlhf_jax compilations: first iteration {first}, after it {after} (per round)")
        tokens = PROMPTS * K * (P + C)
        n = matmul_params(GPT2_SIZES[size])
        tflop = 12 * n * tokens / 1e12  # per token: 2N sample, 2N reference, 2N reward, 6N update
        print(f"{size}: N = {n:,} matmul parameters; one rlhf_jax iteration is ~{tflop:.2f} TFLOP")
        print(flush=True)


if __name__ == "__main__":
    main()
