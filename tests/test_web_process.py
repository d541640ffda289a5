"""The web process: HTTP is served apart from the probes, at a lower priority, restarted
when it dies, gone when the exporter is, and rationed where it reaches the exporter."""

from __future__ import annotations

import gzip
import io
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from sandbox_exporter.daemon import Daemon
from sandbox_exporter.web import responses
from sandbox_exporter.web.http_child import forwarded_environ
from sandbox_exporter.web.pacing import Pacer, RequestBudget
from sandbox_exporter.web.serving import ServingOptions
from tests.fakes import FakeBackend, FakeClock, by_name
from tests.helpers import alive, make_config, wait_for
from tests.process import ExporterProcess


def serve(options: ServingOptions | None = None) -> Daemon:
    config = make_config({"name": "fake", "backend": "namespace", "interval": "1h"})
    d = Daemon(
        config,
        listen_address="127.0.0.1:0",
        backends=by_name({"fake": FakeBackend()}),
        serving=options,
    )
    d.start()
    return d


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    d = serve()
    yield d
    d.shutdown()


def get(d: Daemon, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    host, port = d.http.address if d.http else ("", 0)
    request = urllib.request.Request(f"http://{host}:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def web_pid(d: Daemon) -> int:
    assert d.http is not None
    return int(wait_for(lambda: d.http.pid if d.http else None, what="the web process"))


@pytest.fixture
def started() -> Iterator[Callable[[Path], ExporterProcess]]:
    """Starts `sandbox-exporter run` on a one-target config; kills what is left after."""
    processes: list[ExporterProcess] = []

    def start(directory: Path) -> ExporterProcess:
        config = directory / "config.yaml"
        config.write_text("targets:\n  - {name: fake, backend: namespace, interval: 1h}\n")
        processes.append(ExporterProcess(config))
        return processes[-1]

    yield start
    for process in processes:
        process.kill()


def web_child(parent: int) -> int | None:
    for task in Path(f"/proc/{parent}/task").iterdir():
        for pid in (task / "children").read_text().split():
            if b"sandbox_exporter.web.http_child" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
    return None


def test_http_is_served_by_a_process_of_its_own_at_a_lower_priority(daemon: Daemon) -> None:
    status, headers, body = get(daemon, "/metrics")
    assert status == 200
    assert headers["Content-Type"] == CONTENT_TYPE_PLAIN_0_0_4
    assert b"sandbox_probes_total" in body
    pid = web_pid(daemon)
    assert pid != os.getpid()
    assert os.getpriority(os.PRIO_PROCESS, pid) == os.getpriority(os.PRIO_PROCESS, 0) + 10
    # what only the exporter knows is forwarded to it
    assert get(daemon, "/-/healthy")[0] == 200
    status, _, body = get(daemon, "/probe?target=fake")
    assert status == 200
    assert b"sandbox_probe_success" in body
    assert get(daemon, "/probe?target=nope")[0] == 404


def test_a_killed_web_process_is_started_again(daemon: Daemon) -> None:
    first = web_pid(daemon)
    os.kill(first, signal.SIGKILL)
    wait_for(
        lambda: daemon.http and daemon.http.pid not in (None, first),
        timeout=15,
        what="a new web process",
    )
    assert daemon.http is not None
    assert daemon.registry.get_sample_value("sandbox_exporter_web_process_restarts_total") == 1
    assert get(daemon, "/metrics")[0] == 200  # same address: the socket stayed bound


def test_the_web_process_goes_with_the_exporter(
    started: Callable[[Path], ExporterProcess], tmp_path: Path
) -> None:
    exporter = started(tmp_path)
    child = wait_for(lambda: web_child(exporter.proc.pid), what="the web process")
    assert alive(child)
    exporter.proc.kill()  # kill -9: no chance to stop it in an orderly way
    exporter.proc.wait()
    wait_for(lambda: not alive(child), timeout=10, what="the web process to exit")


def test_requests_forwarded_to_the_exporter_are_rationed() -> None:
    d = serve(ServingOptions(forwarded_per_second=0.01, forwarded_burst=3))
    try:
        assert [get(d, "/-/healthy")[0] for _ in range(3)] == [200] * 3
        status, headers, _ = get(d, "/-/healthy")
        assert status == 429
        assert headers["Retry-After"] == "1"
        assert get(d, "/metrics")[0] == 200  # served by the web process: not rationed
    finally:
        d.shutdown()


def test_request_budget_counts_rate_and_requests_in_flight() -> None:
    budget = RequestBudget(rate=0.001, burst=5, in_flight=2)
    assert budget.acquire()
    assert budget.acquire()
    assert not budget.acquire(), "a third at once is over the in-flight bound"
    budget.release()
    assert budget.acquire()
    budget.release()
    budget.release()
    assert budget.acquire()
    budget.release()
    assert budget.acquire()
    budget.release()
    assert not budget.acquire(), "five in the burst, then the rate (one in 1000 s)"


def test_the_process_environment_is_never_forwarded() -> None:
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/probe",
        "QUERY_STRING": "target=a",
        "HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS": "10",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t",
        "PATH": "/usr/bin",
        "wsgi.input": object(),
    }
    assert forwarded_environ(environ) == {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/probe",
        "QUERY_STRING": "target=a",
        "HTTP_X_PROMETHEUS_SCRAPE_TIMEOUT_SECONDS": "10",
    }


def test_content_types_are_prometheus_clients() -> None:
    from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST

    assert responses.CONTENT_TYPES["text"] == CONTENT_TYPE_PLAIN_0_0_4
    assert responses.CONTENT_TYPES["openmetrics"] == CONTENT_TYPE_LATEST


def test_the_web_process_serves_openmetrics_when_asked(daemon: Daemon) -> None:
    wait_for(lambda: daemon.probers[0].last_result, what="a run")
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    status, headers, body = get(daemon, "/metrics", Accept=accept)
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    assert b'# {run_id="' in body
    status, headers, body = get(daemon, "/metrics")
    assert headers["Content-Type"] == CONTENT_TYPE_PLAIN_0_0_4
    assert b"# EOF" not in body


def test_the_web_process_serves_protobuf_when_prometheus_wants_native_histograms(
    daemon: Daemon,
) -> None:
    from google.protobuf import proto

    from sandbox_exporter.metrics.proto import metrics_pb2 as pb

    wait_for(lambda: daemon.probers[0].last_result, what="a run")
    accept = (
        "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
        "encoding=delimited,text/plain;version=0.0.4;q=0.5"
    )
    status, headers, body = get(daemon, "/metrics", Accept=accept)
    assert status == 200
    assert headers["Content-Type"] == responses.CONTENT_TYPES["protobuf"]
    stream, names = io.BytesIO(body), set()
    while stream.tell() < len(body):
        names.add(proto.parse_length_prefixed(pb.MetricFamily, stream).name)
    assert {"sandbox_probes_total", "sandbox_time_to_exec_seconds"} <= names
    status, headers, gzipped = get(daemon, "/metrics", Accept=accept, **{"Accept-Encoding": "gzip"})
    assert gzip.decompress(gzipped) == body  # the same rendering, from the format's cache


def test_a_port_in_use_fails_at_start_up() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = make_config({"name": "fake", "backend": "namespace"})
        with pytest.raises(OSError, match="in use"):
            Daemon(config, listen_address=f"127.0.0.1:{port}")


def test_pacer_spaces_answers_and_refuses_what_would_wait_too_long() -> None:
    clock = FakeClock()
    waits: list[float] = []
    pacer = Pacer(rate=10, max_wait=0.35, clock=clock, sleep=waits.append)
    assert [pacer.admit() for _ in range(4)] == [True, True, True, True]
    assert waits == pytest.approx([0.1, 0.2, 0.3])  # the first at once, then 0.1 s apart
    assert not pacer.admit(), "a fifth would wait 0.4 s, over max_wait"
    clock.advance(1.0)
    assert pacer.admit()
    assert Pacer(rate=0).admit(), "rate 0: unpaced"


def test_a_flood_of_scrapes_is_paced_not_refused() -> None:
    d = serve(ServingOptions(scrapes_per_second=20))
    try:
        statuses: list[int] = []
        began = time.monotonic()
        threads = [
            threading.Thread(target=lambda: statuses.append(get(d, "/metrics")[0]))
            for _ in range(12)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [200] * 12
        assert time.monotonic() - began >= 11 / 20, "12 answers, 1/20 s apart at least"
    finally:
        d.shutdown()


def test_signals_are_the_exporters_to_handle(
    started: Callable[[Path], ExporterProcess], tmp_path: Path
) -> None:
    """A SIGTERM that reaches the web process too (systemd stops the whole cgroup) is
    left to the exporter, which stops it once it has wound down."""
    exporter = started(tmp_path)
    assert exporter.sample("sandbox_probes_total", result="success") is not None  # serving
    child = web_child(exporter.proc.pid)
    assert child is not None
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        os.kill(child, signum)
    exporter.metrics()
    assert alive(child)
    assert web_child(exporter.proc.pid) == child, "the same web process, not a new one"
    assert exporter.stop() == 0
    wait_for(lambda: not alive(child), timeout=10, what="the web process to exit")
