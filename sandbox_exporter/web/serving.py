"""How the web process serves: one set of options, made by the exporter and passed
whole to the web process (as JSON, on its command line)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ServingOptions:
    """How the web process serves. `nice` is added to the exporter's own niceness:
    under CPU contention the probes, whose timing is the product, come first.
    `scrapes_per_second` paces /metrics (0: unpaced): with a flood of scrapes the
    web process would otherwise take a whole core that the engines need."""

    nice: int = 10
    read_timeout: float = 30.0
    metrics_max_age: float = 1.0
    forwarded_per_second: float = 50.0
    forwarded_burst: int = 100
    forwarded_in_flight: int = 32
    scrapes_per_second: float = 50.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServingOptions:
        return cls(**json.loads(text))
