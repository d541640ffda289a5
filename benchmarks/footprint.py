"""Footprint: RSS and CPU of an idle daemon, Docker-only and with every backend configured.

Target: under 70 MB RSS for Docker-only. (That the SDK of a backend that is not
configured is never imported is a test: tests/test_lazy_imports.py.)

    DOCKER_HOST=unix:///path/docker.sock python benchmarks/footprint.py [--idle 30]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine_line
from exporter.backends import known_backends

ROOT = Path(__file__).parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def measure(name: str, targets: list[dict[str, object]], idle: float, image: str) -> None:
    config = {"instance": "footprint", "defaults": {"interval": "1h", "image": image,
              "pull_policy": "never"}, "targets": targets}  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        json.dump(config, handle)  # JSON is YAML
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "run", "--config.file", handle.name,
         "--web.listen-address", "127.0.0.1:0", "--log.level", "info"],
        cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    lines: list[dict[str, object]] = []

    def read() -> None:
        for line in proc.stderr or []:
            lines.append(json.loads(line))

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        done = 0
        while done < len(targets) and time.monotonic() < deadline:
            done = sum(1 for e in lines if e.get("event") == "lifecycle")
            time.sleep(0.1)  # polling a child's log with a deadline, not a test
        address = next(e["address"] for e in lines if e.get("event") == "listening")
        urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read()
        rss_after_probe = rss_mb(proc.pid)
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(idle)
        cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0) * 100
        rss = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        os.unlink(handle.name)
    failed = [e for e in lines if e.get("event") == "lifecycle" and not e.get("success")]
    print(f"{name:<36}{rss_after_probe:>10.1f}{rss:>10.1f}{cpu:>9.2f}%  {len(targets)} target(s), "
          f"{done} probe(s), {len(failed)} failed")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=float, default=30.0, help="seconds idle to measure CPU")
    parser.add_argument("--image", default="sandbox-exporter/busybox:local")
    args = parser.parse_args()
    url = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    docker: dict[str, object] = {"name": "docker", "backend": "docker", "docker": {"base_url": url}}
    others: list[dict[str, object]] = [
        {"name": n, "backend": n} for n in known_backends() if n != "docker"
    ]
    every = [docker, *others]
    print("footprint of an idle daemon (one probe per target run at start-up, then idle)")
    print(machine_line())
    print(
        f"{'config':<36}{'RSS MB':>10}{'idle RSS':>10}{'CPU':>10}  (CPU over {args.idle:g} s idle)"
    )
    measure("docker only", [docker], args.idle, args.image)
    measure(f"every backend ({', '.join(known_backends())})", every, args.idle, args.image)
    measure("namespace only", [{"name": "ns", "backend": "namespace"}], args.idle, args.image)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
