"""The guest's side, over vsock (docs/backends/firecracker-guest.md): the `CONNECT` handshake
through the VMM's vsock socket, the wait until the guest's listener answers, and a
command run as `RUN`, answered with `OUT` frames and `EXIT`."""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Sequence

from sandbox_exporter.backends.base import (
    BackendError,
    BackendTimeout,
    Deadline,
    ExecResult,
    Output,
)
from sandbox_exporter.backends.firecracker.host import log_tail
from sandbox_exporter.backends.firecracker.options import FirecrackerOptions
from sandbox_exporter.backends.firecracker.vm import (
    POLL,
    VSOCK_SOCKET,
    Vm,
    check_peer,
    for_reporting,
)


class Stream:
    """Lines and counted bytes from a socket, each read bounded by a deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self, deadline: Deadline) -> bool:
        self.sock.settimeout(max(deadline.remaining(), 0.001))
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def line(self, deadline: Deadline, limit: int = 256) -> bytes | None:
        """One line without its '\\n'; None at end-of-file."""
        while b"\n" not in self.buffer:
            if len(self.buffer) > limit:
                raise BackendError(f"the guest sent a line over {limit} bytes")
            if not self._fill(deadline):
                return None
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        return line

    def exactly(self, count: int, deadline: Deadline) -> bytes | None:
        while len(self.buffer) < count:
            if not self._fill(deadline):
                return None
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data


def run_request(command: Sequence[str]) -> bytes:
    """The `RUN` request for `command`."""
    args = [arg.encode() for arg in command]
    return b"RUN %d\n" % len(args) + b"".join(b"%d\n%s" % (len(arg), arg) for arg in args)


def read_response(stream: Stream, deadline: Deadline) -> ExecResult:
    """`OUT` frames then `EXIT`; BackendError on anything else, and on output past
    the contract's cap (base.MAX_OUTPUT), refused on the frame's header."""
    output = Output()
    while True:
        line = stream.line(deadline)
        if line is None:
            raise BackendError(
                "the guest closed the connection before EXIT; output so far: "
                f"{output.text()[-500:]!r}"
            )
        word, _, value = line.decode(errors="replace").partition(" ")
        if word == "OUT" and value.isdigit():
            output.expect(int(value))
            data = stream.exactly(int(value), deadline)
            if data is None:
                raise BackendError("the guest closed the connection inside an OUT frame")
            output.add(data)
        elif word == "EXIT" and value.isdigit():
            return ExecResult(int(value), output.text())
        elif word == "ERR":
            raise BackendError(f"the guest's listener refused the request: {value}")
        else:
            raise BackendError(f"the guest sent {line[:80]!r}, not a frame of the contract")


def connect(vm: Vm, port: int, attempt: Deadline, deadline: Deadline) -> socket.socket | None:
    """A connection to the guest's listener after `CONNECT`/`OK`, held by `vm` (for its
    `shut`) until closed through it; None when the guest closed it (nothing listens
    yet); TimeoutError when nothing came by `attempt`."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    vm.hold(sock)
    try:
        sock.settimeout(max(min(attempt.remaining(), deadline.remaining()), 0.001))
        sock.connect(vm.path(VSOCK_SOCKET))
        check_peer(sock, vm, "vsock")
        sock.sendall(b"CONNECT %d\n" % port)
        stream = Stream(sock)
        line = stream.line(Deadline(min(attempt.at, deadline.at)))
    except BaseException:
        vm.close(sock)
        raise
    if line is None:
        vm.close(sock)
        return None
    if not line.startswith(b"OK "):
        vm.close(sock)
        raise BackendError(f"the vsock device answered {line[:80]!r} to CONNECT, not OK")
    if stream.buffer:  # the guest never speaks first; keep nothing unread
        vm.close(sock)
        raise BackendError("the guest sent bytes before the request")
    return sock


def wait_for_guest(vm: Vm, options: FirecrackerOptions, deadline: Deadline) -> None:
    """Until the guest's listener accepts on the port: each attempt bounded by
    `vsock_attempt`, a closed one (nothing listens yet) tried again. A failure says
    what the attempts met, each kind counted, in the order first met."""
    met: Counter[str] = Counter()
    deadline = for_reporting(deadline)
    while not deadline.expired:
        why = vm.died("while waiting for the guest")
        if why is not None:
            raise BackendError(why)
        try:
            sock = connect(vm, options.guest_port, Deadline.after(options.vsock_attempt), deadline)
        except TimeoutError:
            met["accepted and then nothing came"] += 1
            continue
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            met[f"the vsock socket: {exc.strerror}"] += 1
        except OSError as exc:
            met[f"the vsock socket failed: {exc}"] += 1
        else:
            if sock is not None:
                vm.close(sock)
                vm.answered = True
                return
            met["closed the connection without OK"] += 1
        time.sleep(min(POLL, deadline.remaining()))
    attempts = ", ".join(f"{count} {what}" for what, count in met.items())
    raise BackendTimeout(not_answering(vm, options.guest_port, attempts or "no attempt was made"))


def run(vm: Vm, port: int, command: Sequence[str], deadline: Deadline) -> ExecResult:
    """`command` run by the guest's listener: its output and exit status."""
    sock: socket.socket | None = None
    try:
        sock = connect(vm, port, deadline, deadline)
        if sock is None:
            raise BackendError(not_answering(vm, port, "1 closed the connection without OK"))
        sock.settimeout(max(deadline.remaining(), 0.001))
        sock.sendall(run_request(command))
        return read_response(Stream(sock), deadline)
    except TimeoutError as exc:
        raise BackendError("the guest did not finish the command within the deadline") from exc
    except (OSError, BackendError) as exc:
        why = vm.died_after_drop("during the command", deadline)
        if why is not None:
            raise BackendError(why) from exc
        if isinstance(exc, BackendError):
            raise
        raise BackendError(f"the connection to the guest failed: {exc}") from exc
    finally:
        if sock is not None:
            vm.close(sock)


def not_answering(vm: Vm, port: int, last: str) -> str:
    tail = log_tail(vm.log)
    message = f"guest did not answer on vsock port {port} (attempts: {last})"
    return message + (f"; its log: {tail}" if tail else "")
