"""`sandbox-exporter bench --concurrency N [--stagger D]`: each iteration one burst."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from sandbox_exporter.backends.base import ExecResult
from sandbox_exporter.backends.state import StateDirectory, default_root
from sandbox_exporter.cli import main
from sandbox_exporter.commands.bench import BenchError, run_bench
from sandbox_exporter.commands.bench_burst import BurstBackendRun, burst_settings, with_burst
from sandbox_exporter.commands.bench_burst_report import render_burst_json, render_burst_table
from sandbox_exporter.config.settings import Burst
from sandbox_exporter.results import BurstResult
from tests.fakes import FakeBackend, failing
from tests.helpers import interrupted_bench, make_config, namespaces_missing

ROOT = Path(__file__).parent.parent
BURST_COLUMNS = ("First p50", "First p95", "All p50", "All p95", "Skew p50", "Skew max")


@pytest.fixture
def namespaces() -> None:
    why = namespaces_missing()
    if why:
        pytest.skip(why)


def _config_file(tmp_path: Path, instance: str, command: str = "echo hello") -> Path:
    config = tmp_path / "bench.yaml"
    config.write_text(
        f"""
instance: {instance}
defaults: {{command: ["sh", "-c", "{command}"]}}
targets:
  - {{name: ns, backend: namespace, namespace: {{state_dir: "{tmp_path / "state"}"}}}}
