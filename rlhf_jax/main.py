"""Entry point: python -m rlhf_jax.main --config experiments/X.py[:variant] --workdir DIR
[--set a.b=value ...] [--overwrite-config]

The experiment module's `get_config(variant)` gives the config; `--set` overrides fields;
the resolved config is written to DIR/config.json. A workdir that holds a run with a
different config is refused unless --overwrite-config is given (its checkpoints would
otherwise be resumed under the new settings).
"""

from __future__ import annotations

import argparse
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
    module_spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise AttributeError(f"--config {spec}: {path} defines no get_config(variant)")
    return module.get_config(variant or None)


def resolve(spec: str, overrides: list[str], workdir: str, overwrite: bool = False):
    cfg = config_lib.override(load_experiment(spec), overrides)
    os.makedirs(workdir, exist_ok=True)
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
    with open(path, "w") as f:
        json.dump(resolved, f, indent=2)
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf_jax.main", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="experiments/X.py[:variant]")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    parser.add_argument("--overwrite-config", action="store_true")
    args = parser.parse_args(argv)
    try:
        cfg = resolve(args.config, args.set, args.workdir, args.overwrite_config)
    except (ValueError, FileNotFoundError, AttributeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from rlhf_jax import loops

    summary = loops.run(cfg, args.workdir)
    shown = {k: v for k, v in summary.items() if k != "curves"}  # per-step lists stay in summary.json
    print(json.dumps(shown, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
