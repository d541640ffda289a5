"""The landing page, rendered by the app without a socket: the recent figures (nearest-rank
p50/p95 over a bounded ring), how long since the last success, the failure in the
engine's words, escaping, what is there without JavaScript, the sparkline, the backends
`targets: auto` did not find and the last burst."""

from __future__ import annotations

import html
import random
import re
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import time_machine
from structlog.testing import capture_logs

import sandbox_exporter
from sandbox_exporter.backends.base import (
    BackendError,
    BackendUnavailable,
    Deadline,
    ExecResult,
    SandboxRef,
)
from sandbox_exporter.config import Config, load_config, parse_config
from sandbox_exporter.daemon import Daemon
from sandbox_exporter.probing.recent import RecentRuns
from sandbox_exporter.results import LIFECYCLE, Failure, Phase, ProbeResult, Reason
from sandbox_exporter.web.humanize import duration
from sandbox_exporter.web.sparkline import HEIGHT, PAD, WIDTH, sparkline
from tests.fakes import FakeBackend, by_name
from tests.helpers import make_config, wait_for
from tests.test_server import call

NOW = 1_800_000_000.0
MS = 0.001


def daemon(**settings: object) -> Daemon:
    config = make_config(
        {"name": "good", "backend": "docker", "interval": "1m", **settings},
        {"name": "bad", "backend": "namespace", "interval": "1m"},
    )
    backends = by_name({"good": FakeBackend(), "bad": FakeBackend()})
    return Daemon(config, listen_address=None, backends=backends)


def run(
    target: str = "good",
    *,
    finished_at: float = NOW,
    durations: dict[Phase, float] | None = None,
    failure: Failure | None = None,
    cancelled: bool = False,
) -> ProbeResult:
    """A finished run; by default a success whose five phases took 1 ms each."""
    return ProbeResult(
        target=target,
        backend="docker",
        run_id="r",
        sandbox="s",
        started_at=finished_at - 1,
        finished_at=finished_at,
        durations={p: MS for p in LIFECYCLE} if durations is None else durations,
        failure=failure,
        cancelled=cancelled,
    )


def page(d: Daemon, query: str = "") -> str:
    status, headers, body = call(d.app, "/" + query)
    assert status.startswith("200"), body
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    return body.decode()


def section(markup: str, start: str, end: str) -> str:
    found = re.search(re.escape(start) + "(.*?)" + re.escape(end), markup, re.S)
    assert found, f"{start} ... {end} not in the page"
    return found.group(1)


def row(markup: str, table: str, target: str) -> str:
    return section(
        section(markup, f'<table id="{table}">', "</table>"), f'data-target="{target}">', "</tr>"
    )


def spread(markup: str, target: str, figure: str) -> tuple[int, float, float]:
    """(n, p50, p95) of a figure in the durations table, from the page's own data."""
    cell = section(row(markup, "durations", target), f'data-figure="{figure}"', "</td>")
    n = re.search(r'data-n="(\d+)"', cell)
    p50 = re.search(r'class="p50" data-seconds="([^"]+)"', cell)
    p95 = re.search(r'class="p95" data-seconds="([^"]+)"', cell)
    assert n, cell
    assert p50, cell
    assert p95, cell
    return int(n.group(1)), float(p50.group(1)), float(p95.group(1))


@pytest.fixture
def frozen() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


def test_p50_and_p95_are_nearest_rank_over_the_recent_runs() -> None:
    d = daemon()
    ring = d.probers[0].recent
    creates = [i * MS for i in range(1, 21)]  # 1..20 ms
    random.Random(7).shuffle(creates)
    for create in creates:
        ring.add(run(durations={**{p: MS for p in LIFECYCLE}, Phase.CREATE: create}))
    # a run that failed in exec: its create and start count, exec and the totals do not
    ring.add(
        run(
            durations={Phase.CREATE: 500 * MS, Phase.START: MS},
            failure=Failure(Phase.EXEC, Reason.TIMEOUT, "no answer"),
        )
    )
    markup = page(d)
    # 21 creates: p50 is the 11th smallest, p95 the 20th (ceil(0.95 * 21) = 20)
    assert spread(markup, "good", "create") == (21, 11 * MS, 20 * MS)
    assert spread(markup, "good", "start") == (21, MS, MS)
    assert spread(markup, "good", "exec") == (20, MS, MS)
    n, p50, p95 = spread(markup, "good", "time to exec")
    assert n == 20
    # time to exec = create + 2 ms over the 20 successes: 10th and 19th smallest creates
    assert p50 == pytest.approx(12 * MS)
    assert p95 == pytest.approx(21 * MS)
    assert spread(markup, "good", "total")[0] == 20
    assert '<td class="num runs">20 of 21 ok</td>' in row(markup, "targets", "good")
    durations = row(markup, "durations", "good")
    assert "11.0 ms</span> / " in durations
    assert "20.0 ms</span>" in durations
    assert 'data-figure="create" data-n="0"' in row(markup, "durations", "bad"), "no runs: a dash"


