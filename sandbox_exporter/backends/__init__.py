"""The backend registry: one line per backend module, its declaration read when first
asked for.

Reading a declaration imports the backend's module, which costs no SDK (see
base.py): the Docker SDK, the Kubernetes client and every later one are imported
only when a backend object is built for a target that uses it. The order here is
the order of `targets: auto` and of `bench`'s table.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from sandbox_exporter.backends.base import BackendKind

MODULES: dict[str, str] = {
    "docker": "sandbox_exporter.backends.docker",
    "podman": "sandbox_exporter.backends.podman",
    "kubernetes": "sandbox_exporter.backends.kubernetes",
    "namespace": "sandbox_exporter.backends.namespace",
    "firecracker": "sandbox_exporter.backends.firecracker",
    "nomad": "sandbox_exporter.backends.nomad",
    "hyperlight": "sandbox_exporter.backends.hyperlight",
    "apple": "sandbox_exporter.backends.apple",
}


class UnknownBackend(ValueError):
    def __init__(self, name: object) -> None:
        super().__init__(f"unknown backend {name!r}; known: {', '.join(known_names())}")


def kinds() -> list[BackendKind[Any]]:
    """Every registered backend's declaration, in registry order."""
    return list(_load(tuple(MODULES.items())))


@functools.cache
def _load(modules: tuple[tuple[str, str], ...]) -> tuple[BackendKind[Any], ...]:
    loaded = []
    for name, module_name in modules:
        declared = importlib.import_module(module_name).KIND
        if not isinstance(declared, BackendKind) or declared.name != name:
            raise TypeError(f"{module_name}.KIND must be a BackendKind named {name!r}")
        loaded.append(declared)
    return tuple(loaded)


def known_names() -> list[str]:
    return sorted(MODULES)


def canonical(name: object) -> str | None:
    """The registered name for `name` or one of its aliases (trimmed, any case)."""
    if not isinstance(name, str):
        return None
    wanted = name.strip().lower()
    for kind in kinds():
        if wanted == kind.name or wanted in kind.aliases:
            return kind.name
    return None


def kind(name: object) -> BackendKind[Any]:
    """The declaration of backend `name` (or an alias); UnknownBackend otherwise."""
    found = canonical(name)
    for declared in kinds():
        if declared.name == found:
            return declared
    raise UnknownBackend(name)
