"""The WSGI app, called without a socket."""

from __future__ import annotations

import gzip
from typing import Any
from wsgiref.util import setup_testing_defaults

from exporter.daemon import Daemon
from exporter.web.app import parse_listen_address
from tests.fakes import FakeBackend, by_name, failing
from tests.helpers import make_config, scraped


def call(app: Any, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[str, dict[str, str], bytes]:  # fmt: skip
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
    assert "start error: no &lt;runtime&gt;" in page, "failure text is shown, escaped"
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


def test_the_fast_exposition_says_exactly_what_the_registry_holds() -> None:
    """/metrics formats histograms itself; it must agree with the registry's collectors."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    d = daemon(good=FakeBackend(), bad=FakeBackend(errors={"stop": failing()}))
    for prober in d.probers * 3:
        prober.run()

    def samples(text: str) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
        return {
            (s.name, tuple(sorted(s.labels.items())), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    fast = samples(d.metrics.exposition().decode())
    reference = samples(generate_latest(d.registry).decode())
    assert fast == reference
    assert len(fast) > 200
