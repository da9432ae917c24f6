"""Load a YAML config, apply `KEY=VALUE` overrides and validate everything once against the schema.

Validation is strict on purpose: an unknown or mistyped key raises :class:`ConfigError` naming the full dotted
key and the closest valid one, because a silently ignored `optim.lr_haed=1e-4` costs a user a GPU day.
Values are checked against the dataclass type hints (ints, floats, bools, strings, lists, maps, literals).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Union

import yaml

from spft.config.schema import UNCERTAIN_POLICIES, SpftConfig, not_applicable, validate
from spft.errors import ConfigError, MissingFileError

__all__ = ["UNCERTAIN_POLICIES", "all_keys", "dump_yaml", "load_config", "parse_override", "to_dict", "validate"]


def all_keys(cls: type = SpftConfig, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, sections included (``data``, ``data.phantom``, ``data.phantom.n_images``)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        keys.append(prefix + f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            keys += all_keys(hints[f.name], f"{prefix}{f.name}.")
    return keys


def _suggest(key: str, valid: list[str]) -> str:
    """The closest valid key: the same name at another level first (``data.n_images`` -> ``data.phantom.n_images``),
    then a near spelling at this level, then a near spelling anywhere."""
    everywhere = all_keys()
    leaf = key.rsplit(".", 1)[-1]
    same_name = [k for k in everywhere if k.rsplit(".", 1)[-1] == leaf and k != key]
    close = (difflib.get_close_matches(key, same_name, n=1, cutoff=0.0) if same_name else []) \
        or difflib.get_close_matches(key, valid, n=1, cutoff=0.5) \
        or difflib.get_close_matches(key, everywhere, n=1, cutoff=0.75)
    if close:
        return f" — did you mean '{close[0]}'?"
    return f" (valid keys here: {', '.join(sorted(valid))})"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"'{key}': {value!r} does not match {_type_name(tp)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"'{key}': {value!r} is not one of {', '.join(repr(a) for a in args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}': expected a mapping of {_section_keys(tp)}, got {value!r}")
        return _build(tp, value, key + ".")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{key}': expected a list, got {value!r}")
        return [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}': expected a mapping, got {value!r}")
        return {str(k): _convert(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{key}': expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{key}': expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{key}': expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"'{key}': expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"'{key}': unsupported type {tp}")  # pragma: no cover - schema bug


def _section_keys(cls: type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls))


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            full = [prefix + n for n in names]
            raise ConfigError(f"unknown config key '{prefix}{key}'" + _suggest(f"{prefix}{key}", full))
        kwargs[key] = _convert(value, hints[key], prefix + key)
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    """Set ``a.b.c=value`` in a nested dict, checking each level exists in the schema."""
    parts = dotted.split(".")
    cls: Any = SpftConfig
    node = tree
    for i, part in enumerate(parts):
        here = ".".join(parts[: i + 1])
        if cls is not None and dataclasses.is_dataclass(cls):
            names = [f.name for f in dataclasses.fields(cls)]
            if part not in names:
                valid = [".".join(parts[:i] + [n]) for n in names]
                raise ConfigError(f"unknown config key '{here}'" + _suggest(here, valid))
            hint = typing.get_type_hints(cls)[part]
            inner = [a for a in typing.get_args(hint) if a is not type(None)]
            cls = hint if dataclasses.is_dataclass(hint) else (inner[0] if len(inner) == 1 else hint)
        else:
            cls = None  # free-form mapping (e.g. model.config, recipe.class_weights.heuristic)
        if i == len(parts) - 1:
            node[part] = value
        else:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``KEY=VALUE``; the value is parsed as YAML (``1e-4`` → float, ``[a, b]`` → list, ``null`` → None).

    >>> parse_override("optim.lr_head=1e-4")
    ('optim.lr_head', 0.0001)
    """
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form KEY=VALUE (e.g. optim.lr_head=1e-4)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # YAML reads 1e-4 as a string (no dot); users mean a number.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value.lower() for c in "e.") and value.strip() else value
        except ValueError:
            pass
    return key, value


