"""The YAML configuration: load, validate, resolve defaults into each target.

Validation is strict (unknown keys are errors) and every problem is reported
as one line: ``<file>: <dotted.field>: <what was expected>``.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from exporter.backends import known_backends
from exporter.discovery import podman_url
from exporter.durations import format_duration, parse_duration

DEFAULT_BUCKETS: tuple[float, ...] = tuple(float(b) for b in (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10,
    15, 20, 30, 45, 60, 120, 300,
))  # fmt: skip
DEFAULT_IMAGE = "busybox:1.36"
DEFAULT_KEEPALIVE = ("sh", "-c", "trap 'exit 0' TERM; sleep 2147483647 & wait")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
_TARGET_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    """A configuration that cannot be used; one problem per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _duration(low: float, high: float) -> Callable[[float], float]:
    def check(seconds: float) -> float:
        if not low < seconds <= high:
            raise ValueError(
                f"must be more than {format_duration(low) if low else '0s'}"
                f" and at most {format_duration(high)}"
            )
        return seconds

    return check


IntervalDuration = Annotated[
    float, BeforeValidator(parse_duration), AfterValidator(_duration(0.0, 86400.0))
]
PhaseDuration = Annotated[
    float, BeforeValidator(parse_duration), AfterValidator(_duration(0.0, 3600.0))
]


def _jitter(value: object) -> str:
    text = str(value).strip() if isinstance(value, str) else None
    if text is None:
        raise ValueError(
            f"expected a percentage of the interval such as 10% or a duration, got {value!r}"
        )
    if text.endswith("%"):
        try:
            pct = float(text[:-1])
        except ValueError:
            raise ValueError(f"expected a percentage such as 10%, got {value!r}") from None
        if not 0 <= pct <= 100:
            raise ValueError(f"a percentage must be between 0% and 100%, got {value!r}")
        return text
    if text in ("0", "0s"):
        return "0s"
    parse_duration(text)
    return text


def _buckets(values: list[float]) -> tuple[float, ...]:
    if not values:
        raise ValueError("at least one bucket boundary is needed")
    if len(values) > 60:
        raise ValueError(f"at most 60 bucket boundaries, got {len(values)}")
    if any(b <= 0 for b in values):
        raise ValueError("bucket boundaries are seconds and must be positive")
    if any(b >= a for b, a in itertools.pairwise(values)):
        raise ValueError("bucket boundaries must be strictly increasing")
    return tuple(float(v) for v in values)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(StrictModel):
    pull: PhaseDuration = 300.0
    create: PhaseDuration = 30.0
    start: PhaseDuration = 60.0
    exec: PhaseDuration = 30.0
    stop: PhaseDuration = 30.0
    remove: PhaseDuration = 30.0


class Resources(StrictModel):
    cpus: float = Field(1.0, gt=0, le=512)
    memory_mb: int = Field(256, ge=6, le=4 * 1024 * 1024)
    pids: int = Field(64, ge=1, le=4_194_304)


class DockerOptions(StrictModel):
    base_url: str = "unix:///var/run/docker.sock"
    runtime: str | None = None
    user: str | None = Field(
        "65534:65534", description="uid:gid inside the container; null keeps the image's user"
    )
    keepalive: tuple[str, ...] = Field(DEFAULT_KEEPALIVE, min_length=1)
    tmpfs_mb: int = Field(16, ge=0, le=4096, description="size of the writable /tmp; 0 for none")


class PodmanOptions(DockerOptions):
    """The same options as Docker; the default socket is Podman's (rootful or rootless)."""

    base_url: str = Field(default_factory=podman_url)


class NamespaceOptions(StrictModel):
    state_dir: str | None = None
    user_namespace: Literal["auto", "always", "never"] = "auto"


