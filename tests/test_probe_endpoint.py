"""`/probe`: one lifecycle on demand, through the WSGI app and through a real socket."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox_exporter.config import parse_config
from sandbox_exporter.daemon import Daemon
from tests.fakes import FakeBackend, by_name, failing
from tests.helpers import make_config, scraped, wait_for
from tests.test_server import call


def daemon(backend: FakeBackend, **settings: object) -> Daemon:
    config = make_config(
        {"name": "fake", "backend": "namespace", **settings},
        {"name": "other", "backend": "namespace"},
    )
    return Daemon(
        config, listen_address=None, backends=by_name({"fake": backend, "other": FakeBackend()})
    )


FAKE = {"target": "fake", "backend": "namespace"}


def test_a_successful_probe_answers_its_figures_without_recording_them() -> None:
    d = daemon(FakeBackend())
    status, headers, body = call(d.app, "/probe?target=fake")
    text = body.decode()
    assert status.startswith("200")
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert scraped(text, "sandbox_probe_success", **FAKE) == 1
    for phase in ("create", "start", "exec", "stop", "remove"):
        assert (
            scraped(text, "sandbox_probe_phase_duration_seconds", phase=phase, **FAKE) is not None
        )
    assert scraped(text, "sandbox_probe_time_to_exec_seconds", **FAKE) is not None
    assert d.registry.get_sample_value("sandbox_probes_total", {**FAKE, "result": "success"}) == 0
    assert d.probers[0].last_result is None, "the landing page shows scheduled runs"


def test_record_true_counts_the_run_like_a_scheduled_one() -> None:
    d = daemon(FakeBackend())
    assert call(d.app, "/probe?target=fake&record=true")[0].startswith("200")
    assert d.registry.get_sample_value("sandbox_probes_total", {**FAKE, "result": "success"}) == 1
    assert (
        d.registry.get_sample_value(
            "sandbox_phase_duration_seconds_count", {**FAKE, "phase": "exec"}
        )
        == 1
    )


def test_a_failed_probe_says_which_phase_and_why() -> None:
    d = daemon(FakeBackend(errors={"exec": failing("exec broke")}))
    text = call(d.app, "/probe?target=fake")[2].decode()
    assert scraped(text, "sandbox_probe_success", **FAKE) == 0
    assert scraped(text, "sandbox_probe_failed", phase="exec", reason="error", **FAKE) == 1


def test_a_busy_target_answers_409_and_starts_no_second_sandbox() -> None:
    backend = FakeBackend(hang={"exec"})
    d = daemon(backend)
    running = threading.Thread(target=d.probers[0].run_now)
    running.start()
    try:
        wait_for(lambda: backend.entered.get("exec"), what="a run in its exec phase")
        status, _, body = call(d.app, "/probe?target=fake")
        assert status.startswith("409")
        assert b"busy" in body
        assert len(backend.called("create")) == 1
    finally:
        backend.release.set()
        running.join(timeout=10)


def test_unknown_and_missing_targets() -> None:
    d = daemon(FakeBackend())
    status, _, body = call(d.app, "/probe?target=nope")
    assert status.startswith("404")
    assert body == b"target: unknown target 'nope'; configured: fake, other\n"
    status, _, body = call(d.app, "/probe")
    assert status.startswith("400")
    assert b"configured: fake, other" in body
    status, _, body = call(d.app, "/probe?target=fake&debug=maybe")
    assert status.startswith("400")
    assert b"debug: expected true or false" in body


def test_a_backend_auto_did_not_find_is_named_as_such() -> None:
    config = parse_config(
        {"targets": "auto"}, discover=lambda: [{"name": "namespace", "backend": "namespace"}]
    ).model_copy(update={"not_found": {"podman": "Podman does not answer at unix:///x.sock"}})
    status, _, body = call(Daemon(config, listen_address=None).app, "/probe?target=Podman")
    assert status.startswith("404")
    assert body == (
        b"target: no target 'Podman': `targets: auto` did not find the podman "
        b"backend: Podman does not answer at unix:///x.sock; configured: namespace\n"
    )


def test_debug_answers_the_run_log() -> None:
    d = daemon(FakeBackend())
    status, _, body = call(d.app, "/probe?target=fake&debug=true")
    assert status.startswith("200")
    lines = [json.loads(line) for line in body.decode().splitlines()]
    phases = [line["phase"] for line in lines if line["event"] == "phase"]
    assert phases == ["create", "start", "exec", "stop", "remove"]
    assert len({line["run_id"] for line in lines if "run_id" in line}) == 1
    assert lines[-1]["event"] == "result"
    assert lines[-1]["success"] is True


def test_a_run_longer_than_the_request_timeout_answers_504_and_still_cleans_up() -> None:
    backend = FakeBackend(hang={"start"})
    d = daemon(backend)
    try:
        status, _, body = call(d.app, "/probe?target=fake&timeout=200ms")
        assert status.startswith("504")
        assert b"goes on and cleans up" in body
        headers = {"X-Prometheus-Scrape-Timeout-Seconds": "0.7"}
        assert call(d.app, "/probe?target=fake", headers=headers)[0].startswith("409")
    finally:
        backend.release.set()
    wait_for(lambda: backend.called("remove") and not d.probers[0].busy, what="cleanup")
    assert not backend.existing


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    config = make_config(
        {
            "name": "floor",
            "backend": "namespace",
            "interval": "1h",
            "namespace": {"state_dir": str(tmp_path)},
        }
    )
    d = Daemon(config, listen_address="127.0.0.1:0")
    d.start()
    wait_for(lambda: d.probers[0].last_result, what="the first scheduled run")
    host, port = d.http.address if d.http else ("", 0)
    yield f"http://{host}:{port}"
    d.shutdown()


@pytest.mark.namespace
def test_probe_through_a_real_socket_on_the_namespace_backend(served: str) -> None:
    with urllib.request.urlopen(f"{served}/probe?target=floor", timeout=30) as response:
        text = response.read().decode()
    assert scraped(text, "sandbox_probe_success", target="floor", backend="namespace") == 1
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{served}/probe?target=ghost", timeout=30)
    assert caught.value.code == 404
