"""Burst probes on real engines: N sandboxes launched together, every burst metric,
nothing left behind, one failure counted without losing the others' figures, a
shutdown mid-burst, and the single and burst runs of a target never overlapping."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from sandbox_exporter.backends.base import BackendError, Deadline, SandboxRef
from sandbox_exporter.config import parse_config
from sandbox_exporter.metrics.families import Metrics
from sandbox_exporter.probing.calls import Interrupt
from sandbox_exporter.probing.prober import Prober
from sandbox_exporter.results import BurstResult
from tests.conftest import TEST_IMAGE, Engine, unavailable
from tests.fakes import FakeBackend
from tests.helpers import namespaces_missing, wait_for
from tests.process import ExporterProcess

FAST = {"create": "20s", "start": "30s", "exec": "20s", "stop": "20s", "remove": "20s"}


class Hooked:
    """The real backend, with a test hook: counts the execs that began, and fails the
    first one (when asked) or holds them all until released."""

    def __init__(self, inner: Any, *, fail_one_exec: bool = False, hold_exec: bool = False):
        self.inner = inner
        self.fail_one_exec = fail_one_exec
        self.hold_exec = hold_exec
        self.execs = 0
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def exec(self, sandbox: SandboxRef, command: Sequence[str], deadline: Deadline) -> Any:
        with self._lock:
            self.execs += 1
            first = self.execs == 1
        if self.fail_one_exec and first:
            raise BackendError("exec refused by the test hook")
        if self.hold_exec:
            self.release.wait(deadline.remaining())
        return self.inner.exec(sandbox, command, deadline)


def make_prober(
    target: dict[str, Any],
    *,
    hook: Callable[[Any], Any] | None = None,
    stopping: threading.Event | None = None,
    interrupt: Interrupt | None = None,
) -> Prober:
    config = parse_config({"instance": "burst-test", "targets": [target]})
    t = config.targets[0]
    backend = hook(t.kind.build(t.options, t.timeouts)) if hook else None
    return Prober(
        t,
        "burst-test",
        Metrics(CollectorRegistry()),
        backend=backend,
        stopping=stopping or threading.Event(),
        interrupt=interrupt,
    )


def registry(prober: Prober) -> CollectorRegistry:
    assert isinstance(prober.metrics, Metrics)
    return prober.metrics.registry


def value(prober: Prober, name: str, **labels: str) -> float | None:
    t = prober.target
    return registry(prober).get_sample_value(
        name, {"target": t.name, "backend": t.backend, **labels}
    )


def left_behind(prober: Prober) -> list[str]:
    found = prober.backend_calls().list_managed(prober.target.name, timeout=20)
    return [m.name for m in found]


def check_burst(prober: Prober, burst: BurstResult | None, n: int, failed: int = 0) -> None:
    """Every burst metric after one burst of `n` with `failed` exec failures."""
    assert burst is not None
    assert len(burst.results) == n
    assert [r.sandbox for r in burst.results].count("") == 0
    ok = n - failed
    assert value(prober, "sandbox_bursts_total", result="success") == (1 if not failed else 0)
    assert value(prober, "sandbox_bursts_total", result="failure") == (1 if failed else 0)
    assert value(prober, "sandbox_burst_sandboxes_total", result="success") == ok
    assert value(prober, "sandbox_burst_sandboxes_total", result="failure") == failed
    for phase in ("create", "start"):
        assert value(prober, "sandbox_burst_phase_duration_seconds_count", phase=phase) == n
    for phase in ("exec", "stop", "remove"):
        assert value(prober, "sandbox_burst_phase_duration_seconds_count", phase=phase) == ok
    assert value(prober, "sandbox_burst_time_to_exec_seconds_count") == ok
    assert value(prober, "sandbox_burst_time_to_first_ready_seconds_count") == 1
    assert value(prober, "sandbox_burst_time_to_all_ready_seconds_count") == (0 if failed else 1)
    assert (
        value(prober, "sandbox_burst_sandbox_failures_total", phase="exec", reason="error")
        == failed
    )
    assert value(prober, "sandbox_burst_success_ratio") == pytest.approx(ok / n)
    for gauge in ("first_quarter_time_to_exec", "last_quarter_time_to_exec", "launch_skew"):
        seconds = value(prober, f"sandbox_burst_{gauge}_seconds")
        assert seconds is not None
        assert 0 <= seconds < 60, gauge
    assert value(prober, "sandbox_burst_in_progress") == 0
    first, every = burst.time_to_first_ready, burst.time_to_all_ready
    assert first is not None
    assert (every is None) == bool(failed)
    assert every is None or first <= every
    # the single probe's figures are untouched: bursts and single runs never mix
    assert value(prober, "sandbox_phase_duration_seconds_count", phase="create") == 0
    assert value(prober, "sandbox_probes_total", result="success") == 0


# -- namespace (real) ---------------------------------------------------------------


@pytest.fixture
def namespaces(tmp_path: Path) -> dict[str, Any]:
    why = namespaces_missing()
    if why:
        pytest.skip(why)
    return {"namespace": {"state_dir": str(tmp_path / "ns")}}


def ns_target(namespaces: dict[str, Any], n: int, **settings: Any) -> dict[str, Any]:
    return {
        "name": "nsb",
        "backend": "namespace",
        "timeouts": FAST,
        "burst": {"concurrency": n},
        **namespaces,
        **settings,
    }


@pytest.mark.namespace
@pytest.mark.parametrize("n", [5, 20])
def test_a_namespace_burst_records_every_metric_and_leaves_nothing(
    namespaces: dict[str, Any], n: int
) -> None:
    prober = make_prober(ns_target(namespaces, n))
    try:
        check_burst(prober, prober.run_burst(), n)
        assert left_behind(prober) == []
    finally:
        prober.close()


@pytest.mark.namespace
def test_one_failed_sandbox_is_counted_and_the_others_keep_their_figures(
    namespaces: dict[str, Any],
) -> None:
    prober = make_prober(ns_target(namespaces, 5), hook=lambda b: Hooked(b, fail_one_exec=True))
    try:
        burst = prober.run_burst()
        check_burst(prober, burst, 5, failed=1)
        assert left_behind(prober) == []
    finally:
        prober.close()


@pytest.mark.namespace
def test_the_series_do_not_grow_with_the_concurrency(namespaces: dict[str, Any]) -> None:
    def burst_series(n: int) -> int:
        prober = make_prober(ns_target(namespaces, n))
        try:
            prober.run_burst()
            return sum(
                len(family.samples)
                for family in registry(prober).collect()
                if family.name.startswith(("sandbox_burst", "sandbox_bursts"))
            )
        finally:
            prober.close()

    assert burst_series(2) == burst_series(20)


def shut_down_mid_burst(target: dict[str, Any], listing: Callable[[Prober], list[Any]]) -> None:
    """Hold a burst of 5 with every sandbox in its exec, then shut down as the daemon does
    when out of time (stop, and cut the calls short): every sandbox is removed."""
    stopping, interrupt = threading.Event(), Interrupt()
    hooked: list[Hooked] = []

    def hold(backend: Any) -> Hooked:
        hooked.append(Hooked(backend, hold_exec=True))
        return hooked[0]

    prober = make_prober(target, hook=hold, stopping=stopping, interrupt=interrupt)
    outcome: list[BurstResult | None] = []
    running = threading.Thread(target=lambda: outcome.append(prober.run_burst()))
    running.start()
    try:
        wait_for(
            lambda: hooked and hooked[0].execs == 5,
            timeout=60,
            what="all five sandboxes in their exec",
        )
        assert len(listing(prober)) == 5
        stopping.set()
        interrupt.fire(time.monotonic() + 30)
        running.join(timeout=90)
        assert not running.is_alive()
        assert outcome[0] is not None
        assert outcome[0].cancelled
        assert listing(prober) == []
        assert value(prober, "sandbox_burst_in_progress") == 0
    finally:
        if hooked:
            hooked[0].release.set()
        running.join(timeout=90)
        prober.close()


@pytest.mark.namespace
def test_a_shutdown_mid_burst_removes_every_sandbox(namespaces: dict[str, Any]) -> None:
    shut_down_mid_burst(ns_target(namespaces, 5), left_behind)


def test_a_burst_and_the_single_probe_never_overlap_and_skips_are_counted() -> None:
    backend = FakeBackend(hang={"exec"})
    config = parse_config(
        {
            "instance": "i",
            "targets": [{"name": "t", "backend": "namespace", "burst": {"concurrency": 3}}],
        }
    )
    prober = Prober(
        config.targets[0],
        "i",
        Metrics(CollectorRegistry()),
        backend=backend,
        stopping=threading.Event(),
    )
    single = threading.Thread(target=prober.run)
    single.start()
    try:
        wait_for(lambda: backend.entered.get("exec"), what="the single run in its exec")
        assert prober.run_burst() is None
        assert value(prober, "sandbox_burst_skipped_total") == 1
        assert len(backend.called("create")) == 1, "no burst sandbox was made"
    finally:
        backend.release.set()
        single.join(timeout=10)
    backend.release.clear()
    backend.hang = {"exec"}
    burst = threading.Thread(target=prober.run_burst)
    burst.start()
    try:
        wait_for(lambda: len(backend.called("exec")) >= 3, what="the burst's sandboxes in exec")
        assert prober.run() is None
        assert value(prober, "sandbox_probe_skipped_total") == 1
    finally:
        backend.release.set()
        burst.join(timeout=10)
        prober.close()


# -- Docker, Podman, gVisor (real) and Kubernetes (API double) ------------------------


def engine_target(engine: Engine, n: int, **options: Any) -> dict[str, Any]:
    return {
        "name": "eb",
        "backend": engine.backend,
        "image": TEST_IMAGE,
        "pull_policy": "never",
        "timeouts": FAST,
        "burst": {"concurrency": n},
        engine.backend: {"base_url": engine.url, **options},
    }


@pytest.mark.docker
@pytest.mark.parametrize("n", [5, 20])
def test_a_docker_burst_records_every_metric_and_leaves_nothing(
    docker_engine: Engine, n: int
) -> None:
    prober = make_prober(engine_target(docker_engine, n))
    try:
        check_burst(prober, prober.run_burst(), n)
    finally:
        prober.close()
    assert docker_engine.managed(**{"sandbox-exporter.io/target": "eb"}) == []


@pytest.mark.docker
def test_a_docker_burst_with_one_failure_and_one_shutdown_leaves_nothing(
    docker_engine: Engine,
) -> None:
    prober = make_prober(
        engine_target(docker_engine, 5), hook=lambda b: Hooked(b, fail_one_exec=True)
    )
    try:
        check_burst(prober, prober.run_burst(), 5, failed=1)
    finally:
        prober.close()
    assert docker_engine.managed(**{"sandbox-exporter.io/target": "eb"}) == []
    shut_down_mid_burst(
        engine_target(docker_engine, 5),
        lambda _: docker_engine.managed(**{"sandbox-exporter.io/target": "eb"}),
    )


@pytest.mark.docker
def test_a_podman_burst(podman_engine: Engine) -> None:
    prober = make_prober(engine_target(podman_engine, 5))
    try:
        check_burst(prober, prober.run_burst(), 5)
    finally:
        prober.close()
    assert podman_engine.managed(**{"sandbox-exporter.io/target": "eb"}) == []


@pytest.mark.docker
def test_a_gvisor_burst(docker_engine: Engine) -> None:
    if "runsc" not in docker_engine.client.info().get("Runtimes", {}):
        unavailable("gvisor", "dockerd has no runtime named runsc")
    prober = make_prober(engine_target(docker_engine, 5, runtime="runsc"))
    try:
        check_burst(prober, prober.run_burst(), 5)
    finally:
        prober.close()
    assert docker_engine.managed(**{"sandbox-exporter.io/target": "eb"}) == []


def test_a_kubernetes_burst_on_the_api_server_double(tmp_path: Path) -> None:
    pytest.importorskip("kubernetes")
    from tests.fake_kubernetes import FakeKubernetes

    server = FakeKubernetes()
    try:
        kubeconfig = server.kubeconfig(str(tmp_path / "kubeconfig"))
        prober = make_prober(
            {
                "name": "kb",
                "backend": "kubernetes",
                "image": "busybox:1.36",
                "timeouts": FAST,
                "stop_grace": "1s",
                "burst": {"concurrency": 5},
                "kubernetes": {"kubeconfig": kubeconfig},
            }
        )
        try:
            check_burst(prober, prober.run_burst(), 5)
            assert left_behind(prober) == []
        finally:
            prober.close()
    finally:
        server.close()


def test_a_staggered_burst_sends_its_creates_at_their_offsets() -> None:
    backend = FakeBackend()
    config = parse_config(
        {
            "instance": "i",
            "targets": [
                {
                    "name": "t",
                    "backend": "namespace",
                    "burst": {"concurrency": 4, "mode": "staggered", "stagger": "50ms"},
                }
            ],
        }
    )
    prober = Prober(
        config.targets[0],
        "i",
        Metrics(CollectorRegistry()),
        backend=backend,
        stopping=threading.Event(),
    )
    try:
        burst = prober.run_burst()
    finally:
        prober.close()
    assert burst is not None
    assert burst.launch is not None
    sent = [r.launched_at - burst.launch for r in burst.results if r.launched_at is not None]
    assert len(sent) == 4
    for offset, at in zip((0.0, 0.05, 0.10, 0.15), sent, strict=True):
        assert at >= offset - 0.001, "never before its planned instant"
    assert burst.launch_skew is not None


@pytest.mark.docker
def test_a_burst_cut_by_kill_9_is_collected_by_the_next_start(
    docker_engine: Engine, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "instance": "burst-kill",
                "targets": [
                    {
                        "name": "kb9",
                        "backend": "docker",
                        "image": TEST_IMAGE,
                        "pull_policy": "never",
                        "interval": "1h",
                        "command": ["sh", "-c", "sleep 3; echo hello"],
                        "burst": {"concurrency": 5, "interval": "2s"},
                        "docker": {"base_url": docker_engine.url},
                    }
                ],
            }
        )
    )
    mine = {"sandbox-exporter.io/target": "kb9"}
    first = ExporterProcess(config)
    try:
        wait_for(
            lambda: len(docker_engine.managed(**mine)) >= 5,
            timeout=60,
            what="a burst's five containers",
        )
    finally:
        first.proc.kill()  # SIGKILL: nothing of the burst is cleaned up
        first.proc.wait(timeout=30)
    assert len(docker_engine.managed(**mine)) >= 5, "the kill left the burst's containers"
    second = ExporterProcess(config)
    try:
        wait_for(
            lambda: (second.sample("sandbox_orphans_removed_total", target="kb9") or 0) >= 5,
            timeout=60,
            what="the next start collecting them",
        )
    finally:
        assert second.stop() == 0
    assert docker_engine.managed(**mine) == []
