"""Record the pool of real durations tests/test_bench_compare.py draws its A/A trials from.

Runs `sandbox-exporter bench --json` on each backend named and keeps, per backend,
every successful run's series (each phase, time to exec, total) in
tests/data/bench_samples.json. Made once; the tests draw from it with a fixed seed,
so that what they assert is a property of the comparison, not of today's machine.

python benchmarks/bench_samples.py [-i 600] [-b namespace,docker] [--image IMAGE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sandbox_exporter.commands.bench_compare import series

OUT = Path(__file__).parent.parent / "tests" / "data" / "bench_samples.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-i", "--iterations", type=int, default=600)
    parser.add_argument("-b", "--backends", default="namespace,docker")
    parser.add_argument("--image", default="sandbox-exporter/busybox:local")
    args = parser.parse_args()
    backends: dict[str, object] = {}
    for backend in args.backends.split(","):
        command = ["bench", "-b", backend, "-i", str(args.iterations), "--json"]
        command += ["--image", args.image]
        done = subprocess.run(
            [sys.executable, "-m", "sandbox_exporter", *command],
            capture_output=True,
            text=True,
            check=True,
        )
        report = json.loads(done.stdout)
        found = series(report["backends"][0])
        backends[backend] = {
            "machine": report["machine"],
            "series": {name: [round(v, 7) for v in values] for name, values in found.items()},
        }
        print(f"{backend}: {len(found['total'])} successful runs", file=sys.stderr)
    made_by = (
        f"python benchmarks/bench_samples.py -i {args.iterations} -b {args.backends} "
        f"--image {args.image}"
    )
    pool = {"made_by": made_by, "backends": backends}
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(pool, separators=(",", ":")) + "\n")
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
