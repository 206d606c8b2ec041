"""Entry point: python -m rlhf_jax.main --config experiments/X.py[:variant] --workdir DIR
[--set a.b=value ...] [--overwrite-config] [--distributed | --coordinator HOST:PORT
--num-processes N --process-id I]

The experiment module's `get_config(variant)` gives the config; `--set` overrides fields;
the resolved config is written to DIR/config.json. A workdir that holds a run with a
different config is refused unless --overwrite-config is given (its checkpoints would
otherwise be resumed under the new settings).

A run over several processes starts the same command on each: `--distributed` lets JAX
discover them (every worker of a TPU pod slice), or the three explicit flags name them
(GPU hosts, CPU tests). The workdir must then be storage they share: a network file
system, or a Cloud Storage bucket mounted with gcsfuse, which `gs://bucket/path` names
(mounted at $RLHF_JAX_GCS_MOUNT, default /gcs, as tpu/setup.sh does).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys

from rlhf_jax import config as config_lib


def load_experiment(spec: str):
    """The config of "path/to/module.py[:variant]"."""
    path, _, variant = spec.partition(":")
    if not os.path.exists(path):
        raise FileNotFoundError(f"--config {spec}: no file {path}")
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    if os.path.exists(os.path.join(os.path.dirname(path), "__init__.py")) and package_root not in sys.path:
        sys.path.insert(0, package_root)  # a module may import its siblings: from experiments.x import ...
    module_spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise AttributeError(f"--config {spec}: {path} defines no get_config(variant)")
    return module.get_config(variant or None)


def local_path(path: str, what: str = "--workdir") -> str:
    """The local path of gs://bucket/path: the bucket's gcsfuse mount; other paths as they are."""
    if not path.startswith("gs://"):
        return path
    bucket, _, rest = path[len("gs://") :].partition("/")
    mount = os.path.join(os.environ.get("RLHF_JAX_GCS_MOUNT", "/gcs"), bucket)
    if not os.path.isdir(mount):
        raise FileNotFoundError(
            f"{what} {path}: bucket {bucket} is not mounted at {mount}; mount it with "
            f"`gcsfuse --implicit-dirs {bucket} {mount}` (tpu/setup.sh does) or set RLHF_JAX_GCS_MOUNT"
        )
    return os.path.join(mount, rest)


def local_paths(cfg, prefix: str = ""):
    """cfg with every gs:// string field replaced by its local mount path."""
    if not dataclasses.is_dataclass(cfg):
        return cfg
    changes = {}
    for field in dataclasses.fields(cfg):
        value, key = getattr(cfg, field.name), f"{prefix}{field.name}"
        if isinstance(value, str) and value.startswith("gs://"):
            changes[field.name] = local_path(value, key)
        elif dataclasses.is_dataclass(value):
            changes[field.name] = local_paths(value, key + ".")
    return dataclasses.replace(cfg, **changes) if changes else cfg


def resolve(spec: str, overrides: list[str], workdir: str, overwrite: bool = False, dry_run: bool = False):
    """The config, checked against the workdir's config.json by every process and
    written there by process 0 (not for a dry run)."""
    import jax

    from rlhf_jax import mesh as mesh_lib

    cfg = local_paths(config_lib.override(load_experiment(spec), overrides))
    if dry_run:
        return cfg
    path = os.path.join(workdir, "config.json")
    resolved = config_lib.to_dict(cfg)
    if os.path.exists(path) and not overwrite:
        with open(path) as f:
            changed = config_lib.differences(json.load(f), resolved)
        if changed:
            raise ValueError(
                f"{workdir} holds a run with a different config ({'; '.join(changed[:5])}); "
                "use another --workdir, or --overwrite-config to continue it with the new one"
            )
    mesh_lib.barrier("config checked")
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(path, "w") as f:
            json.dump(resolved, f, indent=2)
    mesh_lib.barrier("config written")
    return cfg


def dry_run(cfg) -> str:
    """What one iteration of cfg's loop holds at full size, traced without allocating."""
    import jax

    from rlhf_jax.loops.shapes import abstract_iteration

    out = abstract_iteration(cfg)
    lines = [f"{cfg.name}: train.kind={cfg.train.kind}, {out['params'] / 1e6:,.1f}M parameters"]
    lines.append(f"train state (parameters + optimiser): {out['state_bytes'] / 2**30:,.2f} GiB before sharding")
    for name in ("samples", "rollout"):
        if name in out:
            shapes = {k: tuple(v.shape) for k, v in vars(out[name]).items() if isinstance(v, jax.ShapeDtypeStruct)}
            lines.append(f"{name}: " + ", ".join(f"{k} {v}" for k, v in shapes.items()))
    lines.append("metrics: " + ", ".join(sorted(out["metrics"])))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf_jax.main", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="experiments/X.py[:variant]")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    parser.add_argument("--overwrite-config", action="store_true")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="trace one iteration at full size (jax.eval_shape: no parameters, no data), print it and exit",
    )
    group = parser.add_argument_group("several processes (see above)")
    group.add_argument("--distributed", action="store_true", help="discover the processes (TPU pod slice)")
    group.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
    group.add_argument("--num-processes", type=int)
    group.add_argument("--process-id", type=int)
    args = parser.parse_args(argv)
    from rlhf_jax import mesh as mesh_lib

    try:
        mesh_lib.initialize_distributed(args.coordinator, args.num_processes, args.process_id, args.distributed)
        workdir = local_path(args.workdir)
        cfg = resolve(args.config, args.set, workdir, args.overwrite_config, args.dry_run)
        if args.dry_run:
            print(dry_run(cfg))
            return 0
    except (ValueError, FileNotFoundError, AttributeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from rlhf_jax import loops

    summary = loops.run(cfg, workdir)
    import jax

    if jax.process_index() == 0:
        shown = {k: v for k, v in summary.items() if k != "curves"}  # per-step lists stay in summary.json
        print(json.dumps(shown, indent=2))
    return 0


if __name__ == "__main__":
    from rlhf_jax.hugepages import reexec_with_huge_pages

    reexec_with_huge_pages()  # huge pages for XLA's CPU buffers, before JAX starts (hugepages.py)
    sys.exit(main())
