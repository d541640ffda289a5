"""The YAML configuration: load, substitute ${ENV}, validate, merge defaults into targets.

Validation is strict (unknown keys are errors) and every problem is reported
as one line: ``<file>: <dotted.field>: <what was expected>``.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from sandbox_exporter import backends
from sandbox_exporter.config.settings import Settings, StrictModel
from sandbox_exporter.config.targets import Config, Target, target_adapter

LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    """A configuration that cannot be used; one problem per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def check_instance(value: str) -> str:
    """An instance name is a label value on every sandbox: ValueError otherwise."""
    if not LABEL_VALUE.match(value):
        raise ValueError(
            f"must be 1-63 letters, digits, '.', '_' or '-' (it is a label value), got {value!r}"
        )
    return value


class _TopLevel(StrictModel):
    """The file's own shape, before targets are merged with defaults."""

    instance: str | None = None
    defaults: dict[str, Any] = Field(default_factory=dict)
    targets: list[dict[str, Any]] | Literal["auto"]

    @field_validator("instance")
    @classmethod
    def _instance(cls, value: str | None) -> str | None:
        return None if value is None else check_instance(value)


def default_instance() -> str:
    """This exporter's identity on the engines when neither the file nor --instance
    gives one: the host name, made a valid label value."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip("._-")
    return cleaned[:63] or "sandbox-exporter"


def load_config(
    path: str | os.PathLike[str],
    *,
    environ: Mapping[str, str] | None = None,
    instance: str | None = None,
) -> Config:
    """Read, substitute ${ENV} references, validate. Raises ConfigError."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read the file: {exc.strerror or exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{source}: not valid YAML{where}: {problem}"]) from None
    return parse_config(data, source=source, environ=environ, instance=instance)


def parse_config(
    data: object,
    *,
    source: str = "<built-in defaults>",
    environ: Mapping[str, str] | None = None,
    discover: Callable[[], list[dict[str, Any]]] | None = None,
    instance: str | None = None,
) -> Config:
    """Validate an already-parsed document. `discover` finds targets for `targets: auto`;
    `instance` (the --instance flag) overrides the file's."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{source}: expected a mapping at the top level, got {type(data).__name__}"]
        )
    problems: list[str] = []
    data = _substitute_env(data, os.environ if environ is None else environ, (), problems)
    if problems:
        raise ConfigError([f"{source}: {p}" for p in problems])
    try:
        top = _TopLevel.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, prefix=())) from None
    try:
        defaults = Settings.model_validate(top.defaults)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, prefix=("defaults",))) from None

    raw_targets = top.targets
    if raw_targets == "auto":
        from sandbox_exporter.config.discovery import discover_targets

        raw_targets = (discover or discover_targets)()
        if not raw_targets:
            raise ConfigError([f"{source}: targets: 'auto' found no backend on this machine"])
    if not raw_targets:
        raise ConfigError([f"{source}: targets: at least one target is needed (or 'auto')"])

    targets: list[Target] = []
    base = top.defaults
    adapter = target_adapter()
    for index, raw in enumerate(raw_targets):
        label = f"targets[{index}]" + (
            f" ({raw['name']})" if isinstance(raw.get("name"), str) else ""
        )
        merged = _merge(base, raw)
        if "backend" in merged:
            backend = backends.canonical(merged["backend"])
            if backend is None:
                problems.append(
                    f"{source}: {label}.backend: {backends.UnknownBackend(merged['backend'])}"
                )
                continue
            merged["backend"] = backend
        try:
            targets.append(adapter.validate_python(merged))
        except ValidationError as exc:
            problems.extend(_describe(exc, source, prefix=(label,), tag=merged.get("backend")))
    seen: dict[str, int] = {}
    for index, target in enumerate(targets):
        if target.name in seen:
            problems.append(
                f"{source}: targets[{index}].name: {target.name!r} is already the name of "
                f"targets[{seen[target.name]}]; names must be unique"
            )
        seen.setdefault(target.name, index)
    if instance is not None:
        try:
            check_instance(instance)
        except ValueError as exc:
            problems.append(f"--instance: {exc}")
    if problems:
        raise ConfigError(problems)
    return Config(
        instance=instance or top.instance or default_instance(),
        defaults=defaults,
        targets=tuple(targets),
        source=source,
    )


def _merge(defaults: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Target keys win; nested mappings (timeouts, resources) merge key by key."""
    merged = dict(defaults)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _substitute_env(
    value: Any, environ: Mapping[str, str], path: tuple[str | int, ...], problems: list[str]
) -> Any:
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                problems.append(f"{_dotted(path)}: environment variable {name} is not set")
                return ""
            return environ[name]

        return _ENV_REF.sub(repl, value)
    if isinstance(value, dict):
        return {k: _substitute_env(v, environ, (*path, str(k)), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_env(v, environ, (*path, i), problems) for i, v in enumerate(value)]
    return value


def _dotted(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def _describe(
    exc: ValidationError, source: str, prefix: tuple[str, ...], tag: str | None = None
) -> list[str]:
    """One line per error. `tag`: the backend a target was validated as; the union of
    targets puts it first in every location."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        if tag is not None and loc[:1] == [tag]:
            loc = loc[1:]
        loc = [p for p in loc if not (isinstance(p, str) and "[" in p)]
        message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] in ("missing", "union_tag_not_found"):
            message = "required but missing"
            if error["type"] == "union_tag_not_found":
                loc = [*loc, "backend"]
        elif error["type"] == "literal_error":
            message = f"{message}, got {error['input']!r}"
        lines.append(f"{source}: {_dotted([*prefix, *loc])}: {message}")
    return lines
