"""sandbox-exporter: times real sandbox lifecycles and exposes them to Prometheus."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sandbox-exporter")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
