"""sandbox-exporter: times real sandbox lifecycles and exposes them to Prometheus."""

from typing import Any


def __getattr__(name: str) -> Any:
    # looked up when first asked for: importing importlib.metadata is slow (BENCHMARKS.md,
    # "Costs the code relies on"), and the web process, which imports this package,
    # never needs the version
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("sandbox-exporter")
        except PackageNotFoundError:  # running from a source tree that was not installed
            return "0.0.0+source"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
