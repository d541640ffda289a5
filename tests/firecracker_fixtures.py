"""Firecracker VMM processes for tests: the real binary or the double (tests/firecracker_double.py),
spawned the same way (`<binary> --api-sock api.sock --id <id>` in the VM's work directory)
and driven over the API socket with httpx, as the backend does."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.firecracker_double import double_binary
from tests.helpers import wait_for

__all__ = [
    "Answer",
    "VmmProcess",
    "double_binary",
    "kvm_missing",
    "read_http_response",
    "without_timestamps",
]

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9} ", re.MULTILINE)


def kvm_missing() -> str | None:
    """Why the real Firecracker cannot start a guest here, or None."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not there or not usable"
    return None


def without_timestamps(text: str) -> str:
    """A Firecracker log without the timestamps that start its lines."""
    return TIMESTAMP.sub("", text)


@dataclass(frozen=True)
class Answer:
    """What the API answered: the status, the fault message or JSON body, and whether the
    response carried `Deprecation: true`."""

    status: int
    body: Any
    deprecation: bool = False


class VmmProcess:
    """One VMM process in `workdir`; its standard output and error go to files there."""

    def __init__(self, binary: Path, workdir: Path, *extra: str, vm_id: str = "vm1") -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = workdir / "vmm.stdout"
        self.stderr_path = workdir / "vmm.stderr"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [str(binary), "--api-sock", "api.sock", "--id", vm_id, *extra],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        self.api_sock = workdir / "api.sock"
        self.client: httpx.Client | None = None
        try:
            wait_for(
                lambda: self.api_sock.exists() or self.proc.poll() is not None,
                timeout=10,
                what="the API socket",
            )
        except BaseException:
            self.kill()
            raise
        if self.proc.poll() is None:
            self.client = httpx.Client(
                transport=httpx.HTTPTransport(uds=str(self.api_sock)),
                base_url="http://localhost",
                timeout=10,
            )

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Answer:
        """Send one request; `body` is sent as JSON, `raw` as is (an empty body is sent too)."""
        assert self.client is not None, "the VMM did not start"
        content = raw if raw is not None else None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if content is not None else {}
        response = self.client.request(method, path, content=content, headers=headers)
        answer: Any = response.text
        try:
            parsed = response.json() if response.content else None
            answer = parsed.get("fault_message", parsed) if isinstance(parsed, dict) else parsed
        except ValueError:
            pass
        return Answer(response.status_code, answer, response.headers.get("Deprecation") == "true")

    def put(self, path: str, body: Any) -> Answer:
        return self.request("PUT", path, body)

    def raw_exchange(self, *requests: bytes) -> list[bytes]:
        """Send raw requests on one new connection, each after the previous answer; return
        the raw responses (a 100 Continue counts as one)."""
        answers = []
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(10)
            conn.connect(str(self.api_sock))
            reader = conn.makefile("rb")
            for request in requests:
                conn.sendall(request)
                answers.append(read_http_response(reader))
                if answers[-1].startswith(b"HTTP/1.1 100 "):
                    answers.append(read_http_response(reader))
        return answers

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def errors(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait(self, timeout: float = 10) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL it if it still runs, and reap it (a test's teardown)."""
        if self.client is not None:
            self.client.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def read_http_response(reader: Any) -> bytes:
    """One HTTP response, read off a binary file object: the head, then Content-Length bytes."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = reader.readline()
        if not line:
            raise ConnectionError(f"connection closed after {head!r}")
        head += line
    match = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
    return head + (reader.read(int(match.group(1))) if match else b"")