class KubernetesOptions(StrictModel):
    kubeconfig: str | None = Field(None, description="none: in-cluster, else $KUBECONFIG/~/.kube")
    context: str | None = None
    namespace: str = "sandbox-exporter-probes"
    create_namespace: bool = False
    runtime_class: str | None = None
    node_selector: dict[str, str] = {}
    tolerations: tuple[dict[str, Any], ...] = ()
    image_pull_secrets: tuple[str, ...] = ()
    priority_class: str | None = None
    network_policy: bool = Field(False, description="a deny-all NetworkPolicy for each probe pod")
    run_as_user: int = Field(65534, ge=1)
    keepalive: tuple[str, ...] = Field(DEFAULT_KEEPALIVE, min_length=1)

    @field_validator("namespace")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not re.match(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", value):
            raise ValueError(f"must be a DNS label (lowercase letters, digits, '-'), got {value!r}")
        return value


BACKEND_OPTIONS: dict[str, type[StrictModel]] = {
    "docker": DockerOptions,
    "podman": PodmanOptions,
    "namespace": NamespaceOptions,
    "kubernetes": KubernetesOptions,
}


class Settings(StrictModel):
    """What `defaults:` holds; each target may override any of it."""

    interval: IntervalDuration = 60.0
    jitter: Annotated[str, BeforeValidator(_jitter)] = "10%"
    image: str = Field(DEFAULT_IMAGE, min_length=1)
    pull_policy: Literal["if_not_present", "always", "never"] = "if_not_present"
    command: tuple[str, ...] = Field(("echo", "hello"), min_length=1)
    expect_output: str | None = "hello"
    stop_grace: PhaseDuration = 10.0
    gc_interval: IntervalDuration = 600.0
    max_age: IntervalDuration = 3600.0
    resources: Resources = Resources()
    timeouts: Timeouts = Timeouts()
    buckets: Annotated[tuple[float, ...], AfterValidator(_buckets)] = DEFAULT_BUCKETS

    @field_validator("command")
    @classmethod
    def _command_words(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value[0]:
            raise ValueError("the first word (the program) must not be empty")
        return value

    @model_validator(mode="after")
    def _grace_within_stop(self) -> Settings:
        if self.stop_grace >= self.timeouts.stop:
            raise ValueError(
                f"stop_grace ({format_duration(self.stop_grace)}) must be shorter than "
                f"timeouts.stop ({format_duration(self.timeouts.stop)})"
            )
        return self

    @model_validator(mode="after")
    def _max_age_beyond_a_run(self) -> Settings:
        if self.max_age <= self.longest_run:
            raise ValueError(
                f"max_age ({format_duration(self.max_age)}) must be longer than the longest a "
                f"run can take ({format_duration(self.longest_run)}: every timeout added up), "
                "or the collector could remove a sandbox still in use"
            )
        return self

    @property
    def longest_run(self) -> float:
        t = self.timeouts
        return t.pull + t.create + t.start + t.exec + t.stop + 2 * t.remove

    @property
    def jitter_seconds(self) -> float:
        if self.jitter.endswith("%"):
            return self.interval * float(self.jitter[:-1]) / 100
        return 0.0 if self.jitter == "0s" else parse_duration(self.jitter)


class Target(Settings):
    """One configured target: defaults already merged in."""

    name: str
    backend: str
    docker: DockerOptions | None = None
    podman: PodmanOptions | None = None
    namespace: NamespaceOptions | None = None
    kubernetes: KubernetesOptions | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _TARGET_NAME.match(value):
            raise ValueError(
                "must be 1-40 lowercase letters, digits or '-', starting and ending with a "
                f"letter or digit (it becomes part of sandbox names), got {value!r}"
            )
        return value

    @field_validator("backend", mode="before")
    @classmethod
    def _backend(cls, value: object) -> str:
        name = value.strip().lower() if isinstance(value, str) else value
        name = {"k8s": "kubernetes"}.get(name, name) if isinstance(name, str) else name
        if name not in known_backends():
            raise ValueError(f"unknown backend {value!r}; known: {', '.join(known_backends())}")
        assert isinstance(name, str)
        return name

    @model_validator(mode="after")
    def _one_backend_block(self) -> Target:
        for block in BACKEND_OPTIONS:
            if block != self.backend and getattr(self, block) is not None:
                raise ValueError(f"a {block!r} block is given but backend is {self.backend!r}")
        return self

    @property
    def options(self) -> StrictModel:
        """This target's backend block, or that block's defaults when absent."""
        block = getattr(self, self.backend, None)
        return block if block is not None else BACKEND_OPTIONS[self.backend]()


class Config(StrictModel):
    instance: str
    defaults: Settings
    targets: tuple[Target, ...]
    source: str = "<built-in defaults>"

    def target(self, name: str) -> Target:
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)


class _TopLevel(StrictModel):
    """The file's own shape, before targets are merged with defaults."""

    instance: str | None = None
    defaults: dict[str, Any] = {}
    targets: list[dict[str, Any]] | Literal["auto"]

    @field_validator("instance")
    @classmethod
    def _instance(cls, value: str | None) -> str | None:
        if value is not None and not _LABEL_VALUE.match(value):
            raise ValueError(
                "must be 1-63 letters, digits, '.', '_' or '-' (it is a label value), "
                f"got {value!r}"
            )
        return value


def default_instance() -> str:
    """This exporter's identity on the engines: the host name, made a valid label value."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip("._-")
    return cleaned[:63] or "sandbox-exporter"


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
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
    return parse_config(data, source=source, environ=environ)


def parse_config(
    data: object,
    *,
    source: str = "<built-in defaults>",
    environ: Mapping[str, str] | None = None,
    discover: Callable[[], list[dict[str, Any]]] | None = None,
) -> Config:
    """Validate an already-parsed document. `discover` finds targets for `targets: auto`."""
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
        from exporter.discovery import discover_targets

        raw_targets = (discover or discover_targets)()
        if not raw_targets:
            raise ConfigError([f"{source}: targets: 'auto' found no backend on this machine"])
    if not raw_targets:
        raise ConfigError([f"{source}: targets: at least one target is needed (or 'auto')"])

    targets: list[Target] = []
    base = top.defaults
    for index, raw in enumerate(raw_targets):
        label = f"targets[{index}]" + (
            f" ({raw['name']})" if isinstance(raw.get("name"), str) else ""
        )
        try:
            targets.append(Target.model_validate(_merge(base, raw)))
        except ValidationError as exc:
            problems.extend(_describe(exc, source, prefix=(label,)))
    seen: dict[str, int] = {}
    for index, target in enumerate(targets):
        if target.name in seen:
            problems.append(
                f"{source}: targets[{index}].name: {target.name!r} is already the name of "
                f"targets[{seen[target.name]}]; names must be unique"
            )
        seen.setdefault(target.name, index)
    if problems:
        raise ConfigError(problems)
    return Config(
        instance=top.instance or default_instance(),
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


def _describe(exc: ValidationError, source: str, prefix: tuple[str, ...]) -> list[str]:
    lines = []
    for error in exc.errors(include_url=False):
        loc = [p for p in error["loc"] if not (isinstance(p, str) and "[" in p)]
        message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "missing":
            message = "required but missing"
        elif error["type"] == "literal_error":
            message = f"{message}, got {error['input']!r}"
        lines.append(f"{source}: {_dotted([*prefix, *loc])}: {message}")
    return lines
