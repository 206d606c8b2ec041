"""Peak memory of an RLOO iteration against a PPO iteration of the same size (rlhf_jax).

The setting of bench/rloo_iteration.py (64 completions of 64 tokens after 64-token
prompts; RLOO k = 4 over 16 prompts, PPO k = 1 over 64 prompts, whose critic starts from
the reward model). Two figures per method, each method in its own process:
- XLA's own accounting of the compiled programs (`memory_analysis`): arguments + outputs
  + temporaries - aliased (donated) bytes, for the sampler, the experience step and the
  update; the iteration's peak is the largest of them plus what lives beside it (the
  train state, the reference and reward parameters).
- the process's peak resident set (ru_maxrss) after two iterations, less its resident set
  before the first one (the models and data loaded).

    python bench/rl_memory.py --sizes small base
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import run_json  # noqa: E402
from rloo_iteration import PROMPTS, K, P, build_jax, make_checkpoints, prompt_ids  # noqa: E402


def _bytes(tree) -> int:
    import jax

    return sum(x.nbytes for x in jax.tree.leaves(tree) if hasattr(x, "nbytes"))


def _program_bytes(compiled) -> int:
    m = compiled.memory_analysis()
    return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes


def worker(directory: str, method: str) -> dict:
    import jax
    import numpy as np

    from rlhf_jax.loops.online import minibatch_order

    iteration, state, progress = build_jax(directory, method)
    n = iteration.rl.n_prompts
    ids = np.tile(prompt_ids(2), (K, 1))
    pmask = np.ones((n, P), np.int32)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for i in range(2):
        rows = np.arange(i * n, (i + 1) * n)
        state, metrics = iteration(state, progress, ids[rows], pmask, rows, i)
        jax.block_until_ready((state, metrics))
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    # the compiled programs' own accounting
    params_s = iteration.for_sampling(state)
    key = jax.random.key(0)
    sampler = iteration.sampler
    samples_c = sampler._fn.lower(params_s, ids[:n], pmask, key).compile()
    scored, _ = iteration.sample_scored(sampler, params_s, ids[:n], pmask, np.arange(n), key)
    beta, baseline = jax.device_put((progress.beta, progress.baseline), iteration.replicated)
    exp_args = (state.params, iteration.ref_params, scored, None, beta, baseline, key)
    experience_c = iteration.experience.lower(*exp_args).compile()
    rollout, _, _ = iteration.experience(*exp_args)
    order = minibatch_order(iteration.rl, 0, 0)
    update_c = iteration.update.lower(state, rollout, order).compile()
    programs = {
        "sampler": _program_bytes(samples_c),
        "experience": _program_bytes(experience_c),
        "update": _program_bytes(update_c),
    }
    return {
        "programs": programs,
        "state_bytes": _bytes(state),
        "reference_bytes": _bytes(iteration.ref_params),
        "rss_growth_bytes": rss_peak - rss_before,
        "rss_peak_bytes": rss_peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", default=["small", "base"], choices=["small", "base"])
    parser.add_argument("--worker", choices=["rloo", "ppo"])
    parser.add_argument("--dir")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.dir, args.worker)))
        return
    mb = lambda b: f"{b / 2**20:,.0f}"  # noqa: E731
    print(f"{PROMPTS * K} completions per iteration")
    print("| size | method | train state MiB | sampler MiB | experience MiB | update MiB | RSS growth MiB |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as directory:
            make_checkpoints(size, directory)
            out = {m: run_json([sys.executable, __file__, "--worker", m, "--dir", directory]) for m in ("rloo", "ppo")}
        for method, r in out.items():
            p = r["programs"]
            print(
                f"| {size} | {method} | {mb(r['state_bytes'])} | {mb(p['sampler'])} | {mb(p['experience'])} | "
                f"{mb(p['update'])} | {mb(r['rss_growth_bytes'])} |"
            )
        ratio = max(out["ppo"]["programs"].values()) / max(out["rloo"]["programs"].values())
        rss = out["ppo"]["rss_growth_bytes"] / max(out["rloo"]["rss_growth_bytes"], 1)
        print(f"{size}: PPO / RLOO largest program {ratio:.2f}x, RSS growth {rss:.2f}x", flush=True)


if __name__ == "__main__":
    main()
