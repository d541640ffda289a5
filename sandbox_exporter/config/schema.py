"""The config file's JSON Schema, generated from the pydantic models that load it.

The models (settings.py, targets.py and each backend's options) are the one
description of the file; this turns them into a JSON Schema (draft-07) for
editors: `sandbox-exporter config schema` prints it, `init` points its first line
at the installed copy, and `docs/reference/configuration.md` is rendered from it
(reference.py). Tests fail when a checked-in copy is stale
(`scripts/generate-config-docs.sh` rewrites both).

What pydantic's own schema gets wrong for the *file* is put right here: durations
are strings such as `30s` (the models hold seconds), the backend's name may be an
alias, a target's settings default to the `defaults:` block's rather than the
model's, and a scalar may be written as a `${NAME}` environment reference.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, create_model

from sandbox_exporter import backends
from sandbox_exporter.config.durations import format_duration
from sandbox_exporter.config.loading import LABEL_VALUE
from sandbox_exporter.config.settings import Settings, StrictModel
from sandbox_exporter.config.targets import Target, target_union

# the checked-in copy, installed with the package: what `init`'s first line points at
SCHEMA_FILE = Path(__file__).with_name("sandbox-exporter.schema.json")
# draft-07, not 2020-12: yaml-language-server (VS Code's YAML extension) supports
# draft-07 and below, and nothing here needs a later draft
DRAFT = "http://json-schema.org/draft-07/schema#"
# loading.py's ${NAME} and ${NAME:-default}, as written in the file
ENV_REFERENCE = r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}"
_SCALARS = {"integer", "number", "boolean"}


def _file_model() -> type[StrictModel]:
    """The file as written: its three top-level keys (targets.Config is the loaded one)."""
    listed: Any = tuple.__class_getitem__((target_union(), ...))
    targets: Any = Literal["auto"] | Annotated[listed, Field(min_length=1)]
    model: type[StrictModel] = create_model(
        "SandboxExporterConfig",
        __base__=StrictModel,
        __doc__="A sandbox-exporter config file (docs/configuration.md).",
        instance=(
            Annotated[str | None, Field(pattern=LABEL_VALUE.pattern)],
            Field(
                None,
                description="This exporter's identity on the engines, a label value on every "
                "sandbox it makes; default: the host name (or --instance).",
            ),
        ),
        defaults=(
            Settings,
            Field(
                default_factory=Settings,
                description="Settings every target inherits; a target overrides any of them, "
                "nested blocks key by key.",
            ),
        ),
        targets=(
            targets,
            Field(
                description="The targets to probe, or `auto`: every backend found on this "
                "machine when the config is loaded.",
            ),
        ),
    )
    return model


def annotated_schema() -> dict[str, Any]:
    """The schema with the annotations the reference reads (`format: duration`,
    `x-check`), before scalars are widened to accept `${NAME}`."""
    schema = TypeAdapter(_file_model()).json_schema(
        mode="validation", ref_template="#/definitions/{model}"
    )
    definitions: dict[str, Any] = schema.pop("$defs")
    schema["definitions"] = definitions
    _aliases(schema, definitions)
    settings = set(Settings.model_fields)
    for name, definition in definitions.items():
        if name.endswith("Target") and name != "Target":
            for key in settings:  # a target's default is the `defaults:` block's
                definition["properties"][key].pop("default", None)
    _walk(schema, _tidy)
    return {"$schema": DRAFT, **schema}


def json_schema() -> dict[str, Any]:
    """The schema editors validate the file with."""
    schema = annotated_schema()
    _walk(schema, _accept_env_reference)
    return schema


def render() -> str:
    """The schema as checked in and printed: stable key order, one trailing newline."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def _aliases(schema: dict[str, Any], definitions: dict[str, Any]) -> None:
    """`backend` accepts a backend's aliases (`k8s`), as the loader does."""
    mapping: dict[str, str] = {}
    for kind in backends.kinds():
        name = f"{kind.name.capitalize()}Target"
        names = [kind.name, *kind.aliases]
        backend = definitions[name]["properties"]["backend"]
        backend.pop("const", None)
        backend.pop("type", None)
        backend["enum"] = names
        backend["description"] = Target.model_fields["backend"].description or ""
        if kind.summary:
            definitions[name]["description"] = f"A {kind.name} target: {kind.summary}."
        ref = f"#/definitions/{name}"
        mapping.update(dict.fromkeys(names, ref))

    def widen(node: dict[str, Any]) -> None:
        discriminator = node.get("discriminator")
        if isinstance(discriminator, dict) and discriminator.get("propertyName") == "backend":
            discriminator["mapping"] = mapping

    _walk(schema, widen)


def _tidy(node: dict[str, Any]) -> None:
    node.pop("title", None)  # pydantic's "Pull Policy": the key already names it
    if isinstance(node.get("description"), str):  # docstrings wrap; a description does not
        node["description"] = " ".join(node["description"].split())
    if node.get("format") == "duration" and isinstance(node.get("default"), int | float):
        node["default"] = format_duration(float(node["default"]))
    if "$ref" in node and isinstance(node.get("default"), dict):
        node.pop("default")  # each key of the block has its own default


def _accept_env_reference(node: dict[str, Any]) -> None:
    """A number, boolean or patterned string may be written as `${NAME}`: the loader
    substitutes the environment before it validates."""
    properties = node.get("properties")
    if not isinstance(properties, dict):
        return
    for key, prop in properties.items():
        if _is_strict_scalar(prop):
            keep = {k: prop.pop(k) for k in ("description", "default", "x-check") if k in prop}
            properties[key] = {
                "anyOf": [prop, {"type": "string", "pattern": ENV_REFERENCE}],
                **keep,
            }


def _is_strict_scalar(prop: dict[str, Any]) -> bool:
    if prop.get("type") in _SCALARS or "pattern" in prop:
        return True
    return any(_is_strict_scalar(option) for option in prop.get("anyOf", ()))


def _walk(node: Any, visit: Any) -> None:
    if isinstance(node, dict):
        visit(node)
        for value in list(node.values()):
            _walk(value, visit)
    elif isinstance(node, list):
        for value in node:
            _walk(value, visit)
