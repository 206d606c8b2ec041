"""Shared by the bench scripts: model sizes, FLOP counts, a worker per process, the
machine's matmul peak.

Every measurement runs in its own process (two threading runtimes in one process on a
small machine slow each other), engines in alternating rounds; figures are medians.
`Worker` / `serve` / `paired_rounds` keep each engine's process alive between timed calls,
so consecutive calls of two engines are seconds apart and a ratio can be taken per round.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

# the repository root, for peers' interpreters (Tunix's venv) that do not have rlhf_jax installed
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rlhf_jax import hugepages  # noqa: E402

GPT2_SIZES = {
    "small": dict(n_layer=2, n_embd=128, n_head=4, vocab_size=8192),
    "base": dict(n_layer=6, n_embd=512, n_head=8, vocab_size=8192),
    "base50k": dict(n_layer=6, n_embd=512, n_head=8, vocab_size=50257),
}
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


def matmul_params(size: dict) -> int:
    """N: the parameters that take part in matmuls (attention and MLP projections, the LM
    head); a forward costs 2N FLOP per token, a training step 6N."""
    d, layers, vocab = size["n_embd"], size["n_layer"], size["vocab_size"]
    return layers * (4 * d * d + 2 * d * 4 * d) + d * vocab


def run_json(cmd: list[str], env: dict | None = None) -> dict:
    """Run a worker; its last stdout line is a JSON object. Every worker, peers included,
    runs with glibc's huge-page tunable (`rlhf_jax.hugepages`; RLHF_JAX_HUGEPAGES=0 for
    none), as `python -m rlhf_jax.main` does: the same allocator for every engine."""
    out = subprocess.run(cmd, capture_output=True, text=True, env=hugepages.with_tunable(env))
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_gflops() -> float:
    """The best of numpy, torch and jax on a 4096 x 4096 f32 matmul (bench/peak.py)."""
    return run_json([sys.executable, os.path.join(BENCH_DIR, "peak.py"), "--json"])["best_gflops"]


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores"


def alternate(engines: list[str], rounds: int, measure: Callable[[str], dict]) -> dict[str, list[dict]]:
    """measure(engine) for each engine in turn, `rounds` times over: {engine: [results]}."""
    results = {e: [] for e in engines}
    for _ in range(rounds):
        for engine in engines:
            results[engine].append(measure(engine))
    return results


REPLY = "@bench "  # marks a worker's replies on stdout among whatever its libraries print


class Worker:
    """One engine in a process of its own, kept alive between timed calls. It sets up once
    (load, compile, warm up) and replies with a JSON object (`setup`); then each `run()`
    sends it "run" and returns its JSON reply. Waiting on stdin, it uses no CPU."""

    def __init__(self, cmd: list[str], env: dict | None = None):
        self.name = " ".join(cmd[:4])
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=hugepages.with_tunable(env),
        )
        self.setup = self._reply()

    def run(self) -> dict:
        try:
            self._proc.stdin.write("run\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass  # it has exited: _reply says with what
        return self._reply()

    def _reply(self) -> dict:
        for line in self._proc.stdout:
            if line.startswith(REPLY):
                return json.loads(line[len(REPLY) :])
        self._proc.wait()
        self._stderr.seek(0)
        raise RuntimeError(f"{self.name} ... exited with {self._proc.returncode}:\n{self._stderr.read()[-4000:]}")

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait()
        self._stderr.close()


def serve(setup: Callable[[], tuple[dict, Callable[[], dict]]]) -> None:
    """The worker's side of `Worker`: setup() -> (setup reply, one timed call)."""
    info, call = setup()
    print(REPLY + json.dumps(info), flush=True)
    for line in sys.stdin:
        if line.strip() == "run":
            print(REPLY + json.dumps(call()), flush=True)


def paired_rounds(workers: dict[str, Worker], rounds: int, pause: float = 0.5) -> dict[str, list[float]]:
    """`rounds` rounds of one timed call per engine: {engine: [seconds per round]}. Each
    round starts one engine later than the last, so none always follows the same one, and
    `pause` seconds separate calls (thread pools that spin after their work go idle)."""
    engines = list(workers)
    seconds = {e: [] for e in engines}
    for r in range(rounds):
        shift = r % len(engines)
        for engine in engines[shift:] + engines[:shift]:
            time.sleep(pause)
            seconds[engine].append(workers[engine].run()["seconds"])
    return seconds


def ratio_cell(slower: list[float], faster: list[float]) -> str:
    """The median of the per-round ratios slower/faster, and their range over the rounds."""
    ratios = sorted(s / f for s, f in zip(slower, faster, strict=True))
    return f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})"


def median_seconds(results: dict[str, list[dict]]) -> dict[str, float]:
    return {e: statistics.median(r["seconds"] for r in rs) for e, rs in results.items()}


def word_tokenizer(vocab_size: int):
    """A transformers fast tokenizer with one token per word: <pad> 0, <eos> 1, then
    w2 .. w{V-1}, so a prompt string of n words is exactly n tokens for every engine."""
    import tokenizers
    import transformers as T

    words = {"<pad>": 0, "<eos>": 1, **{f"w{i}": i for i in range(2, vocab_size)}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(words, unk_token="<pad>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    return T.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")
