"""Stage configs: dataclasses in, fully resolved YAML out.

Every stage declares one ``@dataclass`` of its settings (fields made with :func:`arg`
so each carries a help string) and a ``PRESETS`` dict naming overrides. A config is
resolved in layers, each on top of the last:

    dataclass defaults -> preset -> YAML file -> ``--dotted.key value`` overrides

Unknown keys and values of the wrong type are refused with a message that names the
key (and the file, for YAML), so a typo never silently falls back to a default.

Settings every stage shares live in sections (``run.seed``, ``optim.lr``, ``model.tokenizer``;
``alignlab/sections.py``). A key that moved into a section keeps working under its old flat
name for one release: :func:`apply` maps it to its new place and warns (``FutureWarning``).
A config class lists its moves in ``RENAMED`` (old flat key -> dotted key); keys of a section
whose class sets ``FLAT_ALIASES`` (the shared ones) are mapped without being listed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from alignlab.errors import ConfigError


def arg(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = None) -> Any:
    """A dataclass field with a help string (shown by ``alignlab <stage> --help``)."""
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


# --------------------------------------------------------------------------- types


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (converting CLI strings)."""
    base, optional = _strip_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: '{key}' may not be null (expected {_type_name(base)})")
    if isinstance(value, str) and optional and value.lower() in ("none", "null", "~"):
        return None
    origin = typing.get_origin(base)
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{where}: '{key}' expects true/false, got {value!r}")
    if base is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: '{key}' expects an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(float(value)) if "e" in value.lower() and float(value).is_integer() else int(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: '{key}' expects an integer, got {value!r}")
    if base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: '{key}' expects a number, got {value!r}")
    if base is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: '{key}' expects a string, got {value!r}")
    if origin in (list, tuple) or base in (list, tuple):
        (inner,) = typing.get_args(base)[:1] or (Any,)
        if isinstance(value, str):
            value = (
                _yaml_value(value, key, where) if value.strip().startswith("[") else [v for v in value.split(",") if v]
            )
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: '{key}' expects a list, got {value!r}")
        return [_coerce(v, inner, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict or base is dict:
        if isinstance(value, str):
            value = _yaml_value(value, key, where)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{key}' expects a mapping, got {value!r}")
        return dict(value)
    if typing.get_origin(base) is typing.Literal:
        choices = typing.get_args(base)
        if value not in choices:
            raise ConfigError(f"{where}: '{key}' must be one of {list(choices)}, got {value!r}")
        return value
    return value


def _yaml_value(text: str, key: str, where: str) -> Any:
    """A list or mapping given as YAML on the command line; safe_load, so a ``!!python/...`` tag is refused."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: '{key}' is not valid YAML: {getattr(e, 'problem', None) or e}") from None


def _type_name(tp: Any) -> str:
    base, optional = _strip_optional(tp)
    name = getattr(base, "__name__", None) or str(base).replace("typing.", "")
    return f"{name} | None" if optional else name


# ------------------------------------------------------------------ apply & resolve


def renamed_keys(cls: type) -> dict[str, str]:
    """Old flat key -> its dotted place now, for a config class (see the module notes)."""
    own = {f.name for f in dataclasses.fields(cls)}
    moved: dict[str, str] = {}
    defaults = cls()
    for f in dataclasses.fields(cls):
        section = getattr(defaults, f.name)
        if dataclasses.is_dataclass(section) and getattr(section, "FLAT_ALIASES", False):
            for g in dataclasses.fields(section):
                moved.setdefault(g.name, f"{f.name}.{g.name}")
    moved.update(getattr(cls, "RENAMED", {}))
    return {old: new for old, new in moved.items() if old not in own}


def unalias(cls: type, updates: Mapping[str, Any], where: str, warn: bool = True) -> dict[str, Any]:
    """``updates`` with every old flat key moved to its section (a FutureWarning per key moved)."""
    moved = renamed_keys(cls)
    out: dict[str, Any] = {}
    aliased: list[tuple[str, Any]] = []
    for key, value in updates.items():
        if key in moved:
            aliased.append((key, value))
        else:
            out[key] = dict(value) if isinstance(value, Mapping) else value
    for old in [k for k in moved if "." in k]:  # a key that moved out of one section into another
        section, _, leaf = old.rpartition(".")
        node = out.get(section)
        if isinstance(node, dict) and leaf in node:
            aliased.append((old, node.pop(leaf)))
    for key, value in aliased:
        new = moved[key]
        if warn:
            warnings.warn(
                f"{where}: '{key}' is now '{new}'; the old key works in this release only", FutureWarning, stacklevel=3
            )
        node = out
        *sections, leaf = new.split(".")
        for part in sections:
            node = node.setdefault(part, {})
        if leaf in node and node[leaf] != value:
            raise ConfigError(f"{where}: '{key}' and '{new}' both given, with different values")
        node[leaf] = value
    return out


def apply(cfg: Any, updates: Mapping[str, Any], where: str, prefix: str = "") -> Any:
    """Return a copy of dataclass ``cfg`` with nested ``updates`` applied and checked."""
    if not prefix:
        updates = unalias(type(cfg), updates, where)
    types_ = _field_types(type(cfg))
    changes = {}
    for key, value in updates.items():
        full = f"{prefix}{key}"
        if key not in types_:
            close = [k for k in types_ if k.replace("_", "") == str(key).replace("_", "").replace("-", "")]
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(
                f"{where}: unknown key '{full}'{hint}; known keys: {', '.join(prefix + k for k in types_)}"
            )
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: '{full}' is a section; give it as a mapping of its keys")
            changes[key] = apply(current, value, where, prefix=f"{full}.")
        else:
            changes[key] = _coerce(value, types_[key], full, where)
    return dataclasses.replace(cfg, **changes)


def check_output_name(name: str, key: str) -> str:
    """``name`` if it is a plain file or folder name; a config or world file may name an output inside the
    output folder (a cluster's sub-folder) but not point it elsewhere (``../x``, ``/x``, ``a/b``)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or Path(name).is_absolute():
        raise ConfigError(f"{key}: {name!r} is not a plain name; outputs are written only inside the output folder")
    return name


def dotted_to_nested(pairs: Mapping[str, Any]) -> dict[str, Any]:
    """{'optim.lr': 1e-3} -> {'optim': {'lr': 1e-3}}."""
    nested: dict[str, Any] = {}
    for dotted, value in pairs.items():
        node = nested
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"command line: '{dotted}' conflicts with another override")
        node[parts[-1]] = value
    return nested


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    return data


def resolve(
    cls: type,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    preset: str | None = None,
    yaml_path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Any:
    """Build a config: defaults, then preset, then YAML, then dotted CLI overrides."""
    cfg = cls()
    presets = presets or {}
    if preset is not None:
        if preset not in presets:
            raise ConfigError(f"unknown preset '{preset}'; choose from: {', '.join(presets)}")
        cfg = apply(cfg, presets[preset], f"preset '{preset}'")
    if yaml_path is not None:
        data = load_yaml(yaml_path)
        cfg = apply(cfg, data, str(yaml_path))
    if overrides:
        cfg = apply(cfg, dotted_to_nested(overrides), "command line")
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def help_lines(cls: type, prefix: str = "", defaults: Any = None) -> list[str]:
    """One line per key: dotted name, type, default and help; each section after the stage's own
    keys, under a header with the section's help."""
    lines, sections = [], []
    defaults = cls() if defaults is None else defaults
    types_ = _field_types(cls)
    for f in dataclasses.fields(cls):
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            header = f"\n{prefix}{f.name}: {f.metadata.get('help', '')}"
            sections += [header, *help_lines(type(value), prefix=f"{prefix}{f.name}.", defaults=value)]
            continue
        help_ = f.metadata.get("help", "")
        lines.append(f"  --{prefix}{f.name} ({_type_name(types_[f.name])}, default: {value!r})\n      {help_}")
    return lines + sections


def parse_overrides(args: Sequence[str]) -> tuple[dict, str | None, str | None, bool]:
    """Split argv into (dotted overrides, preset, config path, wants_help)."""
    overrides: dict[str, str] = {}
    preset = config = None
    wants_help = False
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-h", "--help"):
            wants_help = True
            i += 1
            continue
        if not a.startswith("--"):
            raise ConfigError(f"command line: unexpected argument {a!r} (keys are given as --key value)")
        key, eq, value = a[2:].partition("=")
        if not eq:
            # A bare flag (`--resume`) means true; otherwise the next token is the value.
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value = args[i + 1]
                i += 1
            else:
                value = "true"
        i += 1
        key = key.replace("-", "_")
        if key == "preset":
            preset = value
        elif key == "config":
            config = value
        else:
            overrides[key] = value
    return overrides, preset, config, wants_help
