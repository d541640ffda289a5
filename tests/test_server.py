"""The WSGI app, called without a socket."""

from __future__ import annotations

import gzip
from typing import Any
from wsgiref.util import setup_testing_defaults

from prometheus_client import CollectorRegistry

from exporter.daemon import Daemon
from exporter.server import create_app, parse_listen_address
from tests.fakes import FakeBackend, failing
from tests.helpers import make_config


def call(app: Any, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[str, dict[str, str], bytes]:  # fmt: skip
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": method}
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
    return Daemon(config, listen_address=None, backends=backends)


def test_metrics_show_a_probe_run_through_the_app() -> None:
    d = daemon(good=FakeBackend(), bad=FakeBackend(errors={"exec": failing("exec broke")}))
    for prober in d.probers:
        prober.run()
    status, headers, body = call(d.app, "/metrics")
    text = body.decode()
    assert status.startswith("200")
    assert headers["Content-Type"].startswith("text/plain")
    assert 'sandbox_probes_total{backend="docker",result="success",target="good"} 1.0' in text
    assert (
        'sandbox_phase_duration_seconds_count{backend="docker",phase="exec",target="good"} 1.0'
        in text
    )
    assert (
        'sandbox_probe_failures_total{backend="namespace",phase="exec",reason="error",target="bad"} 1.0'
        in text
    )
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
    assert "start error: no &lt;runtime&gt;" in page, "failure text is shown, escaped"
    assert '<a href="/metrics">' in page


def test_unknown_path_and_method() -> None:
    app = create_app(CollectorRegistry(), list, lambda: True)
    assert call(app, "/nope")[0].startswith("404")
    status, headers, _ = call(app, "/metrics", method="DELETE")
    assert status.startswith("405")
    assert headers["Allow"] == "GET, HEAD"


def test_listen_addresses() -> None:
    assert parse_listen_address(":9878") == ("", 9878)
    assert parse_listen_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen_address("[::1]:9878") == ("::1", 9878)
