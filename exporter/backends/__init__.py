"""Backend names -> implementing classes, imported only when a target uses one.

Importing this package costs nothing: the Docker SDK (and every later SDK) is
imported the first time a target of that kind is built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from exporter.backends.base import Backend

BACKENDS: dict[str, str] = {
    "docker": "exporter.backends.docker:DockerBackend",
    "kubernetes": "exporter.backends.kubernetes:KubernetesBackend",
    "podman": "exporter.backends.podman:PodmanBackend",
    "namespace": "exporter.backends.namespace:NamespaceBackend",
}


def known_backends() -> list[str]:
    return sorted(BACKENDS)


def backend_class(name: str) -> type[Backend]:
    """The class for backend `name`; imports its module (and SDK) now."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ValueError(
            f"unknown backend {name!r}; known: {', '.join(known_backends())}"
        ) from None
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(module_name)
    cls: Any = getattr(module, class_name)
    return cls  # type: ignore[no-any-return]
