"""Quantile errors, classic buckets against native, over several runs of the accuracy test.

The real-Prometheus test prints one line per quantile (tests/test_dashboard_and_rules.py,
`quantile_lines`): the estimate, the logged nearest-rank value and the relative error,
for classic and native data of the same runs. This reads any number of such outputs
and prints, per series and quantile, the median and the worst |error| of each kind.

for i in $(seq 10); do .venv/bin/pytest -s -p no:logging \\
    tests/test_dashboard_and_rules.py -k every_dashboard_query; done \\
  | python benchmarks/quantile_errors.py
"""

from __future__ import annotations

import re
import statistics
import sys
from collections import defaultdict

LINE = re.compile(
    r"^\s+(?P<what>.+?) \((?P<kind>classic|native)\)\s+p(?P<q>\d+):\s+[\d.]+ ms against"
    r"\s+[\d.]+ ms,\s+(?P<error>[+-][\d.]+)%"
)


def main() -> int:
    errors: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for line in sys.stdin:
        found = LINE.match(line)
        if found:
            key = (found["what"].strip(), f"p{found['q']}", found["kind"])
            errors[key].append(abs(float(found["error"])))
    if not errors:
        print("no quantile lines in the input", file=sys.stderr)
        return 1
    runs = max(len(v) for v in errors.values())
    print(f"|error| of histogram_quantile against the logged nearest-rank, over {runs} runs")
    print(
        f"{'series':<22}{'q':>4}{'classic median':>16}{'worst':>8}{'native median':>15}{'worst':>8}"
    )
    rows = sorted({(what, q) for what, q, _ in errors})
    every: dict[str, list[float]] = {"classic": [], "native": []}
    for what, q in rows:
        cells = []
        for kind in ("classic", "native"):
            seen = errors.get((what, q, kind), [])
            every[kind].extend(seen)
            cells.append(
                f"{statistics.median(seen):>7.1f}%{max(seen):>7.1f}%" if seen else f"{'-':>16}"
            )
        print(f"{what:<22}{q:>4}{cells[0]:>24}{cells[1]:>23}")
    print(
        f"{'all':<22}{'':>4}{statistics.median(every['classic']):>15.1f}%"
        f"{max(every['classic']):>7.1f}%{statistics.median(every['native']):>14.1f}%"
        f"{max(every['native']):>7.1f}%"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
