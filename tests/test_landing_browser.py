"""The landing page in a real browser (Debian's headless Chromium) against a real
exporter process probing real namespaces: the figures in the DOM are those of the
runs in the exporter's own log (the last burst's too), each target's sparkline is
drawn, the probe button shows a run's log lines in the page, a refresh keeps them,
and without JavaScript the figures and a plain probe link are still there.

Then a page staged in-process (fake backends, so every count is known): the failure
marks of a sparkline, the backends `targets: auto` did not find, a burst with a
failed sandbox, and names and messages with markup in them shown as text."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from sandbox_exporter.backends.base import BackendError
from sandbox_exporter.daemon import Daemon
from sandbox_exporter.probing.percentiles import nearest_rank
from sandbox_exporter.probing.recent import FIGURES
from sandbox_exporter.results import BurstResult
from sandbox_exporter.web.humanize import duration
from sandbox_exporter.web.sparkline import HEIGHT, WIDTH
from tests.browser import headless_chromium, missing, probe_from_the_page
from tests.conftest import REQUIRED
from tests.fakes import by_name
from tests.helpers import namespaces_missing, wait_for
from tests.process import ExporterProcess
from tests.test_landing import FailFirstExec, auto_config

RUNS = 3  # scheduled runs before the page is read
TARGET = "floor"
BURSTING = "floor-burst"  # a target with a burst block (its single runs are hourly)


def need_chromium() -> None:
    why = missing()
    if why is not None:
        if "chromium" in REQUIRED:  # scripts/test.sh installs it: missing there is a failure
            pytest.fail(f"chromium is required for this run but {why}")
        pytest.skip(why)


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExporterProcess]:
    need_chromium()
    why = namespaces_missing()
    if why is not None:
        pytest.skip(why)
    work = tmp_path_factory.mktemp("landing")
    config = work / "config.yaml"
    config.write_text(f"""instance: landing-browser
defaults: {{interval: 1s, jitter: 0s}}
targets:
  - name: {TARGET}
    backend: namespace
    namespace: {{state_dir: "{work / "state"}"}}
  - name: {BURSTING}
    backend: namespace
    namespace: {{state_dir: "{work / "state"}"}}
    interval: 1h
    burst: {{concurrency: 3, interval: 4s}}
