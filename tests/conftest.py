"""Test set-up: 8 fake CPU devices (for the mesh tests) before JAX starts, and tiny
Hugging Face checkpoints of each family, made with torch and shared by the session."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from rlhf_jax import compiles  # noqa: E402

# one persistent compilation cache for the session and the processes its tests start (through
# the environment): most tests compile the same tiny programs, as a study's cells do
_CACHE = tempfile.mkdtemp(prefix="rlhf_jax_test_compile_cache_")  # removed at exit; a user's own cache wins
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
compiles.persist(_CACHE)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Each loaded CPU executable keeps about 3 memory maps; the whole suite in one process
    loads tens of thousands of programs, past Linux's vm.max_map_count (65,530), and XLA
    then aborts while mapping the next one. Dropping JAX's in-memory caches after each
    module frees them; the persistent cache above reloads what a later module needs."""
    yield
    import gc

    import jax

    jax.clear_caches()
    gc.collect()


FAMILIES = ("gpt2", "gpt_neox", "llama", "qwen2")


def tiny_hf_config(family: str, **overrides):
    """A tiny transformers config of each family (GQA for Llama/Qwen2, partial rotary for NeoX)."""
    import transformers as T

    common = dict(vocab_size=97, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if family == "gpt2":
        kw = dict(n_embd=32, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        return T.GPT2Config(**{**common, **kw, **overrides})
    kw = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64
    )
    if family == "gpt_neox":
        return T.GPTNeoXConfig(**{**common, **kw, "rotary_pct": 0.5, **overrides})
    cls = T.LlamaConfig if family == "llama" else T.Qwen2Config
    return cls(**{**common, **kw, "num_key_value_heads": 2, **overrides})


def make_hf_model(family: str, head: str = "lm", seed: int = 0, **overrides):
    """A randomly initialised torch model; norms and biases are perturbed too, so that a
    layout error in any tensor shows in the logits."""
    import torch
    import transformers as T

    torch.manual_seed(seed)
    cfg = tiny_hf_config(family, **overrides)
    if head == "lm":
        model = T.AutoModelForCausalLM.from_config(cfg)
    else:
        cfg.num_labels = 1
        model = T.AutoModelForSequenceClassification.from_config(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="session")
def hf_checkpoints(tmp_path_factory):
    """family -> (directory, torch model) of a saved tiny causal LM."""
    out = {}
    for family in FAMILIES:
        model = make_hf_model(family)
        directory = str(tmp_path_factory.mktemp(f"hf_{family}"))
        model.save_pretrained(directory)
        out[family] = (directory, model)
    return out


@pytest.fixture(scope="session")
def padded_batch():
    """Tokens [3, 7] with left padding of 3, 0 and 1 tokens, and the mask."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, 97, size=(3, 7))
    mask = (np.arange(7)[None] >= np.array([3, 0, 1])[:, None]).astype(np.int32)
    return np.where(mask, tokens, 0), mask


# ----------------------------------------------------------------------------- the fast tier's budget

FAST_TEST_SECONDS = 5.0  # a test without the slow marker that takes longer is listed at the end of the run
_fast_seconds: dict[str, float] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when in ("setup", "call") and item.get_closest_marker("slow") is None:
        _fast_seconds[item.nodeid] = _fast_seconds.get(item.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    over = sorted(((s, n) for n, s in _fast_seconds.items() if s > FAST_TEST_SECONDS), reverse=True)
    if over:
        terminalreporter.write_sep(
            "-", f"{len(over)} fast tests over {FAST_TEST_SECONDS:g} s (shrink them or mark slow)"
        )
        for seconds, name in over:
            terminalreporter.write_line(f"{seconds:6.1f}s {name}")
