"""Garbage collection of old sandboxes, on the real engines, and `gc`: this instance's
past max_age, another instance's only once past the expiry its creator wrote on it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sandbox_exporter.cli import main
from sandbox_exporter.metrics.families import Metrics
from sandbox_exporter.probing.prober import Prober
from tests.conftest import TEST_IMAGE, Engine
from tests.helpers import make_config

HOUR = 3600


def leave(engine: Engine, name: str, age: float, **labels: str) -> None:
    engine.client.containers.create(
        TEST_IMAGE,
        ["true"],
        name=name,
        labels={
            "sandbox-exporter.io/managed": "true",
            "sandbox-exporter.io/target": "probe",
            "sandbox-exporter.io/instance": "gc-test",
            "sandbox-exporter.io/created-at": str(int(time.time() - age)),
            **labels,
        },
    )


THEIRS = {"sandbox-exporter.io/instance": "another-exporter"}
SCENE = (
    "sandbox-exporter-probe-old",
    "sandbox-exporter-probe-young",
    "sandbox-exporter-probe-theirs-expired",
    "sandbox-exporter-probe-theirs-running",
    "sandbox-exporter-probe-theirs-unlabelled",
    "unlabelled-old",
)


def expires(age: float) -> dict[str, str]:
    return {"sandbox-exporter.io/expires-at": str(int(time.time() - age))}


@pytest.fixture
def scene(engine: Engine) -> Any:
    leave(engine, "sandbox-exporter-probe-old", 2 * HOUR)
    leave(engine, "sandbox-exporter-probe-young", 60)
    # another instance's, made 2 h ago: its run ended 1 h ago; a run of its that still
    # goes (its creator's timeouts are long); one made by an older version (no expiry)
    leave(engine, "sandbox-exporter-probe-theirs-expired", 2 * HOUR, **THEIRS, **expires(HOUR))
    leave(engine, "sandbox-exporter-probe-theirs-running", 2 * HOUR, **THEIRS, **expires(-60))
    leave(engine, "sandbox-exporter-probe-theirs-unlabelled", 2 * HOUR, **THEIRS)
    engine.client.containers.create(TEST_IMAGE, ["true"], name="unlabelled-old")
    yield engine
    for name in SCENE:
        for container in engine.client.containers.list(all=True, filters={"name": f"^{name}$"}):
            container.remove(force=True)


def names(engine: Engine) -> set[str]:
    return {c.name for c in engine.client.containers.list(all=True)}


def target_dict(engine: Engine) -> dict[str, Any]:
    return {
        "name": "probe",
        "backend": engine.backend,
        "max_age": "1h",
        engine.backend: {"base_url": engine.url},
    }


def test_old_sandboxes_are_collected_another_instances_only_past_their_expiry(
    scene: Engine,
) -> None:
    engine = scene
    target = make_config(target_dict(engine)).targets[0]
    registry = CollectorRegistry()
    prober = Prober(target, "gc-test", Metrics(registry), stopping=threading.Event())
    removed = prober.collect_garbage()
    prober.close()
    assert sorted(s.name for s in removed) == [
        "sandbox-exporter-probe-old",
        "sandbox-exporter-probe-theirs-expired",
    ]
    left = names(engine)
    assert not {"sandbox-exporter-probe-old", "sandbox-exporter-probe-theirs-expired"} & left
    assert {
        "sandbox-exporter-probe-young",
        "sandbox-exporter-probe-theirs-running",
        "sandbox-exporter-probe-theirs-unlabelled",
        "unlabelled-old",
    } <= left
    assert (
        registry.get_sample_value(
            "sandbox_orphans_removed_total", {"target": "probe", "backend": engine.backend}
        )
        == 2
    )


def test_the_gc_command_lists_then_removes(
    scene: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = scene
    config = tmp_path / "config.yaml"
    config.write_text(
        f"instance: gc-test\ntargets:\n  - {{name: probe, backend: {engine.backend}, max_age: 1h, "
        f"{engine.backend}: {{base_url: '{engine.url}'}}}}\n"
    )
    assert main(["gc", "--dry-run", "--config.file", str(config)]) == 0
    out = capsys.readouterr().out
    assert "probe: would remove sandbox-exporter-probe-old" in out
    assert "probe: would remove sandbox-exporter-probe-theirs-expired" in out
    assert "young" not in out
    assert "running" not in out
    assert "sandbox-exporter-probe-old" in names(engine)
    assert main(["gc", "--config.file", str(config)]) == 0
    assert "probe: removed sandbox-exporter-probe-old" in capsys.readouterr().out
    assert "sandbox-exporter-probe-old" not in names(engine)