""")
    process = ExporterProcess(config)
    try:
        wait_for(
            lambda: (
                (process.sample("sandbox_probes_total", target=TARGET, result="success") or 0)
                >= RUNS
            ),
            timeout=60,
            what=f"{RUNS} successful runs in /metrics",
        )
        yield process
    finally:
        if process.proc.poll() is None:
            assert process.stop() == 0


@pytest.fixture
def chrome(exporter: ExporterProcess) -> Iterator[Chrome]:
    """A headless Chromium, once the exporter runs (its fixture skips without one)."""
    browser = headless_chromium()
    yield browser
    browser.quit()


def scheduled_runs(exporter: ExporterProcess, n: int) -> list[dict[str, Any]]:
    """The `lifecycle` log lines of the first `n` scheduled runs of TARGET (a probe from
    the page is logged with via=/probe and is not one of them, nor is a burst's run)."""

    def found() -> list[dict[str, Any]] | None:
        runs = [
            e
            for e in list(exporter.logs)
            if e.get("event") == "lifecycle"
            and e.get("target") == TARGET
            and "via" not in e
            and "burst_id" not in e
        ]
        return runs if len(runs) >= n else None

    runs: list[dict[str, Any]] = wait_for(found, what=f"{n} lifecycles in the exporter's log")
    return runs[:n]


def durations(exporter: ExporterProcess, runs: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Each figure's durations over those runs, from the log: what the page should show."""
    ids = {r["run_id"] for r in runs}
    out: dict[str, list[float]] = {name: [] for name in FIGURES}
    for entry in list(exporter.logs):
        if (
            entry.get("event") == "phase"
            and entry.get("outcome") == "ok"
            and entry["run_id"] in ids
        ):
            out[entry["phase"]].append(entry["duration_seconds"])
    out["time to exec"] = [r["time_to_exec_seconds"] for r in runs if r["success"]]
    out["total"] = [r["total_seconds"] for r in runs if r["success"]]
    return out


def page_figures(chrome: Chrome) -> dict[str, Any]:
    """What the page says, read from its DOM in one go."""
    return dict(
        chrome.execute_script(
            """
        const row = document.querySelector('#durations tr[data-target="floor"]');
        const spreads = {};
        row.querySelectorAll("td.spread").forEach((td) => {
          const p50 = td.querySelector(".p50"), p95 = td.querySelector(".p95");
          spreads[td.dataset.figure] = {
            n: Number(td.dataset.n),
            p50: p50 ? Number(p50.dataset.seconds) : null,
            p95: p95 ? Number(p95.dataset.seconds) : null,
            text: td.textContent.trim(),
          };
        });
        const target = document.querySelector('#targets tr[data-target="floor"]');
        return {
          runs: Number(row.querySelector("td.runs").textContent),
          spreads: spreads,
          result: target.querySelector(".badge").textContent,
          lastSuccess: target.querySelector(".last-success").textContent,
          recent: target.querySelector(".runs").textContent,
          instance: document.getElementById("instance").textContent,
          config: document.getElementById("config-file").textContent,
          uptime: Number(document.getElementById("uptime").dataset.seconds),
          scripted: document.documentElement.classList.contains("js"),
          renderedAt: document.getElementById("rendered-at").textContent,
        };
        """
        )
    )


@pytest.mark.namespace
def test_the_dom_shows_the_figures_of_the_runs_in_the_log(
    exporter: ExporterProcess, chrome: Chrome
) -> None:
    chrome.get(f"{exporter.url}/?refresh=0")
    shown = page_figures(chrome)
    assert shown["scripted"], "this browser runs the page's script"
    n = shown["runs"]
    assert n >= RUNS
    assert shown["result"] == "success"
    assert shown["recent"] == f"{n} of {n} ok"
    assert shown["lastSuccess"].endswith(" s ago")
    assert shown["instance"] == "landing-browser"
    assert shown["config"] == str(exporter.config)
    assert shown["uptime"] >= 1
    expected = durations(exporter, scheduled_runs(exporter, n))
    for figure in FIGURES:
        values = expected[figure]
        assert len(values) == n, figure
        spread = shown["spreads"][figure]
        assert spread["n"] == n, figure
        assert spread["p50"] == pytest.approx(nearest_rank(values, 50), rel=1e-12), figure
        assert spread["p95"] == pytest.approx(nearest_rank(values, 95), rel=1e-12), figure
    # and /metrics counted at least those runs
    counted = exporter.sample("sandbox_probes_total", target=TARGET, result="success")
    assert counted is not None
    assert counted >= n


@pytest.mark.namespace
def test_the_probe_button_shows_the_runs_log_lines(
    exporter: ExporterProcess, chrome: Chrome
) -> None:
    chrome.get(f"{exporter.url}/?refresh=0")
    assert not chrome.find_element(By.ID, "probes").is_displayed()
    run = probe_from_the_page(chrome, TARGET)
    assert chrome.find_element(By.ID, "probes").is_displayed()
    head = run.find_element(By.TAG_NAME, "h3").text
    assert head.startswith(f"{TARGET} at ")
    assert ": success, time to exec " in head
    assert "success" in (run.get_attribute("class") or "")
    lines = run.find_element(By.TAG_NAME, "pre").text.splitlines()
    for phase in ("create", "start", "exec", "stop", "remove"):
        assert any(
            line.split()[1:3] == ["info", "phase"]
            and {f"phase={phase}", "outcome=ok", f"target={TARGET}"} <= set(line.split())
            for line in lines
        ), (phase, lines)
    assert lines[-1].startswith("result ")
    assert "success=true" in lines[-1]
    run_ids = {word for line in lines for word in line.split() if word.startswith("run_id=")}
    assert len(run_ids) == 1, "one run's lines, the result's among them"
    link = chrome.find_element(By.CSS_SELECTOR, f'a.probe[data-target="{TARGET}"]')
    assert link.text == "Run probe", "the button is free again"


@pytest.mark.namespace
def test_a_refresh_keeps_the_probe_output(exporter: ExporterProcess, chrome: Chrome) -> None:
    chrome.get(f"{exporter.url}/?refresh=1")
    run = probe_from_the_page(chrome, TARGET)
    log = run.find_element(By.TAG_NAME, "pre").text
    before = page_figures(chrome)  # read in one script: a refresh may swap the DOM any time

    def refreshed(browser: Chrome) -> bool:
        now = page_figures(browser)
        return bool(now["renderedAt"] != before["renderedAt"] and now["runs"] > before["runs"])

    WebDriverWait(chrome, 30).until(refreshed)
    assert chrome.find_element(By.CSS_SELECTOR, "#probe-output .probe-run pre").text == log
    assert chrome.find_element(By.ID, "refresh-state").text == ""
    assert "stale" not in (chrome.find_element(By.TAG_NAME, "body").get_attribute("class") or "")


@pytest.mark.namespace
def test_without_javascript_the_figures_and_a_plain_probe_link_are_there(
    exporter: ExporterProcess, chrome: Chrome
) -> None:
    chrome.get(f"{exporter.url}/?refresh=0")
    with_script = page_figures(chrome)
    plain = headless_chromium(javascript=False)
    try:
        plain.get(f"{exporter.url}/?refresh=0")
        root = plain.find_element(By.TAG_NAME, "html")
        assert "js" not in (root.get_attribute("class") or "").split(), "scripting is off"
        row = plain.find_element(By.CSS_SELECTOR, f'#durations tr[data-target="{TARGET}"]')
        cells = {
            td.get_attribute("data-figure"): td.text
            for td in row.find_elements(By.CSS_SELECTOR, "td.spread")
        }
        assert set(cells) == set(FIGURES)
        for figure, text in cells.items():
            assert " ms / " in text or " s / " in text, (figure, text)
        assert int(row.find_element(By.CSS_SELECTOR, "td.runs").text) >= with_script["runs"]
        target = plain.find_element(By.CSS_SELECTOR, f'#targets tr[data-target="{TARGET}"]')
        assert target.find_element(By.CSS_SELECTOR, ".badge").text == "success"
        assert plain.find_element(By.ID, "instance").text == "landing-browser"
        assert not plain.find_element(By.ID, "probes").is_displayed()
        link = target.find_element(By.CSS_SELECTOR, "a.probe")
        href = link.get_attribute("href") or ""
        assert href.endswith(f"/probe?target={TARGET}&debug=true")
        # the link itself is the probe: its log, as plain text (a scheduled run may hold
        # the target: then it says so, and it is followed again)
        for _ in range(20):
            link.click()
            body = plain.find_element(By.TAG_NAME, "body").text
            if "is busy" not in body:
                break
            plain.back()
            link = plain.find_element(
                By.CSS_SELECTOR, f'#targets tr[data-target="{TARGET}"] a.probe'
            )
        assert plain.current_url == href
        assert '"event": "result"' in body.splitlines()[-1]
        assert '"success": true' in body.splitlines()[-1]
    finally:
        plain.quit()


SPARKLINE = """
const svg = document.querySelector(`#targets tr[data-target="${arguments[0]}"] svg.spark`);
const line = svg.querySelector("polyline.trend");
const box = svg.getBoundingClientRect();
const row = document.querySelector(`#durations tr[data-target="${arguments[0]}"]`);
return {
  runs: Number(svg.dataset.runs),
  failed: Number(svg.dataset.failed),
  points: line ? line.points.numberOfItems : 0,
  marks: svg.querySelectorAll("circle.failed").length,
  width: box.width,
  height: box.height,
  label: svg.getAttribute("aria-label"),
  title: svg.querySelector("title").textContent,
  successes: Number(row.querySelector('td.spread[data-figure="time to exec"]').dataset.n),
};
"""

BURST = """
const row = document.querySelector(`#bursts tr[data-target="${arguments[0]}"]`);
const seconds = (cls) => {
  const td = row.querySelector("td." + cls);
  return td.dataset.seconds === undefined ? null : Number(td.dataset.seconds);
};
const text = (cls) => row.querySelector("td." + cls).textContent;
return {
  burstId: row.dataset.burstId,
  launch: text("launch"),
  finished: text("finished"),
  succeeded: Number(row.querySelector("td.succeeded").dataset.succeeded),
  sandboxes: Number(row.querySelector("td.succeeded").dataset.sandboxes),
  said: text("succeeded"),
  firstReady: seconds("first-ready"),
  allReady: seconds("all-ready"),
  firstReadyText: text("first-ready"),
  allReadyText: text("all-ready"),
  failure: text("failure-detail"),
};
"""


def sparkline_of(browser: Chrome, target: str) -> dict[str, Any]:
    """The target's sparkline as drawn, and its successes from the durations table, read
    from one DOM."""
    return dict(browser.execute_script(SPARKLINE, target))


def burst_of(browser: Chrome, target: str) -> dict[str, Any]:
    return dict(browser.execute_script(BURST, target))


@pytest.mark.namespace
def test_each_target_has_a_sparkline_of_its_recent_runs(
    exporter: ExporterProcess, chrome: Chrome
) -> None:
    chrome.get(f"{exporter.url}/?refresh=0")
    svg = chrome.find_element(By.CSS_SELECTOR, f'#targets tr[data-target="{TARGET}"] svg.spark')
    assert svg.is_displayed()
    shown = sparkline_of(chrome, TARGET)
    assert (shown["width"], shown["height"]) == (WIDTH, HEIGHT)
    assert shown["runs"] >= RUNS
    assert shown["points"] == shown["successes"] == shown["runs"], "one point per success"
    assert (shown["marks"], shown["failed"]) == (0, 0)
    assert shown["label"] == shown["title"]
    assert shown["label"].startswith(f"time to exec over the last {shown['runs']} runs")


@pytest.mark.namespace
def test_the_last_burst_shown_is_the_one_in_the_log(
    exporter: ExporterProcess, chrome: Chrome
) -> None:
    wait_for(lambda: exporter.event("burst"), timeout=60, what="a burst in the exporter's log")
    chrome.get(f"{exporter.url}/?refresh=0")
    shown = burst_of(chrome, BURSTING)

    def logged() -> dict[str, Any] | None:
        return next(
            (
                e
                for e in list(exporter.logs)
                if e.get("event") == "burst" and e.get("burst_id") == shown["burstId"]
            ),
            None,
        )

    burst: dict[str, Any] = wait_for(logged, what=f"burst {shown['burstId']} in the log")
    assert shown["launch"] == "3 together"
    assert shown["sandboxes"] == burst["concurrency"] == 3
    assert shown["succeeded"] == burst["succeeded"]
    assert shown["said"] == f"{burst['succeeded']} of 3 ok"
    assert shown["finished"].endswith(" ago")
    for figure, key in (("firstReady", "first_ready"), ("allReady", "all_ready")):
        value = burst[f"time_to_{key}_seconds"]
        if value is None:
            assert shown[figure] is None, figure
        else:
            assert shown[figure] == pytest.approx(value, rel=1e-12), figure


# -- a page staged in-process: every count known --------------------------------------

NOT_FOUND = {
    "docker": "the Docker engine does not answer at unix:///run/<no>&engine/docker.sock: "
    "no such socket (is the service running?)",
    "<script>alert(1)</script>": '<b>not bold</b> & "quoted"',
}
SINGLE_RUNS = 7
FAILED = (1, 4)  # which of them fail
EXEC_ERROR = "exec said <script>alert(2)</script> & quit"


@pytest.fixture(scope="module")
def staged() -> Iterator[tuple[Daemon, BurstResult]]:
    """A `targets: auto` exporter served on loopback, not scheduling: its target has had
    a burst of 4 (one sandbox failed) and 7 single runs (two failed)."""
    need_chromium()
    backend = FailFirstExec()  # the burst's first exec fails
    d = Daemon(
        auto_config(NOT_FOUND, concurrency=4),
        listen_address="127.0.0.1:0",
        backends=by_name({"found": backend}),
    )
    prober = d.probers[0]
    burst = prober.run_burst()
    assert burst is not None
    for i in range(SINGLE_RUNS):
        backend.errors = {"exec": BackendError(EXEC_ERROR)} if i in FAILED else {}
        prober.run()
    d.serve()
    yield d, burst
    d.shutdown()


@pytest.fixture
def browser(staged: tuple[Daemon, BurstResult]) -> Iterator[Chrome]:
    chromium = headless_chromium()
    d, _ = staged
    assert d.http is not None
    host, port = d.http.address
    chromium.get(f"http://{host}:{port}/?refresh=0")
    yield chromium
    chromium.quit()


def test_a_sparkline_marks_each_failed_run(browser: Chrome) -> None:
    shown = sparkline_of(browser, "found")
    assert (shown["runs"], shown["failed"]) == (SINGLE_RUNS, len(FAILED))
    assert shown["points"] == shown["successes"] == SINGLE_RUNS - len(FAILED)
    assert shown["marks"] == len(FAILED)
    assert shown["label"].endswith(f"; {len(FAILED)} failed (red)")
    marks = browser.find_elements(By.CSS_SELECTOR, "svg.spark circle.failed")
    assert all(mark.is_displayed() for mark in marks)


def test_the_backends_not_found_are_listed_as_text(browser: Chrome) -> None:
    items = browser.find_elements(By.CSS_SELECTOR, "#not-found li")
    assert [li.text for li in items] == [f"{name}: {why}" for name, why in NOT_FOUND.items()]
    assert [li.get_attribute("data-backend") for li in items] == list(NOT_FOUND)
    assert browser.execute_script("return document.scripts.length") == 1, "the page's own"
    assert browser.find_elements(By.CSS_SELECTOR, "#not-found b:not(.backend)") == []


def test_the_last_bursts_figures(browser: Chrome, staged: tuple[Daemon, BurstResult]) -> None:
    _, burst = staged
    shown = burst_of(browser, "found")
    assert shown["burstId"] == burst.burst_id
    assert (shown["succeeded"], shown["sandboxes"], shown["said"]) == (3, 4, "3 of 4 ok")
    assert burst.time_to_first_ready is not None
    assert shown["firstReady"] == burst.time_to_first_ready
    assert shown["firstReadyText"] == duration(burst.time_to_first_ready)
    assert (shown["allReady"], shown["allReadyText"]) == (None, "\u2013"), "one never answered"
    assert "exec refused: <no> & never" in shown["failure"]


def test_an_engines_message_with_markup_shows_as_text(browser: Chrome) -> None:
    row = browser.find_element(By.CSS_SELECTOR, '#targets tr[data-target="found"]')
    assert EXEC_ERROR in row.find_element(By.CSS_SELECTOR, ".failure-detail").text
    assert row.find_elements(By.TAG_NAME, "script") == []
