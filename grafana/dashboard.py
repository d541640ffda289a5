"""Generates grafana/sandbox-exporter.json, the dashboard for sandbox-exporter.

    python grafana/dashboard.py            # rewrite the JSON
    python grafana/dashboard.py --check    # exit 1 if the committed JSON differs

Plain Python (no SDK): every panel's query is in one place, so the tests can
send each of them to a real Prometheus. Importable into Grafana 10+; the
datasource is an `__inputs` entry chosen at import.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).with_name("sandbox-exporter.json")
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'target=~"$target", backend=~"$backend"'
SEL_PHASE = SEL + ', phase=~"$phase"'
# a success ratio: red below 80%, green from 99%
SUCCESS_THRESHOLDS = {
    "mode": "absolute",
    "steps": [
        {"color": "red", "value": None},
        {"color": "orange", "value": 0.8},
        {"color": "green", "value": 0.99},
    ],
}
# the process_* series of our exporters, not of every exporter the Prometheus scrapes
OURS = "and on (job, instance) sandbox_exporter_build_info"
MEMORY_GROWTH_ALERT = 8 * 1024 * 1024  # bytes an hour: SandboxExporterMemoryGrowing
SLO_THRESHOLDS = {
    "mode": "absolute",
    "steps": [
        {"color": "green", "value": None},
        {"color": "orange", "value": 1},
        {"color": "red", "value": 5},
    ],
}


def panel(
    title: str,
    description: str,
    queries: list[tuple[str, str]],
    *,
    kind: str = "timeseries",
    unit: str = "s",
    width: int = 8,
    height: int = 8,
    thresholds: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    fmt: str = "time_series",
    exemplars: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """One panel; `queries` are (PromQL, legend) pairs. `exemplars`: more queries, on a
    histogram's buckets, whose exemplars (each a dot: the `run_id` of the run that
    landed in that bucket, to find in the logs) Grafana shows on the panel."""
    defaults: dict[str, Any] = {"unit": unit}
    if thresholds is not None:
        defaults["thresholds"] = thresholds
        if kind == "timeseries":
            defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"w": width, "h": height},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options or {},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DS,
                "expr": expr,
                "legendFormat": legend,
                "format": fmt,
                **({"exemplar": True} if i >= len(queries) else {}),
            }
            for i, (expr, legend) in enumerate([*queries, *exemplars])
        ],
    }


def raw_quantile(
    q: float, metric: str, by: str, selector: str, window: str = "$__rate_interval"
) -> str:
    """The same quantile from the histogram itself, where the exemplars are: the native
    histogram's, or else the classic buckets' (a Prometheus keeps one or the other,
    or both; docs/native-histograms.md)."""
    return (
        f"histogram_quantile({q}, sum by ({by}) (rate({metric}{{{selector}}}[{window}])))"
        f" or histogram_quantile({q}, sum by (le, {by}) "
        f"(rate({metric}_bucket{{{selector}}}[{window}])))"
    )


def histogram_increase(metric: str, by: str, selector: str, window: str) -> str:
    """How many observations a histogram counted in `window`, native or classic."""
    return (
        f"histogram_count(sum by ({by}) (increase({metric}{{{selector}}}[{window}])))"
        f" or sum by ({by}) (increase({metric}_count{{{selector}}}[{window}]))"
    )


def distribution(metric: str, selector: str) -> str:
    """A heatmap's query: the native histogram, else the classic buckets by `le` (one or
    the other: their label sets differ, so `or` alone would draw both)."""
    native = f"sum(increase({metric}{{{selector}}}[$__rate_interval]))"
    classic = f"sum by (le) (increase({metric}_bucket{{{selector}}}[$__rate_interval]))"
    return f"{native} or ({classic} unless on () {native})"


def row(title: str) -> dict[str, Any]:
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"w": 24, "h": 1},
        "panels": [],
    }


def quantile_panel(q: str, title: str) -> dict[str, Any]:
    return panel(
        f"{title} per phase",
        f"The {title} duration of each lifecycle phase per target, over 5-minute windows "
        "(recorded by target_phase:sandbox_phase_duration_seconds:"
        f"{q}_5m). Lines at 1 s and 5 s mark the SLO edges. Dots are exemplars: hover "
        "one for the run_id of a run in that bucket, then find its log lines.",
        [
            (
                f"target_phase:sandbox_phase_duration_seconds:{q}_5m{{{SEL_PHASE}}}",
                "{{target}} {{phase}}",
            )
        ],
        thresholds=SLO_THRESHOLDS,
        exemplars=[
            (
                raw_quantile(
                    int(q[1:]) / 100, "sandbox_phase_duration_seconds", "target, phase", SEL_PHASE
                ),
                "{{target}} {{phase}} (from the histogram)",
            )
        ],
    )


def burst_ready_panel(which: str, description: str) -> dict[str, Any]:
    """Time to first or to all ready of bursts: p50 and p95 over an hour, recorded."""
    metric = f"sandbox_burst_time_to_{which}_ready_seconds"
    return panel(
        f"Time to {which} ready",
        description + " p50 and p95 over 1 hour (recorded by target:"
        f"{metric}:p50_1h and :p95_1h): at the default 5-minute burst interval a shorter "
        "window would hold a single burst. Lines at 1 s and 5 s mark the SLO edges. Dots are "
        "exemplars: hover one for the burst_id of a burst in that bucket, then find its "
        "log line (event burst).",
        [
            (f"target:{metric}:p50_1h{{{SEL}}}", "{{target}} p50"),
            (f"target:{metric}:p95_1h{{{SEL}}}", "{{target}} p95"),
        ],
        thresholds=SLO_THRESHOLDS,
        width=12,
        exemplars=[
            (
                raw_quantile(0.95, metric, "target", SEL, window="1h"),
                "{{target}} p95 (from the histogram)",
            )
        ],
    )


# the SRE Workbook's alert windows (alerts.rules.yml, sandbox-exporter.slo): the long
# window, the short one, the burn rate above which both must be, and what it opens
BURN_ALERTS = (("1h", "5m", 14.4, "page"), ("6h", "30m", 6, "page"), ("1d", "2h", 3, "ticket"),
               ("3d", "6h", 1, "ticket"))  # fmt: skip
BUDGET_THRESHOLDS = {
    "mode": "absolute",
    "steps": [
        {"color": "red", "value": None},
        {"color": "orange", "value": 0},
        {"color": "green", "value": 0.25},
    ],
}


def burn_rate_panel(long: str, short: str, rate: float, opens: str) -> dict[str, Any]:
    return panel(
        f"Burn rate, {long} and {short} (a {opens} above {rate:g}x)",
        f"How fast each target spends its error budget over the last {long} and {short}: "
        "1 spends it exactly over the SLO's window. The alert SandboxSLOBudgetBurn"
        f"{long} opens a {opens} while both lines are above {rate:g}x (the line).",
        [
            (f"target:sandbox_slo_burn_rate:rate{long}{{{SEL}}}", f"{{{{target}}}} {long}"),
            (f"target:sandbox_slo_burn_rate:rate{short}{{{SEL}}}", f"{{{{target}}}} {short}"),
        ],
        unit="x",
        width=6,
        thresholds={
            "mode": "absolute",
            "steps": [{"color": "green", "value": None}, {"color": "red", "value": rate}],
        },
    )


def slo_panels() -> list[dict[str, Any]]:
    """The SLO row: targets with an `slo` block (docs/slo.md)."""
    return [
        row("SLO"),
        panel(
            "SLI over the SLO window",
            "The share of each target's probes that were good (succeeded and reached exec "
            "within the target's threshold) over its SLO window (slo.window), against its "
            "objective.",
            [
                (f"1 - target:sandbox_slo_error_ratio:ratio_window{{{SEL}}}", "{{target}}"),
                (f"max by (target) (sandbox_slo_objective_ratio{{{SEL}}})", "{{target}} objective"),
            ],
            unit="percentunit",
        ),
        panel(
            "Error budget remaining",
            "The share of each target's error budget (1 - objective, over its window) not "
            "yet spent: 100% untouched, 0% spent, below 0 the objective is missed.",
            [(f"target:sandbox_slo_error_budget_remaining:ratio{{{SEL}}}", "{{target}}")],
            kind="stat",
            unit="percentunit",
            thresholds=BUDGET_THRESHOLDS,
        ),
        panel(
            "What spent the budget",
            "The probes that were not good, per interval: failures by phase and reason, and "
            "slow runs (succeeded, but reached exec later than the threshold). Dots are "
            "exemplars: hover one for the run_id of a failed or slow run, then find its log "
            "lines.",
            [
                (
                    "sum by (target, phase, reason) (increase(sandbox_probe_failures_total"
                    f"{{{SEL}}}[$__rate_interval]) and on (target, backend) "
                    "sandbox_slo_objective_ratio)",
                    "{{target}} {{phase}} {{reason}}",
                ),
                (
                    "sum by (target) (increase(sandbox_slo_probes_total"
                    f'{{{SEL}, outcome="slow"}}[$__rate_interval]))',
                    "{{target}} slow",
                ),
            ],
            unit="short",
            exemplars=[(f'sandbox_slo_probes_total{{{SEL}, outcome!="good"}}', "{{outcome}}")],
        ),
        *(burn_rate_panel(*alert) for alert in BURN_ALERTS),
    ]


def burst_panels() -> list[dict[str, Any]]:
    """The Bursts row: targets with a `burst` block (N sandboxes launched together)."""
    return [
        row("Bursts"),
        burst_ready_panel(
            "first",
            "From a burst's launch to the first of its sandboxes whose command answered: "
            "how soon a fan-out of N agents has its first one working.",
        ),
        burst_ready_panel(
            "all",
            "From a burst's launch to the last of its sandboxes answering, for bursts whose "
            "every sandbox answered: how long a fan-out of N agents waits for all of them. "
            "The SandboxBurstAllReadyRegression alert compares its hourly p95 with the day "
            "before.",
        ),
        panel(
            "p95 per phase in bursts",
            "The p95 duration of each lifecycle phase across the sandboxes of bursts, per "
            "target, over 1 hour (recorded by target_phase:sandbox_burst_phase_duration_"
            "seconds:p95_1h). Set beside the single probes' p95 per phase, it shows which "
            "phase slows when N sandboxes go at once. Dots are exemplars: the run_id of one "
            "sandbox's run in that bucket.",
            [
                (
                    f"target_phase:sandbox_burst_phase_duration_seconds:p95_1h{{{SEL_PHASE}}}",
                    "{{target}} {{phase}}",
                )
            ],
            thresholds=SLO_THRESHOLDS,
            width=16,
            exemplars=[
                (
                    raw_quantile(
                        0.95,
                        "sandbox_burst_phase_duration_seconds",
                        "target, phase",
                        SEL_PHASE,
                        window="1h",
                    ),
                    "{{target}} {{phase}} (from the histogram)",
                )
            ],
        ),
        panel(
            "Burst success ratio",
            "Share of the last burst's sandboxes that succeeded, and share of all burst "
            "sandboxes that succeeded over 1 hour, per target. Lower than the single probes' "
            "success ratio: the engine fails under concurrency. A burst whose engine or image "
            "check failed launched nothing: its last-burst share is 0, and the hourly share "
            "does not count it (see the failures).",
            [
                (f"sandbox_burst_success_ratio{{{SEL}}}", "{{target}} last burst"),
                (
                    "sum by (target) (increase(sandbox_burst_sandboxes_total"
                    f'{{{SEL}, result="success"}}[1h])) / sum by (target) '
                    f"(increase(sandbox_burst_sandboxes_total{{{SEL}}}[1h]))",
                    "{{target}} over 1h",
                ),
            ],
            unit="percentunit",
            thresholds=SUCCESS_THRESHOLDS,
        ),
        panel(
            "Burst sandbox failures by phase and reason",
            "Failed sandboxes of bursts in each interval, by the phase that failed and why "
            "(timeout, unavailable, error, exec_mismatch, cleanup); a burst whose engine or "
            "image check failed counts one failure, before any sandbox was launched.",
            [
                (
                    "sum by (target, phase, reason) (increase("
                    f"sandbox_burst_sandbox_failures_total{{{SEL}}}[$__rate_interval]))",
                    "{{target}} {{phase}} {{reason}}",
                )
            ],
            unit="short",
            width=16,
        ),
        panel(
            "Bursts in progress and skipped",
            "Bursts running now, and scheduled bursts skipped because a run of the target "
            "(single or burst) was still going: the two never overlap, so a burst waits for "
            "no single run and is skipped instead.",
            [
                (f"sum by (target) (sandbox_burst_in_progress{{{SEL}}})", "{{target}} running"),
                (
                    "sum by (target) "
                    f"(increase(sandbox_burst_skipped_total{{{SEL}}}[$__rate_interval]))",
                    "{{target}} skipped",
                ),
            ],
            unit="short",
        ),
        panel(
            "Launch-order effect",
            "Median time to exec (create + start + exec) of the first quarter of the last "
            "burst's sandboxes to be launched, and of the last quarter. A last quarter much "
            "slower than the first means the engine queues or serialises the creates: later "
            "sandboxes wait for the earlier ones.",
            [
                (
                    f"sandbox_burst_first_quarter_time_to_exec_seconds{{{SEL}}}",
                    "{{target}} first quarter",
                ),
                (
                    f"sandbox_burst_last_quarter_time_to_exec_seconds{{{SEL}}}",
                    "{{target}} last quarter",
                ),
            ],
            width=12,
        ),
        panel(
            "Launch skew",
            "How far apart the last burst's creates strayed from their planned instants "
            "(together, or stagger apart): the spread, over its sandboxes, of sent minus "
            "planned. Near zero is a clean launch. A large skew means the exporter distorted "
            "the launch: its own threads or host sent the creates late, so the burst measured "
            "the exporter as much as the engine; give the exporter CPU or lower the "
            "concurrency.",
            [(f"sandbox_burst_launch_skew_seconds{{{SEL}}}", "{{target}}")],
            width=12,
        ),
    ]


def panels() -> list[dict[str, Any]]:
    return [
        row("Latency"),
        quantile_panel("p50", "p50"),
        quantile_panel("p95", "p95"),
        quantile_panel("p99", "p99"),
        panel(
            "Time to exec",
            "Create + start + exec of successful probes: what an agent waits before its first "
            "command runs. p50 and p95 over 5 minutes. Dots are exemplars: the run_id of a "
            "run in that bucket.",
            [
                (f"target:sandbox_time_to_exec_seconds:p50_5m{{{SEL}}}", "{{target}} p50"),
                (f"target:sandbox_time_to_exec_seconds:p95_5m{{{SEL}}}", "{{target}} p95"),
            ],
            thresholds=SLO_THRESHOLDS,
            width=12,
            exemplars=[
                (
                    raw_quantile(0.95, "sandbox_time_to_exec_seconds", "target", SEL),
                    "{{target}} p95 (from the histogram)",
                )
            ],
        ),
        panel(
            "Whole lifecycle",
            "All five phases of successful probes, create to remove. p50 and p95 over 5 minutes. "
            "Dots are exemplars: the run_id of a run in that bucket.",
            [
                (f"target:sandbox_lifecycle_duration_seconds:p50_5m{{{SEL}}}", "{{target}} p50"),
                (f"target:sandbox_lifecycle_duration_seconds:p95_5m{{{SEL}}}", "{{target}} p95"),
            ],
            thresholds=SLO_THRESHOLDS,
            width=12,
            exemplars=[
                (
                    raw_quantile(0.95, "sandbox_lifecycle_duration_seconds", "target", SEL),
                    "{{target}} p95 (from the histogram)",
                )
            ],
        ),
        panel(
            "Phase duration distribution",
            "How the durations of the selected phases and targets spread over the histogram "
            "buckets: a second mode or a lengthening tail shows before the p95 moves.",
            [
                (
                    distribution("sandbox_phase_duration_seconds", SEL_PHASE),
                    "{{le}}",
                )
            ],
            kind="heatmap",
            width=24,
            fmt="heatmap",
            options={"calculate": False, "yAxis": {"unit": "s"}, "cellGap": 1},
        ),
        *slo_panels(),
        row("Reliability"),
        panel(
            "Success ratio",
            "Share of probe lifecycles that succeeded, per target, over 15 minutes.",
            [(f"1 - target:sandbox_probe_failure_ratio:ratio_15m{{{SEL}}}", "{{target}}")],
            unit="percentunit",
            thresholds=SUCCESS_THRESHOLDS,
        ),
        panel(
            "Failures by phase and reason",
            "Failed probes in each interval, by the phase that failed and why: timeout, "
            "unavailable (engine unreachable), error (the engine refused; see the log), "
            "exec_mismatch (wrong output or exit code), cleanup (stop or remove failed).",
            [
                (
                    "sum by (target, phase, reason) "
                    f"(increase(sandbox_probe_failures_total{{{SEL}}}[$__rate_interval]))",
                    "{{target}} {{phase}} {{reason}}",
                )
            ],
            unit="short",
            width=16,
        ),
        panel(
            "Time since last success",
            "Seconds since each target's last successful probe. More than a few intervals "
            "means the target is failing or not being probed.",
            [(f"time() - sandbox_probe_last_success_timestamp_seconds{{{SEL}}}", "{{target}}")],
            kind="stat",
            thresholds={
                "mode": "absolute",
                "steps": [
                    {"color": "green", "value": None},
                    {"color": "orange", "value": 300},
                    {"color": "red", "value": 900},
                ],
            },
        ),
        panel(
            "Backend up",
            "1 when the target's engine answered at the last attempt, 0 when it could not be "
            "reached.",
            [(f"sandbox_backend_up{{{SEL}}}", "{{target}}")],
            kind="stat",
            unit="bool_on_off",
            thresholds={
                "mode": "absolute",
                "steps": [{"color": "red", "value": None}, {"color": "green", "value": 1}],
            },
        ),
        panel(
            "Probes in progress and skipped",
            "Probes running now (1 per target at most), and scheduled runs skipped because "
            "the previous run of the target had not finished: a sign of phases near their "
            "timeouts.",
            [
                (f"sum by (target) (sandbox_probe_in_progress{{{SEL}}})", "{{target}} running"),
                (
                    "sum by (target) "
                    f"(increase(sandbox_probe_skipped_total{{{SEL}}}[$__rate_interval]))",
                    "{{target}} skipped",
                ),
            ],
            unit="short",
        ),
        panel(
            "Orphans removed",
            "Sandboxes of this exporter found left behind (crash, failed cleanup) and removed. "
            "A steady count means cleanup is failing upstream.",
            [
                (
                    f"sum by (target) (increase(sandbox_orphans_removed_total{{{SEL}}}"
                    "[$__rate_interval]))",
                    "{{target}}",
                )
            ],
            unit="short",
        ),
        panel(
            "Image pulls",
            "Pulls the probes had to make (timed apart from the lifecycle), and their p95 "
            "duration. Pulls should be rare: each one is a missing image on the engine.",
            [
                (
                    histogram_increase(
                        "sandbox_image_pull_duration_seconds", "target", SEL, "$__rate_interval"
                    ),
                    "{{target}} pulls",
                ),
                (
                    raw_quantile(0.95, "sandbox_image_pull_duration_seconds", "target", SEL),
                    "{{target}} p95",
                ),
            ],
            unit="short",
        ),
        row("Exporter"),
        panel(
            "Config reload",
            "1 when the exporter's last configuration load succeeded; 0 means a new config "
            "was refused and the previous one is still running.",
            [("sandbox_exporter_config_last_reload_successful", "{{instance}}")],
            kind="stat",
            unit="bool_yes_no",
            thresholds={
                "mode": "absolute",
                "steps": [{"color": "red", "value": None}, {"color": "green", "value": 1}],
            },
        ),
        panel(
            "Exporter memory",
            "Resident memory of each exporter process that probes (its web process is apart "
            "and small). It climbs for the first minutes (threads, malloc arenas, caches), "
            "then stays level: a line that keeps rising is what SandboxExporterMemoryGrowing "
            "alerts on.",
            [(f"process_resident_memory_bytes {OURS}", "{{instance}}")],
            unit="bytes",
        ),
        panel(
            "Exporter memory growth",
            "How fast each exporter's resident memory grows, per hour, fitted over the last "
            "hour. Around zero once warmed up; the line marks the alert's threshold (8 MiB "
            "an hour, held for 2 hours).",
            [(f"deriv(process_resident_memory_bytes[1h]) * 3600 {OURS}", "{{instance}}")],
            unit="bytes",
            thresholds={
                "mode": "absolute",
                "steps": [
                    {"color": "green", "value": None},
                    {"color": "red", "value": MEMORY_GROWTH_ALERT},
                ],
            },
        ),
        panel(
            "Targets",
            "What each target probes: backend, image, runtime, pull policy and interval.",
            [(f"sandbox_target_info{{{SEL}}}", "")],
            kind="table",
            unit="none",
            width=16,
            fmt="table",
        ),
        *burst_panels(),
    ]


def layout(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Place panels left to right, wrapping at 24 columns; rows start a new line."""
    x = y = line_height = 0
    for pid, item in enumerate(items, start=1):
        grid = item["gridPos"]
        if item["type"] == "row" or x + grid["w"] > 24:
            x, y = 0, y + line_height
            line_height = 0
        grid.update({"x": x, "y": y})
        item["id"] = pid
        x += grid["w"]
        line_height = max(line_height, grid["h"])
        if item["type"] == "row":
            x, y, line_height = 0, y + grid["h"], 0
    return items


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": name},
        "definition": query,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "refresh": 2,
        "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


def dashboard() -> dict[str, Any]:
    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
        ],
        "uid": "sandbox-exporter",
        "title": "Sandbox lifecycle",
        "description": "Create, start, exec, stop and remove of real sandboxes, per target "
        "and phase, from sandbox-exporter.",
        "tags": ["sandbox-exporter", "sandboxes"],
        "schemaVersion": 38,
        "version": 1,
        "editable": True,
        "timezone": "",
        "refresh": "1m",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"text": "${DS_PROMETHEUS}", "value": "${DS_PROMETHEUS}"},
                },
                variable("target", "Target", "label_values(sandbox_target_info, target)"),
                variable(
                    "backend",
                    "Backend",
                    'label_values(sandbox_target_info{target=~"$target"}, backend)',
                ),
                {
                    "name": "phase",
                    "label": "Phase",
                    "type": "custom",
                    "query": "create,start,exec,stop,remove",
                    "multi": True,
                    "includeAll": True,
                    "allValue": ".*",
                    "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                    "options": [],
                },
            ]
        },
        "annotations": {"list": []},
        "panels": layout(panels()),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    text = render()
    if args.check:
        if OUTPUT.read_text() != text:
            print(f"{OUTPUT} is not what grafana/dashboard.py makes: run it", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
