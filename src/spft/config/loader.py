"""Load a YAML config, apply `KEY=VALUE` overrides and validate everything once against the schema.

Validation is strict on purpose: an unknown or mistyped key raises :class:`ConfigError` naming the full dotted
key and the closest valid one, because a silently ignored `optim.lr_haed=1e-4` costs a user a GPU day.
Values are checked against the dataclass type hints (ints, floats, bools, strings, lists, maps, literals).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import logging
import types
import typing
from pathlib import Path
from typing import Any, Union

import yaml

from spft.config.schema import VARIABLE_SECTIONS, SpftConfig, value_at
from spft.errors import ConfigError, MissingFileError

__all__ = ["all_keys", "dump_yaml", "load_config", "parse_override", "schema_for", "to_dict", "validate"]

log = logging.getLogger(__name__)


def schema_for(task: str, data_name: str | None = None) -> dict[str, type | None]:
    """``{section: class}`` of a run of ``task`` on ``data.name`` (default: the task's first dataset): the fixed
    sections of :class:`SpftConfig`, the classes the task declares (:attr:`spft.tasks.base.Task.sections`; a task
    section it does not declare is ``None``) and the dataset's class. An unknown task or a dataset the task does not
    train on is one line naming the ones there are."""
    from spft.tasks.registry import get_task

    t = get_task(task)
    hints = typing.get_type_hints(SpftConfig)
    schema: dict[str, type | None] = {f.name: hints[f.name] for f in dataclasses.fields(SpftConfig)}
    for section in VARIABLE_SECTIONS:
        schema[section] = None
    schema.update(t.sections)
    if not t.datasets:  # a task that reads no dataset keys but the shared ones
        from spft.config.datasets import DataConfig

        schema["data"] = DataConfig
        return schema
    name = next(iter(t.datasets)) if data_name is None else data_name
    if not isinstance(name, str):
        raise ConfigError(f"'data.name': expected a dataset name, got {name!r}")
    if name not in t.datasets:
        from spft.tasks.registry import TASKS

        known = list(dict.fromkeys(n for other in TASKS for n in get_task(other).datasets))
        if name not in known:
            raise ConfigError(f"'data.name': unknown dataset {name!r} (available for {task}: "
                              f"{', '.join(t.datasets)})")
        raise ConfigError(f"'data.name': {name!r} is not a {task} dataset (available for {task}: "
                          f"{', '.join(t.datasets)})")
    schema["data"] = t.datasets[name]
    return schema


_SCHEMAS: dict[tuple, list] = {}


def _schemas() -> list[tuple[str, str, dict]]:
    """(task, data.name, schema) for every registered task and each of its datasets (cached per set of tasks)."""
    from spft.tasks.registry import TASKS, get_task

    key = tuple((name, id(entry)) for name, entry in TASKS.items())
    if key not in _SCHEMAS:
        _SCHEMAS[key] = [(task, name, schema_for(task, name)) for task in TASKS for name in get_task(task).datasets]
    return _SCHEMAS[key]


def _section_leaves(cls: type, prefix: str) -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        keys.append(prefix + f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            keys += _section_leaves(hints[f.name], f"{prefix}{f.name}.")
    return keys


def all_keys(schema: dict | None = None) -> list[str]:
    """Every dotted key, sections included (``data``, ``data.phantom``, ``data.phantom.n_images``): of one schema
    (:func:`schema_for`), or of every task and dataset (first occurrence order)."""
    if schema is not None:
        keys = []
        for section, cls in schema.items():
            if cls is None:
                continue
            keys.append(section)
            if dataclasses.is_dataclass(cls):
                keys += _section_leaves(cls, section + ".")
        return keys
    seen: dict[str, None] = {}
    for _, _, sch in _schemas():
        seen.update(dict.fromkeys(all_keys(sch)))
    return list(seen)


def owners(dotted: str) -> tuple[list[str], list[str]]:
    """(tasks, datasets) whose schema has the dotted key: who reads a key another run refuses."""
    tasks, datasets = [], []
    for task, name, sch in _schemas():
        if dotted in all_keys(sch):
            if dotted.split(".")[0] == "data":
                if name not in datasets:
                    datasets.append(name)
            elif task not in tasks:
                tasks.append(task)
    return tasks, datasets


@dataclasses.dataclass
class _Context:
    """What an unknown-key message needs: the run's task, dataset and schema, and whether the mapping is a run's
    own config.yaml (whose keys of other tasks or datasets at their defaults were written by an older spft)."""

    task: str
    data_name: str
    schema: dict
    legacy: bool = False
    dropped: list = dataclasses.field(default_factory=list)


def _suggest(key: str, valid: list[str], ctx: _Context) -> str:
    """The closest valid key: the same name at another level first (``data.n_images`` -> ``data.phantom.n_images``),
    then a near spelling at this level, then a near spelling anywhere in the run's schema."""
    everywhere = all_keys(ctx.schema)
    leaf = key.rsplit(".", 1)[-1]
    same_name = [k for k in everywhere if k.rsplit(".", 1)[-1] == leaf and k != key]
    close = (difflib.get_close_matches(key, same_name, n=1, cutoff=0.0) if same_name else []) \
        or difflib.get_close_matches(key, valid, n=1, cutoff=0.5) \
        or difflib.get_close_matches(key, everywhere, n=1, cutoff=0.75)
    if close:
        return f" — did you mean '{close[0]}'?"
    return f" (valid keys here: {', '.join(sorted(valid))})"


def _unknown(key: str, valid: list[str], ctx: _Context) -> ConfigError:
    """The one line for a key the run's schema lacks: whose key it is (another task's, another dataset's), else the
    closest valid spelling."""
    from spft.tasks.registry import get_task

    tasks, datasets = owners(key)
    if datasets:
        return ConfigError(f"'{key}': not a key of data.name={ctx.data_name}; it belongs to data.name "
                           f"{', '.join(datasets)} — remove it (the keys of each dataset: spft config --keys "
                           f"{ctx.task})")
    if tasks:
        section, _, rest = key.partition(".")
        engine = get_task(ctx.task).engine
        where = f"{ctx.task} ({engine} engine)" if engine else ctx.task
        what = (f"its {section} section has no '{rest}'" if ctx.schema.get(section) is not None and rest
                else f"'{section}' is a section of task {', '.join(tasks)} only")
        return ConfigError(f"'{key}': not available for {where}: {what}; task {', '.join(tasks)} read(s) it — "
                           "remove it from the config")
    return ConfigError(f"unknown config key '{key}'" + _suggest(key, valid, ctx))


def _leaves(dotted: str, value: Any):
    """(dotted key, value) of each leaf below ``dotted`` when it names a section of some schema, else itself."""
    if isinstance(value, dict) and value and dotted in _section_names():
        for k, v in value.items():
            yield from _leaves(f"{dotted}.{k}", v)
    else:
        yield dotted, value


_SECTION_NAMES: set[str] | None = None


def _section_names() -> set[str]:
    """Every dotted key that is a section (a dataclass) in some task's or dataset's schema."""
    global _SECTION_NAMES
    if _SECTION_NAMES is None:
        keys = all_keys()
        _SECTION_NAMES = {k.rsplit(".", 1)[0] for k in keys if "." in k}
    return _SECTION_NAMES


def _is_default_elsewhere(key: str, value: Any) -> bool:
    """Whether ``value`` is the default of ``key`` in some task's or dataset's schema (an older spft wrote every key,
    and until the config was split per engine and dataset, the keys of other datasets too)."""
    for _, _, sch in _schemas():
        section, _, rest = key.partition(".")
        cls = sch.get(section)
        if cls is None or not rest:
            continue
        node: Any = cls()
        try:
            for part in rest.split("."):
                node = getattr(node, part)
        except AttributeError:
            continue
        node = dataclasses.asdict(node) if dataclasses.is_dataclass(node) else node
        if node == value:
            return True
    return False


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str, ctx: _Context | None = None) -> Any:
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
                return _convert(value, arg, key, ctx)
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
        return _build(tp, value, key + ".", ctx)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{key}': expected a list, got {value!r}")
        return [_convert(v, args[0], f"{key}[{i}]", ctx) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}': expected a mapping, got {value!r}")
        return {str(k): _convert(v, args[1], f"{key}.{k}", ctx) for k, v in value.items()}
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


