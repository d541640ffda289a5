"""`bench --baseline`, `bench compare` and `bench --ab` (commands/bench_stats.py,
bench_compare.py, bench_ab.py): the method's properties on stored real samples with
a fixed seed, known slowdowns through the real bench path on a fake clock, Fisher's
test against hand-computed p-values, the outputs and the exit statuses."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import threading
from math import comb
from pathlib import Path
from typing import Any

import pytest

from sandbox_exporter.commands.bench import BackendRun, BenchReport
from sandbox_exporter.commands.bench_ab import run_ab, sides
from sandbox_exporter.commands.bench_compare import (
    SERIES,
    ReportError,
    compare_reports,
    load_report,
    parse_threshold,
)
from sandbox_exporter.commands.bench_compare_report import render
from sandbox_exporter.commands.bench_report import full_json
from sandbox_exporter.commands.bench_stats import compare, failure_change, median_change
from tests.conftest import TEST_IMAGE, Engine, unavailable
from tests.fakes import FakeBackend, FakeClock
from tests.helpers import interrupted_bench, make_config

POOL = json.loads((Path(__file__).parent / "data" / "bench_samples.json").read_text())


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandbox_exporter", "bench", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("backend", ["namespace", "docker"])
def test_a_against_a_is_same_in_at_least_19_of_20_trials(backend: str) -> None:
    """Two sets of 60 runs drawn from one pool of real runs differ only by chance: the
    verdict must be `same`. Drawn with a fixed seed, this is the method's property on
    real durations, not a timing of today's machine."""
    pool = POOL["backends"][backend]["series"]
    draw = random.Random(20261203)
    for name in SERIES:
        values = pool[name]
        assert len(values) >= 240, (backend, name, len(values))
        same = 0
        for _ in range(20):
            picked = draw.sample(values, 120)
            same += compare(picked[:60], picked[60:], threshold=0.10).verdict == "same"
        assert same >= 19, (backend, name, same)


def test_the_interval_covers_no_change_about_95_times_in_100() -> None:
    """The 95% interval of the median's change, on A/A draws from real start times:
    it holds 0 as often as a 95% interval should (well within 88-100 of 100)."""
    values = POOL["backends"]["namespace"]["series"]["start"]
    draw = random.Random(7)
    covered = 0
    for _ in range(100):
        picked = draw.sample(values, 120)
        _, low, high = median_change(picked[:60], picked[60:])
        covered += low <= 0 <= high
    assert 88 <= covered <= 100, covered


def scaled(values: list[float], factor: float) -> list[float]:
    return [v * factor for v in values]


def test_a_known_slowdown_of_the_real_durations_is_found_and_a_small_one_is_not() -> None:
    values = POOL["backends"]["docker"]["series"]["start"]
    draw = random.Random(11)
    picked = draw.sample(values, 120)
    old, new = picked[:60], picked[60:]
    assert compare(old, scaled(new, 1.5), threshold=0.10).verdict == "slower"
    assert compare(old, scaled(new, 0.5), threshold=0.10).verdict == "faster"
    assert compare(old, scaled(new, 1.05), threshold=0.10).verdict == "same"


def lognormal_backend(clock: FakeClock, seed: int, start_factor: float) -> FakeBackend:
    """A fake engine whose calls take lognormal times on the fake clock (a 10% spread
    around 20, 100, 10, 15 and 30 ms), start `start_factor` times slower."""
    draw = random.Random(seed)
    means = {"create": 0.02, "start": 0.1 * start_factor, "exec": 0.01, "stop": 0.015}
    means["remove"] = 0.03

    def cost(method: str) -> None:
        if method in means:
            clock.advance(means[method] * draw.lognormvariate(0, 0.1))

    return FakeBackend(clock=clock, on_call=cost)


def fake_ab(
    backends: dict[str, FakeBackend], clock: FakeClock, iterations: int, block: int, warmup: int
) -> BenchReport:
    """run_ab of targets `a` and `b` on these fake engines, timed on `clock`."""
    config = make_config({"name": "a", "backend": "docker"}, {"name": "b", "backend": "docker"})
    a, b = config.targets
    return run_ab(
        a,
        b,
        iterations=iterations,
        block=block,
        warmup=warmup,
        instance="test",
        cancel=threading.Event(),
        injected=backends,  # type: ignore[arg-type]
        make_run=lambda target: BackendRun(target, clock=clock),
    )


