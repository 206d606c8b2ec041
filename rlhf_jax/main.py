"""Entry point: python -m rlhf_jax.main --config experiments/X.py[:variant] --workdir DIR
[--set a.b=value ...] [--overwrite-config] [--distributed | --coordinator HOST:PORT
--num-processes N --process-id I]

The experiment module's `get_config(variant)` gives the config; `--set` overrides fields;
the resolved config is written to DIR/config.json. A workdir that holds a run with a
different config is refused unless --overwrite-config is given (its checkpoints would
otherwise be resumed under the new settings); one that holds a finished run of the same
config is left as it is. Everything that needs no data is checked first (`preflight`);
one run at a time holds a workdir (`workdir.Lock`). An error the user can act on ends as
one `error: ...` line and exit status 2 (--debug, or RLHF_JAX_DEBUG=1, for the traceback);
SIGINT / SIGTERM stop the run cleanly at any point (in training: after saving).

A run over several processes starts the same command on each: `--distributed` lets JAX
discover them (every worker of a TPU pod slice), or the three explicit flags name them
(GPU hosts, CPU tests). The workdir must then be storage they share: a network file
system, or a Cloud Storage bucket mounted with gcsfuse, which `gs://bucket/path` names
(mounted at $RLHF_JAX_GCS_MOUNT, default /gcs, as tpu/setup.sh does).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys

# transformers announces at import that PyTorch is missing; we use its tokenizers and configs only
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from rlhf_jax import config as config_lib  # noqa: E402
from rlhf_jax.config import load_experiment  # noqa: E402, F401 (the command line's, and tests')
from rlhf_jax.platforms import default_platforms  # noqa: E402

default_platforms()  # no accelerator attached: the CPU alone, without libtpu's start-up errors (platforms.py)


def local_path(path: str, what: str = "--workdir", mounted: bool = True) -> str:
    """The local path of gs://bucket/path: the bucket's gcsfuse mount; other paths as they
    are. mounted=False (a dry run, which reads nothing): the mount need not be here."""
    if not path.startswith("gs://"):
        return path
    bucket, _, rest = path[len("gs://") :].partition("/")
    mount = os.path.join(os.environ.get("RLHF_JAX_GCS_MOUNT", "/gcs"), bucket)
    if mounted and not os.path.isdir(mount):
        raise FileNotFoundError(
            f"{what} {path}: bucket {bucket} is not mounted at {mount}; mount it with "
            f"`gcsfuse --implicit-dirs {bucket} {mount}` (tpu/setup.sh does) or set RLHF_JAX_GCS_MOUNT"
        )
    return os.path.join(mount, rest)


def local_paths(cfg, prefix: str = "", mounted: bool = True):
    """cfg with every gs:// string field replaced by its local mount path."""
    if not dataclasses.is_dataclass(cfg):
        return cfg
    changes = {}
    for field in dataclasses.fields(cfg):
        value, key = getattr(cfg, field.name), f"{prefix}{field.name}"
        if isinstance(value, str) and value.startswith("gs://"):
            changes[field.name] = local_path(value, key, mounted)
        elif dataclasses.is_dataclass(value):
            changes[field.name] = local_paths(value, key + ".", mounted)
    return dataclasses.replace(cfg, **changes) if changes else cfg


def check_and_write_config(cfg, workdir: str, overwrite: bool = False) -> None:
    """Refuse a workdir that holds a run of another config (unless `overwrite`), checked by
    every process; process 0 writes config.json (only if it changes)."""
    import jax  # lazy: after the entry's set-up

    from rlhf_jax import mesh as mesh_lib  # lazy: after the entry's set-up
    from rlhf_jax.workdir import retire_summary, write_json  # lazy: after the entry's set-up

    path = os.path.join(workdir, "config.json")
    resolved = config_lib.to_dict(cfg)
    old = None
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        changed = config_lib.differences(old, resolved)
        if changed and not overwrite:
            raise ValueError(
                f"{workdir} holds a run with a different config ({'; '.join(changed[:5])}); "
                "use another --workdir, or --overwrite-config to continue it with the new one"
            )
    mesh_lib.barrier("config checked")
    if jax.process_index() == 0 and old != resolved:
        retire_summary(workdir)  # the old config's summary does not finish the new config's run
        write_json(path, resolved)
    mesh_lib.barrier("config written")


def dry_run(cfg) -> str:
    """What one iteration of cfg's loop holds at full size, traced without allocating."""
    import jax  # lazy: after the entry's set-up

    from rlhf_jax.dry_run import abstract_iteration  # lazy: after the entry's set-up

    out = abstract_iteration(cfg)
    lines = [f"{cfg.name}: train.kind={cfg.train.kind}, {out['params'] / 1e6:,.1f}M parameters"]
    if out["trainable"] != out["params"]:
        lines[0] += f", {out['trainable'] / 1e6:,.2f}M of them trained (LoRA)"
    lines.append(f"train state (parameters + optimiser): {out['state_bytes'] / 2**30:,.2f} GiB before sharding")
    for name in ("samples", "rollout"):
        if name in out:
            shapes = {k: tuple(v.shape) for k, v in vars(out[name]).items() if isinstance(v, jax.ShapeDtypeStruct)}
            lines.append(f"{name}: " + ", ".join(f"{k} {v}" for k, v in shapes.items()))
    lines.append("metrics: " + ", ".join(sorted(out["metrics"])))
    return "\n".join(lines)