def _build(cls: type, data: dict, prefix: str = "", ctx: _Context | None = None, hints: dict | None = None) -> Any:
    hints = typing.get_type_hints(cls) if hints is None else hints
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = prefix + key
        if key not in names or hints.get(key, 1) is None:
            valid = [prefix + n for n in names if hints.get(n, 1) is not None]
            if ctx is None:
                raise ConfigError(f"unknown config key '{dotted}'" + f" (valid keys here: {', '.join(valid)})")
            leaves = list(_leaves(dotted, value))
            offending = [k for k, v in leaves if not _is_default_elsewhere(k, v)] if ctx.legacy else \
                [k for k, _ in leaves]
            if not offending:  # a run's config.yaml written by an older spft: another task's / dataset's defaults
                ctx.dropped.append(dotted)
                continue
            raise _unknown(offending[0], valid, ctx)
        kwargs[key] = _convert(value, hints[key], dotted, ctx)
    for key, tp in hints.items():  # a section of this run whose class differs from the dataclass default
        if key not in kwargs and key in names and tp is not None and dataclasses.is_dataclass(tp):
            kwargs[key] = tp()
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    """Set ``a.b.c=value`` in a nested dict (the key is checked against the run's schema when the config is built)."""
    parts = dotted.split(".")
    if not all(parts):
        raise ConfigError(f"override key '{dotted}': empty part")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


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
    if raw.strip() in ("|", ">"):  # YAML block-scalar indicators, read as "": a separator (data.label_separator=|)
        value = raw.strip()
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
    explicit_tree: dict = copy.deepcopy(tree) if path is not None else {}
    explicit: set[str] = set()
    parsed = [parse_override(text) for text in overrides]
    _switch_dataset(tree, explicit_tree, parsed)
    for key, value in parsed:
        _set_dotted(tree, key, value)
        explicit.add(key)
    for line in _renamed(tree):
        log.warning("%s%s — update the config", f"{path}: " if path is not None else "", line)
    explicit = {_NEW_NAMES.get(k, k) for k in explicit}
    _renamed(explicit_tree)
    try:
        cfg = build_config(tree, legacy=base is not None and path is None, explicit=explicit,
                           explicit_tree=explicit_tree)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path is not None else str(exc)) from None
    return cfg


