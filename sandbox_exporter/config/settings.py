"""What every target has whatever its backend: schedule, image, command, limits, timeouts.

`Settings` is the `defaults:` block; each target is a `Settings` plus its name and
its backend's own block (targets.py). Backends receive only their options and the
`Timeouts`, never a whole target.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from sandbox_exporter.config.durations import (
    DURATION_PART,
    DURATION_PATTERN,
    format_duration,
    parse_duration,
)

# Twelve edges a decade (1, 1.25, 1.5, 1.8, 2.2, 2.7, 3.3, 4, 5, 6, 7.5, 9), no two
# more than 1.25x apart from 1 ms to 60 s, so that histogram_quantile is never more
# than 25% off there (and typically far less); 1 s and 5 s, the SLO edges, exactly;
# then 120 s and 300 s for slow pulls and Pods. 60 edges: 63 series per histogram.
_DECADE = (1.0, 1.25, 1.5, 1.8, 2.2, 2.7, 3.3, 4.0, 5.0, 6.0, 7.5, 9.0)
DEFAULT_BUCKETS: tuple[float, ...] = (
    *(round(step * 10.0**power, 6) for power in range(-3, 1) for step in _DECADE),
    10.0, 12.5, 15.0, 18.0, 22.0, 27.0, 33.0, 40.0, 50.0, 60.0, 120.0, 300.0,
)  # fmt: skip
DEFAULT_IMAGE = "busybox:1.36"


class StrictModel(BaseModel):
    """Unknown keys are errors; a loaded value never changes."""

    # a field's docstring is its description in the JSON Schema and the reference
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def _duration(low: float, high: float) -> Callable[[float], float]:
    def check(seconds: float) -> float:
        if not low < seconds <= high:
            raise ValueError(
                f"must be more than {format_duration(low) if low else '0s'}"
                f" and at most {format_duration(high)}"
            )
        return seconds

    return check


def _duration_schema(high: str) -> WithJsonSchema:
    """What a duration is written as in the file (the model holds seconds)."""
    return WithJsonSchema(
        {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "x-type": "duration",  # not `format`: JSON Schema's "duration" is ISO 8601
            "x-check": f"more than 0s and at most {high}",
        }
    )


IntervalDuration = Annotated[
    float,
    BeforeValidator(parse_duration),
    AfterValidator(_duration(0.0, 86400.0)),
    _duration_schema("24h"),
]
PhaseDuration = Annotated[
    float,
    BeforeValidator(parse_duration),
    AfterValidator(_duration(0.0, 3600.0)),
    _duration_schema("1h"),
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


class Timeouts(StrictModel):
    """Each phase's bound, and the two bounds of a whole run derived from them."""

    pull: PhaseDuration = 300.0
    """The longest the image pull may take (only when the image is pulled)."""
    create: PhaseDuration = 30.0
    """The longest `create` may take; also bounds the engine check and the backend's set-up."""
    start: PhaseDuration = 60.0
    """The longest `start` may take: for Kubernetes and Nomad this includes scheduling and
    the node's pull.
    """
    exec: PhaseDuration = 30.0
    """The longest `exec` (running `command` and reading its output) may take."""
    stop: PhaseDuration = 30.0
    """The longest `stop` may take; must be longer than `stop_grace`."""
    remove: PhaseDuration = 30.0
    """The longest `remove` may take."""

    @property
    def whole_run(self) -> float:
        """The longest one run can take, every call at its timeout: the engine check
        and the image check or the backend's set-up (`prepare`; each bounded like
        `create`), the pull, the five phases,
        and a second removal when the first failed."""
        return 3 * self.create + self.pull + self.start + self.exec + self.stop + 2 * self.remove

    @property
    def after_cancel(self) -> float:
        """The longest a run takes to wind down once cancelled: the call in flight
        runs to its timeout, then the sandbox is removed."""
        return max(self.pull, self.create, self.start, self.exec, self.stop) + self.remove


class Resources(StrictModel):
    cpus: float = Field(1.0, gt=0, le=512)
    """CPUs the probe sandbox may use (a fraction is a share of one CPU)."""
    memory_mb: int = Field(256, ge=6, le=4 * 1024 * 1024)
    """Memory limit of the probe sandbox, in MiB."""
    pids: int = Field(64, ge=1, le=4_194_304)
    """Most processes the probe sandbox may run."""


