"""Checks of the ``detection`` config keys that types alone cannot express (no Ultralytics import, so
``spft prepare`` can use them too). They live in the task's ``check_config``, which the schema's validation
(:func:`spft.config.loader.validate`, run once when a config is loaded) calls; this entry point re-runs it for a
config built or changed in code."""

from __future__ import annotations

from spft.config import SpftConfig
from spft.config.loader import validate
from spft.config.schema import value_at


def check_detection_config(cfg: SpftConfig) -> None:
    """Checks of the ``detection`` keys (and of the keys detection cannot honour); the error names the key."""
    validate(cfg)


def eval_key(cfg: SpftConfig, dotted: str):
    """The value of a dotted config key (for error messages)."""
    return value_at(cfg, dotted)
