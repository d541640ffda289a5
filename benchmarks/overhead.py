"""Measurement overhead: the exporter's recorded phase durations for Docker against
a minimal client making the same Engine API calls over the same Unix socket with
nothing around them. Interleaved ABAB in one run, N lifecycles each.

Target: the exporter's median per phase within 2% or 1 ms of the minimal
client's, whichever is larger. The minimal client makes the fewest calls each
phase's meaning needs: create; start; exec create + exec start (hijacked, as
the SDK and the docker CLI do it) + exec inspect for the exit code; stop;
delete.

    DOCKER_HOST=unix:///path/docker.sock python benchmarks/overhead.py [-n 30] [--image I]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
import time
import uuid
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import interleaved, machine_line, overhead_table
from sandbox_exporter.backends.docker import DEFAULT_KEEPALIVE
from sandbox_exporter.config import parse_config
from sandbox_exporter.logs import configure_logging


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=60)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


class MinimalClient:
    """The Engine API calls the Docker backend makes, and nothing else."""

    def __init__(self, socket_path: str, image: str) -> None:
        self.socket_path = socket_path
        self.image = image
        self.conn = UnixHTTPConnection(socket_path)
        self.version = self.call("GET", "/version", prefix=False)["ApiVersion"]

    def call(self, method: str, path: str, body: Any = None, prefix: bool = True) -> Any:
        url = f"/v{self.version}{path}" if prefix else path
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        self.conn.request(method, url, body=data, headers=headers)
        response = self.conn.getresponse()
        raw = response.read()
        if response.status >= 400:
            raise RuntimeError(f"{method} {path}: {response.status} {raw!r}")
        return (
            json.loads(raw)
            if raw and response.getheader("Content-Type", "").startswith("application/json")
            else raw
        )

    def exec_stream(self, exec_id: str) -> bytes:
        """Exec start as the SDK (and the docker CLI) sends it: an upgraded, hijacked
        connection. dockerd answers a plain streaming request about 4 ms sooner, but
        that is not the call the backend makes."""
        conn = UnixHTTPConnection(self.socket_path)
        conn.request(
            "POST",
            f"/v{self.version}/exec/{exec_id}/start",
            body=json.dumps({"Detach": False, "Tty": False}),
            headers={"Content-Type": "application/json", "Connection": "Upgrade", "Upgrade": "tcp"},
        )
        response = conn.getresponse()
        raw = response.fp.read() if response.status == 101 else response.read()
        conn.close()
        return raw

    def lifecycle(self) -> dict[str, float]:
        name = f"sandbox-exporter-overhead-{uuid.uuid4().hex[:8]}"
        body = {
            "Image": self.image,
            "Cmd": list(DEFAULT_KEEPALIVE),
            "User": "65534:65534",
            "NetworkDisabled": True,
            "StopSignal": "SIGTERM",
            "Labels": {"sandbox-exporter.io/managed": "true"},
            "HostConfig": {
                "NetworkMode": "none",
                "ReadonlyRootfs": True,
                "CapDrop": ["ALL"],
                "SecurityOpt": ["no-new-privileges"],
                "PidsLimit": 64,
                "Memory": 256 * 1024 * 1024,
                "MemorySwap": 256 * 1024 * 1024,
                "NanoCpus": 1_000_000_000,
                "Tmpfs": {"/tmp": "rw,noexec,nosuid,size=16m"},
            },
        }
        out: dict[str, float] = {}
        t = time.monotonic()
        cid = self.call("POST", f"/containers/create?name={name}", body)["Id"]
        out["create"] = time.monotonic() - t
        t = time.monotonic()
        self.call("POST", f"/containers/{cid}/start")  # 204 once its process runs
        out["start"] = time.monotonic() - t
        t = time.monotonic()
        exec_body = {"Cmd": ["echo", "hello"], "AttachStdout": True, "AttachStderr": True}
        exec_id = self.call("POST", f"/containers/{cid}/exec", exec_body)["Id"]
        stream = self.exec_stream(exec_id)
        code = self.call("GET", f"/exec/{exec_id}/json")["ExitCode"]
        out["exec"] = time.monotonic() - t
        assert code == 0, code
        assert b"hello" in stream, stream
        t = time.monotonic()
        self.call("POST", f"/containers/{cid}/stop?t=10")
        out["stop"] = time.monotonic() - t
        t = time.monotonic()
        self.call("DELETE", f"/containers/{cid}?force=1&v=1")
        out["remove"] = time.monotonic() - t
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=30, help="lifecycles per side (default 30)")
    parser.add_argument("--image", default="sandbox-exporter/busybox:local")
    parser.add_argument("--backend", choices=("docker", "podman"), default="docker")
    parser.add_argument("--url", help="the engine's unix:// socket (default: DOCKER_HOST)")
    args = parser.parse_args()
    configure_logging("warning", "logfmt")
    url = args.url or os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    config = parse_config(
        {
            "defaults": {"image": args.image, "pull_policy": "never"},
            "targets": [
                {"name": "overhead", "backend": args.backend, args.backend: {"base_url": url}}
            ],
        }
    )
    minimal = MinimalClient(url.removeprefix("unix://"), args.image)
    measured = interleaved(config.targets[0], minimal.lifecycle, args.n)
    if measured is None:
        return 1
    ours, theirs = measured
    print(
        f"measurement overhead on {args.backend} ({url}): exporter (docker SDK, runner, "
        "threads) vs minimal raw client"
    )
    print(machine_line())
    print(f"N = {args.n} lifecycles each, interleaved ABAB, image {args.image}")
    overhead_table(ours, theirs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
