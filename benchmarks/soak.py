"""Soak: 50 namespace targets probed every 2 s for minutes; memory, threads and
open files of the exporter process must stay flat.

    python benchmarks/soak.py [--targets 50] [--interval 2s] [--minutes 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine_line
from benchmarks.exporter_process import ExporterProcess


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=50)
    parser.add_argument("--interval", default="2s")
    parser.add_argument("--minutes", type=float, default=3.0)
    args = parser.parse_args()
    state = tempfile.mkdtemp(prefix="soak-")
    process = ExporterProcess({
        "defaults": {"interval": args.interval},
        "targets": [{"name": f"t{i}", "backend": "namespace", "namespace": {"state_dir": state}}
                    for i in range(args.targets)],
    })  # fmt: skip
    samples: list[tuple[float, int, int, int]] = []
    start = time.monotonic()
    try:
        while time.monotonic() - start < args.minutes * 60:
            samples.append((time.monotonic() - start, process.status("VmRSS"),
                            process.status("Threads"), process.fds()))  # fmt: skip
            time.sleep(5)  # sampling period of the soak
    finally:
        code = process.stop()
    runs = [e for e in process.logs if e.get("event") == "lifecycle"]
    failed = [e for e in runs if not e.get("success")]
    leftover = os.listdir(state)
    third = max(len(samples) // 3, 1)
    first, last = samples[:third], samples[-third:]

    def avg(rows: list[tuple[float, int, int, int]], col: int) -> float:
        return statistics.mean(r[col] for r in rows)

    print(f"soak: {args.targets} namespace targets every {args.interval} for {args.minutes:g} min")
    print(machine_line())
    print(f"lifecycles: {len(runs)}, failed: {len(failed)}, exit status {code}, "
          f"sandbox directories left: {len(leftover)}")  # fmt: skip
    print(f"RSS MB: first third {avg(first, 1) / 1024:.1f}, last third {avg(last, 1) / 1024:.1f}, "
          f"max {max(s[1] for s in samples) / 1024:.1f}")  # fmt: skip
    print(f"threads: first third {avg(first, 2):.1f}, last third {avg(last, 2):.1f}, "
          f"max {max(s[2] for s in samples)}")  # fmt: skip
    print(f"open fds: first third {avg(first, 3):.1f}, last third {avg(last, 3):.1f}, "
          f"max {max(s[3] for s in samples)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