def _switch_dataset(tree: dict, file_tree: dict, overrides: list[tuple[str, Any]]) -> None:
    """``data.name=X`` given as an override on a config file of another dataset (the demo config on your own CSV):
    the file's ``data`` keys that dataset X does not have are dropped, with one line naming them (overrides are
    kept and checked as usual)."""
    from spft.tasks.registry import TASKS, get_task

    new = [v for k, v in overrides if k == "data.name"]
    task = next((v for k, v in overrides if k == "task"), tree.get("task", "classification"))
    data = tree.get("data")
    if not new or not isinstance(data, dict) or not isinstance(new[-1], str) or task not in TASKS \
            or new[-1] not in get_task(task).datasets or data.get("name") == new[-1]:
        return
    own = {f.name for f in dataclasses.fields(get_task(task).datasets[new[-1]])}
    dropped = [k for k in data if k not in own]
    for k in dropped:
        del data[k]
        (file_tree.get("data") or {}).pop(k, None)
    if dropped:
        log.info("data.name=%s: the config's %s (keys of data.name=%s) dropped", new[-1],
                 ", ".join(f"data.{k}" for k in dropped), tree.get("data", {}).get("name") or "?")


_NEW_NAMES = {"segmentation.lr_decoder": "optim.lr_head", "detection.backbone_lr_ratio": "optim.lr_encoder"}


def _renamed(tree: dict) -> list[str]:
    """Keys that were renamed to one name per concept, moved in ``tree`` to their new place (one line each, returned):
    ``segmentation.lr_decoder`` is ``optim.lr_head`` (the mask decoder is segmentation's head);
    ``detection.backbone_lr_ratio: r`` is ``optim.lr_encoder = r x optim.lr_head`` (the backbone is detection's
    encoder). A config file, an override or an old run's config.yaml may hold them."""
    lines = []
    optim = tree.get("optim") if isinstance(tree.get("optim"), dict) else {}
    seg, det = tree.get("segmentation"), tree.get("detection")
    if isinstance(seg, dict) and "lr_decoder" in seg:
        value = seg.pop("lr_decoder")
        if value is not None:
            tree["optim"] = optim = {**optim, "lr_head": value}
            lines.append(f"'segmentation.lr_decoder' is now 'optim.lr_head' (the mask decoder is segmentation's "
                         f"head): optim.lr_head={value}")
    if isinstance(det, dict) and "backbone_lr_ratio" in det:
        ratio = det.pop("backbone_lr_ratio")
        if ratio is not None:
            from spft.config.schema import OptimConfig

            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio < 0:
                raise ConfigError(f"'detection.backbone_lr_ratio': expected a number >= 0, got {ratio!r}")
            head = _fix_yaml_floats(optim.get("lr_head", OptimConfig.lr_head))
            tree["optim"] = optim = {**optim, "lr_encoder": float(ratio) * float(head)}
            lines.append(f"'detection.backbone_lr_ratio' is now 'optim.lr_encoder' (the backbone is detection's "
                         f"encoder): optim.lr_encoder = {ratio} x optim.lr_head = {optim['lr_encoder']:.3g}")
    return lines


