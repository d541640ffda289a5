"""The Grafana dashboard and the Prometheus rules: checked by promtool, and every
query sent to a real Prometheus scraping the exporter while it runs real probes."""

from __future__ import annotations

import functools
import io
import json
import math
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import proto
from structlog.testing import capture_logs

from grafana import dashboard
from sandbox_exporter.config.settings import DEFAULT_SCHEMA
from sandbox_exporter.daemon import Daemon
from sandbox_exporter.metrics.native import (
    ZERO_THRESHOLD,
    bucket_key,
    upper_bound,
    worst_case_error,
)
from sandbox_exporter.metrics.proto import metrics_pb2 as pb
from tests.conftest import TEST_IMAGE, Engine, unavailable
from tests.fakes import FakeBackend, by_name
from tests.helpers import make_config, wait_for

ROOT = Path(__file__).parent.parent
RULES = ROOT / "config" / "prometheus"
RULE_FILES = sorted(RULES.glob("*.rules.yml"))
NAME = re.compile(r"\b(?:[a-z_]+:[a-z0-9_:]+|sandbox_[a-z0-9_]+)\b")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable("prometheus", f"{name} is not installed (Debian package prometheus)")
    assert path is not None
    return path


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel."""
    return [
        (p["title"], t["expr"])
        for p in dashboard.dashboard()["panels"]
        for t in p.get("targets", [])
    ]


def rules() -> list[dict[str, Any]]:
    return [
        r for f in RULE_FILES for g in yaml.safe_load(f.read_text())["groups"] for r in g["rules"]
    ]


def test_the_committed_dashboard_is_what_the_generator_makes() -> None:
    assert (ROOT / "grafana" / "sandbox-exporter.json").read_text() == dashboard.render()


def test_every_panel_says_what_it_shows_and_in_which_unit() -> None:
    board = dashboard.dashboard()
    assert board["__inputs"][0]["pluginId"] == "prometheus"
    assert [v["name"] for v in board["templating"]["list"]] == [
        "datasource",
        "target",
        "backend",
        "phase",
    ]
    for item in board["panels"]:
        if item["type"] == "row":
            continue
        assert len(item["description"]) > 40, item["title"]
        assert item["fieldConfig"]["defaults"]["unit"], item["title"]
        assert item["datasource"]["uid"] == "${datasource}"
    latency = [
        p for p in board["panels"] if p["title"].startswith(("p50", "p95", "p99", "Time to"))
    ]
    assert all(p["fieldConfig"]["defaults"]["unit"] == "s" for p in latency)
    steps = latency[0]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps[1:]] == [1, 5], "thresholds at the SLO edges"
    for item in latency + [p for p in board["panels"] if p["title"] == "Whole lifecycle"]:
        marked = [t for t in item["targets"] if t.get("exemplar")]
        assert marked, f"{item['title']}: exemplars shown"
        assert all("_bucket{" in t["expr"] for t in marked), "exemplars live on the histograms"


def test_every_metric_the_dashboard_and_rules_use_exists() -> None:
    config = make_config(
        {"name": "a", "backend": "docker"},
        {
            "name": "b",
            "backend": "namespace",
            "burst": {"concurrency": 2},
            "slo": {"objective": "99%", "time_to_exec": "1s"},
        },
    )
    d = Daemon(
        config, listen_address=None, backends=by_name({"a": FakeBackend(), "b": FakeBackend()})
    )
    exposed = {
        line.split("{")[0].split(" ")[0]
        for line in d.exposition().decode().splitlines()
        if line and not line.startswith("#")
    }
    exposed |= native_histograms(d.exposition("protobuf"))
    recorded = {r["record"] for r in rules() if "record" in r}
    used = {name for _, expr in dashboard_queries() for name in NAME.findall(expr)}
    used |= {name for r in rules() for name in NAME.findall(r["expr"])}
    for name in sorted(used):
        assert name in exposed or name in recorded, (
            f"{name} is used but neither exposed nor recorded"
        )


def native_histograms(body: bytes) -> set[str]:
    """The names of the native histograms in a protobuf exposition: the series a
    Prometheus that scrapes them stores (in place of `_bucket`, `_count`, `_sum`)."""
    stream, names = io.BytesIO(body), set()
    while stream.tell() < len(body):
        family = proto.parse_length_prefixed(pb.MetricFamily, stream)
        if any(m.histogram.zero_threshold > 0 for m in family.metric):
            names.add(family.name)
    return names


def test_every_histogram_query_reads_native_and_classic_histograms() -> None:
    """Whichever a Prometheus keeps (native, classic or both), each query that reads
    a histogram answers: the native form, and the classic one after `or`."""
    d = Daemon(make_config({"name": "a", "backend": "namespace"}), listen_address=None)
    histograms = native_histograms(d.exposition("protobuf"))
    assert len(histograms) == 4  # the burst ones are checked by name below
    histograms |= {
        f"sandbox_burst_{n}_seconds"
        for n in ("phase_duration", "time_to_exec", "time_to_first_ready", "time_to_all_ready")
    }
    queries = [*(expr for _, expr in dashboard_queries()), *(r["expr"] for r in rules())]
    read = 0
    for expr in queries:
        for name in histograms:
            native = re.search(rf"\b{name}[{{[]", expr) is not None
            classic = f"{name}_bucket" in expr or f"{name}_count" in expr
            assert native == classic, f"{name}: one kind only in {expr}"
            if f"{name}_count" in expr:
                assert "histogram_count(" in expr, expr
            read += native
    assert read >= 20


def test_promtool_checks_every_rules_file() -> None:
    done = subprocess.run(
        [tool("promtool"), "check", "rules", *map(str, RULE_FILES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(RULE_FILES)


NATIVE_TESTS = sorted((RULES / "tests").glob("*.native.test.yml"))


def native_promtool() -> str:
    """promtool 2.53 (scripts/fetch-prometheus-2.53.sh): 2.42's cannot write native histograms
    in a test's input series."""
    # the script prints its folder relative to the repository, which the test leaves
    path = ROOT / os.environ.get("SANDBOX_EXPORTER_PROMTOOL_NATIVE", ".cache/promtool")
    if not (path / "promtool").exists():
        unavailable(
            "promtool-native", f"no promtool in {path} (bash scripts/fetch-prometheus-2.53.sh)"
        )
    return str(path / "promtool")