def test_the_ring_is_bounded_and_keeps_the_last_success() -> None:
    ring = RecentRuns(size=100)
    for i in range(150):
        ring.add(
            run(finished_at=NOW + i, durations={**{p: MS for p in LIFECYCLE}, Phase.CREATE: i * MS})
        )
    summary = ring.summary()
    assert summary.runs == 100
    # the last 100 creates are 50..149 ms: p50 is the 50th of them
    assert summary.spreads["create"].p50 == pytest.approx(99 * MS)
    assert summary.spreads["create"].n == 100
    for i in range(150):
        ring.add(
            run(
                finished_at=NOW + 200 + i,
                durations={},
                failure=Failure(Phase.CREATE, Reason.UNAVAILABLE, "down"),
            )
        )
    summary = ring.summary()
    assert (summary.runs, summary.successes, summary.spreads) == (100, 0, {})
    assert summary.last_success_at == NOW + 149, "the last success outlives the ring"


def test_a_run_cancelled_by_shutdown_counts_no_phase_as_in_the_metrics() -> None:
    ring = RecentRuns()
    ring.add(run())
    ring.add(run(durations={Phase.CREATE: 9.0}, cancelled=True))
    assert ring.summary().spreads["create"].n == 1


@pytest.mark.usefixtures("frozen")
def test_since_the_last_success_and_the_failure_in_the_engines_words() -> None:
    d = daemon()
    ring = d.probers[0].recent
    ring.add(run(finished_at=NOW - 125))
    ring.add(
        run(
            finished_at=NOW - 5,
            durations={Phase.CREATE: MS},
            failure=Failure(
                Phase.START, Reason.ERROR, 'OCI runtime create failed: <permission "denied"> & more'
            ),
        )
    )
    good = row(page(d), "targets", "good")
    assert '<tr class="target failure"' in page(d)
    assert '<span class="badge">failure</span>' in good
    assert '<td class="finished" title="2027-01-15 07:59:55 UTC">5 s ago</td>' in good
    assert 'class="last-success" data-seconds="125.000"' in good
    assert ">2 min 5 s ago</td>" in good
    assert '<b class="phase">start</b> <b class="reason">error</b>: ' in good
    assert "OCI runtime create failed: &lt;permission &quot;denied&quot;&gt; &amp; more" in good
    bad = row(page(d), "targets", "bad")
    assert "not run yet" in bad
    assert "none since the exporter started" in bad


@pytest.mark.usefixtures("frozen")
def test_a_success_long_ago_is_late_and_an_earlier_failure_stays_in_view() -> None:
    d = daemon()
    ring = d.probers[0].recent
    ring.add(
        run(
            finished_at=NOW - 4000,
            durations={},
            failure=Failure(Phase.EXEC, Reason.EXEC_MISMATCH, "output 'nope'"),
        )
    )
    ring.add(run(finished_at=NOW - 3600))
    good = row(page(d), "targets", "good")
    assert 'class="last-success late"' in good, "3 intervals (3 min) without a success"
    assert '<span class="badge">success</span>' in good
    assert "earlier, 1 h 6 min ago: " in good
    assert "output &#x27;nope&#x27;" in good


@pytest.mark.usefixtures("frozen")
def test_the_header_says_which_exporter_this_is() -> None:
    d = daemon()
    d.started_at = NOW - 3725
    markup = page(d)
    assert '<span id="instance">test-instance</span>' in markup
    assert '<code id="config-file">&lt;test&gt;</code>' in markup, "config path, escaped"
    assert f'<span id="version">{sandbox_exporter.__version__}</span>' in markup
    assert '<span id="uptime" data-seconds="3725"' in markup
    assert ">1 h 2 min</span>" in markup
    assert '<p id="overview">2 targets: <span class="muted">2 not run yet</span></p>' in markup
    assert "<title>sandbox-exporter: test-instance</title>" in markup


