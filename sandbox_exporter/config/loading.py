"""The YAML configuration: load, substitute ${ENV}, validate, merge defaults into targets.

Validation is strict (unknown keys are errors) and every problem is reported
as one line: ``<file>: <dotted.field>: <what was expected>``.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sandbox_exporter import backends
from sandbox_exporter.config.messages import dotted, field_problem, got
from sandbox_exporter.config.settings import RELATION, Settings, related_problems
from sandbox_exporter.config.targets import Config, Target, target_adapter

LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


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
    `instance` (the --instance flag) overrides the file's.

    Every independent problem is reported in one ConfigError: a bad `defaults` does not
    hide the targets' problems, and a problem is reported once, where it was written
    (not again in each target that inherits it, nor as a consequence of another)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{source}: expected a mapping at the top level, got {type(data).__name__}"]
        )
    check = _Checker(source)
    document: dict[str, Any] = _substitute_env(
        data, os.environ if environ is None else environ, (), check
    )
    for key in document:
        if key not in ("instance", "defaults", "targets"):
            check.add((str(key),), "unknown key (the top level has instance, defaults, targets)")
    file_instance = _instance(document.get("instance"), check)
    base = document.get("defaults")
    if base is None:
        base = {}
    if not isinstance(base, dict):
        check.add(("defaults",), f"expected a mapping of settings, got {got(base)}")
        base = {}
    defaults = check.validate(Settings.model_validate, base, ("defaults",))
    if defaults is None:
        defaults = Settings()

    targets: list[Target] = []
    names: dict[str, int] = {}
    raw_targets, not_found = _raw_targets(document, discover, check)
    for index, raw in enumerate(raw_targets):
        if not isinstance(raw, dict):
            check.add(("targets", index), f"expected a target (name, backend, ...), got {got(raw)}")
            continue
        name = raw.get("name")
        if isinstance(name, str) and name in names:
            check.add(
                ("targets", index, "name"),
                f"{name!r} is already the name of targets[{names[name]}]; names must be unique",
            )
        elif isinstance(name, str):
            names[name] = index
        target = _target(index, raw, base, check)
        if target is not None:
            targets.append(target)
    if instance is not None:
        try:
            check_instance(instance)
        except ValueError as exc:
            check.problems.append(f"--instance: {exc}")
    if check.problems:
        raise ConfigError(check.problems)
    return Config(
        instance=instance or file_instance or default_instance(),
        defaults=defaults,
        targets=tuple(targets),
        source=source,
        not_found=not_found,
    )


class _Checker:
    """Collects problems as `<file>: <dotted.field>: <message>`, and remembers where
    they were so that what follows from them is not reported again."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []
        self.reported: set[Loc] = set()  # document paths with a problem of their own

    def add(self, loc: Loc, message: str, label: str | None = None) -> None:
        self.reported.add(loc)
        where = dotted(loc) if label is None else dotted((label, *loc[2:]))
        self.problems.append(f"{self.source}: {where}: {message}")

    def already(self, loc: Loc) -> bool:
        return any(loc[: len(known)] == known for known in self.reported)

    def validate(
        self,
        validate: Callable[[Any], Any],
        data: dict[str, Any],
        at: Loc,
        label: str | None = None,
        inherited: Callable[[Loc], bool] = lambda loc: False,
        tag: str | None = None,
    ) -> Any:
        """`validate(data)`, or None after reporting each problem at `at` + its field."""
        try:
            return validate(data)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
        for error in errors:
            loc = list(error["loc"])
            if tag is not None and loc[:1] == [tag]:
                loc = loc[1:]  # the union of targets puts the backend first
            field: Loc = tuple(p for p in loc if not (isinstance(p, str) and "[" in p))
            if error["type"] == RELATION:
                continue  # reported per field below, only when its fields are valid
            message = field_problem(error)
            if error["type"] == "union_tag_not_found":  # a target without `backend`
                field = (*field, "backend")
                message = "required but missing; one of " + ", ".join(backends.known_names())
            if self.already((*at, *field)) or inherited(field):
                continue
            self.add((*at, *field), message, label)
        for field_name, message in related_problems(data):
            if not inherited((field_name,)):
                self.add((*at, field_name), message, label)
        return None


Loc = tuple[str | int, ...]


def _instance(value: object, check: _Checker) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        check.add(("instance",), f"expected text (a label value), got {got(value)}")
        return None
    try:
        return check_instance(value)
    except ValueError as exc:
        check.add(("instance",), str(exc))
        return None


def _raw_targets(
    data: Mapping[str, Any], discover: Callable[[], list[dict[str, Any]]] | None, check: _Checker
) -> tuple[list[Any], dict[str, str]]:
    """The targets as written (or found, for `auto`), and the backends `auto` did not find."""
    if "targets" not in data:
        check.add(("targets",), "required: a list of targets, or `auto`")
        return [], {}
    raw = data["targets"]
    if raw == "auto":
        from sandbox_exporter.config import discovery

        found, not_found = discovery.discover() if discover is None else (discover(), {})
        if not found:
            why = "; ".join(f"{name}: {reason}" for name, reason in not_found.items())
            check.add(
                ("targets",),
                "`auto` found no backend on this machine" + (f" ({why})" if why else ""),
            )
        return found, not_found
    if not isinstance(raw, list):
        check.add(("targets",), f"expected a list of targets, or `auto`, got {got(raw)}")
        return [], {}
    if not raw and not check.already(("targets",)):
        check.add(("targets",), "at least one target is needed (or `auto`)")
    return raw, {}


def _target(
    index: int, raw: dict[str, Any], base: dict[str, Any], check: _Checker
) -> Target | None:
    at: Loc = ("targets", index)
    label = f"targets[{index}]" + (f" ({raw['name']})" if isinstance(raw.get("name"), str) else "")
    merged = _merge(base, raw)
    if "backend" in merged:
        backend = backends.canonical(str(merged["backend"]))
        if backend is None:
            check.add((*at, "backend"), str(backends.UnknownBackend(merged["backend"])), label)
            return None
        merged["backend"] = backend

    def inherited(field: Loc) -> bool:
        """A problem of `defaults` this target did not override: reported there once."""
        related = field[:1] and field[0] in _RELATED and not any(k in raw for k in _RELATED)
        if related and check.already(("defaults", field[0])):
            return True
        return check.already(("defaults", *field)) and not _has(raw, field)

    adapter = target_adapter()
    target: Target | None = check.validate(
        adapter.validate_python, merged, at, label, inherited, merged.get("backend")
    )
    return target


_RELATED = ("stop_grace", "max_age", "timeouts")


def _has(data: Any, path: Loc) -> bool:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def _merge(defaults: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Target keys win; nested mappings (timeouts, resources) merge key by key."""
    merged = dict(defaults)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _substitute_env(value: Any, environ: Mapping[str, str], path: Loc, check: _Checker) -> Any:
    """${NAME} is the variable's value; ${NAME:-default} the default when it is unset
    or empty (as in the shell). An unset ${NAME} is a problem at that field, and the
    field is not checked further."""
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if default is not None:
                return environ.get(name) or default
            if name not in environ:
                check.add(
                    path,
                    f"environment variable {name} is not set "
                    f"(or give a default: ${{{name}:-value}})",
                )
                return ""
            return environ[name]

        return _ENV_REF.sub(repl, value)
    if isinstance(value, dict):
        return {k: _substitute_env(v, environ, (*path, str(k)), check) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_env(v, environ, (*path, i), check) for i, v in enumerate(value)]
    return value
