"""The WSGI app, called without a socket."""

from __future__ import annotations

import gzip
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from sandbox_exporter.daemon import Daemon
from sandbox_exporter.web.app import parse_listen_address
from tests.fakes import FakeBackend, by_name, failing
from tests.helpers import make_config, scraped


def call(
    app: Any, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[str, dict[str, str], bytes]:
    path, _, query = path.partition("?")
    environ: dict[str, Any] = {"PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": method}
    for key, value in (headers or {}).items():
        environ["HTTP_" + key.upper().replace("-", "_")] = value
    setup_testing_defaults(environ)
    captured: dict[str, Any] = {}

    def start_response(
        status: str, response_headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        captured["status"] = status
        captured["headers"] = dict(response_headers)

    body = b"".join(app(environ, start_response))
    return captured["status"], captured["headers"], body


def daemon(**backends: FakeBackend) -> Daemon:
    config = make_config(
        {"name": "good", "backend": "docker"}, {"name": "bad", "backend": "namespace"}
    )
    return Daemon(config, listen_address=None, backends=by_name(backends))


def test_metrics_show_a_probe_run_through_the_app() -> None:
    d = daemon(good=FakeBackend(), bad=FakeBackend(errors={"exec": failing("exec broke")}))
    for prober in d.probers:
        prober.run()
    status, headers, body = call(d.app, "/metrics")
    text = body.decode()
    assert status.startswith("200")
    assert headers["Content-Type"].startswith("text/plain")
    good = {"target": "good", "backend": "docker"}
    bad = {"target": "bad", "backend": "namespace"}
    assert scraped(text, "sandbox_probes_total", result="success", **good) == 1
    assert scraped(text, "sandbox_phase_duration_seconds_count", phase="exec", **good) == 1
    assert scraped(text, "sandbox_probe_failures_total", phase="exec", reason="error", **bad) == 1
    assert "sandbox_exporter_config_last_reload_successful 1.0" in text
    assert "sandbox_exporter_build_info{" in text


def test_metrics_are_gzipped_when_asked() -> None:
    d = daemon(good=FakeBackend(), bad=FakeBackend())
    _, headers, body = call(d.app, "/metrics", headers={"Accept-Encoding": "gzip"})
    assert headers.get("Content-Encoding") == "gzip"
    assert b"sandbox_probes_total" in gzip.decompress(body)


def test_ready_only_while_the_scheduler_runs() -> None:
    d = daemon(good=FakeBackend(), bad=FakeBackend())
    assert call(d.app, "/-/ready")[0].startswith("503")
    assert call(d.app, "/-/healthy")[0].startswith("200")
    d.start()
    try:
        assert call(d.app, "/-/ready")[0].startswith("200")
    finally:
        d.shutdown()
    assert call(d.app, "/-/ready")[0].startswith("503")


def test_landing_page_lists_targets_with_their_last_result() -> None:
    d = daemon(good=FakeBackend(), bad=FakeBackend(errors={"start": failing("no <runtime>")}))
    status, _, body = call(d.app, "/")
    page = body.decode()
    assert status.startswith("200")
    assert "good" in page
    assert "not run yet" in page
    for prober in d.probers:
        prober.run()
    page = call(d.app, "/")[2].decode()
    assert "success" in page
    assert '<b class="phase">start</b> <b class="reason">error</b>: ' in page
    assert '<span class="message">no &lt;runtime&gt;</span>' in page, "the engine's text, escaped"
    assert '<a href="/metrics">' in page


def test_unknown_path_and_method() -> None:
    app = daemon(good=FakeBackend(), bad=FakeBackend()).app
    assert call(app, "/nope")[0].startswith("404")
    status, headers, _ = call(app, "/metrics", method="DELETE")
    assert status.startswith("405")
    assert headers["Allow"] == "GET, HEAD"


def test_listen_addresses() -> None:
    assert parse_listen_address(":9878") == ("", 9878)
    assert parse_listen_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen_address("[::1]:9878") == ("::1", 9878)


OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"


def test_metrics_is_prometheus_clients_exposition_of_the_registry() -> None:
    """The text format by default, OpenMetrics when asked (as Prometheus asks), each
    prometheus_client's own rendering of the injected registry: a collector
    registered on it is on /metrics, and so are the standard process metrics."""
    from prometheus_client import generate_latest
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector

    class Extra(Collector):
        def collect(self) -> list[GaugeMetricFamily]:
            return [GaugeMetricFamily("extra_thing", 'A "quoted" help\\text', value=1)]

    d = daemon(good=FakeBackend(), bad=FakeBackend(errors={"stop": failing()}))
    d.registry.register(Extra())
    for prober in d.probers:
        prober.run()
    _, headers, body = call(d.app, "/metrics")
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = body.decode()
    ours = [line for line in text.splitlines() if not line.startswith(("process_", "python_gc"))]
    again = generate_latest(d.registry).decode().splitlines()
    assert ours == [line for line in again if not line.startswith(("process_", "python_gc"))]
    for name in (
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "python_info",
        "python_gc_objects_collected_total",
        "extra_thing",
    ):
        assert f"\n{name}" in text, name
    assert '# HELP extra_thing A "quoted" help\\\\text' in text, "HELP escaped"
    assert (
        "# HELP sandbox_phase_duration_seconds Duration of one lifecycle phase, in seconds;" in text
    )

    _, headers, body = call(d.app, "/metrics", headers={"Accept": OPENMETRICS})
    assert headers["Content-Type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    page = body.decode()
    assert page.endswith("# EOF\n")
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    library = generate_openmetrics(d.registry).decode().splitlines()  # type: ignore[no-untyped-call]
    assert [
        line for line in page.splitlines() if not line.startswith(("process_", "python_gc"))
    ] == [line for line in library if not line.startswith(("process_", "python_gc"))], (
        "the histograms' own lines are the library's, exemplars and all"
    )
    run_id = d.probers[0].last_result.run_id  # type: ignore[union-attr]
    assert f'# {{run_id="{run_id}"}}' in page, "exemplars carry the run's id"


def test_every_latency_observation_carries_its_run_id_as_an_exemplar() -> None:
    d = daemon(good=FakeBackend(), bad=FakeBackend())
    d.probers[0].run()
    result = d.probers[0].last_result
    assert result is not None
    page = call(d.app, "/metrics", headers={"Accept": OPENMETRICS})[2].decode()
    lines = [line for line in page.splitlines() if f'run_id="{result.run_id}"' in line]
    families = {line.split("_bucket{")[0] for line in lines}
    assert families == {
        "sandbox_phase_duration_seconds",
        "sandbox_lifecycle_duration_seconds",
        "sandbox_time_to_exec_seconds",
    }
    phases = {line.split('phase="')[1].split('"')[0] for line in lines if 'phase="' in line}
    assert phases == {"create", "start", "exec", "stop", "remove"}


@pytest.mark.parametrize(
    "accept",
    [
        "",
        "text/plain",
        "*/*",
        OPENMETRICS,
        "application/openmetrics-text",
        "application/openmetrics-text; version=0.0.1,text/plain;version=0.0.4;q=0.5",
        "application/openmetrics-text;version=1.0.0",
        "text/html, application/openmetrics-text",
    ],
)
def test_the_format_is_negotiated_as_prometheus_client_would(accept: str) -> None:
    from prometheus_client.exposition import choose_encoder

    from sandbox_exporter.web.responses import CONTENT_TYPES, metrics_format

    ours = CONTENT_TYPES[metrics_format(accept)]
    theirs = choose_encoder(accept)[1]
    assert ours.split(";")[0] == theirs.split(";")[0], (accept, ours, theirs)
    # where prometheus_client itself fails (a TypeError), the text format is served
    assert metrics_format("application/openmetrics-text;version=nonsense") == "text"