def test_everything_from_outside_is_escaped(tmp_path: Path) -> None:
    path = tmp_path / '<b>odd & "dir"' / "config.yaml"
    path.parent.mkdir()
    path.write_text("instance: edge-1\ntargets:\n  - {name: a, backend: namespace}\n")
    d = Daemon(load_config(path), listen_address=None, backends=by_name({"a": FakeBackend()}))
    d.probers[0].recent.add(
        run(
            "a",
            durations={},
            failure=Failure(
                Phase.CREATE, Reason.ERROR, "<script>alert(1)</script><img src=x onerror=alert(2)>"
            ),
        )
    )
    markup = page(d)
    assert markup.count("<script") == 1, "only the page's own script"
    assert "<img" not in markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;" in markup
    assert "&lt;b&gt;odd &amp; &quot;dir&quot;/config.yaml</code>" in markup
    assert "<b>odd" not in markup


def test_without_javascript_every_figure_and_the_probe_link_are_there() -> None:
    d = daemon()
    d.probers[0].recent.add(run(durations={p: 20 * MS for p in LIFECYCLE}))
    plain = re.sub(r"<script>.*?</script>", "", page(d), flags=re.S)
    assert '<noscript><meta http-equiv="refresh" content="15"></noscript>' in plain
    good = row(plain, "targets", "good")
    assert '<span class="badge">success</span>' in good
    assert '<a class="probe" data-target="good" href="/probe?target=good&amp;debug=true">' in good
    durations = row(plain, "durations", "good")
    assert durations.count("20.0 ms</span> / ") == 5, "each phase's p50, as text"
    assert "60.0 ms</span> / " in durations
    assert "100.0 ms</span></td>" in durations
    assert '<section id="probes" hidden>' in plain, "the in-page probe output needs the script"


def test_the_refresh_period_is_a_query_parameter() -> None:
    d = daemon()
    assert 'data-refresh="15"' in page(d)
    never = page(d, "?refresh=0")
    assert 'data-refresh="0"' in never
    assert "http-equiv" not in never
    assert "this page does not refresh" in never
    assert '<meta http-equiv="refresh" content="5">' in page(d, "?refresh=5")
    for bad in ("x", "-1", "1.5", "86401", "\u00b2"):
        status, _, body = call(d.app, f"/?refresh={bad}")
        assert status.startswith("400"), bad
        assert b"refresh: expected whole seconds" in body


def test_a_probe_from_the_page_is_not_one_of_the_recent_runs() -> None:
    d = daemon()
    status, _, body = call(d.app, "/probe?target=good&debug=true")
    assert status.startswith("200")
    assert b'"event": "result"' in body
    assert d.probers[0].recent.summary().runs == 0
    assert "not run yet" in row(page(d), "targets", "good")
    d.probers[0].run()
    assert "1 of 1 ok" in row(page(d), "targets", "good")


def test_a_reload_hands_the_figures_on_unless_the_series_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("targets:\n  - {name: a, backend: namespace, interval: 1h}\n")
    d = Daemon(
        load_config(path),
        listen_address=None,
        loader=lambda: load_config(path),
        backends=lambda target: FakeBackend(),
    )
    d.probers[0].run()
    path.write_text("targets:\n  - {name: a, backend: namespace, interval: 2h}\n")
    assert d.reload() == []
    assert d.probers[0].recent.summary().runs == 1, "same series in /metrics: same figures"
    path.write_text("targets:\n  - {name: a, backend: namespace, interval: 2h, buckets: [1, 2]}\n")
    assert d.reload() == []
    assert d.probers[0].recent.summary().runs == 0, "series dropped: figures start again"


def test_the_page_is_served_through_the_web_process() -> None:
    config = make_config({"name": "fake", "backend": "namespace", "interval": "1h"})
    d = Daemon(config, listen_address="127.0.0.1:0", backends=by_name({"fake": FakeBackend()}))
    d.start()
    try:
        wait_for(lambda: d.probers[0].last_result, what="the first run")
        assert d.http is not None
        host, port = d.http.address
        with urllib.request.urlopen(f"http://{host}:{port}/?refresh=0", timeout=10) as response:
            headers, markup = response.headers, response.read().decode()
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert headers["Cache-Control"] == "no-store"
        assert '<span id="instance">test-instance</span>' in markup
        assert "1 of 1 ok" in row(markup, "targets", "fake")
        assert d.started_at <= time.time()
    finally:
        d.shutdown()


# -- the sparkline ---------------------------------------------------------------------


def svg_points(svg: str) -> list[tuple[float, float]]:
    found = re.search(r'<polyline class="trend" points="([^"]*)"', svg)
    if not found:
        return []
    return [(float(x), float(y)) for x, y in (p.split(",") for p in found.group(1).split())]


