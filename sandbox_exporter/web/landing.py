"""The landing page, for the operator woken at 3 a.m.: per target its last result, how
long since it last succeeded, why it failed in the engine's own words, a sparkline of
its recent runs' time to exec (failures in red), the p50/p95 of each phase over those
runs, its last burst (times to first and all ready, how many were ready), the backends
`targets: auto` did not find and why (the words the log has), and a button that
probes a target now.

Everything is rendered here, on the server, as HTML that reads without JavaScript;
the inline script (landing_assets.py) only adds the in-page probe output and a
refresh that keeps it. Every value from outside (names, paths, engine messages) is
escaped.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from sandbox_exporter.probing.recent import FIGURES, RECENT_RUNS, Spread, Summary
from sandbox_exporter.results import failures
from sandbox_exporter.web.humanize import age, duration, utc
from sandbox_exporter.web.landing_assets import SCRIPT, STYLE
from sandbox_exporter.web.sparkline import sparkline

if TYPE_CHECKING:
    from sandbox_exporter.config.settings import Burst
    from sandbox_exporter.probing.prober import Prober
    from sandbox_exporter.results import BurstResult, ProbeResult

DEFAULT_REFRESH_SECONDS = 15
# a success older than this many intervals is shown as late
LATE_AFTER_INTERVALS = 3


@dataclass(frozen=True)
class About:
    """The exporter the page is about."""

    instance: str
    config: str  # the config file's path, or what stood in for one
    version: str
    started_at: float  # wall clock


def _e(value: object) -> str:
    return html.escape(str(value))


def landing_page(
    probers: Sequence[Prober],
    about: About,
    *,
    now: float,
    refresh: int = DEFAULT_REFRESH_SECONDS,
    not_found: Mapping[str, str] | None = None,
) -> str:
    """The page; `now` is the wall clock it is rendered at, `refresh` its period in
    seconds (0: it does not refresh), `not_found` the backends `targets: auto` did not
    find and why (the config's `not_found`; none: the section is left out)."""
    rows = [(prober, prober.recent.summary()) for prober in probers]
    meta = (
        f'<noscript><meta http-equiv="refresh" content="{refresh}"></noscript>' if refresh else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sandbox-exporter: {_e(about.instance)}</title>
{meta}
<style>{STYLE}</style></head>
<body data-refresh="{refresh}">
<main id="live">
{_header(about, rows, now, refresh)}
<h2>Targets</h2>
{_targets_table(rows, now)}
{_not_found(not_found or {})}
{_bursts(rows, now)}
<h2>Durations over the last runs</h2>
<p class="muted">p50 / p95 (nearest rank) of each target's last {RECENT_RUNS} runs, kept in
this exporter's memory: the scheduled runs (and <code>/probe</code>'s with
<code>record=true</code>). A phase counts in every run in which it succeeded; time to exec
and total count successful runs only, as in <a href="/metrics">/metrics</a>.</p>
{_durations_table(rows)}
</main>
<section id="probes" hidden>
<h2>Probe runs from this page</h2>
<p class="muted">Each is one lifecycle run now, its log as <code>/probe?debug=true</code>
answers it; not counted in the metrics.</p>
<div id="probe-output"></div>
</section>
<script>{SCRIPT}</script>
</body></html>
"""


def _header(about: About, rows: Sequence[tuple[Prober, Summary]], now: float, refresh: int) -> str:
    states = [_state(summary) for _, summary in rows]
    counts = ", ".join(
        f'<span class="{cls}">{states.count(state)} {label}</span>'
        for state, label, cls in (
            ("success", "succeeding", "ok"),
            ("failure", "failing", "bad"),
            ("pending", "not run yet", "muted"),
        )
        if state in states
    )
    refreshing = f"refreshes every {refresh} s" if refresh else "does not refresh"
    overview = f"{len(rows)} target{'' if len(rows) == 1 else 's'}" + (
        f": {counts}" if counts else ""
    )
    return f"""<header>
<h1>sandbox-exporter <span id="instance">{_e(about.instance)}</span></h1>
<p id="about">instance <b>{_e(about.instance)}</b> &middot;
config <code id="config-file">{_e(about.config)}</code> &middot;
version <span id="version">{_e(about.version)}</span> &middot;
up <span id="uptime" data-seconds="{max(now - about.started_at, 0):.0f}"
title="since {_e(utc(about.started_at))}">{_e(age(now - about.started_at))}</span></p>
<p id="overview">{overview}</p>
<p class="muted"><a href="/metrics">Metrics</a> &middot; <a href="/-/healthy">Health</a>
&middot; <a href="/-/ready">Readiness</a> &middot; figures of
<span id="rendered-at">{_e(utc(now))}</span>; this page {refreshing}.
<span id="refresh-state"></span></p>
</header>"""


def _state(summary: Summary) -> str:
    if summary.last is None:
        return "pending"
    return "success" if summary.last.success else "failure"


def _targets_table(rows: Sequence[tuple[Prober, Summary]], now: float) -> str:
    body = "\n".join(_target_row(prober, summary, now) for prober, summary in rows)
    return f"""<table id="targets">
<thead><tr><th>Target</th><th>Backend</th><th class="num">Interval</th><th>Last result</th>
<th>Finished</th><th>Last success</th><th class="num">Recent runs</th>
<th>Time to exec<br><small>recent runs, oldest first</small></th><th>Failure</th>
<th>Probe now</th></tr></thead>
<tbody>
{body}
</tbody></table>"""


def _target_row(prober: Prober, summary: Summary, now: float) -> str:
    target = prober.target
    state = _state(summary)
    last = summary.last
    result = {"success": "success", "failure": "failure", "pending": "not run yet"}[state]
    if last is not None and last.cancelled:
        result = "cancelled"
    running = ' <span class="muted running">running now</span>' if prober.busy else ""
    finished = (
        f'<td class="finished" title="{_e(utc(last.finished_at))}">'
        f"{_e(age(now - last.finished_at))} ago</td>"
        if last is not None
        else '<td class="finished muted">&ndash;</td>'
    )
    link = "/probe?" + urlencode({"target": target.name, "debug": "true"})
    runs = (
        f"{summary.successes} of {summary.runs} ok"
        if summary.runs
        else '<span class="muted">0</span>'
    )
    return (
        f'<tr class="target {state}" data-target="{_e(target.name)}">'
        f'<td class="name"><b>{_e(target.name)}</b></td>'
        f'<td class="backend">{_e(target.backend)}</td>'
        f'<td class="num">{target.interval:g} s</td>'
        f'<td class="result"><span class="badge">{result}</span>{running}</td>'
        f"{finished}"
        f"{_last_success(summary, now, target.interval)}"
        f'<td class="num runs">{runs}</td>'
        f'<td class="trend">{sparkline(summary.trend) or _DASH}</td>'
        f'<td class="failure-detail">{_failure(summary, now)}</td>'
        f'<td><a class="probe" data-target="{_e(target.name)}" href="{_e(link)}">Run probe</a></td>'
        "</tr>"
    )


_DASH = '<span class="muted">&ndash;</span>'


def _last_success(summary: Summary, now: float, interval: float) -> str:
    at = summary.last_success_at
    if at is None:
        cls = "late" if summary.runs else "muted"
        return f'<td class="last-success {cls}">none since the exporter started</td>'
    late = " late" if now - at > LATE_AFTER_INTERVALS * interval else ""
    return (
        f'<td class="last-success{late}" data-seconds="{now - at:.3f}" title="{_e(utc(at))}">'
        f"{_e(age(now - at))} ago</td>"
    )


def _failure(summary: Summary, now: float) -> str:
    """The last run's failure; else, dimmed, the latest failure among the recent runs."""
    last, earlier = summary.last, summary.last_failure
    if last is not None and not last.success:
        return _describe(last)
    if earlier is not None:
        when = f"{age(now - earlier.finished_at)} ago"
        return f'<span class="muted">earlier, {_e(when)}: {_describe(earlier)}</span>'
    return ""


def _describe(result: ProbeResult) -> str:
    found = failures(result)
    if not found:
        return "cancelled by shutdown" if result.cancelled else ""
    return "<br>".join(
        f'<b class="phase">{_e(f.phase)}</b> <b class="reason">{_e(f.reason)}</b>: '
        f'<span class="message">{_e(f.message)}</span>'
        for f in found
    )


def _durations_table(rows: Sequence[tuple[Prober, Summary]]) -> str:
    heads = "".join(
        f'<th class="num">{_e(name)}<br><small>p50 / p95</small></th>' for name in FIGURES
    )
    body = "\n".join(
        f'<tr data-target="{_e(prober.target.name)}">'
        f'<td class="name">{_e(prober.target.name)}</td>'
        f'<td class="num runs">{summary.runs}</td>'
        + "".join(_spread(name, summary.spreads.get(name)) for name in FIGURES)
        + "</tr>"
        for prober, summary in rows
    )
    return f"""<table id="durations">
<thead><tr><th>Target</th><th class="num">Runs</th>{heads}</tr></thead>
<tbody>
{body}
</tbody></table>"""


def _spread(name: str, spread: Spread | None) -> str:
    if spread is None:
        return f'<td class="num spread muted" data-figure="{_e(name)}" data-n="0">&ndash;</td>'
    return (
        f'<td class="num spread" data-figure="{_e(name)}" data-n="{spread.n}" '
        f'title="over {spread.n} run{"" if spread.n == 1 else "s"}">'
        f'<span class="p50" data-seconds="{spread.p50!r}">{_e(duration(spread.p50))}</span> / '
        f'<span class="p95" data-seconds="{spread.p95!r}">{_e(duration(spread.p95))}</span></td>'
    )


def _not_found(not_found: Mapping[str, str]) -> str:
    """What `targets: auto` did not find, in the words the log has at start-up."""
    if not not_found:
        return ""
    items = "\n".join(
        f'<li data-backend="{_e(name)}"><b class="backend">{_e(name)}</b>: '
        f'<span class="why message">{_e(why)}</span></li>'
        for name, why in not_found.items()
    )
    return f"""<h2>Backends not found</h2>
<p class="muted"><code>targets: auto</code> looked for each backend on this machine; it did
not find these, for the reason given (the log's <code>backend not found</code> lines).</p>
<ul id="not-found">
{items}
</ul>"""


def _bursts(rows: Sequence[tuple[Prober, Summary]], now: float) -> str:
    """The last burst of each target with a `burst` block; nothing when none has one."""
    body = "\n".join(
        _burst_row(prober.target.name, prober.target.burst, summary.last_burst, now)
        for prober, summary in rows
        if prober.target.burst is not None
    )
    if not body:
        return ""
    return f"""<h2>Bursts</h2>
<p class="muted">Each target's last burst: from its launch to the first sandbox whose
command answered, and to the last (only when every one answered).</p>
<table id="bursts">
<thead><tr><th>Target</th><th>Launch</th><th class="num">Every</th><th>Last burst</th>
<th class="num">Sandboxes</th><th class="num">Time to first ready</th>
<th class="num">Time to all ready</th><th>Failure</th></tr></thead>
<tbody>
{body}
</tbody></table>"""


def _burst_row(name: str, plan: Burst, burst: BurstResult | None, now: float) -> str:
    launch = (
        f"{plan.concurrency} together"
        if plan.mode == "burst"
        else f"{plan.concurrency}, {duration(plan.stagger)} apart"
    )
    burst_id = f' data-burst-id="{_e(burst.burst_id)}"' if burst is not None else ""
    head = (
        f'<tr class="burst"{burst_id} data-target="{_e(name)}">'
        f'<td class="name"><b>{_e(name)}</b></td><td class="launch">{_e(launch)}</td>'
        f'<td class="num">{plan.interval:g} s</td>'
    )
    if burst is None:
        return head + '<td class="finished muted" colspan="5">not run yet</td></tr>'
    finished = (
        f'<td class="finished" title="{_e(utc(burst.finished_at))}">'
        f"{_e(age(now - burst.finished_at))} ago</td>"
    )
    succeeded = sum(r.success for r in burst.results)
    total = len(burst.results)
    if burst.launched:
        cls = "ok" if burst.success else "bad"
        said = f"{succeeded} of {total} ok"
    else:
        cls, said = "bad", "cancelled" if burst.cancelled else "not launched"
    return (
        head
        + finished
        + f'<td class="num succeeded {cls}" data-succeeded="{succeeded}" data-sandboxes="{total}" '
        f'title="success ratio {burst.success_ratio:.2f}">{_e(said)}</td>'
        + _seconds("first-ready", burst.time_to_first_ready)
        + _seconds("all-ready", burst.time_to_all_ready)
        + f'<td class="failure-detail">{_burst_failure(burst)}</td></tr>'
    )


def _seconds(cls: str, seconds: float | None) -> str:
    if seconds is None:
        return f'<td class="num {cls} muted">&ndash;</td>'
    return f'<td class="num {cls}" data-seconds="{seconds!r}">{_e(duration(seconds))}</td>'


def _burst_failure(burst: BurstResult) -> str:
    """Why the burst did not launch, or the first of its sandboxes that failed."""
    if burst.preflight is not None and burst.preflight.failure is not None:
        return _describe(burst.preflight)
    failed = [(i, r) for i, r in enumerate(burst.results) if not r.success]
    if not failed:
        return ""
    index, first = failed[0]
    more = f' <span class="muted">(and {len(failed) - 1} more)</span>' if len(failed) > 1 else ""
    return f'<span class="muted">sandbox {index}:</span> {_describe(first)}{more}'
