"""Where an exec's output goes missing: the engine, or the client reading it.

    python benchmarks/exec_output.py --url unix:///…/podman.sock [--execs 2000] [--busy 2]

The docker SDK's `exec_start(socket=True)` (and its `exec_run`, which reads the
same way) parses the HTTP response's headers through http.client's buffered
reader, then reads the multiplexed output from the raw socket beneath it. Bytes
the engine sent right behind the headers, in the same read, sit in that buffer
and are never seen on the socket: when they are the whole of a short command's
output, the exec "answers" nothing, exit code 0.

In one container, this makes `--execs` execs of `echo hello` and, for each, looks
at both: what the buffer held when the headers had been parsed, and what the
raw socket gave after. It counts the execs whose output the raw-socket reader
lost (empty, or short) and, of those, how many had it in the buffer (the
client's loss) or nowhere (the engine's). `--busy N` runs N processes that spin
on the CPUs meanwhile, as a loaded exporter host does: the more the client is
late to read the headers, the likelier the output is already behind them.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import struct
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine_line

IMAGE = "sandbox-exporter/busybox:local"
KEEPALIVE = ["sh", "-c", "trap 'exit 0' TERM; sleep 2147483647 & wait"]


def frames(data: bytes) -> bytes:
    """The payload of the multiplexed frames in `data` (a short tail is ignored)."""
    out = b""
    while len(data) >= 8:
        _, length = struct.unpack(">BxxxL", data[:8])
        out += data[8 : 8 + length]
        data = data[8 + length :]
    return out


def read_all(sock: Any) -> bytes:
    data = b""
    while chunk := sock.read(65536):
        data += chunk
    return data


def one_exec(api: Any, container: str) -> tuple[bytes, bytes]:
    """(what the buffer held behind the headers, what the raw socket gave after)."""
    exec_id = api.exec_create(container, ["echo", "hello"], stdout=True, stderr=True)["Id"]
    response = api._post_json(  # the SDK's own request for exec_start
        api._url("/exec/{0}/start", exec_id),
        headers={"Connection": "Upgrade", "Upgrade": "tcp"},
        data={"Tty": False, "Detach": False},
        stream=True,
    )
    sock = api._get_raw_response_socket(response)
    buffered_reader = response.raw._fp.fp
    raw = sock._sock  # the socket under the SDK's SocketIO
    raw.setblocking(False)  # peek must not wait for the socket: only what is buffered
    try:
        buffered = buffered_reader.peek()
    except BlockingIOError:
        buffered = b""
    finally:
        raw.setblocking(True)
    after = read_all(sock)
    response.close()
    return buffered, after


def spin() -> None:
    while True:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the engine's unix:// socket")
    parser.add_argument("--execs", type=int, default=2000)
    parser.add_argument("--busy", type=int, default=0, help="processes spinning meanwhile")
    args = parser.parse_args()
    import docker

    api = docker.APIClient(base_url=args.url, version="auto", timeout=60)
    engine = api.version().get("Components", [{}])[0].get("Name", "engine")
    version = api.version().get("Version")
    container = api.create_container(IMAGE, command=KEEPALIVE, network_disabled=True)["Id"]
    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.busy)]
    lost_buffered = lost_nowhere = had_buffered = 0
    began = time.monotonic()
    try:
        api.start(container)
        for process in spinners:
            process.start()
        for _ in range(args.execs):
            buffered, after = one_exec(api, container)
            had_buffered += bool(frames(buffered))
            if frames(after).strip() != b"hello":
                if frames(buffered + after).strip() == b"hello":
                    lost_buffered += 1
                else:
                    lost_nowhere += 1
    finally:
        for process in spinners:
            process.kill()
        api.remove_container(container, force=True)
    print(
        f"exec output: {args.execs} execs of `echo hello` on {engine} {version} ({args.url}), "
        f"{args.busy} spinning processes, {time.monotonic() - began:.0f} s"
    )
    print(machine_line())
    print(f"output already behind the headers, in http.client's buffer: {had_buffered}")
    print(
        f"lost by a raw-socket reader (the SDK's socket=True, exec_run): "
        f"{lost_buffered + lost_nowhere}; in the buffer: {lost_buffered}, "
        f"nowhere (the engine's): {lost_nowhere}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