def failure_marks(svg: str) -> list[tuple[float, float]]:
    return [
        (float(x), float(y))
        for x, y in re.findall(r'<circle class="failed" cx="([^"]+)" cy="([^"]+)"', svg)
    ]


def test_the_sparkline_scales_the_runs_to_their_own_range_newest_at_the_right() -> None:
    svg = sparkline([0.010, 0.030, 0.020])
    assert svg.startswith('<svg class="spark" width="120" height="24" viewBox="0 0 120 24" ')
    assert 'role="img"' in svg
    # evenly spaced from PAD to WIDTH - PAD; the slowest at the top, the fastest at the bottom
    assert svg_points(svg) == [(PAD, HEIGHT - PAD), (WIDTH / 2, PAD), (WIDTH - PAD, HEIGHT / 2)]
    label = "time to exec over the last 3 runs, oldest first: 10.0 ms to 30.0 ms"
    assert f'aria-label="{label}"' in svg
    assert f"<title>{label}</title>" in svg
    assert failure_marks(svg) == []
    assert svg.endswith("</svg>")


def test_a_failed_run_is_a_red_mark_on_the_baseline_at_its_place() -> None:
    svg = sparkline([0.010, None, 0.030, 0.020, None])
    step = (WIDTH - 2 * PAD) / 4
    assert [x for x, _ in svg_points(svg)] == [PAD, PAD + 2 * step, PAD + 3 * step]
    assert failure_marks(svg) == [(PAD + step, HEIGHT - PAD), (WIDTH - PAD, HEIGHT - PAD)]
    assert 'fill="#b3261e"' in svg
    assert 'data-runs="5" data-failed="2"' in svg
    assert "10.0 ms to 30.0 ms; 2 failed (red)</title>" in svg


def test_equal_times_are_a_flat_line_across_the_middle() -> None:
    svg = sparkline([0.005] * 4)
    assert [y for _, y in svg_points(svg)] == [HEIGHT / 2] * 4
    assert "<title>time to exec over the last 4 runs, oldest first: 5.0 ms</title>" in svg


def test_a_sparkline_needs_two_runs_and_draws_what_there_is() -> None:
    assert sparkline([]) == ""
    assert sparkline([0.010]) == ""
    assert sparkline([None]) == ""
    every_one_failed = sparkline([None, None, None])
    assert "<polyline" not in every_one_failed
    assert len(failure_marks(every_one_failed)) == 3
    assert "all 3 failed</title>" in every_one_failed
    one_success = sparkline([None, 0.010])
    assert "<polyline" not in one_success, "a line needs two points"
    assert '<circle class="point" cx="118.0" cy="12.0"' in one_success
    assert failure_marks(one_success) == [(PAD, HEIGHT - PAD)]


def test_the_targets_table_has_each_targets_sparkline() -> None:
    d = daemon()
    ring = d.probers[0].recent
    failed = Failure(Phase.EXEC, Reason.ERROR, "no")
    for i in range(6):
        ring.add(
            run(durations={} if i in (1, 4) else None, failure=failed if i in (1, 4) else None)
        )
    ring.add(run(durations={Phase.CREATE: MS}, cancelled=True))  # shutdown: not a failure
    good = section(row(page(d), "targets", "good"), '<td class="trend">', "</td>")
    assert 'data-runs="6" data-failed="2"' in good
    assert len(svg_points(good)) == 4
    assert len(failure_marks(good)) == 2
    assert section(row(page(d), "targets", "bad"), '<td class="trend">', "</td>") == (
        '<span class="muted">&ndash;</span>'
    ), "no runs: a dash, not an empty picture"


# -- backends not found --------------------------------------------------------------


def auto_config(not_found: dict[str, str], **burst: object) -> Config:
    """A `targets: auto` config that found one namespace target, and what it did not find."""
    found = {"name": "found", "backend": "namespace", **({"burst": burst} if burst else {})}
    return parse_config({"targets": "auto"}, discover=lambda: [found]).model_copy(
        update={"not_found": not_found}
    )


def not_found_items(markup: str) -> list[tuple[str, str]]:
    listing = section(markup, '<ul id="not-found">', "</ul>")
    return re.findall(
        r'<li data-backend="[^"]*"><b class="backend">(.*?)</b>: '
        r'<span class="why message">(.*?)</span></li>',
        listing,
    )


