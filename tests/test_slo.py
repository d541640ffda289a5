"""SLOs (docs/slo.md): the `slo` block, the gauges and counters the rules read,
`check-config`'s line and `init`'s commented block. The rules and alerts are
config/prometheus/tests/slo*.test.yml's (promtool), and the real Prometheus's in
tests/test_dashboard_and_rules.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from sandbox_exporter.config import ConfigError, load_config
from sandbox_exporter.metrics.families import Metrics
from sandbox_exporter.results import Failure, Phase, ProbeResult, Reason
from tests.helpers import make_config, run_init

TB = {"target": "a", "backend": "namespace"}


@pytest.mark.parametrize(
    ("given", "objective"), [("99.5%", 0.995), (0.999, 0.999), (" 90 % ", 0.9), (99.5, None)]
)
def test_the_objective_is_a_percentage_or_a_ratio(given: object, objective: float | None) -> None:
    config = {
        "name": "a",
        "backend": "namespace",
        "slo": {"objective": given, "time_to_exec": "1s"},
    }
    if objective is None:
        with pytest.raises(ConfigError, match=r"slo\.objective.*write 99\.5%"):
            make_config(config)
        return
    slo = make_config(config).targets[0].slo
    assert slo is not None
    assert slo.objective == pytest.approx(objective)
    assert (slo.time_to_exec, slo.window, slo.window_seconds) == (1.0, "28d", 28 * 86400)


@pytest.mark.parametrize(
    ("slo", "field", "says"),
    [
        ({"objective": "100%", "time_to_exec": "1s"}, "slo.objective", "no error budget"),
        ({"objective": 0, "time_to_exec": "1s"}, "slo.objective", "above 0%"),
        ({"objective": "high", "time_to_exec": "1s"}, "slo.objective", "such as 99.5%"),
        ({"time_to_exec": "1s"}, "slo.objective", "missing"),
        ({"objective": "99%"}, "slo.time_to_exec", "missing"),
        ({"objective": "99%", "time_to_exec": 1}, "slo.time_to_exec", "add a unit"),
        ({"objective": "99%", "time_to_exec": "1s", "window": "29d"}, "slo.window", "28d"),
        ({"objective": "99%", "time_to_exec": "1s", "target": 3}, "slo.target", ""),
    ],
)
def test_a_bad_slo_is_refused_naming_the_field(
    slo: dict[str, object], field: str, says: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config({"name": "a", "backend": "namespace", "slo": slo})
    assert field in str(caught.value)
    assert says in str(caught.value)


def test_defaults_give_every_target_an_slo_which_a_target_may_change_or_drop() -> None:
    config = make_config(
        {"name": "a", "backend": "namespace"},
        {"name": "b", "backend": "namespace", "slo": {"time_to_exec": "2s"}},
        {"name": "c", "backend": "namespace", "slo": None},
        defaults={"slo": {"objective": "99%", "time_to_exec": "1s", "window": "7d"}},
    )
    a, b, c = config.targets
    assert a.slo is not None
    assert b.slo is not None
    assert (a.slo.objective, a.slo.time_to_exec, a.slo.window) == (0.99, 1.0, "7d")
    assert (b.slo.objective, b.slo.time_to_exec, b.slo.window) == (0.99, 2.0, "7d")
    assert c.slo is None
    assert make_config({"name": "d", "backend": "namespace"}).targets[0].slo is None


def run(result_id: str, time_to_exec: float | None, failure: Failure | None = None) -> ProbeResult:
    result = ProbeResult("a", "namespace", result_id, "s", started_at=1.0, finished_at=2.0)
    result.backend_up = True
    if failure is not None:
        result.failure = failure
        return result
    assert time_to_exec is not None
    result.durations = {
        Phase.CREATE: time_to_exec / 3,
        Phase.START: time_to_exec / 3,
        Phase.EXEC: time_to_exec / 3,
        Phase.STOP: 0.01,
        Phase.REMOVE: 0.01,
    }
    return result


@pytest.fixture
def metrics() -> Metrics:
    m = Metrics(CollectorRegistry())
    config = make_config(
        {
            "name": "a",
            "backend": "namespace",
            "slo": {"objective": "99.5%", "time_to_exec": "500ms", "window": "30d"},
        },
        {"name": "plain", "backend": "namespace"},
    )
    for target in config.targets:
        m.add_target(target)
    return m


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_target_with_an_slo_exports_it_and_one_without_exports_nothing(
    metrics: Metrics,
) -> None:
    assert value(metrics, "sandbox_slo_objective_ratio", **TB) == 0.995
    assert value(metrics, "sandbox_slo_time_to_exec_threshold_seconds", **TB) == 0.5
    assert value(metrics, "sandbox_slo_window_seconds", **TB) == 30 * 86400
    for outcome in ("good", "slow", "failed"):
        assert value(metrics, "sandbox_slo_probes_total", **TB, outcome=outcome) == 0
    plain = {"target": "plain", "backend": "namespace"}
    assert value(metrics, "sandbox_slo_objective_ratio", **plain) is None
    assert value(metrics, "sandbox_slo_probes_total", **plain, outcome="good") is None


def test_each_probe_counts_good_slow_or_failed_against_the_threshold(metrics: Metrics) -> None:
    metrics.record(run("r1", 0.2))
    metrics.record(run("r2", 0.5))  # at the threshold: good
    metrics.record(run("r3", 0.51))
    metrics.record(run("r4", None, Failure(Phase.START, Reason.TIMEOUT, "slow start")))
    metrics.record(run("r5", None, Failure(Phase.EXEC, Reason.EXEC_MISMATCH, "bye")))
    counts = {
        o: value(metrics, "sandbox_slo_probes_total", **TB, outcome=o)
        for o in ("good", "slow", "failed")
    }
    assert counts == {"good": 2, "slow": 1, "failed": 2}
    # the same runs in the probe counters: the SLO's total is every counted probe
    probes = sum(
        value(metrics, "sandbox_probes_total", **TB, result=r) or 0 for r in ("success", "failure")
    )
    assert probes == 5


def test_a_run_with_a_cleanup_failure_is_not_good(metrics: Metrics) -> None:
    result = run("r1", 0.1)
    result.cleanup_failures = [Failure(Phase.REMOVE, Reason.CLEANUP, "busy")]
    metrics.record(result)
    assert value(metrics, "sandbox_slo_probes_total", **TB, outcome="failed") == 1


def test_a_run_cancelled_by_shutdown_is_not_counted(metrics: Metrics) -> None:
    result = run("r1", 0.1)
    result.cancelled = True
    metrics.record(result)
    assert all(
        value(metrics, "sandbox_slo_probes_total", **TB, outcome=o) == 0
        for o in ("good", "slow", "failed")
    )


def test_slow_and_failed_probes_carry_their_run_id_as_an_exemplar(metrics: Metrics) -> None:
    metrics.record(run("slow-run", 0.9))
    page = metrics.exposition("openmetrics").decode()
    line = next(line for line in page.splitlines() if 'outcome="slow"' in line and "_total" in line)
    assert '# {run_id="slow-run"} 1.0' in line


def test_a_reload_that_drops_the_slo_drops_its_series(metrics: Metrics) -> None:
    # as the fleet reloads a changed target whose labels stay: its series are kept and
    # it is added again
    metrics.add_target(make_config({"name": "a", "backend": "namespace"}).targets[0])
    assert value(metrics, "sandbox_slo_objective_ratio", **TB) is None
    assert value(metrics, "sandbox_slo_probes_total", **TB, outcome="good") is None
    metrics.record(run("r1", 0.1))  # no SLO now: nothing counted, nothing raised
    assert value(metrics, "sandbox_slo_probes_total", **TB, outcome="good") is None


def test_a_reload_that_changes_the_slo_keeps_the_counts_and_takes_the_new_threshold(
    metrics: Metrics,
) -> None:
    metrics.record(run("r1", 0.4))
    changed = {"objective": "99%", "time_to_exec": "300ms", "window": "7d"}
    metrics.add_target(
        make_config({"name": "a", "backend": "namespace", "slo": changed}).targets[0]
    )
    assert value(metrics, "sandbox_slo_objective_ratio", **TB) == 0.99
    assert value(metrics, "sandbox_slo_window_seconds", **TB) == 7 * 86400
    metrics.record(run("r2", 0.4))  # good before, slow now
    assert value(metrics, "sandbox_slo_probes_total", **TB, outcome="good") == 1
    assert value(metrics, "sandbox_slo_probes_total", **TB, outcome="slow") == 1


def test_check_config_prints_each_targets_slo(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "targets": [
                    {
                        "name": "a",
                        "backend": "namespace",
                        "slo": {"objective": "99.5%", "time_to_exec": "1s"},
                    },
                    {"name": "b", "backend": "namespace"},
                ]
            }
        )
    )
    checked = subprocess.run(
        [sys.executable, "-m", "sandbox_exporter", "check-config", "--config.file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    lines = checked.stdout.splitlines()
    at = lines.index(next(line for line in lines if line.startswith("  a:")))
    assert lines[at + 1] == "    slo: 99.5% of probes reach exec within 1s, over 28d"
    assert not any("slo" in line for line in lines[at + 2 :]), "b has none"


def test_init_writes_a_commented_slo_that_works_once_uncommented(tmp_path: Path) -> None:
    written = run_init("-b", "namespace")
    assert written.returncode == 0, written.stderr
    text = written.stdout
    assert "  # slo:\n" in text
    uncommented = text.replace("  # slo:", "  slo:").replace("  #   ", "    ")
    path = tmp_path / "config.yaml"
    path.write_text(uncommented)
    config = load_config(path, environ={})
    assert config.targets
    for target in config.targets:
        assert target.slo is not None
        assert (target.slo.objective, target.slo.time_to_exec, target.slo.window) == (
            0.995,
            1.0,
            "28d",
        )
