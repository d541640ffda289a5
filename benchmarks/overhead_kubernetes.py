"""Measurement overhead for Kubernetes: the exporter's recorded phase durations (the
official client, the runner, a thread per call) against a minimal client making the
fewest calls each phase's meaning needs, both against the API-server double
(tests/fake_kubernetes.py) run in a process of its own. Interleaved ABAB.

create = POST the Pod; start = watch from its resourceVersion until Running;
exec = the exec websocket (v4.channel.k8s.io) until it closes; stop = DELETE, then
watch until DELETED; remove = GET the Pod: gone (no NetworkPolicy).

Target: the exporter's median per phase within 2% or 1 ms of the minimal client's,
whichever is larger.

    python benchmarks/overhead_kubernetes.py [-n 40]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any
from urllib.parse import urlencode, urlparse

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import interleaved, machine_line, overhead_table
from sandbox_exporter.config import parse_config
from sandbox_exporter.logs import configure_logging

NAMESPACE = "sandbox-exporter-probes"
SERVE = """
import sys, threading
from tests.fake_kubernetes import FakeKubernetes
fake = FakeKubernetes()
print(fake.url, flush=True)
sys.stdin.read()
"""


class MinimalClient:
    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        self.headers = {"Authorization": "Bearer fake-token", "Content-Type": "application/json"}
        self.base = f"/api/v1/namespaces/{NAMESPACE}/pods"

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, path, body=data, headers=self.headers)
        response = self.conn.getresponse()
        return response.status, json.loads(response.read() or b"null")

    def watch(self, name: str, rv: str, until: str) -> None:
        """Read the watch stream until an event says `until` (Running, or DELETED)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        query = urlencode(
            {
                "watch": "true",
                "fieldSelector": f"metadata.name={name}",
                "resourceVersion": rv,
                "timeoutSeconds": 30,
            }
        )
        conn.request("GET", f"{self.base}?{query}", headers=self.headers)
        response = conn.getresponse()
        for line in response:
            event = json.loads(line)
            if until == "DELETED" and event["type"] == "DELETED":
                break
            status = event["object"].get("status", {})
            statuses = status.get("containerStatuses") or []
            if (
                until == "Running"
                and status.get("phase") == "Running"
                and all(s.get("started") for s in statuses)
            ):
                break
        conn.close()

    def lifecycle(self) -> dict[str, float]:
        import websocket

        name = f"sandbox-exporter-overhead-{uuid.uuid4().hex[:8]}"
        container = {"name": "probe", "image": "busybox:1.36", "command": ["sleep", "1d"]}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "containers": [container]},
        }
        out: dict[str, float] = {}
        t = time.monotonic()
        status, created = self.call("POST", self.base, pod)
        out["create"] = time.monotonic() - t
        assert status == 201, created
        t = time.monotonic()
        self.watch(name, created["metadata"]["resourceVersion"], "Running")
        out["start"] = time.monotonic() - t
        t = time.monotonic()
        query = urlencode(
            [
                ("command", "echo"),
                ("command", "hello"),
                ("stdout", "true"),
                ("stderr", "true"),
                ("stdin", "false"),
                ("tty", "false"),
            ]
        )
        ws = websocket.create_connection(
            f"ws://{self.host}:{self.port}{self.base}/{name}/exec?{query}",
            timeout=30,
            header=[
                "Authorization: Bearer fake-token",
                "sec-websocket-protocol: v4.channel.k8s.io",
            ],
        )
        output = b""
        while True:
            opcode, data = ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
            if data[:1] == b"\x01":
                output += data[1:]
        ws.close()
        out["exec"] = time.monotonic() - t
        assert output == b"hello\n", output
        t = time.monotonic()
        status, deleted = self.call("DELETE", f"{self.base}/{name}?gracePeriodSeconds=1")
        self.watch(name, deleted["metadata"]["resourceVersion"], "DELETED")
        out["stop"] = time.monotonic() - t
        t = time.monotonic()
        status, _ = self.call("GET", f"{self.base}/{name}")
        out["remove"] = time.monotonic() - t
        assert status == 404
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=40, help="lifecycles per side (default 40)")
    args = parser.parse_args()
    configure_logging("warning", "logfmt")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    server = subprocess.Popen(
        [sys.executable, "-c", SERVE],
        cwd=root,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as kubeconfig:
        json.dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "fake",
                "clusters": [{"name": "fake", "cluster": {"server": url}}],
                "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            },
            kubeconfig,
        )
    try:
        config = parse_config(
            {
                "targets": [
                    {
                        "name": "overhead",
                        "backend": "kubernetes",
                        "stop_grace": "1s",
                        "kubernetes": {"kubeconfig": kubeconfig.name},
                    }
                ]
            }
        )
        measured = interleaved(config.targets[0], MinimalClient(url).lifecycle, args.n)
    finally:
        os.unlink(kubeconfig.name)
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=30)
    if measured is None:
        return 1
    ours, theirs = measured
    print(
        "measurement overhead on kubernetes (the API-server double, its own process): "
        "exporter (kubernetes client, runner, threads) vs minimal raw client"
    )
    print(machine_line())
    print(f"N = {args.n} lifecycles each, interleaved ABAB")
    overhead_table(ours, theirs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
