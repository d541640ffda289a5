"""The regression gate: `bench compare OLD.json NEW.json`, and `bench --baseline`'s
comparison of the run it just made. Exit status 3 when something regressed (a
series surely slower beyond the threshold, or failures surely more frequent), 2 for
bad input, as the other commands use it."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sandbox_exporter.commands.bench_compare import (
    REGRESSED,
    ReportError,
    compare_reports,
    load_report,
    parse_threshold,
)
from sandbox_exporter.commands.bench_compare_report import render
from sandbox_exporter.commands.bench_stats import MissingScipy

BAD_INPUT = 2


def comparison(
    old: dict[str, Any], new: dict[str, Any], args: argparse.Namespace, names: tuple[str, str]
) -> tuple[str, bool]:
    """(the rendered comparison, regressed); ValueError or MissingScipy for bad input."""
    threshold = parse_threshold(args.threshold)
    result = compare_reports(old, new, threshold)
    return render(result, args.format, *names), result.regressed


def compare_files(args: argparse.Namespace) -> int:
    try:
        old, new = load_report(args.old), load_report(args.new)
        text, regressed = comparison(old, new, args, (args.old, args.new))
    except (ReportError, ValueError, MissingScipy) as exc:
        print(f"bench compare: {exc}", file=sys.stderr)
        return BAD_INPUT
    sys.stdout.write(text)
    return REGRESSED if regressed else 0
