"""`sandbox-exporter bench`: names, percentiles, failures shown, JSON, Ctrl-C cleanup."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from sandbox_exporter import backends
from sandbox_exporter.cli import main
from sandbox_exporter.commands.bench import (
    BenchError,
    bench_targets,
    parse_backend_names,
    run_bench,
)
from sandbox_exporter.commands.bench_report import render_json, render_table
from sandbox_exporter.probing.percentiles import nearest_rank
from tests.conftest import TEST_IMAGE
from tests.fakes import FakeBackend, FakeClock, failing
from tests.helpers import interrupted_bench, make_config

ROOT = Path(__file__).parent.parent


def test_backend_names_are_trimmed_case_insensitive_and_deduplicated() -> None:
    assert parse_backend_names(" Docker ,namespace,DOCKER,") == ["docker", "namespace"]
    with pytest.raises(
        BenchError,
        match="unknown backend 'lxc'; known: apple, docker, firecracker, hyperlight, kubernetes, namespace, nomad, podman",
    ):
        parse_backend_names("docker,lxc")
    assert parse_backend_names("K8s, kubernetes") == ["kubernetes"], "k8s is an alias"
    with pytest.raises(BenchError, match="no backend named"):
        parse_backend_names(" , ")


def test_nearest_rank_percentiles() -> None:
    values = [15, 20, 35, 40, 50]
    assert nearest_rank(values, 50) == 35
    assert nearest_rank(values, 95) == 50
    assert nearest_rank(values, 30) == 20
    assert nearest_rank([7.0], 95) == 7.0
    assert nearest_rank(list(range(1, 101)), 95) == 95


def test_without_names_every_local_backend_and_the_image_override() -> None:
    targets = bench_targets(None, None, "img:2")
    assert [t.backend for t in targets] == [
        "docker",
        "podman",
        "namespace",
        "hyperlight",
        "apple",
    ], "registry order"
    assert all(t.image == "img:2" for t in targets)
    config = make_config({"name": "a", "backend": "docker"}, {"name": "b", "backend": "namespace"})
    assert [t.name for t in bench_targets(config, ["namespace"], None)] == ["b"]


def bench_with_fakes(**kwargs: Any) -> Any:
    clock = FakeClock()
    config = make_config(
        {"name": "good", "backend": "namespace"},
        {"name": "flaky", "backend": "namespace"},
        {"name": "absent", "backend": "namespace"},
    )
    calls = {"exec": 0}

    def every_other_exec(method: str) -> None:
        if method == "exec":
            calls["exec"] += 1
            flaky.errors = {"exec": failing("exec broke")} if calls["exec"] % 2 else {}

    good = FakeBackend()
    flaky = FakeBackend(on_call=every_other_exec)
    absent = FakeBackend(errors={"ping": failing("no engine here")})
    del clock
    return run_bench(
        config.targets,
        iterations=4,
        warmup=1,
        instance="test-instance",
        cancel=threading.Event(),
        injected={"good": good, "flaky": flaky, "absent": absent},
        **kwargs,
    )


def test_failed_iterations_are_counted_and_shown_not_dropped() -> None:
    report = bench_with_fakes()
    good, flaky, absent = report.runs
    assert len(good.results) == 4
    assert len(good.successes) == 4
    assert len(flaky.results) == 4, "a failure does not abort the backend"
    assert len(flaky.failures) == 2
    assert absent.skipped == "no engine here"
    table = render_table(report)
    assert "good p50" in table
    assert "good p95" in table
    assert "4/4" in table
    assert "flaky p50" in table
    assert "2/4" in table
    assert "flaky: 2 failed: exec error x2" in table
    assert "absent                    skipped: no engine here" in table
    assert "8 lifecycle(s)" in table.splitlines()[-1]
    assert "2 failed" in table.splitlines()[-1]


def test_json_has_every_sample_and_the_summaries() -> None:
    data = json.loads(render_json(bench_with_fakes()))
    good, flaky, absent = data["backends"]
    assert len(good["samples"]) == 4
    assert set(good["p50_seconds"]) == {"create", "start", "exec", "stop", "remove", "total"}
    assert flaky["failures"] == 2
    assert [s["success"] for s in flaky["samples"]] == [True, False, True, False]
    assert flaky["samples"][1]["failure"] == {
        "phase": "exec",
        "reason": "error",
        "message": "exec broke",
    }
    assert absent["skipped"] == "no engine here"
    assert data["machine"]["cpus"] >= 1


def test_bench_on_the_namespace_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "-b", "namespace", "-i", "3", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "namespace p50" in out
    assert "3/3" in out


def test_bad_options_exit_non_zero_naming_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "-b", "lxc"]) == 2
    assert "-b/--backends: unknown backend 'lxc'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["bench", "-i", "0"])
    assert exited.value.code == 2
    assert "--iterations: must be at least 1" in capsys.readouterr().err


@pytest.mark.docker
def test_bench_json_on_docker_to_a_file(
    tmp_path: Path, docker_base_url: str, docker_client: Any
) -> None:
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "-b",
            "docker,namespace",
            "-i",
            "2",
            "--image",
            TEST_IMAGE,
            "--json",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    data = json.loads(out.read_text())
    assert [b["backend"] for b in data["backends"]] == ["docker", "namespace"]
    assert all(len(b["samples"]) == 2 and b["failures"] == 0 for b in data["backends"])


@pytest.mark.docker
def test_ctrl_c_removes_the_sandbox_in_flight(
    tmp_path: Path, docker_base_url: str, docker_client: Any
) -> None:
    config = tmp_path / "bench.yaml"
    config.write_text(
        f"""
instance: bench-interrupt
defaults: {{image: {TEST_IMAGE}, pull_policy: never, command: ["sh", "-c", "sleep 1; echo hello"]}}
targets:
  - {{name: docker, backend: docker, docker: {{base_url: "{docker_base_url}"}}}}
"""
    )
    mine = {"label": "sandbox-exporter.io/instance=bench-interrupt"}
    done = interrupted_bench(
        "--config.file",
        str(config),
        "-i",
        "50",
        once=lambda: docker_client.containers.list(filters=mine),
        what="a sandbox",
    )
    assert done.returncode == 130, done.stderr
    assert "interrupted" in done.stdout, done.stderr
    assert docker_client.containers.list(all=True, filters=mine) == []


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.written = ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        self.written += text
        return len(text)

    def flush(self) -> None:
        pass


def test_progress_bar_only_on_a_terminal() -> None:
    from sandbox_exporter.commands.bench_cli import ProgressBar

    terminal, pipe = _Stream(tty=True), _Stream(tty=False)
    for stream in (terminal, pipe):
        bar = ProgressBar(stream)  # type: ignore[arg-type]
        bar("docker", 5, 10)
        bar.clear()
    assert "docker" in terminal.written
    assert "5/10" in terminal.written
    assert "[###############...............]" in terminal.written
    assert pipe.written == ""


PLANNED = ("nomad", "firecracker", "hyperlight", "apple")  # in the issues, not in the registry


@pytest.mark.parametrize("command", [[], ["run"], ["bench"], ["probe"], ["gc"], ["check-config"]])
def test_help_names_only_the_backends_that_exist(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    text = capsys.readouterr().out.lower()
    for name in PLANNED:
        if name not in backends.MODULES:
            assert name not in text, f"{name} is not a backend yet"
    if command == ["bench"]:
        assert all(name in text for name in backends.MODULES)