def ab_report(start_factor: float, seed: int = 3) -> dict[str, Any]:
    """`bench --ab` of two fake engines through the real runner (run_ab, BackendRun,
    LifecycleRunner), B's start `start_factor` times A's, timed on a fake clock."""
    clock = FakeClock()
    injected = {
        "a": lognormal_backend(clock, seed, 1.0),
        "b": lognormal_backend(clock, seed + 1, start_factor),
    }
    report = fake_ab(injected, clock, iterations=60, block=5, warmup=1)
    assert [len(run.results) for run in report.runs] == [60, 60]
    return full_json(report)


def test_a_20_percent_slower_start_is_found_slower_on_start_only() -> None:
    old, new = sides(ab_report(1.2))
    result = compare_reports(old, new, threshold=0.10)
    [backend] = result.backends
    verdicts = {name: change.verdict for name, change in backend.changes.items()}
    assert verdicts["start"] == "slower", backend.changes["start"]
    assert {
        v for name, v in verdicts.items() if name not in ("start", "time_to_exec", "total")
    } == {"same"}
    assert result.regressed
    assert backend.changes["start"].change == pytest.approx(0.2, abs=0.05)


def test_a_5_percent_slower_start_is_same_at_a_10_percent_threshold() -> None:
    old, new = sides(ab_report(1.05))
    result = compare_reports(old, new, threshold=parse_threshold("10%"))
    [backend] = result.backends
    assert backend.changes["start"].verdict == "same", backend.changes["start"]
    assert not result.regressed


def test_the_ab_runs_alternate_in_blocks() -> None:
    clock = FakeClock()
    order: list[str] = []

    def recording(name: str) -> FakeBackend:
        def called(method: str) -> None:
            if method == "create":
                order.append(name)

        return FakeBackend(on_call=called)

    backends = {name: recording(name) for name in ("a", "b")}
    fake_ab(backends, clock, iterations=7, block=3, warmup=0)
    assert "".join(order) == "aaabbbaaabbbab"


def test_fishers_test_against_hand_computed_p_values() -> None:
    # 0 failures of 200, then 3 of 200: the chance that all 3 of the 3 failures fall
    # in the new 200 of the 400 runs, if both had the same rate
    assert failure_change(0, 200, 3, 200).p_value == pytest.approx(comb(200, 3) / comb(400, 3))
    assert failure_change(0, 200, 3, 200).p_value == pytest.approx(0.12406, abs=1e-5)
    assert not failure_change(0, 200, 3, 200).rose
    # 1 of 10, then 4 of 10: P(4 or 5 of the 5 failures in the new 10)
    expected = (comb(10, 4) * comb(10, 1) + comb(10, 5)) / comb(20, 5)
    assert failure_change(1, 10, 4, 10).p_value == pytest.approx(expected)
    # 0 of 200, then 10 of 200: a rise
    assert failure_change(0, 200, 10, 200).rose
    assert failure_change(5, 200, 5, 200).p_value > 0.5


def report_with(failed: int, runs: int, seed: int, image: str = "busybox:1.36") -> dict[str, Any]:
    """A bench report of `runs` Docker runs, `failed` of them failed, durations drawn from
    the stored pool."""
    pool = POOL["backends"]["docker"]["series"]
    draw = random.Random(seed)
    samples = []
    for index in range(runs):
        k = draw.randrange(len(pool["total"]))
        phases = {name: pool[name][k] for name in ("create", "start", "exec", "stop", "remove")}
        ok = index >= failed
        samples.append(
            {
                "iteration": index,
                "success": ok,
                "durations_seconds": phases if ok else {},
                "total_seconds": pool["total"][k] if ok else None,
                "time_to_exec_seconds": pool["time_to_exec"][k] if ok else None,
            }
        )
    return {
        "machine": {"system": "Linux 6.1", "cpus": 2, "exporter": "0.1.0"},
        "backends": [{"target": "docker", "backend": "docker", "image": image, "samples": samples}],
    }


