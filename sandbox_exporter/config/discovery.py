"""`targets: auto`: which backends answer on this machine right now.

Each registered backend that can be found locally says so through its `discover`
(which imports no SDK); remote ones (a cluster, an agent) are never guessed.
Two kinds found at one address (DOCKER_HOST pointing at Podman) are probed once,
as the first in registry order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sandbox_exporter import backends
from sandbox_exporter.backends.base import NotFound

if TYPE_CHECKING:
    from sandbox_exporter.config.targets import Config


def discover() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The target dicts of every backend found, and why each other one was not."""
    found: list[dict[str, Any]] = []
    missing: dict[str, str] = {}
    seen: dict[str, str] = {}
    for kind in backends.kinds():
        if kind.discover is None:
            missing[kind.name] = (
                "not looked for (it is reached over the network): name it in a config"
            )
            continue
        outcome = kind.discover()
        if isinstance(outcome, NotFound):
            missing[kind.name] = outcome.reason
        elif outcome.address in seen:
            missing[kind.name] = f"{outcome.address} is already probed as {seen[outcome.address]}"
        else:
            seen[outcome.address] = kind.name
            found.append({"name": kind.name, "backend": kind.name, kind.name: outcome.options})
    return found, missing


def discover_targets() -> list[dict[str, Any]]:
    return discover()[0]


def missing_backend(config: Config, name: str) -> str | None:
    """Why `name`, a backend's name, is not a target of this `targets: auto` config."""
    canonical = backends.canonical(name)
    if canonical is None or canonical not in config.not_found:
        return None
    return f"`targets: auto` did not find the {canonical} backend: {config.not_found[canonical]}"
