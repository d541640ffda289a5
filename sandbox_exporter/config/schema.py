"""The config file's JSON Schema, generated from the pydantic models that load it.

The models (settings.py, targets.py and each backend's options) are the one
description of the file; this turns them into a JSON Schema (draft-07) for
editors: `sandbox-exporter config schema` prints it, `init` points its first line
at the installed copy, and `docs/reference/configuration.md` is rendered from it
(reference.py), and the Helm chart's values schema holds it as `config`, so that
`helm install` refuses a bad config. Tests fail when a checked-in copy is stale
(`scripts/generate-config-docs.sh` rewrites them).

What pydantic's own schema gets wrong for the *file* is put right here: durations
are strings such as `30s` (the models hold seconds), the backend's name may be an
alias, a target's schema is chosen by its `backend` (if/then, so a validator names
what is wrong in that backend's block rather than that no backend matched), its
settings default to the `defaults:` block's rather than the model's, and a scalar
may be written as a `${NAME}` environment reference.
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
    # tuple[<a union built at run time>, ...], which mypy cannot read as a type
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
    """The schema with the annotations the reference reads (`x-type`, `x-check`),
    before scalars are widened to accept `${NAME}`."""
    schema = TypeAdapter(_file_model()).json_schema(
        mode="validation", ref_template="#/definitions/{model}"
    )
    definitions: dict[str, Any] = schema.pop("$defs")
    schema["definitions"] = definitions
    _targets_by_backend(schema, definitions)
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


def in_chart_values(values_schema: dict[str, Any]) -> dict[str, Any]:
    """The Helm chart's values schema with the config schema as its `config` value, so
    that `helm install` refuses a config the exporter would refuse for its shape."""
    config = json_schema()
    definitions = config.pop("definitions")
    config.pop("$schema")
    config["description"] = (
        "The exporter's configuration file, as a map (docs/configuration.md); the "
        "config schema, generated from the exporter's models"
    )
    values = {k: v for k, v in values_schema.items() if k != "definitions"}
    values["properties"] = {**values_schema["properties"], "config": config}
    values["definitions"] = definitions
    return values


def _targets_by_backend(schema: dict[str, Any], definitions: dict[str, Any]) -> None:
    """`backend` accepts a backend's aliases (`k8s`), as the loader does, and picks the
    target's schema by if/then rather than pydantic's `oneOf`: a validator then reports
    what is wrong in the target's own backend, not that no backend's schema matched."""
    branches: list[dict[str, Any]] = []
    every: list[str] = []
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
        every += names
        branches.append(
            {
                "if": {"properties": {"backend": {"enum": names}}, "required": ["backend"]},
                "then": {"$ref": f"#/definitions/{name}"},
            }
        )

    def by_backend(node: dict[str, Any]) -> None:
        discriminator = node.get("discriminator")
        if isinstance(discriminator, dict) and discriminator.get("propertyName") == "backend":
            node.clear()
            node.update(
                {
                    "type": "object",
                    "required": ["name", "backend"],
                    "properties": {"backend": {"enum": every}},
                    "allOf": branches,
                }
            )

    _walk(schema, by_backend)


def _tidy(node: dict[str, Any]) -> None:
    node.pop("title", None)  # pydantic's "Pull Policy": the key already names it
    if isinstance(node.get("description"), str):  # docstrings wrap; a description does not
        node["description"] = " ".join(node["description"].split())
    if node.get("x-type") == "duration" and isinstance(node.get("default"), int | float):
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


if __name__ == "__main__":  # scripts/generate-config-docs.sh: python -m ... CHART_SCHEMA
    import sys

    chart = Path(sys.argv[1])
    rewritten = in_chart_values(json.loads(chart.read_text()))
    chart.write_text(json.dumps(rewritten, indent=2, ensure_ascii=False) + "\n")
