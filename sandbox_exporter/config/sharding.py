"""Shards: N exporters splitting one config's targets, each probing those whose name
hashes to its index, as Prometheus's `hashmod` relabelling does (md5 of the value, its
last 8 bytes as a big-endian integer, modulo N). A StatefulSet of N replicas runs one
exporter per ordinal; a target's shard changes only when N does."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sandbox_exporter.config.targets import Config


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"--shard.count: must be at least 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"--shard.index: must be from 0 to {self.count - 1} (--shard.count is "
                f"{self.count}), got {self.index}"
            )

    def owns(self, name: str) -> bool:
        return self.count == 1 or hashmod(name, self.count) == self.index

    def of(self, config: Config) -> Config:
        """The config with only this shard's targets."""
        if self.count == 1:
            return config
        mine = tuple(t for t in config.targets if self.owns(t.name))
        return config.model_copy(update={"targets": mine, "shard": (self.index, self.count)})

    def __str__(self) -> str:
        return f"shard {self.index} of {self.count}"


def hashmod(value: str, modulus: int) -> int:
    """Prometheus's `hashmod` of `value`."""
    digest = hashlib.md5(value.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[8:], "big") % modulus
