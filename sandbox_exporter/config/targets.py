"""A target: the settings (defaults merged in), its name, its backend and that backend's
block; and the whole config, an instance and its targets.

The model of each backend's targets, and the discriminated union of them all, are
built from the registry's declarations: adding a backend adds its block here."""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field, TypeAdapter, create_model, field_validator, model_validator

from sandbox_exporter import backends
from sandbox_exporter.config.settings import Burst, Settings, StrictModel

if TYPE_CHECKING:  # backends.base imports this package's settings: no cycle at run time
    from sandbox_exporter.backends.base import BackendKind, BackendOptions

_TARGET_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")


class Target(Settings):
    """One configured target. Each backend's targets are a subclass with a literal
    `backend` and a field named after it holding its options."""

    name: Annotated[str, Field(json_schema_extra={"pattern": _TARGET_NAME.pattern})]
    """The target's name: the `target` label and part of every sandbox's name; unique."""
    backend: str
    """Which backend probes this target (an alias such as `k8s` is accepted)."""
    burst: Burst | None = None  # a burst probe besides the single one (probing/burst.py)
    """A burst probe besides the single one (docs/bursts.md); null: none."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _TARGET_NAME.match(value):
            raise ValueError(
                "must be 1-40 lowercase letters, digits or '-', starting and ending with a "
                f"letter or digit (it becomes part of sandbox names), got {value!r}"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _one_backend_block(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for kind in backends.kinds():
                if kind.name != data.get("backend") and kind.name in data:
                    raise ValueError(
                        f"a {kind.name!r} block is given but backend is {data.get('backend')!r}"
                    )
        return data

    @model_validator(mode="after")
    def _burst_needs_concurrent_calls(self) -> Target:
        self.check_burst()
        return self

    def check_burst(self) -> None:
        """ValueError when `burst` is set and the backend cannot launch sandboxes together
        (a burst set by `model_copy`, which does not validate, is checked by calling this)."""
        if self.burst is not None and not self.kind.capabilities.thread_safe:
            raise ValueError(
                f"burst: the {self.backend} backend runs its calls one at a time in a worker "
                "process, so its sandboxes cannot be launched together"
            )

    @property
    def kind(self) -> BackendKind[Any]:
        return backends.kind(self.backend)

    @property
    def options(self) -> BackendOptions:
        """This target's backend block (its defaults when the block was left out)."""
        block: BackendOptions = getattr(self, self.backend)
        return block

    @property
    def uses_image(self) -> bool:
        """Whether `image` means anything to this target's backend."""
        from sandbox_exporter.backends.base import Images

        return self.kind.capabilities.images is not Images.NONE


@functools.cache
def _models(kinds: tuple[BackendKind[Any], ...]) -> tuple[type[Target], ...]:
    return tuple(
        create_model(  # type: ignore[call-overload]
            f"{kind.name.capitalize()}Target",
            __base__=Target,
            backend=(Literal[kind.name], ...),
            **{
                kind.name: (
                    kind.options,
                    Field(
                        default_factory=kind.options,
                        description=f"The {kind.name} backend's options; each key has a default.",
                    ),
                )
            },
        )
        for kind in kinds
    )


def target_models() -> tuple[type[Target], ...]:
    """Each backend's target model: a `Target` with its literal `backend` and its block."""
    return _models(tuple(backends.kinds()))


def target_union() -> Any:
    """The discriminated union of every backend's target model, for a TypeAdapter."""
    union: Any = Union[target_models()]  # noqa: UP007 - built at run time
    return Annotated[union, Field(discriminator="backend")]


@functools.cache
def _adapter(kinds: tuple[BackendKind[Any], ...]) -> TypeAdapter[Target]:
    adapter: TypeAdapter[Target] = TypeAdapter(target_union())
    return adapter


def target_adapter() -> TypeAdapter[Target]:
    """Validates one target dict into its backend's model. Error locations start with
    the backend's name (the union's tag), then the field."""
    return _adapter(tuple(backends.kinds()))


class Config(StrictModel):
    instance: str
    defaults: Settings
    targets: tuple[Target, ...]
    source: str = "<built-in defaults>"
    # `targets: auto`: each backend looked for and not found, and why
    not_found: dict[str, str] = Field(default_factory=dict)
    # (index, count): this exporter probes only the targets of its shard (sharding.py)
    shard: tuple[int, int] = (0, 1)

    def target(self, name: str) -> Target:
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)