def target_report(cfg, name: str) -> str:
    """`--dry-run --target`: each training stage's programs compiled for the slice (`aot.py`)."""
    from rlhf_jax import aot  # lazy: after the entry's set-up
    from rlhf_jax.experiment import (
        ExperimentConfig,  # lazy: after the entry's set-up
    )

    t = aot.target(name)
    devices = aot.target_devices(t)
    named = [f.name for f in dataclasses.fields(cfg) if isinstance(getattr(cfg, f.name), ExperimentConfig)]
    stages = [cfg] if isinstance(cfg, ExperimentConfig) else [
        getattr(cfg, name) for name in getattr(cfg, "trained_stages", named)  # a pipeline: the stages it runs
    ]  # fmt: skip
    least = 1.0
    for stage in stages:
        programs, figures = aot.compile_run(stage, devices)
        print(aot.report(stage, t, programs, figures), flush=True)
        aot.check(t, programs)
        least = min(least, aot.headroom(t, programs))
        print(aot.roofline(stage, devices, t, figures).report(), flush=True)
    note = "" if least >= aot.HEADROOM else f" (under the {aot.HEADROOM:.0%} that allocator and buffers may want)"
    return f"all programs fit; the largest leaves {least:.0%} of the chip's HBM free{note}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf_jax.main", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="experiments/X.py[:variant]")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    parser.add_argument("--overwrite-config", action="store_true")
    parser.add_argument(
        "--restart",
        action="store_true",
        help="start over: the run's outputs (checkpoints, metrics, summary, export) move to <workdir>/previous-<time>/",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="trace one iteration at full size (jax.eval_shape: no parameters, no data), print it and exit",
    )
    parser.add_argument(
        "--target",
        metavar="SLICE",
        help="with --dry-run: compile every program of the run for this TPU slice (v4-8 ... v4-512, v5e-*, v5p-*, "
        "v6e-*) on this machine with libtpu, print per device what each holds, and fail if one does not fit",
    )
    study = parser.add_argument_group("studies (a module whose get_config returns a study.StudyConfig)")
    study.add_argument("--jobs", type=int, default=1, help="run up to N stages and cells at once, each in its process")
    study.add_argument("--cell", metavar="NAME", help="run this cell only (and the shared stages it needs)")
    study.add_argument("--records", metavar="DIR", default="", help="the cells' records (default WORKDIR/records)")
    study.add_argument(
        "--amend",
        metavar="WHY",
        help="run a study whose grid or claims changed after a test record "
        "existed: WHY goes into the report's amendments; stale records move to RECORDS/discarded",
    )
    study.add_argument("--job", help=argparse.SUPPRESS)  # one planned job, in a process of `study.run_jobs`
    parser.add_argument("--debug", action="store_true", help=f"show the traceback of an error (or set {DEBUG_ENV}=1)")
    group = parser.add_argument_group("several processes (see above)")
    group.add_argument("--distributed", action="store_true", help="discover the processes (TPU pod slice)")
    group.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
    group.add_argument("--num-processes", type=int)
    group.add_argument("--process-id", type=int)
    args = parser.parse_args(argv)
    from rlhf_jax import errors  # lazy: after the entry's set-up

    previous = errors.install_signal_handlers()
    debug = args.debug or os.environ.get(DEBUG_ENV, "0") not in ("", "0")
    quiet = errors.QuietLibraryThreads() if not debug else None
    try:
        return run(args)
    except errors.Interrupted as e:
        print(f"stopped by {e}; what was saved is kept; rerun the same command to continue")
        return 0
    except Exception as e:
        cause = errors.describe(e)
        if cause is None or args.debug or os.environ.get(DEBUG_ENV, "0") not in ("", "0"):
            raise
        print(f"error: {cause}", file=sys.stderr)
        return 2
    finally:
        errors.restore_signal_handlers(previous)
        if quiet is not None:
            quiet.remove()  # main() may run inside another program (tests)


