"""What a run tells the metrics: an interface probing/ owns and metrics/ meets
(`metrics.families.Metrics`), so that neither package imports the other."""

from __future__ import annotations

from typing import Protocol

from sandbox_exporter.config.targets import Target
from sandbox_exporter.results import BurstResult, ProbeResult


class Recorder(Protocol):
    def add_target(self, target: Target) -> None:
        """Every series the target implies, at zero, from now."""

    def remove_target(self, target: Target) -> None:
        """Every series of the target gone (a reload removed or relabelled it)."""

    def running(self, target: Target, *, burst: bool, now: bool) -> None:
        """A run (or a burst) of the target started (`now`) or ended."""

    def skipped(self, target: Target, *, burst: bool) -> None:
        """A scheduled run (or burst) did not start: one of the target's was going."""

    def record(self, result: ProbeResult) -> None:
        """A finished run."""

    def record_burst(self, burst: BurstResult) -> None:
        """A finished burst."""

    def orphan_removed(self, target: Target) -> None:
        """A sandbox of the target found left behind, and removed."""