def build_config(tree: dict, legacy: bool = False, explicit: set[str] | frozenset[str] = frozenset(),
                 explicit_tree: dict | None = None) -> SpftConfig:
    """The validated :class:`SpftConfig` of a config mapping: each section built with the class the run's task and
    dataset take (:func:`schema_for`). ``legacy``: the mapping is a run's own config.yaml, where keys of other tasks
    or datasets at their defaults (an older spft wrote them) are dropped with one line saying so."""
    task = tree.get("task", "classification")
    if not isinstance(task, str):
        raise ConfigError(f"'task': expected a task name, got {task!r}")
    data = tree.get("data")
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"'data': expected a mapping of dataset keys, got {data!r}")
    from spft.tasks.registry import get_task

    data_name = (data or {}).get("name") or next(iter(get_task(task).datasets), "")
    schema = schema_for(task, data_name)
    ctx = _Context(task, data_name, schema, legacy=legacy)
    cfg = _build(SpftConfig, tree, "", ctx, hints=schema)
    if ctx.data_name and cfg.data.name != ctx.data_name:
        cfg.data.name = ctx.data_name
    if ctx.dropped:
        log.info("config.yaml of an older spft: %d key(s) of other tasks or datasets, all at their defaults, "
                 "no longer apply and were dropped (%s)", len(ctx.dropped), ", ".join(ctx.dropped))
    explicit = set(explicit) | _leaf_keys(explicit_tree or {}, schema)
    validate(cfg, explicit)
    return cfg


def _leaf_keys(tree: dict, hints: dict, prefix: str = "") -> set[str]:
    """The dotted keys a (valid) config mapping sets: leaves of sections; a free-form mapping counts as one key."""
    keys: set[str] = set()
    for key, value in tree.items():
        hint = hints.get(key)
        if hint is not None and dataclasses.is_dataclass(hint) and isinstance(value, dict):
            keys |= _leaf_keys(value, typing.get_type_hints(hint), f"{prefix}{key}.")
        else:
            keys.add(prefix + key)
    return keys


def to_dict(cfg: SpftConfig) -> dict:
    """The resolved config as plain data (what ``config.yaml`` in a run directory holds): every key of the run's
    schema (its task's sections, its dataset's keys) and nothing else."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if v is not None or k not in VARIABLE_SECTIONS}


def dump_yaml(cfg: SpftConfig) -> str:
    """The resolved config as YAML (``config.yaml`` of a run, ``spft config``)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


# ---- every cross-field check, run once when a config is built -----------------------------------------------------

def _default(cfg: SpftConfig, key: str) -> Any:
    """The default of ``key`` in ``cfg``'s own schema."""
    section, _, rest = key.partition(".")
    node: Any = SpftConfig() if not rest else type(getattr(cfg, section))()
    for part in (rest.split(".") if rest else [section]):
        node = getattr(node, part)
    return dataclasses.asdict(node) if dataclasses.is_dataclass(node) else node


def check_applicable(cfg: SpftConfig, explicit: set[str] | frozenset[str] = frozenset()) -> None:
    """Refuse a key of a shared section that ``cfg.task``'s engine cannot honour (:attr:`Task.not_applicable`): set
    explicitly (config file or KEY=VALUE), or away from its default (e.g. in an old run's config.yaml)."""
    from spft.tasks.registry import get_task

    table = get_task(cfg.task).not_applicable
    for key in sorted(explicit):
        parts = key.split(".")
        for i in range(len(parts), 0, -1):
            why = table.get(".".join(parts[:i]))
            if why is not None:
                raise ConfigError(f"'{key}': not available for {cfg.task}: {why} — remove it from the config")
    for key, why in table.items():
        value = value_at(cfg, key)
        value = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        if value != _default(cfg, key):
            raise ConfigError(f"'{key}': not available for {cfg.task}: {why} — got {value!r}; leave it at its "
                              f"default {_default(cfg, key)!r}")


def validate(cfg: SpftConfig, explicit: set[str] | frozenset[str] = frozenset()) -> None:
    """Every check that types alone cannot express (one place, run once when a config is built): the keys the task
    refuses, the task's own checks, each section's.

    ``explicit``: the dotted keys set by the config file or overrides (a refused one is refused even at its
    default). Raises :class:`ConfigError` naming the key.
    """
    from spft.tasks.registry import get_task

    task = get_task(cfg.task)  # an unknown task: one line naming the registered ones
    _check_no_stray_keys(cfg)
    check_applicable(cfg, explicit)
    cfg.data.check()
    task.check_config(cfg)
    _check_model(cfg)
    _check_recipe(cfg)
    _check_trainer(cfg.trainer)
    if cfg.evaluation is not None:
        _check_evaluation(cfg.evaluation)
    _check_tracking(cfg.tracking)


