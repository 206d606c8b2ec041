"""Experiment configs: frozen dataclasses validated in `__post_init__`, overridden from
the command line with `--set a.b=value`, and written to / compared with a workdir.

Values given as text are parsed by the field's declared type (bool, int, float, str,
tuples, optionals); an unknown key gets a did-you-mean, a bad value names the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import math
import operator
import os
import re
import sys
import types
import typing
from typing import Any


def _fields(cfg) -> dict[str, Any]:
    hints = typing.get_type_hints(type(cfg))
    return {f.name: hints[f.name] for f in dataclasses.fields(cfg)}


def all_keys(cfg, prefix: str = "") -> list[str]:
    keys = []
    for name in _fields(cfg):
        value = getattr(cfg, name)
        if dataclasses.is_dataclass(value):
            keys += all_keys(value, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def parse_value(text: str, tp: Any, key: str) -> Any:
    """Text -> a value of type `tp` (the field's annotation), or a ValueError naming `key`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and text.strip().lower() in ("none", "null"):
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return parse_value(text, arg, key)
            except ValueError:
                continue
        raise ValueError(f"--set {key}={text!r}: expected {tp}")
    if origin is tuple:
        (item_tp, *_) = typing.get_args(tp) or (str,)
        items = json.loads(text) if text.strip().startswith("[") else [t for t in text.split(",") if t.strip()]
        return tuple(parse_value(str(i), item_tp, key) for i in items)
    if tp is bool:
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError(f"--set {key}={text!r}: expected a bool (true/false)")
    if tp in (int, float):
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"--set {key}={text!r}: expected {tp.__name__}") from None
        if not math.isfinite(value):
            raise ValueError(f"--set {key}={text!r}: must be a finite number")
        if tp is int:
            if not value.is_integer():
                raise ValueError(f"--set {key}={text!r}: expected int")
            return int(value)
        return value
    if tp is str:
        return text
    raise ValueError(f"--set {key}: fields of type {tp} cannot be set from the command line")


def override(cfg, assignments: list[str]):
    """A copy of `cfg` with each "a.b=value" applied. Each section is rebuilt once with all
    of its assignments, so that its checks see them together (`--set rl.k=8 --set
    rl.rollout_batch=64` in either order); a failed check names the keys set in it."""
    changes: dict = {}
    for assignment in assignments:
        if "=" not in assignment:
            raise ValueError(f"--set {assignment!r}: expected key=value")
        key, text = assignment.split("=", 1)
        key = key.strip()
        path, node, tree = key.split("."), cfg, changes
        for depth, name in enumerate(path):
            fields = _fields(node)
            if name not in fields:
                close = difflib.get_close_matches(key, all_keys(cfg), n=3, cutoff=0.5)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ValueError(f"--set {key}: unknown key{hint}")
            value = getattr(node, name)
            if depth < len(path) - 1:
                if not dataclasses.is_dataclass(value):
                    raise ValueError(f"--set {key}: {name} is not a section")
                node, tree = value, tree.setdefault(name, {})
            elif dataclasses.is_dataclass(value):
                raise ValueError(f"--set {key}: is a section; set one of its fields")
            else:
                tree[name] = (parse_value(text, fields[name], key), f"{key}={text}")
    return _apply(cfg, changes)


def _apply(node, changes: dict):
    new = {name: _apply(getattr(node, name), change) if isinstance(change, dict) else change[0]
           for name, change in changes.items()}  # fmt: skip
    try:
        return dataclasses.replace(node, **new)
    except ValueError as e:  # a section's own check: name the --set keys that went into it
        if str(e).startswith("--set "):
            raise
        assigned, message = _assignments(changes), str(e)
        for key in (a.split("=", 1)[0] for a in assigned):  # "seed=-1: must be ..." says the key once
            for name in (key, key.rsplit(".", 1)[-1]):
                if message.startswith(f"{name}=") and ": " in message:
                    message = message.split(": ", 1)[1]
        raise ValueError(f"--set {', '.join(assigned)}: {message}") from None


def _assignments(changes: dict) -> list[str]:
    out = []
    for change in changes.values():
        out += _assignments(change) if isinstance(change, dict) else [change[1]]
    return out


_BOUND = re.compile(r"^(>=|>|<=|<)\s*(-?[0-9.e+-]+)$")


def check_numbers(cfg, bounds: dict[str, str] | None = None, prefix: str = "") -> None:
    """Refuse, naming the field, a number that is not finite anywhere in cfg (its sections
    included) and one outside its bound: bounds maps a field of cfg itself to ">= 1",
    "> 0", ... (every item of a tuple field is checked)."""
    for name, value in _fields_values(cfg):
        key = prefix + name
        if dataclasses.is_dataclass(value):
            check_numbers(value, None, key + ".")
            continue
        items = value if isinstance(value, tuple) else (value,)
        for x in items:
            if isinstance(x, float) and not math.isfinite(x):
                raise ValueError(f"{key}={x}: must be a finite number")
        rule = (bounds or {}).get(name)
        if rule is None:
            continue
        op, limit = _BOUND.match(rule).groups()
        for x in items:
            if isinstance(x, (int, float)) and not _OPS[op](x, float(limit)):
                raise ValueError(f"{key}={x}: must be {op} {limit}")


_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def _fields_values(cfg):
    return [(f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg)]


def to_dict(cfg) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def non_default(cfg) -> dict[str, Any]:
    """The config as a dict without the fields at their defaults (nested configs likewise):
    what identifies a run in a way that adding an option, off by default, leaves alone."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = non_default(value)
            continue
        if isinstance(value, (tuple, list)) and any(dataclasses.is_dataclass(v) for v in value):
            out[f.name] = [non_default(v) if dataclasses.is_dataclass(v) else v for v in value]  # e.g. model sizes
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if default is dataclasses.MISSING or value != default:
            out[f.name] = json.loads(json.dumps(value))
    return out


def differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Keys whose values differ between two config dicts, dotted."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return out


def load_experiment(spec: str):
    """The config of "path/to/module.py[:variant]"."""
    path, _, variant = spec.partition(":")
    if not os.path.exists(path):
        raise FileNotFoundError(f"--config {spec}: no file {path}")
    package_root = os.path.dirname(os.path.abspath(path))
    while os.path.exists(os.path.join(package_root, "__init__.py")):
        package_root = os.path.dirname(package_root)
    inside_package = package_root != os.path.dirname(os.path.abspath(path))
    if inside_package and package_root not in sys.path:  # a module may import its package's: from experiments.x import
        sys.path.insert(0, package_root)
    module_spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"--config {spec}: {path} defines no get_config(variant)")
    return module.get_config(variant or None)
