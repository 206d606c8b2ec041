"""Prove that every stage of the RLOO paper modules fits the TPU slice it names, without the
slice: each variant is compiled for its target on this CPU-only machine (libtpu's topology
description; the same programs and shardings as `python -m rlhf_jax.main --config
experiments/rloo_paper_X.py:VARIANT --dry-run --target SLICE`) and each program's bytes
per chip are checked against the chip's HBM less `aot.HEADROOM` (10%).

    pip install -c constraints.txt -e '.[tpu]'
    python tpu/fit.py                      # every module and variant, LoRA ones included
    python tpu/fit.py --only rloo_paper_tldr_pythia:rloo_k4 --table

One record per variant in tpu/fit/ (with its config's digest: a variant whose settings
changed is compiled again; a record without the iteration's roofline, `aot.roofline`,
gets it), so a cut-off run goes on where it stopped; `--table` prints the tables of
docs/pods.md from the records. Exit status 1 when a variant does not fit with the headroom.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDS = os.path.join(ROOT, "tpu", "fit")
LORA_OF = ("rloo_k2", "rloo_k4", "ppo")  # the stages whose LoRA variants are recorded too
REWARD_MODEL = "/bucket/reward"  # an RL stage's reward model: a path on the pod (its size is the policy's)


def variants() -> list[tuple[str, str]]:
    """(module, variant) of every fitted stage."""
    from experiments.rloo_paper_settings import SETTINGS, VARIANTS

    return [(m, v) for m in SETTINGS for v in (*VARIANTS, *(f"{s},lora" for s in LORA_OF))]


def stage_config(module: str, variant: str):
    from rlhf_jax.config import override
    from rlhf_jax.main import load_experiment

    cfg = load_experiment(os.path.join(ROOT, "experiments", f"{module}.py:{variant}"))
    return override(cfg, [f"rl.reward_model={REWARD_MODEL}"]) if cfg.train.kind == "rl" else cfg


def digest(cfg) -> str:
    """Of the fields off their defaults (a new option, off by default, keeps the records)."""
    from rlhf_jax.config import non_default

    return hashlib.sha256(json.dumps(non_default(cfg), sort_keys=True).encode()).hexdigest()[:16]


def record_path(module: str, variant: str) -> str:
    return os.path.join(RECORDS, f"{module}__{variant.replace(',', '_')}.json")


def fit(module: str, variant: str) -> dict:
    """Compile one variant for its slice; the record (programs' bytes per chip, figures)."""
    import jax

    from experiments.rloo_paper_settings import SETTINGS
    from rlhf_jax import aot

    cfg = stage_config(module, variant)
    target = aot.target(SETTINGS[module].slice)
    t0 = time.time()
    devices = aot.target_devices(target)
    programs, figures = aot.compile_run(cfg, devices)
    print(aot.report(cfg, target, programs, figures), flush=True)
    roof = aot.roofline(cfg, devices, target, figures)
    print(roof.report(), flush=True)
    return {
        "module": module,
        "variant": variant,
        "target": target.name,
        "hbm_gib": target.hbm_gib,
        "digest": digest(cfg),
        "mesh": list(cfg.mesh),
        "programs": [{**dataclasses.asdict(p), "total": p.total, "compile_s": round(p.compile_s, 1)} for p in programs],
        "fits": aot.headroom(target, programs) >= aot.HEADROOM,
        "params": figures["params"],
        "trainable": figures["trainable"],
        "tflop_per_iteration": figures["flops"] / 1e12,
        "roofline": roof.record(),
        "seconds": round(time.time() - t0, 1),
        "versions": {"jax": jax.__version__, "libtpu": _libtpu_version()},
    }


def add_roofline(record: dict) -> dict:
    """A record of before the roofline, with it (`aot.roofline`; no program compiled again)."""
    from experiments.rloo_paper_settings import SETTINGS
    from rlhf_jax import aot

    cfg = stage_config(record["module"], record["variant"])
    target = aot.target(SETTINGS[record["module"]].slice)
    devices = aot.target_devices(target)
    _, figures = aot.compile_run(cfg, devices, skip=("sampler", "experience", "update", "reward", "step"))
    roof = aot.roofline(cfg, devices, target, figures)
    print(f"{record['module']}:{record['variant']}\n{roof.report()}", flush=True)
    return {**record, "roofline": roof.record()}


def _libtpu_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("libtpu")
    except PackageNotFoundError:
        return ""


def read(module: str, variant: str) -> dict | None:
    path = record_path(module, variant)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        record = json.load(f)
    return record if record["digest"] == digest(stage_config(module, variant)) else None


def table(records: list[dict]) -> str:
    """Markdown: per variant, each program's GiB per chip (share of HBM) and the headroom
    left by the largest; then the LoRA variants, with what their update saves against the same
    stage trained in full (GiB per chip, share)."""
    gib = 2**30
    full = {(r["module"], r["variant"]): r for r in records if not r["variant"].endswith(",lora")}

    def row(r):
        by = {p["name"]: p["total"] for p in r["programs"]}
        hbm = r["hbm_gib"] * gib
        cell = lambda name: f"{by[name] / gib:.2f} ({by[name] / hbm:.0%})" if name in by else "-"  # noqa: E731
        cells = [
            f"{r['module'].removeprefix('rloo_paper_')}:{r['variant']}", r["target"], _millions(r["trainable"]),
            cell("sampler"), cell("experience"), cell("update") if "update" in by else cell("step"), cell("reward"),
            f"{1 - max(by.values()) / hbm:.0%}",
        ]  # fmt: skip
        if r["variant"].endswith(",lora"):
            base = full.get((r["module"], r["variant"].removesuffix(",lora")))
            update = lambda x: next(p["total"] for p in x["programs"] if p["name"] == "update")  # noqa: E731
            cells.append(
                f"{(update(base) - update(r)) / gib:.2f} ({1 - update(r) / update(base):.0%})" if base else "-"
            )
        return "| " + " | ".join(cells) + " |"

    head = "| module:variant | slice | trained | sampler | experience | update / step | reward model | headroom |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    lines += [row(r) for r in records if not r["variant"].endswith(",lora")]
    lora = [r for r in records if r["variant"].endswith(",lora")]
    if lora:
        lines += ["", head + " update: saved against full |", "|---|---|---|---|---|---|---|---|---|"]
        lines += [row(r) for r in lora]
    return "\n".join(lines) + "\n\n" + roofline_table(records)


def roofline_table(records: list[dict]) -> str:
    """Markdown: per variant, the iteration's time at the roofline (`aot.roofline`), its
    longest program and what bounds it, the MFU that time allows, and the sampler's decode
    tokens per second per chip at HBM bandwidth."""
    lines = ["| module:variant | iteration at the roofline | longest program | MFU at most | decode tokens/s/chip |",
             "|---|---|---|---|---|"]  # fmt: skip
    for r in records:
        if "roofline" not in r:
            continue
        roof = r["roofline"]
        longest = max(roof["programs"], key=lambda p: p["seconds"])
        tokens = roof["decode_tokens_per_s_per_chip"]
        lines.append(
            f"| {r['module'].removeprefix('rloo_paper_')}:{r['variant']} | {roof['seconds']:,.2f} s | "
            f"{longest['name']} ({longest['bound']}, {longest['seconds']:,.2f} s) | {roof['mfu']:.0%} | "
            f"{f'{tokens:,.0f}' if tokens else '-'} |"
        )
    missing = sum("roofline" not in r for r in records)
    if missing:
        lines.append(f"\n{missing} more without a roofline yet: python tpu/fit.py adds it")
    return "\n".join(lines)


def _millions(n: int) -> str:
    return f"{n / 1e6:,.0f}M" if n >= 1e7 else f"{n / 1e6:,.1f}M"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, metavar="MODULE:VARIANT")
    parser.add_argument("--table", action="store_true", help="print the table of the records (compile nothing)")
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    todo = variants()
    if args.only:
        todo = [(m, v) for m, v in todo if f"{m}:{v}" in args.only]
    if args.table:
        records = [r for m, v in todo if (r := read(m, v)) is not None]
        print(table(records))
        return 0 if all(r["fits"] for r in records) else 1
    os.makedirs(RECORDS, exist_ok=True)
    failed = []
    for module, variant in todo:
        record = read(module, variant)
        if record is None or "roofline" not in record:
            record = fit(module, variant) if record is None else add_roofline(record)
            with open(record_path(module, variant), "w") as f:
                json.dump(record, f, indent=1)
                f.write("\n")
        if not record["fits"]:
            failed.append(f"{module}:{variant}")
    from rlhf_jax.aot import HEADROOM

    not_fitting = f"; not: {failed}" if failed else ""
    print(f"{len(todo) - len(failed)} of {len(todo)} fit with {HEADROOM:.0%} headroom{not_fitting}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