def test_the_backends_auto_did_not_find_are_listed_in_the_logs_words() -> None:
    why = {
        "docker": "the Docker engine does not answer at unix:///run/<x>&y/docker.sock: "
        "no such socket (is the service running?)",
        "<script>alert(1)</script>": 'an odd name & an odd "reason" <img src=x>',
    }
    d = Daemon(auto_config(why), listen_address=None, backends=lambda target: FakeBackend())
    with capture_logs() as logs:
        d.start()
        d.shutdown()
    logged = {e["backend"]: e["reason"] for e in logs if e["event"] == "backend not found"}
    assert logged == why
    markup = page(d)
    assert "<h2>Backends not found</h2>" in markup
    assert [(html.unescape(n), html.unescape(m)) for n, m in not_found_items(markup)] == list(
        logged.items()
    ), "the same words as the log, in its order"
    assert "unix:///run/&lt;x&gt;&amp;y/docker.sock" in markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markup
    assert markup.count("<script") == 1, "only the page's own script"
    assert "<img" not in markup


def test_with_targets_named_in_the_config_there_is_no_not_found_section() -> None:
    markup = page(daemon())
    assert "Backends not found" not in markup
    assert 'id="not-found"' not in markup


def test_a_reload_shows_what_auto_does_not_find_now() -> None:
    found_now = {"podman": "Podman does not answer at unix:///a.sock: connection refused"}
    configs = iter([auto_config(found_now), auto_config({})])
    d = Daemon(
        auto_config({"docker": "the Docker engine does not answer at X"}),
        listen_address=None,
        loader=lambda: next(configs),
        backends=lambda target: FakeBackend(),
    )
    assert not_found_items(page(d)) == [("docker", "the Docker engine does not answer at X")]
    with capture_logs() as logs:
        assert d.reload() == []
    assert not_found_items(page(d)) == list(found_now.items())
    assert [(e["backend"], e["reason"]) for e in logs if e["event"] == "backend not found"] == (
        list(found_now.items())
    ), "the log says it again when it changed"
    assert d.reload() == []
    assert "Backends not found" not in page(d), "everything found: no section"


# -- bursts ----------------------------------------------------------------------------


class FailFirstExec(FakeBackend):
    """A fake whose first exec fails: one sandbox of a burst fails, the others answer."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._execs = 0

    def exec(self, sandbox: SandboxRef, command: Sequence[str], deadline: Deadline) -> ExecResult:
        with self._lock:
            self._execs += 1
            first = self._execs == 1
        if first:
            raise BackendError("exec refused: <no> & never")
        return super().exec(sandbox, command, deadline)


@pytest.mark.usefixtures("frozen")
def test_a_burst_target_shows_its_last_bursts_figures() -> None:
    d = Daemon(
        auto_config({}, concurrency=4, interval="2m"),
        listen_address=None,
        backends=lambda target: FailFirstExec(),
    )
    assert "not run yet" in row(page(d), "bursts", "found")
    burst = d.probers[0].run_burst()
    assert burst is not None
    assert burst.time_to_first_ready is not None
    assert burst.time_to_all_ready is None, "one never answered"
    markup = page(d)
    assert f'<tr class="burst" data-burst-id="{burst.burst_id}" data-target="found">' in markup
    figures = row(markup, "bursts", "found")
    assert '<td class="launch">4 together</td><td class="num">120 s</td>' in figures
    assert '<td class="finished" title="2027-01-15 08:00:00 UTC">0 s ago</td>' in figures
    assert 'data-succeeded="3" data-sandboxes="4" title="success ratio 0.75">3 of 4 ok</td>' in (
        figures
    )
    first = burst.time_to_first_ready
    assert f'<td class="num first-ready" data-seconds="{first!r}">{duration(first)}</td>' in figures
    assert '<td class="num all-ready muted">&ndash;</td>' in figures
    assert "exec refused: &lt;no&gt; &amp; never" in figures
    assert d.probers[0].recent.summary().runs == 0, "a burst's runs are not the single probe's"


def test_a_burst_that_never_launched_says_why_and_no_burst_no_section() -> None:
    down = FakeBackend(errors={"ping": BackendUnavailable("engine <down>")})
    d = Daemon(auto_config({}, concurrency=3), listen_address=None, backends=lambda target: down)
    d.probers[0].run_burst()
    figures = row(page(d), "bursts", "found")
    assert 'data-succeeded="0" data-sandboxes="0"' in figures
    assert ">not launched</td>" in figures
    assert "engine &lt;down&gt;" in figures
    assert 'id="bursts"' not in page(daemon()), "no target with a burst block"