def run(args) -> int:
    """main() after parsing: check everything that needs no data, take the workdir, run."""
    from rlhf_jax import mesh as mesh_lib  # lazy: after the entry's set-up
    from rlhf_jax import preflight  # lazy: after the entry's set-up
    from rlhf_jax import (
        workdir as workdir_lib,  # lazy: after the entry's set-up
    )

    mesh_lib.initialize_distributed(args.coordinator, args.num_processes, args.process_id, args.distributed)
    workdir = local_path(args.workdir, mounted=not args.dry_run)
    from rlhf_jax.studies import study  # lazy: after the entry's set-up

    if isinstance(load := load_experiment(args.config), study.StudyConfig):
        return run_study(args, load, workdir)
    if args.jobs != 1 or args.cell or args.records or args.job or args.amend is not None:
        raise ValueError(f"--jobs, --cell, --records and --amend are for studies; {args.config} is a single run or "
                         "a pipeline")  # fmt: skip
    cfg = local_paths(config_lib.override(load, args.set), mounted=not args.dry_run)
    preflight.check(cfg, workdir, dry_run=args.dry_run)
    if args.target and not args.dry_run:
        raise ValueError("--target: only with --dry-run (it compiles for a slice, it does not run there)")
    if args.target:
        print(target_report(cfg, args.target))
        return 0
    if args.dry_run:
        if hasattr(cfg, "wired_stages"):  # a run of its own stages: each one
            print("\n\n".join(dry_run(stage) for stage in cfg.wired_stages(workdir).values()))
        else:
            print(dry_run(getattr(cfg, "rounds", None) and cfg.pipeline or cfg))  # an iterated run: its stages
        return 0

    import jax  # lazy: after the entry's set-up

    main_process = jax.process_index() == 0
    with workdir_lib.Lock(workdir) if main_process else contextlib.nullcontext():
        if args.restart:
            if main_process:
                aside = workdir_lib.move_outputs_aside(workdir)
                print(f"--restart: the previous outputs are in {aside}" if aside else "--restart: nothing to move")
            mesh_lib.barrier("outputs moved aside")
        elif workdir_lib.finished(workdir, config_lib.to_dict(cfg)):
            print(f"finished already; nothing to do: {os.path.join(workdir, 'summary.json')}")
            return 0
        check_and_write_config(cfg, workdir, args.overwrite_config)
        from rlhf_jax import (  # lazy: after the entry's set-up
            loops,
            pipeline,
        )
        from rlhf_jax.studies import (  # lazy: after the entry's set-up
            iterated,
            process_supervision,
            weak_to_strong,
        )

        runs = {  # the runs of several stages; each prints its own table
            pipeline.PipelineConfig: pipeline.run,
            iterated.IteratedConfig: iterated.run,
            process_supervision.ProcessConfig: process_supervision.run,
            weak_to_strong.WeakToStrongConfig: weak_to_strong.run,
        }
        several = tuple(runs)
        run_fn = runs.get(type(cfg), loops.run)
        summary = run_fn(cfg, workdir)
    if main_process and not summary.get("stopped"):
        if not isinstance(cfg, several):
            print("\n".join(digest(summary)))
        print(f"summary: {os.path.join(workdir, 'summary.json')}")
    return 0


def run_study(args, cfg, workdir: str) -> int:
    """A study: what is missing of its grid, then its report (`study.run`)."""
    from rlhf_jax import preflight  # lazy: after the entry's set-up
    from rlhf_jax.studies import study  # lazy: after the entry's set-up

    unused = [flag for flag, given in (("--set", args.set), ("--restart", args.restart), ("--dry-run", args.dry_run),
                                       ("--overwrite-config", args.overwrite_config)) if given]  # fmt: skip
    if unused:
        raise ValueError(f"{', '.join(unused)}: not for a study (its grid is fixed by {args.config}; a changed cell "
                         "runs again by itself, and its old record is ignored)")  # fmt: skip
    if args.jobs < 1:
        raise ValueError(f"--jobs {args.jobs}: must be >= 1")
    preflight.check(cfg, workdir)
    records = local_path(args.records, "--records") if args.records else ""
    if records and os.path.exists(records) and not os.path.isdir(records):
        raise ValueError(f"--records {records}: exists and is not a directory")
    if args.cell:  # an unknown name, or a test cell whose setting is not chosen yet, is refused before any work
        cfg.cell(args.cell, records or os.path.join(workdir, "records"))
    from rlhf_jax import compiles  # lazy: after the entry's set-up

    compiles.persist(os.path.join(workdir, "compile_cache"))  # cells of one grid compile the same programs
    if args.amend is not None and not args.amend.strip():
        raise ValueError("--amend: say why the study changed (the report lists it)")
    out = study.run(cfg, workdir, records, args.jobs, args.cell, args.job, spec=args.config, amend=args.amend)
    if out.get("stopped"):
        print("stopped; what was saved is kept; rerun the same command to continue")
        return 3 if args.job else 0  # a job process that was stopped has not done its job
    return 0


def digest(summary: dict, prefix: str = "") -> list[str]:
    """The summary's held-out figures as `key  value` lines: numbers only, nested keys
    dotted; the training metrics, per-step curves and bookkeeping stay in summary.json."""
    lines = []
    for key, value in summary.items():
        if key in ("train", "curves", "resumed_from", "steps", "plots", "seconds"):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            lines += digest(value, name + ".")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            lines.append(f"{name:<40} {value:.4g}")
    return lines


DEBUG_ENV = "RLHF_JAX_DEBUG"


if __name__ == "__main__":
    from rlhf_jax.hugepages import reexec_with_huge_pages

    reexec_with_huge_pages()  # huge pages for XLA's CPU buffers, before JAX starts (hugepages.py)
    sys.exit(main())
