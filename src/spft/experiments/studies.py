"""Ablation studies: named lists of config overlays (the paper's ladder, depth and probe studies, or a YAML file).

An overlay is a name plus ``KEY=VALUE`` overrides applied on top of the experiment config; a study runs every
overlay for every seed. :func:`validate_study` resolves each overlay with :func:`spft.config.load_config` before
any run starts, so a typo in the fourth overlay fails in a second, not after three trainings.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from spft.config import ConfigError, load_config, parse_override
from spft.errors import MissingFileError

# Keys the sweep owns: each run's seed and directory come from --seeds and the sweep layout.
RESERVED_KEYS = ("seed", "run.dir")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Overlay:
    """One row of a study: ``name`` (also the run sub-directory), a readable ``label`` and its overrides."""

    name: str
    overrides: tuple[str, ...] = ()
    label: str = ""

    @property
    def title(self) -> str:
        return self.label or self.name

    def as_dict(self) -> dict:
        return {"name": self.name, "label": self.title, "overrides": list(self.overrides)}


@dataclass(frozen=True)
class Study:
    """A named list of overlays; ``kind`` tells the report which paper table it reproduces."""

    name: str
    overlays: tuple[Overlay, ...]
    kind: str = "custom"  # ladder | depth | probe | repeat | custom
    description: str = ""
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "description": self.description,
                "overlays": [o.as_dict() for o in self.overlays]}


_OFF = "recipe.{}.enabled=false"
_ON = "recipe.{}.enabled=true"

BUILTIN: dict[str, Study] = {
    "ladder": Study("ladder", (
        Overlay("head_only", (_OFF.format("unfreeze"), _OFF.format("class_weights"), _OFF.format("ema")),
                "MLP head only"),
        Overlay("unfreeze", (_ON.format("unfreeze"), _OFF.format("class_weights"), _OFF.format("ema")),
                "+ progressive unfreezing"),
        Overlay("class_weights", (_ON.format("unfreeze"), _ON.format("class_weights"), _OFF.format("ema")),
                "+ class weights"),
        Overlay("spft", (_ON.format("unfreeze"), _ON.format("class_weights"), _ON.format("ema")),
                "+ EMA (full SPFT)"),
    ), kind="ladder", description="the paper's Table X: each row adds one SPFT component to the previous one"),
    "depth": Study("depth", (
        Overlay("top10", ("recipe.unfreeze.enabled=true", "recipe.unfreeze.top_k=10"), "SPFT, top-10 blocks"),
        Overlay("all_blocks", ("recipe.unfreeze.enabled=true", "recipe.unfreeze.top_k=null"), "SPFT, all blocks"),
    ), kind="depth", description="the paper's Table VI: unfreezing the top 10 encoder blocks vs all of them"),
    "probe": Study("probe", (
        Overlay("mlp_probe", ("recipe.unfreeze.enabled=false",), "frozen encoder (MLP probe)"),
        Overlay("spft", ("recipe.unfreeze.enabled=true",), "SPFT (fine-tuned encoder)"),
    ), kind="probe", description="frozen encoder with the paper's MLP head vs SPFT fine-tuning (HAM10000 remark)"),
    "class_weights": Study("class_weights", (
        Overlay("no_class_weights", ("recipe.class_weights.enabled=false",), "SPFT without class weights"),
        Overlay("weights_both", ("recipe.class_weights.enabled=true", "recipe.class_weights.apply=both"),
                "SPFT, weight on both BCE terms (the paper)"),
        Overlay("weights_positive", ("recipe.class_weights.enabled=true", "recipe.class_weights.apply=positive"),
                "SPFT, weight on the positive term only (pos_weight)"),
    ), kind="custom", description="the full recipe without class weights, with the paper's rule (the weight on both "
                                  "BCE terms) and with the pos_weight variant (classification, loss: bce)"),
}

REPEAT = Study("repeat", (Overlay("base", (), "SPFT"),), kind="repeat", description="the config, one run per seed")


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{what}: name {name!r} must be letters, digits, '_', '-' or '.' (it names a folder)")
    return name


def study_from_dict(data: dict, source: str = "study") -> Study:
    """Build a study from ``{name, overlays: [{name, overrides: [KEY=VALUE, ...], label?}], kind?, description?}``."""
    if not isinstance(data, dict) or not isinstance(data.get("overlays"), list) or not data["overlays"]:
        raise ConfigError(f"{source}: expected a mapping with a non-empty 'overlays' list "
                          "({name, overlays: [{name, overrides: [KEY=VALUE, ...]}]})")
    name = _check_name(data.get("name", Path(source).stem), f"{source}")
    overlays, seen = [], set()
    for i, item in enumerate(data["overlays"]):
        if not isinstance(item, dict):
            raise ConfigError(f"{source}: overlay {i} must be a mapping {{name, overrides}}, got {item!r}")
        oname = _check_name(item.get("name"), f"{source}: overlay {i}")
        if oname in seen:
            raise ConfigError(f"{source}: overlay name '{oname}' is used twice")
        seen.add(oname)
        overrides = item.get("overrides") or []
        if isinstance(overrides, dict):  # {key: value} is accepted as well as [KEY=VALUE, ...]; JSON is YAML
            overrides = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise ConfigError(f"{source}: overlay '{oname}': 'overrides' must be a list of KEY=VALUE strings")
        overlays.append(Overlay(oname, tuple(overrides), str(item.get("label") or "")))
    kind = str(data.get("kind", "custom"))
    if kind not in ("ladder", "depth", "probe", "custom"):
        raise ConfigError(f"{source}: kind {kind!r} is not one of ladder, depth, probe, custom")
    return Study(name, tuple(overlays), kind=kind, description=str(data.get("description", "")))


def load_study(spec: str) -> Study:
    """A built-in study by name (``ladder``, ``depth``, ``probe``) or a study YAML file."""
    if spec in BUILTIN:
        return BUILTIN[spec]
    path = Path(spec)
    if not path.is_file():
        raise MissingFileError(f"--study {spec!r}: not a built-in study ({', '.join(BUILTIN)}) nor a YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return study_from_dict(data, str(path))


def check_reserved(overrides: tuple[str, ...] | list[str], where: str) -> None:
    """Refuse ``seed=`` and ``run.dir=``: the sweep sets both for every run."""
    for text in overrides:
        key, _ = parse_override(text)
        if key in RESERVED_KEYS:
            raise ConfigError(f"{where}: '{key}' is set by the sweep for every run (use --seeds and --out), "
                              f"remove '{text}'")


def validate_study(config: str | Path, study: Study, overrides: tuple[str, ...] = (), seed: int = 0) -> dict:
    """Resolve every overlay of ``study`` on ``config`` + ``overrides``; return ``{overlay name: SpftConfig}``.

    Raises:
        ConfigError: naming the overlay and the bad key, before any run has started.
    """
    check_reserved(overrides, "overrides")
    resolved = {}
    for overlay in study.overlays:
        try:
            check_reserved(overlay.overrides, f"overlay '{overlay.name}'")
            resolved[overlay.name] = load_config(config, [*overrides, *overlay.overrides, f"seed={seed}"])
        except ConfigError as exc:
            msg = str(exc)
            raise ConfigError(msg if msg.startswith("overlay '") else f"overlay '{overlay.name}': {msg}") from None
    return resolved