def test_more_failures_are_reported_even_when_every_timing_is_the_same() -> None:
    old, new = report_with(0, 200, seed=1), report_with(3, 200, seed=1)
    result = compare_reports(old, new, threshold=0.10)
    text = render(result, "table", "old.json", "new.json")
    assert "failures: 0/200 -> 3/200" in text
    assert "p = 0.124" in text
    assert not result.regressed  # 3 in 200 could be chance (p = 0.12): reported, not failed
    worse = compare_reports(old, report_with(12, 200, seed=1), threshold=0.10)
    assert worse.regressed
    assert "fails more often" in render(worse, "table", "old.json", "new.json")


def test_compare_lists_what_differs_besides_the_runs(tmp_path: Path) -> None:
    old = report_with(0, 60, seed=1)
    new = report_with(0, 60, seed=2, image="busybox:1.37")
    new["machine"]["system"] = "Linux 6.12"
    result = compare_reports(old, new, threshold=0.10)
    assert "machine system: Linux 6.1 -> Linux 6.12" in result.differences
    assert "docker image: busybox:1.36 -> busybox:1.37" in result.differences
    markdown = render(result, "markdown", "a", "b")
    assert "| series | old p50 |" in markdown
    assert "- docker image: busybox:1.36 -> busybox:1.37" in markdown
    as_json = json.loads(render(result, "json", "a", "b"))
    assert as_json["differences"] == result.differences
    assert set(as_json["backends"][0]["series"]) == set(SERIES)
    start = as_json["backends"][0]["series"]["start"]
    assert start["p95_change"] == pytest.approx(start["new_p95"] / start["old_p95"] - 1)


def test_bench_compare_exit_statuses(tmp_path: Path) -> None:
    def saved(name: str, report: dict[str, Any]) -> str:
        path = tmp_path / name
        path.write_text(json.dumps(report))
        return str(path)

    old = saved("old.json", report_with(0, 60, seed=1))
    same = saved("same.json", report_with(0, 60, seed=2))
    slower = report_with(0, 60, seed=3)
    for sample in slower["backends"][0]["samples"]:
        sample["durations_seconds"]["start"] *= 1.5
        sample["time_to_exec_seconds"] *= 1.3
        sample["total_seconds"] *= 1.2
    slow = saved("slow.json", slower)
    assert bench("compare", old, same).returncode == 0
    done = bench("compare", old, slow, "--format", "json")
    assert done.returncode == 3, done.stderr
    assert json.loads(done.stdout)["regressed"] is True
    assert bench("compare", old, slow, "--threshold", "80%").returncode == 0
    broken = saved("broken.json", {"nothing": 1})
    refused = bench("compare", old, broken)
    assert refused.returncode == 2
    assert "broken.json: no `backends` list" in refused.stderr
    assert bench("compare", old, str(tmp_path / "absent.json")).returncode == 2
    bad_threshold = bench("compare", old, same, "--threshold", "lots")
    assert bad_threshold.returncode == 2
    assert "--threshold" in bad_threshold.stderr


