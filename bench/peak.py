"""The machine's practical float32 matmul peak: the best of numpy, torch and jax on a
4096 x 4096 matmul, each library in its own process (two threading runtimes timed back to
back in one process slow each other on a small machine).

    python bench/peak.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

N = 4096


def measure(lib: str, repeats: int = 5) -> float:
    if lib == "numpy":
        import numpy as np

        a = np.random.default_rng(0).standard_normal((N, N), dtype=np.float32)
        fn = lambda: a @ a  # noqa: E731
    elif lib == "torch":
        import torch

        a = torch.randn(N, N)
        fn = lambda: a @ a  # noqa: E731
    else:
        import jax
        import jax.numpy as jnp

        a = jax.random.normal(jax.random.key(0), (N, N), jnp.float32)
        mm = jax.jit(lambda x: x @ x)
        fn = lambda: mm(a).block_until_ready()  # noqa: E731
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return 2 * N**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lib")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.lib:
        print(json.dumps({"gflops": measure(args.lib)}))
        return
    results = {}
    for lib in ("numpy", "torch", "jax"):
        out = subprocess.run([sys.executable, __file__, "--lib", lib], capture_output=True, text=True, check=True)
        results[lib] = json.loads(out.stdout.strip().splitlines()[-1])["gflops"]
    best = max(results.values())
    if args.json:
        print(json.dumps({"best_gflops": best, **results}))
    else:
        for lib, g in results.items():
            print(f"{lib}: {g:.0f} GFLOP/s")
        print(f"best: {best:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
