"""The landing page in a real browser (Debian's headless Chromium) against a real
exporter process probing real namespaces: the figures in the DOM are those of the
runs in the exporter's own log, the probe button shows a run's log lines in the page,
a refresh keeps them, and without JavaScript the figures and a plain probe link are
still there."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from sandbox_exporter.probing.percentiles import nearest_rank
from sandbox_exporter.probing.recent import FIGURES
from tests.browser import headless_chromium, missing, probe_from_the_page
from tests.conftest import REQUIRED
from tests.helpers import namespaces_missing, wait_for
from tests.process import ExporterProcess

pytestmark = pytest.mark.namespace

RUNS = 3  # scheduled runs before the page is read
TARGET = "floor"


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExporterProcess]:
    why = missing()
    if why is not None:
        if "chromium" in REQUIRED:  # scripts/test.sh installs it: missing there is a failure
            pytest.fail(f"chromium is required for this run but {why}")
        pytest.skip(why)
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
    """The `lifecycle` log lines of the first `n` scheduled runs (a probe from the page is
    logged with via=/probe and is not one of them)."""

    def found() -> list[dict[str, Any]] | None:
        runs = [e for e in list(exporter.logs) if e.get("event") == "lifecycle" and "via" not in e]
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
