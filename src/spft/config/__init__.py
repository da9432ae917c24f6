"""Configuration: the typed schema (`schema.py`) and the YAML + `KEY=VALUE` loader that validates it (`loader.py`)."""

from spft.config.loader import ConfigError, dump_yaml, load_config, parse_override, to_dict
from spft.config.schema import SpftConfig

__all__ = ["ConfigError", "SpftConfig", "dump_yaml", "load_config", "parse_override", "to_dict"]