def test_promtool_unit_tests_of_every_alert() -> None:
    tests = sorted(set((RULES / "tests").glob("*.yml")) - set(NATIVE_TESTS))
    done = subprocess.run(
        [tool("promtool"), "test", "rules", *map(str, tests)],
        capture_output=True,
        text=True,
        check=False,
        cwd=RULES / "tests",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # by name in alert_rule_test, or as a label of ALERTS in promql_expr_test
    text = "".join(t.read_text() for t in tests)
    tested = set(re.findall(r'alertname(?:: |=")(\w+)', text))
    assert tested == {r["alert"] for r in rules() if "alert" in r}, "every alert has a test"


def test_promtool_unit_tests_of_the_alerts_on_native_histograms() -> None:
    """Every alert whose rules read a histogram is tested on native histograms too, and
    the recording rules on a Prometheus that keeps both kinds."""
    done = subprocess.run(
        [native_promtool(), "test", "rules", *map(str, NATIVE_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=RULES / "tests",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    recorded = {r["record"]: r["expr"] for r in rules() if "record" in r}
    on_histograms = {
        r["alert"]
        for r in rules()
        if "alert" in r
        and any(
            name in recorded and "histogram_" in recorded[name] for name in NAME.findall(r["expr"])
        )
    }
    tested = set(re.findall(r"alertname: (\w+)", "".join(t.read_text() for t in NATIVE_TESTS)))
    assert on_histograms, "the alerts that rest on histogram quantiles or counts"
    assert tested == on_histograms, (tested, on_histograms)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    """Debian's Prometheus scraping the exporter every second: on classic histograms,
    or with `native=True` on native ones (2.x's feature flag: it then asks for
    protobuf and keeps no `_bucket`, `_count`, `_sum` series of a native histogram)."""

    def __init__(self, workdir: Path, exporter: str, native: bool = False) -> None:
        self.native = native
        workdir.mkdir(exist_ok=True)
        rules_dir = workdir / "rules"
        rules_dir.mkdir()
        for f in RULE_FILES:  # the same rules, every group evaluated every second
            text = re.sub(r"(?m)^(\s+interval:) \w+$", r"\1 1s", f.read_text())
            (rules_dir / f.name).write_text(text)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in sorted(rules_dir.iterdir())],
            "scrape_configs": [
                {"job_name": "sandbox-exporter", "static_configs": [{"targets": [exporter]}]}
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                "--enable-feature=exemplar-storage" + (",native-histograms" if native else ""),
                f"--web.listen-address={self.url.removeprefix('http://')}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "prometheus.log").open("w"),
        )

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
            return json.loads(r.read())

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = self.api("query", query=expr)
        assert answer["status"] == "success", (expr, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def try_query(self, expr: str) -> list[dict[str, Any]]:
        try:
            return self.query(expr)
        except OSError:
            return []

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def cumulative_buckets(prometheus: Prometheus, selector: str) -> list[tuple[float, float]]:
    """(le, count) of every bucket Prometheus holds for `selector`, summed by le, in order."""
    answer = prometheus.query(f"sum by (le) ({selector})")
    return sorted((float(series["metric"]["le"]), float(series["value"][1])) for series in answer)


def counted_from(values: list[float], edges: list[float]) -> list[tuple[float, float]]:
    """The same cumulative buckets, counted from the raw values (le is inclusive)."""
    return [(le, float(sum(1 for v in values if v <= le))) for le in edges]


def quantile_interval(buckets: list[tuple[float, float]], q: float) -> tuple[float, float]:
    """Where histogram_quantile(q) must land on these cumulative buckets: inside the
    bucket that holds rank q x count (it interpolates within it; the first bucket
    starts at 0; past the last finite edge it answers that edge). The nearest-rank
    quantile of the raw values lies in the same bucket, so the estimate and the
    truth share this interval, and its width is the layout's error, not chance."""
    rank = q * buckets[-1][1]
    index = next(i for i, (_, count) in enumerate(buckets) if count >= rank)
    upper = buckets[index][0]
    lower = buckets[index - 1][0] if index > 0 else 0.0
    return (lower, lower) if math.isinf(upper) else (lower, upper)


def quantile_lines(
    what: str, q: float, estimate: float, exact: float, lower: float, upper: float
) -> str:
    return (
        f"  {what:30} p{q * 100:.0f}: {estimate * 1000:8.2f} ms against {exact * 1000:8.2f} ms,"
        f" {100 * (estimate - exact) / exact:+6.1f}% (bucket {lower * 1000:g}-{upper * 1000:g} ms)"
    )


def check_quantiles(
    prometheus: Prometheus, metric: str, selector: str, raw: list[float], what: str
) -> list[str]:
    """The pipeline (observation, exposition, scrape, query) checked exactly: the
    buckets Prometheus stored are the logged values counted, and its p50 and p95 lie
    in the bucket of the logged values' own. Returns a line per quantile to print."""
    if prometheus.native:
        return check_native_quantiles(prometheus, metric, selector, raw, what)
    buckets = cumulative_buckets(prometheus, f"{metric}_bucket{{{selector}}}")
    assert buckets == counted_from(raw, [le for le, _ in buckets]), (what, buckets)
    lines = []
    for q in (0.5, 0.95):
        answer = prometheus.query(
            f"histogram_quantile({q}, sum by (le) ({metric}_bucket{{{selector}}}))"
        )
        estimate, exact = float(answer[0]["value"][1]), nearest_rank(raw, q)
        lower, upper = quantile_interval(buckets, q)
        assert lower <= exact <= upper, (what, q, exact, lower, upper)  # the helper's own check
        assert lower <= estimate <= upper, (what, q, estimate, lower, upper)
        lines.append(quantile_lines(f"{what} (classic)", q, estimate, exact, lower, upper))
    return lines


def native_counted(raw: list[float], schema: int) -> list[tuple[float, float, float]]:
    """(lower, upper, count) of each native bucket the raw values fill, in order, as the
    query API lists them (the zero bucket spans -threshold to threshold)."""
    zero = float(sum(1 for v in raw if v <= ZERO_THRESHOLD))
    keys = Counter(bucket_key(v, schema) for v in raw if v > ZERO_THRESHOLD)
    buckets = [(-ZERO_THRESHOLD, ZERO_THRESHOLD, zero)] if zero else []
    for key, count in sorted(keys.items()):
        buckets.append((upper_bound(key - 1, schema), upper_bound(key, schema), float(count)))
    return buckets


def check_native_quantiles(
    prometheus: Prometheus, metric: str, selector: str, raw: list[float], what: str
) -> list[str]:
    """The same for a native histogram: the buckets Prometheus stored are the logged
    values counted at the schema, and each quantile lies in the bucket of the logged
    values' own, so within the schema's worst case of it."""
    answer = prometheus.query(f"sum({metric}{{{selector}}})")
    stored = answer[0]["histogram"][1]
    assert float(stored["count"]) == len(raw), (what, stored["count"], len(raw))
    expected = native_counted(raw, DEFAULT_SCHEMA)
    buckets = [(float(lo), float(up), float(n)) for _, lo, up, n in stored["buckets"]]
    assert [n for _, _, n in buckets] == [n for _, _, n in expected], (what, buckets, expected)
    for (lo, up, _), (elo, eup, _) in zip(buckets, expected, strict=True):
        assert lo == pytest.approx(elo, rel=1e-12), (what, buckets, expected)
        assert up == pytest.approx(eup, rel=1e-12), (what, buckets, expected)
    bound = worst_case_error(DEFAULT_SCHEMA)
    lines = []
    for q in (0.5, 0.95):
        answer = prometheus.query(f"histogram_quantile({q}, sum({metric}{{{selector}}}))")
        estimate, exact = float(answer[0]["value"][1]), nearest_rank(raw, q)
        running, rank = 0.0, q * len(raw)
        lower, upper = next(
            (max(lo, 0.0), up) for lo, up, n in expected if (running := running + n) >= rank
        )
        assert lower < exact <= upper, (what, q, exact, lower, upper)  # the helper's own check
        assert lower <= estimate <= upper, (what, q, estimate, lower, upper)
        assert abs(estimate - exact) <= bound * exact, (what, q, estimate, exact, bound)
        lines.append(quantile_lines(f"{what} (native)", q, estimate, exact, lower, upper))
    return lines


BURSTS = 10  # bursts of ns-burst before the queries: its quantiles rest on them
FLAKY = "n=$(od -An -N1 -tu1 /dev/urandom); [ $((n % 3)) -ne 0 ] && echo hello"


@pytest.fixture
def running(
    tmp_path: Path, docker_engine: Engine
) -> Iterator[tuple[Daemon, list[Prometheus], list[Any]]]:
    tool("prometheus")
    if "runsc" not in docker_engine.client.info().get("Runtimes", {}):
        unavailable("gvisor", "dockerd has no runtime named runsc")
    state = {"state_dir": str(tmp_path / "ns")}
    config = make_config(
        # often: the quantiles below want 25 runs, and a namespace run takes ~15 ms
        {
            "name": "ns",
            "backend": "namespace",
            "interval": "300ms",
            "jitter": "0s",
            "namespace": state,
            # a threshold some runs miss (they are slow, not failed), at a 99% objective
            "slo": {"objective": "99%", "time_to_exec": "50ms", "window": "7d"},
        },
        # fails about one run in three (a random byte divisible by 3), at 99.5%
        {
            "name": "ns-flaky",
            "backend": "namespace",
            "interval": "300ms",
            "jitter": "0s",
            "namespace": state,
            "command": ["sh", "-c", FLAKY],
            "slo": {"objective": "99.5%", "time_to_exec": "1s"},
        },
        {
            "name": "ns-bad",
            "backend": "namespace",
            "interval": "300ms",
            "jitter": "0s",
            "command": ["echo", "bye"],
            "namespace": state,
        },
        # back to back: a run every 400 ms, skipped while the previous one still goes
        {
            "name": "docker",
            "backend": "docker",
            "interval": "400ms",
            "jitter": "0s",
            "image": TEST_IMAGE,
            "pull_policy": "never",
            "docker": {"base_url": docker_engine.url},
        },
        {
            "name": "gvisor",
            "backend": "docker",
            "interval": "400ms",
            "jitter": "0s",
            "image": TEST_IMAGE,
            "pull_policy": "never",
            "docker": {"base_url": docker_engine.url, "runtime": "runsc"},
        },
        # the Bursts row: 3 namespace sandboxes at once every 2 s (a single run only at
        # start), apart from "ns" so its logged phases stay the single probe's
        {
            "name": "ns-burst",
            "backend": "namespace",
            "interval": "1h",
            "jitter": "0s",
            "namespace": state,
            "burst": {"concurrency": 3, "interval": "2s"},
        },
    )
    with capture_logs() as logs:
        d = Daemon(config, listen_address="127.0.0.1:0")
        d.serve()
        host, port = d.http.address if d.http else ("", 0)
        # two servers on the same runs: one keeps the classic buckets, one the native
        servers = [
            Prometheus(tmp_path / kind, f"{host}:{port}", native=kind == "native")
            for kind in ("classic", "native")
        ]
        try:
            # the first scrape sees every counter at zero: no run is missed by increase()
            for prometheus in servers:
                wait_for(
                    functools.partial(prometheus.try_query, 'up{job="sandbox-exporter"} == 1'),
                    timeout=60,
                    what="Prometheus scraping the exporter",
                )
            d.start()
            yield d, servers, logs
        finally:
            d.shutdown()
            for prometheus in servers:
                prometheus.stop()


def test_every_dashboard_query_returns_data_and_quantiles_match_the_raw_durations(
    running: tuple[Daemon, list[Prometheus], list[Any]],
) -> None:
    d, servers, logs = running
    classic, native = servers
    runs = 30  # enough for a p95 that histogram_quantile can place within its bucket

    def scraped_runs(target: str) -> bool:
        query = f'sandbox_probes_total{{target="{target}", result="success"}} >= {runs}'
        return all(p.try_query(query) for p in servers)

    def scraped_bursts() -> bool:
        query = f'sandbox_bursts_total{{target="ns-burst", result="success"}} >= {BURSTS}'
        return all(p.try_query(query) for p in servers)

    wait_for(
        lambda: all(scraped_runs(t) for t in ("ns", "docker", "gvisor")) and scraped_bursts(),
        timeout=180,
        what=f"{runs} successful runs of each target and {BURSTS} bursts scraped",
    )
    wait_for(
        lambda: all(
            p.try_query("target:sandbox_time_to_exec_seconds:p95_5m")
            and p.try_query("target:sandbox_probe_failure_ratio:ratio_15m")
            and p.try_query("target:sandbox_burst_time_to_all_ready_seconds:p95_1h")
            for p in servers
        ),
        timeout=60,
        what="the recording rules evaluated",
    )
    d.scheduler.shutdown()
    for prober in d.probers:
        assert prober.wait_idle(60)

    def all_scraped(prometheus: Prometheus) -> bool:
        for target in ("ns", "docker", "gvisor"):
            labels = {
                "target": target,
                "backend": "namespace" if target == "ns" else "docker",
                "phase": "start",
            }
            count = d.registry.get_sample_value("sandbox_phase_duration_seconds_count", labels)
            selector = f'{{target="{target}", phase="start"}}'
            stored = (
                f"histogram_count(sandbox_phase_duration_seconds{selector})"
                if prometheus.native
                else f"sandbox_phase_duration_seconds_count{selector}"
            )
            if not prometheus.try_query(f"{stored} == {count}"):
                return False
        bursts = sum(
            d.registry.get_sample_value(
                "sandbox_bursts_total",
                {"target": "ns-burst", "backend": "namespace", "result": result},
            )
            or 0
            for result in ("success", "failure")
        )
        return bool(
            prometheus.try_query(f'sum(sandbox_bursts_total{{target="ns-burst"}}) == {bursts}')
        )

    wait_for(lambda: all(all_scraped(p) for p in servers), timeout=30, what="the last runs scraped")

    # the native server keeps no classic series of a native histogram, and the classic
    # server no native one: each query below answers from what its server has
    assert not native.query('sandbox_phase_duration_seconds_bucket{target="ns"}')
    assert not classic.query('sandbox_phase_duration_seconds{target="ns"}')
    assert native.query('sandbox_phase_duration_seconds{target="ns"}')[0]["histogram"]

    substitutions = {"$target": ".*", "$backend": ".*", "$phase": ".*", "$__rate_interval": "1m"}
    for prometheus in servers:
        kind = "native" if prometheus.native else "classic"
        for title, expr in dashboard_queries():
            for variable, value in substitutions.items():
                expr = expr.replace(variable, value)
            answer = prometheus.query(expr)
            assert answer, f"{kind}: panel {title!r}: no data for {expr}"
            if "sandbox_burst" in expr:  # the burst ran: a number, not a NaN of no bursts
                values = [float(series["value"][1]) for series in answer if "value" in series] or [
                    float(series["histogram"][1]["count"]) for series in answer
                ]
                assert any(math.isfinite(v) for v in values), (
                    f"{kind}: panel {title!r}: {values} for {expr}"
                )

        health = prometheus.api("rules")["data"]["groups"]
        assert all(rule["health"] == "ok" for group in health for rule in group["rules"]), health

    # the recording rules give the same kind of answer from either kind of histogram
    for rule in ("target:sandbox_time_to_exec_seconds:runs_1h",):
        counts = [
            {s["metric"]["target"]: float(s["value"][1]) for s in p.query(rule)} for p in servers
        ]
        assert set(counts[0]) == set(counts[1]) >= {"ns", "docker", "gvisor"}, counts

    # quantiles through histogram_quantile, against the raw durations the logs carry:
    # the stored buckets exactly, and each quantile within its bucket (by construction)
    assert not [e for e in logs if e.get("event") == "native histogram schema reduced"]
    print("\nhistogram_quantile against nearest-rank of the logged durations:")
    for target in ("ns", "docker", "gvisor"):
        for phase in ("start", "exec"):
            raw = [
                e["duration_seconds"]
                for e in logs
                if e.get("event") == "phase"
                and e.get("outcome") == "ok"
                and e.get("target") == target
                and e.get("phase") == phase
            ]
            assert len(raw) >= runs
            selector = f'target="{target}", phase="{phase}"'
            for prometheus in servers:
                for line in check_quantiles(
                    prometheus,
                    "sandbox_phase_duration_seconds",
                    selector,
                    raw,
                    f"{target} {phase}",
                ):
                    print(line)

    # bursts: each sandbox answered, and the quantiles are those of the logged bursts
    bursts = [e for e in logs if e.get("event") == "burst" and e.get("target") == "ns-burst"]
    assert len(bursts) >= BURSTS
    assert all(e["success"] for e in bursts), [e for e in bursts if not e["success"]]
    print("histogram_quantile of bursts against nearest-rank of the logged bursts:")
    for which in ("first", "all"):
        raw = [e[f"time_to_{which}_ready_seconds"] for e in bursts]
        metric = f"sandbox_burst_time_to_{which}_ready_seconds"
        for prometheus in servers:
            for line in check_quantiles(
                prometheus, metric, 'target="ns-burst"', raw, f"time to {which} ready"
            ):
                print(line)
    skipped = classic.query('sandbox_burst_skipped_total{target="ns-burst"}')
    print(f"  {len(bursts)} bursts, {float(skipped[0]['value'][1]):.0f} skipped")

    for prometheus in servers:
        ratio = prometheus.query('target:sandbox_probe_failure_ratio:ratio_15m{target="ns-bad"}')
        assert float(ratio[0]["value"][1]) == 1.0, "the failing target shows as failing"

    # exemplars: stored by Prometheus, each the run_id of a logged run and its duration;
    # on the classic buckets, or on the native histogram
    logged = {
        (e["run_id"], e["target"], e["phase"]): e["duration_seconds"]
        for e in logs
        if e.get("event") == "phase" and "duration_seconds" in e
    }
    for prometheus, query in (
        (classic, "sandbox_phase_duration_seconds_bucket"),
        (native, "sandbox_phase_duration_seconds"),
    ):
        answer = prometheus.api(
            "query_exemplars",
            query=query,
            start=str(time.time() - 600),
            end=str(time.time() + 60),
        )
        assert answer["status"] == "success", answer
        seen = 0
        for series in answer["data"]:
            labels = series["seriesLabels"]
            for exemplar in series["exemplars"]:
                key = (exemplar["labels"]["run_id"], labels["target"], labels["phase"])
                assert key in logged, f"an exemplar of a run not in the logs: {key}"
                assert float(exemplar["value"]) == pytest.approx(logged[key])
                seen += 1
        assert seen >= 10, f"{query}: only {seen} exemplars came back"

    for prometheus in servers:
        check_slos(prometheus, d, logs)


def logged_error_ratio(logs: list[Any], target: str, threshold: float) -> tuple[float, int]:
    """(share of runs not good, runs) from the lifecycle log lines, as the exporter
    counts them: failed, or reaching exec later than the threshold."""
    runs = [
        e
        for e in logs
        if e.get("event") == "lifecycle"
        and e.get("target") == target
        and not (e.get("cancelled") and e.get("success") is None)
    ]
    bad = [e for e in runs if not e["success"] or e["time_to_exec_seconds"] > threshold]
    return len(bad) / len(runs), len(runs)


def check_slos(prometheus: Prometheus, d: Daemon, logs: list[Any]) -> None:
    """Two targets with different objectives: the burn rates the recording rules give
    are each target's logged error ratio over its own budget, and the flaky target's
    fast-burn page is raised. Over a window longer than the run, and with every counter
    first scraped at zero, Prometheus's rate() scales the bad and the total alike, so
    the recorded ratio is the logged one, to the float."""
    for target, threshold, objective in (("ns", 0.050, 0.99), ("ns-flaky", 1.0, 0.995)):
        ratio, runs = logged_error_ratio(logs, target, threshold)
        assert runs >= 30, (target, runs)
        counted = {
            outcome: d.registry.get_sample_value(
                "sandbox_slo_probes_total",
                {"target": target, "backend": "namespace", "outcome": outcome},
            )
            for outcome in ("good", "slow", "failed")
        }
        assert sum(v or 0 for v in counted.values()) == runs, (target, counted, runs)

        def recorded(rule: str, target: str = target) -> float | None:
            answer = prometheus.try_query(f'{rule}{{target="{target}"}}')
            return float(answer[0]["value"][1]) if answer else None

        def settled(expected: float = ratio, target: str = target) -> bool:
            rule = "target:sandbox_slo_error_ratio:ratio_rate1d"
            return recorded(rule, target) == pytest.approx(expected)

        wait_for(
            settled,
            timeout=30,
            what=f"{target}: the recorded error ratio at the logged {ratio:.4f}",
        )
        burn = recorded("target:sandbox_slo_burn_rate:rate1d")
        assert burn == pytest.approx(ratio / (1 - objective)), (target, burn, ratio)
        remaining = recorded("target:sandbox_slo_error_budget_remaining:ratio")
        assert remaining is not None, target
        kind = "native" if prometheus.native else "classic"
        print(
            f"  SLO {target} ({kind}): {runs} runs, {ratio:.2%} not good against a "
            f"{1 - objective:.1%} budget: burn rate {burn:.2f}x, budget left {remaining:.2f}"
        )
    alerts = prometheus.api("alerts")["data"]["alerts"]
    fast = [
        a
        for a in alerts
        if a["labels"]["alertname"] == "SandboxSLOBudgetBurn1h"
        and a["labels"]["target"] == "ns-flaky"
    ]
    # the page has no `for` (alerts.rules.yml): it goes to firing at once, past pending
    assert [a["state"] for a in fast] == ["firing"], alerts