class Burst(StrictModel):
    """A target's burst probe: `concurrency` sandboxes launched together (`burst`) or
    `stagger` apart (`staggered`), each through its lifecycle, every `interval`."""

    concurrency: int = Field(ge=2, le=200)
    """Sandboxes launched together in one burst."""
    mode: Literal["burst", "staggered"] = "burst"
    """`burst`: all at once; `staggered`: `stagger` apart."""
    stagger: PhaseDuration = 0.2
    """Time between two launches in `staggered` mode."""
    interval: IntervalDuration = 300.0
    """Between the starts of two bursts of this target (its own schedule)."""

    @property
    def offsets(self) -> list[float]:
        """Seconds after the launch at which each sandbox's create is sent."""
        step = self.stagger if self.mode == "staggered" else 0.0
        return [index * step for index in range(self.concurrency)]


# native histogram schemas (metrics/native.py): bucket k holds (2^((k-1)/2^s), 2^(k/2^s)]
MIN_SCHEMA, MAX_SCHEMA = -4, 8
DEFAULT_SCHEMA = 4  # the coarsest (fewest buckets) within 5 % at worst: 2^(1/16) - 1 = 4.4 %


class Histograms(StrictModel):
    """The duration histograms' native buckets, kept beside the classic `buckets` and
    shown only to a scraper that asks for protobuf (docs/native-histograms.md)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, use_attribute_docstrings=True
    )

    native: bool = True
    """Keep native (exponential) buckets beside the classic ones; served to a scraper that
    asks for protobuf.
    """
    # `schema` in the file; BaseModel has a `schema` of its own
    native_schema: int = Field(DEFAULT_SCHEMA, ge=MIN_SCHEMA, le=MAX_SCHEMA, alias="schema")
    """The native buckets' resolution: each bucket is 2^(2^-schema) wider than the last (4:
    4.4 %).
    """


# the SLO windows the shipped rules compute an error budget over (a rule's range is
# fixed in PromQL, so the window is one of these, not any duration)
SLO_WINDOWS = {"7d": 7 * 86400.0, "14d": 14 * 86400.0, "28d": 28 * 86400.0, "30d": 30 * 86400.0}


def _objective(value: object) -> float:
    """`99.5%` or 0.995: the share of probes that must be good, below 100%."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            value = float(value.strip()[:-1]) / 100
        except ValueError:
            raise ValueError(f"expected a percentage such as 99.5%, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a percentage such as 99.5%, got {value!r}")
    if not 0 < value < 1:
        hint = f" (for {value:g} percent, write {value:g}%)" if 1 < value < 100 else ""
        raise ValueError(
            f"must be above 0% and below 100% (100% leaves no error budget), got {value!r}{hint}"
        )
    return float(value)


def _slo_window(value: object) -> str:
    text = value.strip() if isinstance(value, str) else value
    if text not in SLO_WINDOWS:
        raise ValueError(
            f"one of {', '.join(SLO_WINDOWS)} (the windows the rules compute), got {value!r}"
        )
    return str(text)


class Slo(StrictModel):
    """A target's objective for start-up: `objective` of its probes must be good,
    a probe being good when it succeeds and reaches exec within `time_to_exec`;
    the error budget is counted over `window` (docs/slo.md)."""

    objective: Annotated[
        float,
        BeforeValidator(_objective),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "pattern": r"^\s*\d{1,2}(\.\d+)?\s*%\s*$"},
                    {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                ],
                "x-type": "percentage or ratio",
                "x-check": "above 0% and below 100%",
            }
        ),
    ]
    """The share of probes that must be good, as a percentage below 100 % (`99.5%`) or a
    ratio (0.995).
    """
    time_to_exec: PhaseDuration
    """A probe is good when it succeeds and reaches exec within this."""
    window: Annotated[
        str, BeforeValidator(_slo_window), WithJsonSchema({"enum": list(SLO_WINDOWS)})
    ] = "28d"
    """The window the error budget is counted over."""

    @property
    def window_seconds(self) -> float:
        return SLO_WINDOWS[self.window]

    def describe(self) -> str:
        return (
            f"{self.objective * 100:g}% of probes reach exec within "
            f"{format_duration(self.time_to_exec)}, over {self.window}"
        )


