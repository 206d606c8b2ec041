"""The package's import graph: no cycles, and no import against the layers.

Every `import` in the package counts, the ones inside functions too. Layers, lowest first
(a module may import its own layer and the ones below, never above):

    0  errors, config, compiles, hugepages, platforms,     foundations, no maths
       mesh, batches
    1  models, workdir, checkpoint
    2  losses, rollout, sampling, train_step, tasks, data   maths, decoding, data
    3  experiment, rl_section, eval                         the config schema, evaluation
    4  preflight, loops                                     one loop per train.kind
    5  pipeline, dry_run, aot, studies, docs             runs of several loops; compiling them; studies
    6  main                                                 the command line

and within a layer: losses import only losses and batches; tasks and data import no maths
(losses, rollout, sampling, train_step); a loop imports no other loop (only the shared
loops.common and loops.data; loops.classifier, the weak-to-strong study's fine-tuning,
is a loop of its own).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "rlhf_jax"

LAYERS = [
    {"errors", "config", "compiles", "hugepages", "platforms", "mesh", "batches"},
    {"models", "workdir", "checkpoint"},
    {"losses", "rollout", "rollout_corrections", "roofline", "sampling", "train_step", "tasks", "data"},
    {"experiment", "rl_section", "eval"},
    {"preflight", "loops"},
    {
        "pipeline",
        "dry_run",
        "aot",
        "studies",
        "docs",
    },
    {"main"},
]
MATHS = {"losses", "rollout", "rollout_corrections", "roofline", "sampling", "train_step"}
SHARED_LOOP_MODULES = {"rlhf_jax.loops", "rlhf_jax.loops.common", "rlhf_jax.loops.data"}


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """The project modules `name` imports (`from a import b` counts b when it is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m in known and m != name}


def graph(mods: dict[str, pathlib.Path]) -> dict[str, set[str]]:
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def top(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer(name: str) -> int:
    for i, members in enumerate(LAYERS):
        if top(name) in members:
            return i
    raise AssertionError(f"{name}: in no layer; add its top-level name to LAYERS in this test")


def violations(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, deps in g.items():
        if src == "rlhf_jax":
            continue
        for dst in deps:
            if dst == "rlhf_jax" or top(dst) == top(src) and top(src) not in ("loops",):
                continue
            if layer(dst) > layer(src):
                bad.append(f"{src} -> {dst}: layer {layer(src)} imports layer {layer(dst)}")
            elif top(src) == "losses" and top(dst) not in ("losses", "batches"):
                bad.append(f"{src} -> {dst}: a loss imports only losses and batches")
            elif top(src) in ("tasks", "data") and top(dst) in MATHS:
                bad.append(f"{src} -> {dst}: tasks and data import no maths")
            elif top(src) == top(dst) == "loops" and src not in SHARED_LOOP_MODULES and dst not in SHARED_LOOP_MODULES:
                bad.append(f"{src} -> {dst}: a loop imports no other loop")
    return sorted(bad)


def cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g[n]):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_the_package_has_no_import_cycle():
    found = cycle(graph(modules()))
    assert found is None, " -> ".join(found)


def test_no_module_imports_against_the_layers():
    assert violations(graph(modules())) == []


def test_every_module_has_a_layer():
    for name in modules():
        if name != "rlhf_jax":
            layer(name)


@pytest.mark.parametrize(
    "edges, expected",
    [
        ({"rlhf_jax.a": {"rlhf_jax.b"}, "rlhf_jax.b": {"rlhf_jax.c"}, "rlhf_jax.c": {"rlhf_jax.a"}}, 4),
        ({"rlhf_jax.a": {"rlhf_jax.b"}, "rlhf_jax.b": set(), "rlhf_jax.c": {"rlhf_jax.a"}}, None),
    ],
)
def test_the_cycle_finder_finds_a_planted_cycle(edges, expected):
    found = cycle(edges)
    assert (found and len(found)) == expected


def test_the_layer_rules_reject_planted_imports():
    planted = {
        "rlhf_jax.losses.sft": {"rlhf_jax.rollout"},  # a loss importing beyond losses and batches
        "rlhf_jax.tasks.arithmetic": {"rlhf_jax.losses.reward"},  # a task importing maths
        "rlhf_jax.loops.offline": {"rlhf_jax.loops.online"},  # a loop importing a loop
        "rlhf_jax.models.hf": {"rlhf_jax.loops.common"},  # upwards
        "rlhf_jax.loops.online": {"rlhf_jax.loops.common"},  # allowed
    }
    assert [v.split(":")[0] for v in violations(planted)] == [
        "rlhf_jax.loops.offline -> rlhf_jax.loops.online",
        "rlhf_jax.losses.sft -> rlhf_jax.rollout",
        "rlhf_jax.models.hf -> rlhf_jax.loops.common",
        "rlhf_jax.tasks.arithmetic -> rlhf_jax.losses.reward",
    ]


def test_an_import_inside_a_function_says_why():
    """Imports belong at the top of a module; one inside a function (to keep a library's
    seconds of import off a path that does not need it, or JAX behind the entry's set-up)
    carries its reason in a comment on its line or the line above."""
    silent = []
    for name, path in modules().items():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(node):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        here, above = lines[sub.lineno - 1], lines[sub.lineno - 2]
                        if "#" not in here and "#" not in above:
                            silent.append(f"{name}:{sub.lineno}")
    assert not silent, f"imports inside functions without a reason: {silent}"
