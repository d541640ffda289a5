"""Footprint: memory and CPU of an idle daemon, Docker-only and with every backend configured.

The exporter is two processes: the one that probes and its web process. Both are
counted: RSS of each, and their PSS added up (RSS counts the shared libraries
both map twice; PSS shares them out). Target: under 70 MB for Docker-only.
(That the SDK of a backend that is not configured is never imported is a
test: tests/test_lazy_imports.py.)

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
from sandbox_exporter.backends import known_names

ROOT = Path(__file__).parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def kb_field(path: str, name: str) -> float:
    for line in Path(path).read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {name} in {path}")


def web_process(parent: int) -> int:
    for task in Path(f"/proc/{parent}/task").iterdir():
        for pid in (task / "children").read_text().split():
            if b"sandbox_exporter.web.http_child" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
    raise RuntimeError("no web process")


def memory(pids: tuple[int, int]) -> tuple[float, float, float]:
    """RSS of the exporter, RSS of its web process, PSS of both added up (MB)."""
    main, web = pids
    pss = sum(kb_field(f"/proc/{pid}/smaps_rollup", "Pss") for pid in pids)
    return kb_field(f"/proc/{main}/status", "VmRSS"), kb_field(f"/proc/{web}/status", "VmRSS"), pss


def cpu_seconds(pids: tuple[int, int]) -> float:
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def measure(name: str, targets: list[dict[str, object]], idle: float, image: str) -> None:
    config = {
        "instance": "footprint",
        "defaults": {"interval": "1h", "image": image, "pull_policy": "never"},
        "targets": targets,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        json.dump(config, handle)  # JSON is YAML
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox_exporter",
            "run",
            "--config.file",
            handle.name,
            "--web.listen-address",
            "127.0.0.1:0",
            "--log.level",
            "info",
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
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
        pids = (proc.pid, web_process(proc.pid))
        cpu0, t0 = cpu_seconds(pids), time.monotonic()
        time.sleep(idle)
        cpu = (cpu_seconds(pids) - cpu0) / (time.monotonic() - t0) * 100
        main, web, pss = memory(pids)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        os.unlink(handle.name)
    failed = [e for e in lines if e.get("event") == "lifecycle" and not e.get("success")]
    print(
        f"{name:<54}{main:>10.1f}{web:>10.1f}{pss:>10.1f}{cpu:>9.2f}%  {len(targets)} "
        f"target(s), {done} probe(s), {len(failed)} failed"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=float, default=30.0, help="seconds idle to measure CPU")
    parser.add_argument("--image", default="sandbox-exporter/busybox:local")
    args = parser.parse_args()
    url = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    docker: dict[str, object] = {"name": "docker", "backend": "docker", "docker": {"base_url": url}}
    others: list[dict[str, object]] = [
        {"name": n, "backend": n} for n in known_names() if n != "docker"
    ]
    every = [docker, *others]
    print("footprint of an idle daemon (one probe per target run at start-up, then idle)")
    print(machine_line())
    print(
        f"{'config':<54}{'RSS MB':>10}{'web RSS':>10}{'PSS sum':>10}{'CPU':>10}  "
        f"(after {args.idle:g} s idle; CPU over that time, both processes)"
    )
    measure("docker only", [docker], args.idle, args.image)
    measure(f"every backend ({', '.join(known_names())})", every, args.idle, args.image)
    measure("namespace only", [{"name": "ns", "backend": "namespace"}], args.idle, args.image)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