def _fix_yaml_floats(node: Any) -> Any:
    """PyYAML (YAML 1.1) reads ``3e-6`` as a string; convert such scientific-notation strings back to floats."""
    if isinstance(node, dict):
        return {k: _fix_yaml_floats(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_fix_yaml_floats(v) for v in node]
    if isinstance(node, str):
        try:
            if "e" in node.lower() and node.strip()[0] in "+-.0123456789":
                return float(node)
        except ValueError:
            return node
    return node


def bundled_configs() -> Path:
    """The experiment configs shipped inside the package (``configs/`` in a checkout links here)."""
    return Path(__file__).resolve().parents[1] / "configs"


def resolve_config_path(path: str | Path) -> Path:
    """``path`` when it is a file; else the bundled config of that name (``configs/chestxray14.yaml``,
    ``chestxray14.yaml`` or ``chestxray14``), so the README's command lines work from an installed wheel in any
    directory. A name that is neither is a :class:`MissingFileError` listing the bundled configs."""
    path = Path(path)
    if path.is_file():
        return path
    name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    bundled = bundled_configs() / name
    if bundled.is_file() and (len(path.parts) == 1 or path.parent.name == "configs"):
        import logging

        logging.getLogger(__name__).info("using spft's bundled %s (no file %s here)", bundled, path)
        return bundled
    known = ", ".join(sorted(p.stem for p in bundled_configs().glob("*.yaml")))
    raise MissingFileError(f"config file not found: {path} (bundled configs, usable by name: {known})")


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                base: dict | None = None) -> SpftConfig:
    """Read ``path`` (YAML), apply ``KEY=VALUE`` overrides and return a validated :class:`SpftConfig`.

    Args:
        path: a YAML file; ``None`` starts from the defaults (or ``base``).
        overrides: strings such as ``"optim.lr_head=1e-4"``; applied in order after the file.
        base: an already-resolved config mapping to start from instead of a file (used by ``--resume``).

    Raises:
        ConfigError: naming the unknown key (and the closest valid one) or the key whose value has the wrong type.
        FileNotFoundError: when ``path`` does not exist.
    """
    tree: dict = {}
    if base is not None:
        tree = _fix_yaml_floats(dict(base))
    if path is not None:
        path = resolve_config_path(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
        tree = _fix_yaml_floats(loaded)
        tree.setdefault("name", path.stem)
    explicit_tree: dict = tree if path is not None else {}
    explicit: set[str] = set()
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
        explicit.add(key)
    try:
        cfg = _build(SpftConfig, tree)
        explicit |= _leaf_keys(explicit_tree, SpftConfig)
        validate(cfg, explicit)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path is not None else str(exc)) from None
    return cfg


def _leaf_keys(tree: dict, cls: type, prefix: str = "") -> set[str]:
    """The dotted keys a (valid) config mapping sets: leaves of sections; a free-form mapping counts as one key."""
    keys: set[str] = set()
    hints = typing.get_type_hints(cls)
    for key, value in tree.items():
        hint = hints.get(key)
        if hint is not None and dataclasses.is_dataclass(hint) and isinstance(value, dict):
            keys |= _leaf_keys(value, hint, f"{prefix}{key}.")
        else:
            keys.add(prefix + key)
    return keys


def to_dict(cfg: SpftConfig, full: bool = False) -> dict:
    """The resolved config as plain data (what ``config.yaml`` in a run directory holds): only the keys that apply to
    ``cfg.task`` (:func:`spft.config.schema.not_applicable_table`), or every key with ``full``."""
    tree = dataclasses.asdict(cfg)
    return tree if full else _prune(tree, cfg.task, "")


def _prune(node: dict, task: str, prefix: str) -> dict:
    out = {}
    for key, value in node.items():
        dotted = prefix + key
        if not_applicable(task, dotted) is not None:
            continue
        out[key] = _prune(value, task, dotted + ".") if isinstance(value, dict) and dotted in _SECTIONS else value
    return out


_SECTIONS = {k.rsplit(".", 1)[0] for k in all_keys() if "." in k}  # data, data.phantom, recipe.ema, ...


def dump_yaml(cfg: SpftConfig) -> str:
    """The resolved config as YAML (``config.yaml`` of a run, ``spft config``): only what applies to its task."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