def _check_no_stray_keys(cfg: SpftConfig) -> None:
    """A config changed in code (``cfg.trainer.limit_val_batches = 0.5`` on a detection run) may carry attributes its
    section classes do not have: refused like the same key in a file, naming who reads it."""
    name = getattr(cfg.data, "name", None)
    ctx = _Context(cfg.task, name or "", schema_for(cfg.task, name))

    def walk(node, prefix: str) -> None:
        fields = {f.name for f in dataclasses.fields(node)}
        for name, value in vars(node).items():
            if name not in fields:
                raise _unknown(prefix + name, [prefix + f for f in fields], ctx)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{name}.")

    walk(cfg, "")


def _check_model(cfg: SpftConfig) -> None:
    model = cfg.model
    if model is None:  # a task without a model section
        return
    config = getattr(model, "config", None)
    if model.name is None and config is None:
        raise ConfigError("'model.name' or 'model.config' must be set (a hub id / local directory / built-in "
                          "spft:phantom-dinov2, or a transformers config mapping such as {model_type: dinov2, "
                          "hidden_size: 64})")
    if config is not None and "model_type" not in config and model.name is None:
        raise ConfigError("'model.config.model_type' is required when building a model from a config (e.g. dinov2)")


def _check_recipe(cfg: SpftConfig) -> None:
    positive = {"recipe.unfreeze.blocks_per_epoch": cfg.recipe.unfreeze.blocks_per_epoch}
    if cfg.trainer is not None:
        positive.update({"trainer.max_epochs": cfg.trainer.max_epochs, "trainer.batch_size": cfg.trainer.batch_size})
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"'{key}': expected a positive integer, got {value}")
    if cfg.recipe.stage1_epochs < 0:
        raise ConfigError(f"'recipe.stage1_epochs': expected >= 0, got {cfg.recipe.stage1_epochs}")
    if cfg.recipe.unfreeze.top_k is not None and cfg.recipe.unfreeze.top_k < 1:
        raise ConfigError("'recipe.unfreeze.top_k': expected >= 1 or null (all blocks), "
                          f"got {cfg.recipe.unfreeze.top_k}")
    if not 0.0 <= cfg.recipe.ema.decay < 1.0:
        raise ConfigError(f"'recipe.ema.decay': expected a value in [0, 1), got {cfg.recipe.ema.decay}")
    if cfg.recipe.class_weights.apply != "both" and cfg.loss == "ce":
        raise ConfigError(f"'recipe.class_weights.apply': {cfg.recipe.class_weights.apply!r} needs loss: bce "
                          "(softmax cross-entropy has only the positive term; leave it at 'both')")
    for name, mult in cfg.recipe.class_weights.heuristic.items():
        if mult <= 0:
            raise ConfigError(f"'recipe.class_weights.heuristic.{name}': expected a positive multiplier, got {mult}")


def _check_trainer(trainer) -> None:
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        if not hasattr(trainer, key):
            continue
        value = getattr(trainer, key)
        ok = value is None or (value >= 1 if isinstance(value, int) else 0.0 < value <= 1.0)
        if not ok:
            raise ConfigError(f"'trainer.{key}': expected a number of batches >= 1, a fraction in (0, 1] or "
                              f"null (all batches), got {value!r}")


def _check_evaluation(ev) -> None:
    if ev.threshold in ("sensitivity", "specificity") and ev.target is None:
        raise ConfigError(f"'evaluation.target': evaluation.threshold={ev.threshold} needs a target "
                          f"{ev.threshold} in (0, 1), e.g. evaluation.target=0.9")
    if ev.target is not None and not 0.0 < ev.target < 1.0:
        raise ConfigError(f"'evaluation.target': expected a value in (0, 1), got {ev.target}")


def _check_tracking(tracking) -> None:
    ml = tracking.mlflow
    for key in ("uri", "experiment", "run_name", "parent_run_id"):
        value = getattr(ml, key)
        if value is not None and not str(value).strip():
            raise ConfigError(f"'tracking.mlflow.{key}': expected a non-empty string or null, got {value!r}")
    if ml.uri is None and ml.parent_run_id is not None:
        raise ConfigError("'tracking.mlflow.parent_run_id' needs tracking.mlflow.uri (the server of the parent run)")
