"""Hot reload: targets added, removed, changed; a bad config kept out."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox_exporter.config import load_config
from sandbox_exporter.daemon import Daemon
from sandbox_exporter.probing.fleet import BackendFactory
from tests.fakes import FakeBackend, by_name
from tests.helpers import scraped, wait_for
from tests.process import ExporterProcess


def write(path: Path, *targets: str) -> None:
    path.write_text("instance: reload-test\ntargets:\n" + "".join(f"  - {t}\n" for t in targets))


A = "{name: a, backend: namespace, interval: 1h}"
B = "{name: b, backend: namespace, interval: 1h}"
B_CHANGED = "{name: b, backend: namespace, interval: 2h, buckets: [0.5, 1, 2]}"
C = "{name: c, backend: namespace, interval: 1h}"


def reloading(path: Path, backends: BackendFactory) -> Daemon:
    """A daemon, not yet started, whose reload reads `path` again."""
    return Daemon(
        load_config(path), listen_address=None, backends=backends, loader=lambda: load_config(path)
    )


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Daemon, Path]]:
    path = tmp_path / "config.yaml"
    write(path, A, B)
    fakes: dict[str, FakeBackend] = {}
    d = reloading(path, lambda target: fakes.setdefault(target.name, FakeBackend()))
    d.start()
    wait_for(lambda: d.probers[0].last_result, what="a's first run")
    yield d, path
    d.shutdown()


def series(d: Daemon, target: str) -> float | None:
    return d.registry.get_sample_value(
        "sandbox_probes_total", {"target": target, "backend": "namespace", "result": "success"}
    )


def test_added_removed_and_changed_targets_take_effect(daemon: tuple[Daemon, Path]) -> None:
    d, path = daemon
    a_prober = d.probers[0]
    a_next = d.scheduler.next_run_time("a")
    write(path, A, B_CHANGED, C)
    assert d.reload() == []
    assert [p.target.name for p in d.probers] == ["a", "b", "c"]
    assert d.probers[0] is a_prober, "an unchanged target keeps its prober"
    assert d.scheduler.next_run_time("a") == a_next, "and its schedule"
    assert d.probers[1].target.interval == 7200
    wait_for(lambda: series(d, "c") == 1, what="the added target's first run")
    # b's buckets changed: its histograms start again with the new boundaries
    text = d.exposition().decode()
    assert (
        scraped(
            text,
            "sandbox_phase_duration_seconds_bucket",
            target="b",
            backend="namespace",
            phase="exec",
            le="0.5",
        )
        is not None
    )
    assert (
        scraped(
            text,
            "sandbox_phase_duration_seconds_bucket",
            target="b",
            backend="namespace",
            phase="exec",
            le="0.005",
        )
        is None
    )

    write(path, A, C)
    assert d.reload() == []
    assert series(d, "b") is None, "a removed target's series disappear"
    assert 'target="b"' not in d.exposition().decode()
    assert d.scheduler.next_run_time("b") is None
    assert d.registry.get_sample_value("sandbox_exporter_config_last_reload_successful") == 1


def test_a_bad_config_is_refused_and_the_running_one_kept(daemon: tuple[Daemon, Path]) -> None:
    d, path = daemon
    path.write_text("targets:\n  - {name: a, backend: lxc}\n")
    problems = d.reload()
    assert problems == [
        f"{path}: targets[0] (a).backend: unknown backend 'lxc'; known: apple, docker, firecracker, hyperlight, kubernetes, "
        "namespace, nomad, podman"
    ]
    assert [p.target.name for p in d.probers] == ["a", "b"]
    assert d.registry.get_sample_value("sandbox_exporter_config_last_reload_successful") == 0
    assert d.scheduler.next_run_time("a") is not None


def test_a_run_in_flight_finishes_under_its_old_config(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    write(path, "{name: a, backend: namespace, interval: 1h, command: [echo, hello]}")
    old_backend = FakeBackend(hang={"exec"})
    backends = {"a": old_backend}
    d = reloading(path, by_name(backends))
    d.start()
    try:
        wait_for(lambda: old_backend.entered.get("exec"), what="the old run in exec")
        backends["a"] = FakeBackend()
        write(
            path,
            "{name: a, backend: namespace, interval: 1h, command: [echo, hi], expect_output: hi}",
        )
        assert d.reload() == []
        assert d.probers[0].busy, "the new prober shares the old run's guard"
        old_backend.release.set()
        wait_for(lambda: not d.probers[0].busy, what="the old run to end")
        assert (
            d.registry.get_sample_value(
                "sandbox_probes_total", {"target": "a", "backend": "namespace", "result": "success"}
            )
            == 1
        ), "the old run completed under the old command and was counted"
        assert d.probers[0].target.command == ("echo", "hi")
    finally:
        old_backend.release.set()
        d.shutdown()


def successes(process: ExporterProcess, target: str) -> float | None:
    return scraped(
        process.metrics(),
        "sandbox_probes_total",
        target=target,
        backend="namespace",
        result="success",
    )


@pytest.mark.namespace
def test_sighup_reloads_a_running_daemon(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    state = f"namespace: {{state_dir: '{tmp_path}/state'}}"
    a = f"{{name: a, backend: namespace, interval: 1h, {state}}}"
    b = f"{{name: b, backend: namespace, interval: 1h, {state}}}"
    write(path, a)
    process = ExporterProcess(path)
    try:
        wait_for(lambda: successes(process, "a") == 1, what="a's first run")
        write(path, a, b)  # add
        process.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: successes(process, "b") == 1, what="b added and run")
        write(path, b.replace("1h", "2h"))  # remove a, change b
        process.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: successes(process, "a") is None, what="a's series gone")
        reloaded = process.event("config reloaded")
        assert reloaded is not None
        assert (reloaded["removed"], reloaded["changed"]) == (["a"], ["b"])
        path.write_text("targets: [\n")  # invalid
        process.proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: process.event("config reload failed; the running config is kept"),
            what="the refusal",
        )
        # /metrics may be up to a second old (one render serves every scrape in a second)
        wait_for(
            lambda: (
                scraped(process.metrics(), "sandbox_exporter_config_last_reload_successful") == 0
            ),
            what="the reload gauge at 0",
        )
        text = process.metrics()
        assert (
            scraped(text, "sandbox_probes_total", target="b", backend="namespace", result="success")
            is not None
        )
    finally:
        assert process.stop() == 0


@pytest.mark.namespace
def test_the_config_file_is_watched_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    state = f"namespace: {{state_dir: '{tmp_path}/state'}}"
    write(path, f"{{name: a, backend: namespace, interval: 1h, {state}}}")
    process = ExporterProcess(path, "--config.auto-reload-interval", "200ms")
    try:
        wait_for(lambda: successes(process, "a") == 1, what="a's first run")
        write(
            path,
            f"{{name: a, backend: namespace, interval: 1h, {state}}}",
            f"{{name: w, backend: namespace, interval: 1h, {state}}}",
        )
        wait_for(lambda: successes(process, "w") == 1, what="w picked up without a signal")
    finally:
        assert process.stop() == 0


def test_a_retired_backend_is_closed_only_once_its_run_is_over(tmp_path: Path) -> None:
    """A run longer than the old fixed wait (the longest call plus a removal): its
    backend must not be closed under it by the reload that retired its target."""
    path = tmp_path / "config.yaml"
    timeouts = (
        "timeouts: {pull: 1s, create: 1s, start: 1s, exec: 1s, stop: 1s, remove: 1s}, "
        "stop_grace: 500ms"
    )  # a run bound the old code waited no longer than: 2 s
    write(path, f"{{name: a, backend: namespace, interval: 1h, {timeouts}}}")
    engine_busy = threading.Event()  # never set: each of three calls takes 0.7 s

    def slow(method: str) -> None:
        if method in ("create", "start", "exec"):
            engine_busy.wait(0.7)

    old_backend = FakeBackend(on_call=slow)
    backends = {"a": old_backend}
    d = reloading(path, by_name(backends))
    d.start()
    try:
        wait_for(lambda: old_backend.entered.get("create"), what="the old run in create")
        backends["a"] = FakeBackend()
        write(path, f"{{name: a, backend: namespace, interval: 2h, {timeouts}}}")
        assert d.reload() == []
        wait_for(
            lambda: "close" in [m for m, _ in old_backend.received],
            timeout=15,
            what="the old backend closed",
        )
        methods = [m for m, _ in old_backend.received]
        assert methods.index("close") > methods.index("remove"), methods
    finally:
        d.shutdown()
