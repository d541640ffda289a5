"""The worker process that holds a backend whose calls cannot run on the exporter's
threads (see calls.py): `python -m sandbox_exporter.probing.worker FD PARENT_PID`.

On the connection at FD it first receives what to build, `(module, options,
timeouts)`, then runs one call at a time: `(method, args, deadline)` in,
`(True, value)` or `(False, error)` out; `None` in closes the backend and ends it.

It is killed, with its process group, when a call outlives its deadline; and the
kernel kills it when the exporter dies (PR_SET_PDEATHSIG), even while it is frozen
in a native call that holds its interpreter.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import signal
import sys
from multiprocessing.connection import Connection
from typing import Any

from sandbox_exporter.backends.base import Deadline

PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the exporter went before the request took hold
        os._exit(1)


def serve(connection: Connection) -> None:
    from sandbox_exporter.probing.calls import portable

    module, options, timeouts = connection.recv()
    backend: Any = None
    try:
        while True:
            try:
                message = connection.recv()
            except (EOFError, OSError):
                return  # the exporter is gone
            if message is None:
                return
            method, args, deadline_at = message
            try:
                if backend is None:
                    backend = importlib.import_module(module).KIND.build(options, timeouts)
                value = getattr(backend, method)(*args, Deadline(deadline_at))
            except BaseException as exc:  # noqa: BLE001 - every error goes back to the caller
                connection.send((False, portable(exc)))
            else:
                connection.send((True, value))
    finally:
        if backend is not None:
            backend.close()


def main(argv: list[str]) -> int:
    fd, parent = int(argv[0]), int(argv[1])
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the exporter decides when it stops
    serve(Connection(fd))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
