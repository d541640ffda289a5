"""The worker process that holds a backend whose calls cannot run on the exporter's
threads (see calls.py). It runs one call at a time, as messages on a pipe:
`(method, args, deadline)` in, `(True, value)` or `(False, error)` out; `None` in
closes the backend and ends the process.

It is killed, with its process group, when a call outlives its deadline; and the
kernel kills it when the exporter dies (PR_SET_PDEATHSIG), even one frozen in a
native call that holds its interpreter.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import signal
import sys
from multiprocessing.connection import Connection
from typing import Any

from exporter.backends.base import BackendOptions, Deadline
from exporter.config.settings import Timeouts

PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the exporter went before the request took hold
        os._exit(1)


def serve(
    connection: Connection,
    module: str,
    options: BackendOptions,
    timeouts: Timeouts,
    parent: int,
) -> None:
    _die_with(parent)
    os.setsid()  # its own process group: killing the group ends what it ran too
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the exporter decides when it stops
    from exporter.probing.calls import portable

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
