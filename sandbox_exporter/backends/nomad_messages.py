"""Nomad's reasons in Nomad's words: why the scheduler placed nothing (as `nomad job
status` prints an evaluation's metrics, command/monitor.go) and why an allocation
will not run (its task events)."""

from __future__ import annotations

from typing import Any

from sandbox_exporter.backends.nomad_job import TASK

TERMINAL = {"complete", "failed", "lost"}


def placement_problem(evaluation: dict[str, Any]) -> str | None:
    """Why the scheduler placed nothing, in its metrics' words; None if it placed."""
    status = evaluation.get("Status")
    if status in ("failed", "canceled"):
        return f"evaluation {status}: {evaluation.get('StatusDescription') or ''}".strip()
    failed = evaluation.get("FailedTGAllocs") or {}
    if not failed:
        return None
    parts = []
    for group, metrics in sorted(failed.items()):
        words = metric_words(metrics or {})
        parts.append(f'task group "{group}": {"; ".join(words) or "no node fits"}')
    blocked = evaluation.get("BlockedEval")
    tail = f" (blocked evaluation {blocked})" if blocked else ""
    return f"placement failed: {', '.join(parts)}{tail}"


def metric_words(m: dict[str, Any]) -> list[str]:
    """An AllocMetric in words, as `nomad job status` prints it (command/monitor.go)."""
    words = []
    if not m.get("NodesEvaluated"):
        words.append("no nodes were eligible for evaluation")
    for dc, available in sorted((m.get("NodesAvailable") or {}).items()):
        if not available:
            words.append(f'no nodes are available in datacenter "{dc}"')
    for cls, n in sorted((m.get("ClassFiltered") or {}).items()):
        words.append(f'class "{cls}" filtered {n} nodes')
    for constraint, n in sorted((m.get("ConstraintFiltered") or {}).items()):
        words.append(f'constraint "{constraint}" filtered {n} nodes')
    if m.get("NodesExhausted"):
        words.append(f"resources exhausted on {m['NodesExhausted']} nodes")
    for dim, n in sorted((m.get("DimensionExhausted") or {}).items()):
        words.append(f"{dim} exhausted on {n} nodes")
    words.extend(f'quota limit hit "{q}"' for q in m.get("QuotaExhausted") or [])
    if m.get("NodesEvaluated"):
        words.append(f"{m['NodesEvaluated']} nodes evaluated")
    return words


def start_problem(alloc: dict[str, Any]) -> str | None:
    """Why this allocation will not run, in the task events' words; None while it may."""
    task = (alloc.get("TaskStates") or {}).get(TASK) or {}
    events = task.get("Events") or []
    for event in events:
        if event.get("Type") == "Driver Failure":
            return f"Driver Failure: {event_words(event)}"
    status = alloc.get("ClientStatus")
    if status in TERMINAL or task.get("State") == "dead":
        last = next((e for e in reversed(events) if event_words(e)), None)
        why = f": {last.get('Type')}: {event_words(last)}" if last else ""
        return f"allocation {alloc.get('ID', '')[:8]} is {status}{why}"
    return None


def event_words(event: dict[str, Any]) -> str:
    return str(
        event.get("DisplayMessage") or event.get("DriverError") or event.get("Message") or ""
    )
