"""Series Prometheus stores per target: classic histograms only, native only, and both.

One exporter (namespace targets: one probed alone, one with a burst probe too) is
scraped every second by three real Prometheus servers at once:
  classic  Debian bookworm's 2.42, as installed (no native histograms)
  native   the same with --enable-feature=native-histograms (protobuf, no _bucket series)
  both     Debian trixie's 2.53 with the flag and scrape_classic_histograms: true
           (2.42 cannot keep both; scripts/fetch-prometheus-2.53.sh fetches it)
Each server's own prometheus_tsdb_head_series is read from its /metrics, and the
sandbox_* series it holds are counted by target.

python benchmarks/native_series.py [--seconds 40]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine_line
from benchmarks.exporter_process import ExporterProcess

ROOT = Path(__file__).parent.parent


def trixie_prometheus() -> Path:
    """Trixie's prometheus 2.53, fetched and checked by the script the tests' promtool
    comes from."""
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "fetch-prometheus-2.53.sh"), "prometheus"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return ROOT / done.stdout.strip() / "prometheus"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, kind: str, binary: str, exporter: str, workdir: Path) -> None:
        self.kind = kind
        scrape: dict[str, Any] = {
            "job_name": "sandbox-exporter",
            "static_configs": [{"targets": [exporter]}],
        }
        if kind == "both":
            scrape["scrape_classic_histograms"] = True
        config = workdir / f"{kind}.yml"
        config.write_text(
            json.dumps({"global": {"scrape_interval": "1s"}, "scrape_configs": [scrape]})
        )
        self.url = f"http://127.0.0.1:{free_port()}"
        flags = ["--enable-feature=native-histograms"] if kind != "classic" else []
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / kind}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
                *flags,
            ],
            stdout=subprocess.DEVNULL,
            stderr=(workdir / f"{kind}.log").open("w"),
        )

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - loopback
            result: list[dict[str, Any]] = json.loads(answer.read())["data"]["result"]
            return result

    def head_series(self) -> int:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as answer:  # noqa: S310
            for line in answer.read().decode().splitlines():
                if line.startswith("prometheus_tsdb_head_series "):
                    return int(float(line.split()[1]))
        raise RuntimeError("no prometheus_tsdb_head_series")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=40)
    args = parser.parse_args()
    bookworm = shutil.which("prometheus")
    if bookworm is None:
        raise SystemExit("Debian's prometheus is not installed (apt-get install prometheus)")
    trixie = trixie_prometheus()
    state = tempfile.mkdtemp()
    config = {
        "targets": [
            {
                "name": "alone",
                "backend": "namespace",
                "interval": "1s",
                "namespace": {"state_dir": state},
            },
            {
                "name": "with-bursts",
                "backend": "namespace",
                "interval": "1s",
                "namespace": {"state_dir": state},
                "burst": {"concurrency": 3, "interval": "5s"},
            },
        ]
    }
    exporter = ExporterProcess(config, keep_events={"listening"})
    with tempfile.TemporaryDirectory() as work:
        servers = [
            Server("classic", bookworm, exporter.address, Path(work)),
            Server("native", bookworm, exporter.address, Path(work)),
            Server("both", str(trixie), exporter.address, Path(work)),
        ]
        try:
            time.sleep(args.seconds)  # a benchmark's run length, not a wait for a condition
            print("Series stored per target by real Prometheus servers scraping one exporter")
            print(machine_line())
            print(
                f"{args.seconds:g} s of runs, scraped every second; "
                "Prometheus 2.42 (bookworm), 2.53 (trixie)"
            )
            print(
                f"{'histograms':<10}{'head series':>13}{'sandbox_* alone':>17}"
                f"{'with bursts':>13}{'no target':>11}"
            )
            for server in servers:
                by_target = {
                    s["metric"].get("target", ""): int(float(s["value"][1]))
                    for s in server.query('count by (target) ({__name__=~"sandbox_.*"})')
                }
                print(
                    f"{server.kind:<10}{server.head_series():>13}{by_target.get('alone', 0):>17}"
                    f"{by_target.get('with-bursts', 0):>13}{by_target.get('', 0):>11}"
                )
        finally:
            for server in servers:
                server.stop()
            exporter.stop()
            shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
