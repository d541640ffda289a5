"""Configuration: YAML in, validated frozen models out (see loading.py for the file)."""

from sandbox_exporter.config.loading import (
    ConfigError,
    default_instance,
    load_config,
    parse_config,
)
from sandbox_exporter.config.settings import (
    DEFAULT_BUCKETS,
    DEFAULT_IMAGE,
    Resources,
    Settings,
    StrictModel,
    Timeouts,
)
from sandbox_exporter.config.targets import Config, Target

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_IMAGE",
    "Config",
    "ConfigError",
    "Resources",
    "Settings",
    "StrictModel",
    "Target",
    "Timeouts",
    "default_instance",
    "load_config",
    "parse_config",
]
