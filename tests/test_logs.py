"""Every line a daemon writes on stderr is one JSON object with one timestamp format,
the libraries' lines (APScheduler's) included; `/probe?debug=true` writes the same."""

from __future__ import annotations

import json
import re
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox_exporter.backends.base import NotFound
from sandbox_exporter.backends.namespace import find_here
from tests.helpers import wait_for
from tests.process import ExporterProcess

pytestmark = [
    pytest.mark.namespace,
    pytest.mark.skipif(isinstance(find_here(), NotFound), reason="needs the namespace backend"),
]

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
SLOW_FAILING = """
instance: logs-test
defaults: {interval: 300ms, jitter: 0s}
targets:
  - name: slow
    backend: namespace
    command: ["sh", "-c", "sleep 1; echo not-hello"]
"""


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[ExporterProcess]:
    config = tmp_path / "config.yaml"
    config.write_text(SLOW_FAILING)
    process = ExporterProcess(config)
    yield process
    process.kill()


def test_a_daemon_that_skips_reloads_and_fails_writes_json_on_every_line(
    exporter: ExporterProcess,
) -> None:
    wait_for(lambda: exporter.event("probe skipped"), timeout=30, what="a skipped run")
    wait_for(
        lambda: any(e.get("outcome") == "failed" for e in exporter.logs),
        timeout=30,
        what="a failed run",
    )
    exporter.config.write_text("targets: docker\n")
    exporter.proc.send_signal(signal.SIGHUP)
    wait_for(
        lambda: exporter.event("config reload failed; the running config is kept"),
        timeout=30,
        what="the refused reload",
    )
    exporter.config.write_text(SLOW_FAILING.replace("300ms", "400ms"))
    exporter.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: exporter.event("config reloaded"), timeout=30, what="the reload")
    assert exporter.stop() == 0
    exporter.drained.wait(timeout=10)

    unparsed = [e["line"] for e in exporter.logs if e.get("event") == "unparsed"]
    assert not unparsed, f"stderr lines that are not JSON: {unparsed}"
    assert all(ISO_UTC.match(str(e.get("ts"))) for e in exporter.logs), [
        e for e in exporter.logs if not ISO_UTC.match(str(e.get("ts")))
    ]
    scheduler_lines = [
        e for e in exporter.logs if str(e.get("logger", "")).startswith("apscheduler")
    ]
    assert scheduler_lines, "APScheduler's own skip warning came through structlog"
    assert all(e["level"] == "warning" for e in scheduler_lines), "its info chatter stays out"


def test_probe_debug_lines_use_the_daemon_s_timestamps(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("targets:\n  - {name: quick, backend: namespace, interval: 1h}\n")
    exporter = ExporterProcess(config)
    try:
        wait_for(
            lambda: exporter.sample("sandbox_probes_total", target="quick"),
            timeout=30,
            what="the first run",
        )
        with urllib.request.urlopen(
            f"{exporter.url}/probe?target=quick&debug=true&record=false", timeout=30
        ) as response:
            lines = [json.loads(line) for line in response.read().decode().splitlines()]
    finally:
        exporter.stop()
    stamped = [line for line in lines if "ts" in line]
    assert len(stamped) >= 5, lines
    assert all(ISO_UTC.match(line["ts"]) for line in stamped), stamped
