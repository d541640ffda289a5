"""Imports between the package's parts go one way (DESIGN.md, "Layout"): each part
imports only from itself and from the layers below it, lazy imports inside
functions included. Two parts of one layer do not import each other, but for the
config and the backends, which are declared together (the config's backend union
is built from the backends' registry, and each backend's options are config)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "sandbox_exporter"
LAYERS = [
    {"__init__", "results", "config", "backends", "images", "logs", "malloc_arenas"},
    {"probing", "metrics"},
    {"web", "commands"},
    {"daemon"},
    {"cli"},
    {"__main__"},
]
SIBLINGS = {frozenset({"config", "backends"})}  # may import each other


def part(module: str) -> str:
    """`sandbox_exporter.probing.prober` -> `probing`; the package itself is `__init__`."""
    names = module.split(".")
    return names[1] if len(names) > 1 else "__init__"


def layer(name: str) -> int:
    return next(i for i, parts in enumerate(LAYERS) if name in parts)


def imports(path: Path) -> set[str]:
    """The parts of the package `path` imports, by any form of import, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {part(a.name) for a in node.names if a.name.startswith("sandbox_exporter")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "sandbox_exporter"
        ):
            if node.module == "sandbox_exporter":  # from sandbox_exporter import backends
                found |= {
                    a.name if a.name in set().union(*LAYERS) else "__init__" for a in node.names
                }
            else:
                found.add(part(str(node.module)))
    return found


def owner(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {owner(p) for p in PACKAGE.rglob("*.py")}
    assert parts <= set().union(*LAYERS), parts - set().union(*LAYERS)


def test_imports_go_down_the_layers_only() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        mine = owner(path)
        for other in imports(path) - {mine}:
            if layer(other) < layer(mine) or frozenset({mine, other}) in SIBLINGS:
                continue
            wrong.append(f"{path.relative_to(PACKAGE.parent)} imports {other}")
    assert not wrong, "\n".join(wrong)


def test_the_results_vocabulary_imports_nothing_of_the_package() -> None:
    assert imports(PACKAGE / "results.py") == set()


def test_the_check_sees_a_wrong_import() -> None:
    """The test above can fail: a metrics module importing probing is caught."""
    probe = PACKAGE / "metrics" / "_layering_probe.py"
    probe.write_text("def f() -> None:\n    from sandbox_exporter.probing import prober\n")
    try:
        assert imports(probe) == {"probing"}
        assert layer("probing") == layer(owner(probe))
    finally:
        probe.unlink()