@pytest.mark.namespace
def test_bench_baseline_runs_compares_and_writes_the_new_report(tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    first = bench("-b", "namespace", "-i", "5", "--json", str(old))
    if first.returncode != 0:
        pytest.skip(f"the namespace backend does not run here: {first.stderr[-300:]}")
    new = tmp_path / "new.json"
    done = bench("-b", "namespace", "-i", "5", "--baseline", str(old), "--json", str(new))
    assert done.returncode in (0, 3), done.stderr
    assert "bench compare:" in done.stdout
    saved = load_report(new)["backends"][0]
    assert saved["iterations"] == 5
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", saved["engine"]["util_linux"]), saved["engine"]
    assert bench("-b", "namespace", "--baseline", str(old), "--json").returncode == 2
    assert bench("-b", "namespace", "--baseline", str(tmp_path / "x.json")).returncode == 2


def test_load_report_names_the_file_and_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text("{not json")
    with pytest.raises(ReportError, match=r"r\.json: not JSON"):
        load_report(path)
    path.write_text(json.dumps({"backends": [{"no": "target"}]}))
    with pytest.raises(ReportError, match=r"backends\[0\] has no `target`"):
        load_report(path)


@pytest.mark.docker
def test_ab_on_docker_finds_gvisors_start_slower_than_runcs(
    tmp_path: Path, docker_engine: Engine
) -> None:
    if "runsc" not in docker_engine.client.info().get("Runtimes", {}):
        unavailable("gvisor", "dockerd has no runtime named runsc")
    config = tmp_path / "ab.yaml"
    docker = {"base_url": docker_engine.url}
    config.write_text(
        json.dumps(
            {
                "instance": "bench-ab",
                "defaults": {"image": TEST_IMAGE, "pull_policy": "never"},
                "targets": [
                    {"name": "runc", "backend": "docker", "docker": docker},
                    {
                        "name": "runsc",
                        "backend": "docker",
                        "docker": {**docker, "runtime": "runsc"},
                    },
                ],
            }
        )
    )
    report = tmp_path / "ab.json"
    done = bench(
        "--config.file", str(config), "--ab", "runc,runsc", "-i", "10", "--json", str(report)
    )
    assert done.returncode == 3, done.stdout + done.stderr  # B is slower: the gate closes
    start = next(line for line in done.stdout.splitlines() if line.strip().startswith("start"))
    assert start.rstrip().endswith("slower"), done.stdout
    assert "[+" in start, "the interval is printed"
    assert "runc -> runsc" in done.stdout
    assert "runc runtime: (none) -> runsc" in done.stdout, "the thing under test is listed"
    saved = load_report(report)
    assert [b["target"] for b in saved["backends"]] == ["runc", "runsc"]
    assert [b["runtime"] for b in saved["backends"]] == [None, "runsc"]
    engines = [b["engine"] for b in saved["backends"]]
    assert [e["runtime_in_use"] for e in engines] == ["runc", "runsc"]
    assert engines[0]["engine_version"] == engines[1]["engine_version"] != ""
    assert engines[0]["image_id"].startswith("sha256:")
    assert "runc runtime_in_use: runc -> runsc" in done.stdout
    mine = {"label": "sandbox-exporter.io/instance=bench-ab"}
    assert docker_engine.client.containers.list(all=True, filters=mine) == [], "none left"


@pytest.mark.docker
def test_compare_of_two_runs_on_different_images_warns(
    tmp_path: Path, docker_engine: Engine
) -> None:
    other = "sandbox-exporter/busybox:other"
    docker_engine.client.images.get(TEST_IMAGE).tag(other)
    try:
        reports = []
        for image in (TEST_IMAGE, other):
            path = tmp_path / f"{image.rsplit(':', 1)[1]}.json"
            done = bench("-b", "docker", "-i", "3", "--image", image, "--json", str(path))
            assert done.returncode == 0, done.stderr
            reports.append(str(path))
        compared = bench("compare", *reports)
        assert compared.returncode in (0, 3), compared.stderr
        assert "the runs differ in these besides their timings" in compared.stdout
        assert f"docker image: {TEST_IMAGE} -> {other}" in compared.stdout
    finally:
        docker_engine.client.images.remove(other)


@pytest.mark.docker
def test_ctrl_c_during_ab_removes_the_sandbox_in_flight(
    tmp_path: Path, docker_engine: Engine
) -> None:
    config = tmp_path / "ab.yaml"
    docker = {"base_url": docker_engine.url}
    slow = ["sh", "-c", "sleep 1; echo hello"]
    config.write_text(
        json.dumps(
            {
                "instance": "bench-ab-interrupt",
                "defaults": {"image": TEST_IMAGE, "pull_policy": "never", "command": slow},
                "targets": [
                    {"name": "one", "backend": "docker", "docker": docker},
                    {"name": "two", "backend": "docker", "docker": docker},
                ],
            }
        )
    )
    mine = {"label": "sandbox-exporter.io/instance=bench-ab-interrupt"}
    done = interrupted_bench(
        "--config.file",
        str(config),
        "--ab",
        "one,two",
        "-i",
        "50",
        once=lambda: docker_engine.client.containers.list(filters=mine),
        what="a sandbox",
    )
    assert done.returncode == 130, done.stderr
    assert docker_engine.client.containers.list(all=True, filters=mine) == []