"""
    )
    return config


def test_launch_quarters_first_and_last_as_the_gauges_read_them() -> None:
    def sizes(count: int) -> list[int]:
        burst = BurstResult("t", "b", "id", "burst", 0.0, results=[None] * count)  # type: ignore[list-item]
        return [len(q) for q in burst.quarters()]

    assert sizes(2) == [1, 0, 0, 1]
    assert sizes(3) == [1, 1, 0, 1]
    assert sizes(4) == [1, 1, 1, 1]
    assert sizes(5) == [2, 1, 0, 2], "ceil(5/4) first and last, as quarter_time_to_exec"
    assert sizes(10) == [3, 2, 2, 3]
    assert sizes(20) == [5, 5, 5, 5]


def test_flags_become_the_configs_burst_block() -> None:
    assert burst_settings(None, None) is None
    assert burst_settings(3, None) == Burst(concurrency=3)
    staggered = burst_settings(4, "200ms")
    assert staggered is not None
    assert (staggered.mode, staggered.offsets) == ("staggered", [0.0, 0.2, 0.4, 0.6000000000000001])
    with pytest.raises(BenchError, match="--stagger: needs --concurrency"):
        burst_settings(None, "200ms")
    with pytest.raises(BenchError, match="--stagger: expected a duration such as 500ms"):
        burst_settings(3, "soon")
    with pytest.raises(BenchError, match="--concurrency: must be at most 200, got 500"):
        burst_settings(500, None)
    target = make_config({"name": "a", "backend": "namespace"}).targets[0]
    assert with_burst([target], Burst(concurrency=2))[0].burst == Burst(concurrency=2)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--concurrency", "1"], "argument --concurrency: must be at least 2, got 1"),
        (["--concurrency", "two"], "argument --concurrency: expected a whole number"),
        (["--stagger", "200ms"], "bench: --stagger: needs --concurrency"),
        (["--concurrency", "3", "--stagger", "0s"], "bench: --stagger: must be more than 0s"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["bench", "-b", "namespace", *argv])
    except SystemExit as exited:  # argparse's own checks
        code = exited.code  # type: ignore[assignment]
    assert code == 2
    assert message in capsys.readouterr().err


def _fake_bench() -> Any:
    config = make_config(
        {"name": "good", "backend": "namespace"},
        {"name": "wrong", "backend": "namespace"},
        {"name": "absent", "backend": "namespace"},
    )
    backends = {
        "good": FakeBackend(),
        "wrong": FakeBackend(exec_result=ExecResult(0, "nope\n")),
        "absent": FakeBackend(errors={"ping": failing("no engine here")}),
    }
    return run_bench(
        with_burst(config.targets, Burst(concurrency=3)),
        iterations=2,
        warmup=1,
        instance="test-instance",
        cancel=threading.Event(),
        injected=backends,  # type: ignore[arg-type]
        make_run=BurstBackendRun,
    ), backends


def test_fake_bursts_counted_failures_shown_every_sandbox_removed() -> None:
    report, backends = _fake_bench()
    good, wrong, absent = report.runs
    assert [len(b.results) for b in good.bursts] == [3, 3], "warm-up burst not kept"
    assert len(good.results) == 6
    assert len(wrong.failures) == 6
    assert absent.skipped == "no engine here"
    for backend in backends.values():
        assert sorted(backend.called("create")) == sorted(backend.called("remove"))
    table = render_burst_table(report)
    assert "2 burst(s) of 3 sandboxes launched together (+1 warm-up)" in table
    assert "good                        2/2" in table
    assert "wrong                       0/2" in table
    assert "absent                    skipped: no engine here" in table
    assert "wrong: 6 failed: exec exec_mismatch x6" in table
    assert "wrong: 1 warm-up burst(s) failed" in table
    assert "4 burst(s), 12 sandbox(es)" in table


def test_fake_bursts_json_has_every_burst_and_sandbox() -> None:
    data = json.loads(render_burst_json(_fake_bench()[0]))
    assert data["burst"] == {"concurrency": 3, "mode": "burst", "stagger_seconds": 0.0}
    good, wrong, _ = data["backends"]
    assert (good["iterations"], good["sandboxes"], good["successful_bursts"]) == (2, 6, 2)
    assert set(good["time_to_all_ready_seconds"]) == {"p50", "p95"}
    assert set(good["launch_skew_seconds"]) == {"p50", "max"}
    assert set(good["time_to_exec_seconds"]) == {"p50", "p95"}
    assert len(good["launch_quarter_time_to_exec_seconds"]) == 4
    first = good["bursts"][0]
    assert [s["launch_index"] for s in first["sandboxes"]] == [0, 1, 2]
    assert first["time_to_all_ready_seconds"] >= first["time_to_first_ready_seconds"] > 0
    assert wrong["bursts"][0]["sandboxes"][0]["failure"]["reason"] == "exec_mismatch"
    assert wrong["time_to_all_ready_seconds"] == {"p50": None, "p95": None}


@pytest.mark.namespace
@pytest.mark.usefixtures("namespaces")
def test_burst_bench_on_the_namespace_backend(capsys: pytest.CaptureFixture[str]) -> None:
    instance = f"bench-burst-{uuid.uuid4().hex[:8]}"
    argv = ["bench", "-b", "namespace", "--concurrency", "3", "-i", "2", "--warmup", "0"]
    assert main([*argv, "--instance", instance]) == 0
    out = capsys.readouterr().out
    assert "2 burst(s) of 3 sandboxes launched together" in out
    assert all(column in out for column in BURST_COLUMNS)
    assert "namespace                   2/2" in out
    assert "namespace p50               6/6" in out
    assert "Q1         Q2         Q3         Q4" in out
    left = StateDirectory(default_root("namespace")).managed("namespace")
    assert [s.name for s in left if s.instance == instance] == []


@pytest.mark.namespace
@pytest.mark.usefixtures("namespaces")
def test_staggered_burst_json_on_the_namespace_backend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config_file(tmp_path, "bench-burst-json")
    argv = ["bench", "--config.file", str(config), "--concurrency", "2", "--stagger", "50ms"]
    assert main([*argv, "-i", "1", "--warmup", "0", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["burst"] == {"concurrency": 2, "mode": "staggered", "stagger_seconds": 0.05}
    (burst,) = data["backends"][0]["bursts"]
    assert burst["success"]
    second = burst["sandboxes"][1]
    assert second["planned_offset_seconds"] == 0.05
    assert second["create_sent_after_seconds"] >= 0.05
    assert set(second["durations_seconds"]) == {"create", "start", "exec", "stop", "remove"}
    assert list((tmp_path / "state").iterdir()) == [], "every sandbox removed"


@pytest.mark.namespace
@pytest.mark.usefixtures("namespaces")
def test_ctrl_c_removes_every_sandbox_of_the_burst(tmp_path: Path) -> None:
    config = _config_file(tmp_path, "bench-burst-interrupt", command="sleep 1; echo hello")
    state = tmp_path / "state"
    done = interrupted_bench(
        "--config.file",
        str(config),
        "--concurrency",
        "3",
        "-i",
        "5",
        "--warmup",
        "0",
        once=lambda: len(list(state.glob("sandbox-exporter-*"))) == 3,
        what="3 sandboxes",
        timeout=30,
    )
    assert done.returncode == 130, done.stderr
    assert "interrupted: removing the sandboxes in flight" in done.stderr
    assert "interrupted: 0 burst(s)" in done.stdout, done.stdout
    assert list(state.iterdir()) == []