class Settings(StrictModel):
    """What `defaults:` holds; each target may override any of it."""

    interval: IntervalDuration = 60.0
    """Between the starts of two probes of a target."""
    jitter: Annotated[
        str,
        BeforeValidator(_jitter),
        WithJsonSchema(
            {
                "type": "string",
                "pattern": rf"^\s*(\d+(\.\d+)?\s*%|0|({DURATION_PART})+)\s*$",
                "x-type": "percentage or duration",
                "x-check": "a percentage from 0% to 100%, or a duration",
            }
        ),
    ] = "10%"
    """Random delay added to each run: a percentage of `interval` (`10%`) or a duration."""
    image: str = Field(DEFAULT_IMAGE, min_length=1)
    """The image the probe sandbox runs, for the backends that run images."""
    pull_policy: Literal["if_not_present", "always", "never"] = "if_not_present"
    """When the image is pulled: `if_not_present`, `always` (a pull phase every run) or
    `never`.
    """
    command: tuple[str, ...] = Field(("echo", "hello"), min_length=1)
    """What the exec phase runs in the sandbox, as a list of words."""
    expect_output: str | None = "hello"
    """The output `command` must print (compared after trimming whitespace); null checks the
    exit status only.
    """
    stop_grace: PhaseDuration = 10.0
    """Between SIGTERM and SIGKILL at stop; must be shorter than `timeouts.stop`."""
    gc_interval: IntervalDuration = 600.0
    """How often this exporter's left-behind sandboxes are looked for and removed."""
    max_age: IntervalDuration = 3600.0
    """A sandbox of this exporter older than this is left behind and removed; must be longer
    than a whole run (every timeout added up).
    """
    resources: Resources = Resources()
    """The probe sandbox's limits."""
    timeouts: Timeouts = Timeouts()
    """Each phase's bound; a phase past it fails with reason `timeout` and what it left is
    removed.
    """
    buckets: Annotated[
        tuple[float, ...],
        AfterValidator(_buckets),
        Field(
            min_length=1,
            max_length=60,
            json_schema_extra={"x-check": "1 to 60 edges, positive, strictly increasing"},
        ),
    ] = DEFAULT_BUCKETS
    """The classic histogram bucket edges, in seconds."""
    histograms: Histograms = Histograms()
    """The duration histograms' native buckets (docs/native-histograms.md)."""
    slo: Slo | None = None
    """An objective for start-up, with burn-rate alerts (docs/slo.md); null: none."""

    @field_validator("command")
    @classmethod
    def _command_words(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value[0]:
            raise ValueError("the first word (the program) must not be empty")
        return value

    @model_validator(mode="after")
    def _related_fields_agree(self) -> Settings:
        problems = relation_problems(self.stop_grace, self.max_age, self.timeouts)
        if problems:
            # its own error type: the loader reports these per field (related_problems)
            raise PydanticCustomError(RELATION, "; ".join(message for _, message in problems))
        return self

    @property
    def jitter_seconds(self) -> float:
        if self.jitter.endswith("%"):
            return self.interval * float(self.jitter[:-1]) / 100
        return 0.0 if self.jitter == "0s" else parse_duration(self.jitter)


RELATION = "relation"  # the error type of a check that reads several fields


def relation_problems(
    stop_grace: float, max_age: float, timeouts: Timeouts
) -> list[tuple[str, str]]:
    """(field, what is wrong) for each check between fields that fails."""
    problems = []
    if stop_grace >= timeouts.stop:
        problems.append(
            (
                "stop_grace",
                f"{format_duration(stop_grace)} must be shorter than timeouts.stop "
                f"({format_duration(timeouts.stop)})",
            )
        )
    if max_age <= timeouts.whole_run:
        problems.append(
            (
                "max_age",
                f"{format_duration(max_age)} must be longer than the longest a run can take "
                f"({format_duration(timeouts.whole_run)}: every timeout added up), or the "
                "collector could remove a sandbox still in use",
            )
        )
    return problems


class _Related(StrictModel):
    """The fields the checks between fields read, validated without the others."""

    stop_grace: PhaseDuration = Settings.model_fields["stop_grace"].default
    max_age: IntervalDuration = Settings.model_fields["max_age"].default
    timeouts: Timeouts = Timeouts()


def related_problems(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The checks between fields on raw settings whose other fields may be invalid:
    run when the fields they read are valid on their own (else those are reported)."""
    try:
        related = _Related.model_validate({k: data[k] for k in _Related.model_fields if k in data})
    except ValidationError:
        return []
    return relation_problems(related.stop_grace, related.max_age, related.timeouts)
