"""The docs' tables that the code knows better than a person: printed from the registries
(online methods, advantage estimators, policy objectives, preference objectives, tasks),
from the fit records (`tpu/fit.py`) and from the studies' reports (their claim tables).

    python -m rlhf_jax.docs            rewrite every generated block of README.md and docs/*.md
    python -m rlhf_jax.docs --check    exit 1 naming each stale block (tests/test_docs.py runs it)

Both also list dead links (a relative link to a missing file or #section) in the docs.

A generated block sits between `<!-- generated:NAME -->` and `<!-- /generated:NAME -->`
(`<!-- claims:STUDY -->` ... `<!-- /claims:STUDY -->` for a study's claim table, which the
study runner writes into its report). Adding an estimator, an objective or a task changes
its table here; the test fails until the docs are rewritten.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import re
import sys

from rlhf_jax import rollout
from rlhf_jax.data.tasks import TASKS
from rlhf_jax.experiment import METHODS
from rlhf_jax.losses import policy as policy_losses
from rlhf_jax.losses import preference as preference_losses

BLOCK = re.compile(r"<!-- (generated|claims):(\S+) -->\n.*?<!-- /\1:\2 -->", re.S)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ("README.md", "docs/*.md")


def summary(fn) -> str:
    """The first line of a registered function's docstring, without its final stop."""
    return ((fn.__doc__ or "").strip().splitlines() or [""])[0].rstrip(".")


def _needs(e: rollout.Estimator) -> str:
    needs = [f"k >= {e.min_k}"] if e.min_k > 1 else []
    needs += ["a critic"] if e.critic else []
    needs += ["a greedy rollout"] if e.greedy_rollout else []
    return ", ".join(needs)


def methods() -> list[str]:
    lines = ["| `rl.method` | `rl.advantage` | `rl.loss` | needs | from |", "|---|---|---|---|---|"]
    for name, m in METHODS.items():
        e, o = rollout.ESTIMATORS[m.advantage], policy_losses.OBJECTIVES[m.loss]
        lines.append(f"| `{name}` | `{e.name}`: {summary(e.fn)} | `{o.name}`: {summary(o.fn)} | {_needs(e)} | "
                     f"{m.paper} |")  # fmt: skip
    return lines


def estimators() -> list[str]:
    lines = ["| `rl.advantage` | level | needs | A = |", "|---|---|---|---|"]
    lines += [f"| `{e.name}` | {e.level} | {_needs(e)} | {summary(e.fn)} |" for e in rollout.ESTIMATORS.values()]
    return lines


def objectives() -> list[str]:
    lines = ["| `rl.loss` | takes advantages per | loss |", "|---|---|---|"]
    lines += [f"| `{o.name}` | {', '.join(o.accepts)} | {summary(o.fn)} |" for o in policy_losses.OBJECTIVES.values()]
    return lines


def preference() -> list[str]:
    lines = ["| `preference.objective` | data | reference | loss |", "|---|---|---|---|"]
    for o in preference_losses.OBJECTIVES.values():
        data = "pairs" if o.paired else "unpaired"
        lines.append(f"| `{o.name}` | {data} | {'yes' if o.reference else 'no'} | {summary(o.fn)} |")
    return lines


def tasks() -> list[str]:
    lines = ["| `data.task` | data | gold judge | what |", "|---|---|---|---|"]
    for t in TASKS.values():
        lines.append(f"| `{t.name}` | {', '.join(t.offers)} | {'yes' if t.gold_reward else '-'} | {t.about} |")
    return lines


def fit(root: str = ROOT) -> list[str] | None:
    """tpu/fit.py --table from its records (None where the checkout has no tpu/)."""
    path = os.path.join(root, "tpu", "fit.py")
    if not os.path.exists(path):
        return None
    spec = importlib.util.spec_from_file_location("fit", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    records = [module.read(m, v) for m, v in module.variants()]
    return module.table([r for r in records if r is not None]).splitlines()


GENERATED = {
    "methods": methods,
    "estimators": estimators,
    "objectives": objectives,
    "preference": preference,
    "tasks": tasks,
    "fit": fit,
}


def blocks(text: str) -> dict[tuple[str, str], str]:
    """{(kind, name): the block, markers included} of a markdown text."""
    return {(m.group(1), m.group(2)): m.group(0) for m in BLOCK.finditer(text)}


def block(kind: str, name: str, lines: list[str]) -> str:
    return "\n".join([f"<!-- {kind}:{name} -->", *lines, f"<!-- /{kind}:{name} -->"])


def expected(root: str = ROOT) -> dict[tuple[str, str], str]:
    """Every block the docs may hold, as the code and the reports give it now."""
    out = {}
    for name, make in GENERATED.items():
        lines = make() if name != "fit" else make(root)
        if lines is not None:
            out[("generated", name)] = block("generated", name, lines)
    for report in sorted(glob.glob(os.path.join(root, "studies", "*", "report.md"))):
        with open(report) as f:
            out.update({k: v for k, v in blocks(f.read()).items() if k[0] == "claims"})
    return out


def doc_files(root: str = ROOT) -> list[str]:
    return sorted(p for pattern in DOCS for p in glob.glob(os.path.join(root, pattern)))


def sync(root: str = ROOT, check: bool = False) -> list[str]:
    """Rewrite (or with check, only list) the stale blocks: ["FILE: kind:name", ...]; a
    block the code does not know is listed too."""
    want, stale = expected(root), []
    for path in doc_files(root):
        with open(path) as f:
            text = f.read()
        new = text
        for key, found in blocks(text).items():
            rel = f"{os.path.relpath(path, root)}: {key[0]}:{key[1]}"
            if key not in want:
                stale.append(rel + " (unknown block)")
            elif found != want[key]:
                stale.append(rel)
                new = new.replace(found, want[key])
        if new != text and not check:
            with open(path, "w") as f:
                f.write(new)
    return stale


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
LINKED = ("README.md", "docs/*.md", "tpu/README.md", "bench/RESULTS.md", "studies/*/report.md")


def anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def dead_links(root: str = ROOT, patterns: tuple[str, ...] = LINKED) -> list[str]:
    """["FILE: target", ...] of relative links whose file, or whose #section in it, is not there."""
    dead = []
    for path in sorted(p for pattern in patterns for p in glob.glob(os.path.join(root, pattern))):
        with open(path) as f:
            text = f.read()
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+:", target):
                continue  # http:, https:, mailto:
            file, _, section = target.partition("#")
            where = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
            ok = os.path.exists(where)
            if ok and section and where.endswith(".md"):
                with open(where) as f:
                    ok = section in {anchor(h) for h in re.findall(r"^#+ (.+)$", f.read(), re.M)}
            if not ok:
                dead.append(f"{os.path.relpath(path, root)}: {target}")
    return dead


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf_jax.docs", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block is stale")
    args = parser.parse_args(argv)
    stale = sync(check=args.check)
    for line in stale:
        print(("stale: " if args.check else "rewritten: ") + line)
    dead = dead_links()
    for line in dead:
        print(f"dead link: {line}")
    return 1 if (args.check and stale) or dead else 0


if __name__ == "__main__":
    sys.exit(main())
