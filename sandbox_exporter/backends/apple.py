"""Apple `container` (macOS, one lightweight VM per container) through its CLI.

Every call is one `container` child process in its own process group, given what
is left of the call's deadline; at the deadline the group is killed (so is a
child the CLI started), and `kill(sandbox)` kills the group of a call on that
sandbox that the runner gave up on.

create = `container create --name N -l k=v... -c CPUS -m MBM [--read-only]
         [--cap-drop CAP]... IMAGE KEEPALIVE...` (the CLI pulls a missing image
         itself; `pull_policy: always` runs `container image pull` first);
start  = `container start N`;
exec   = `container exec N ARGS...`: its exit code is the process's, its output
         read up to the cap (base.py);
stop   = `container stop -t GRACE N`;
remove = `container delete -f N`, then `list` confirms it is gone.

There is no label filter in `container list`: the exporter's sandboxes are found
by reading every container's labels (`list --all --format json`, the 1.x shape
and the pre-1.0 one). An API server that is not running (`container system
start` not done) is `BackendUnavailable`, with the CLI's hint in the message.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Sequence

from pydantic import Field

from sandbox_exporter.backends.base import (
    BackendError,
    BackendKind,
    BackendOptions,
    BackendUnavailable,
    Capabilities,
    Deadline,
    ExecResult,
    Found,
    Images,
    ManagedSandbox,
    NotFound,
    Output,
    SandboxRef,
    SandboxSpec,
    is_managed,
    read_output,
)
from sandbox_exporter.config.settings import Timeouts

DEFAULT_KEEPALIVE = ("sh", "-c", "trap 'exit 0' TERM; sleep 2147483647 & wait")
# what the CLI says when its API server is not there (any command but `system status`)
API_SERVER_DOWN = ("XPC connection error", "container system start", "apiserver is not running")
NOT_FOUND = "Error: notFound"


class AppleOptions(BackendOptions):
    binary: str = Field("container", min_length=1)
    """The `container` CLI: a name looked up on PATH, or a path."""
    read_only: bool = True
    """Run with `--read-only`: the root filesystem cannot be written."""
    cap_drop: tuple[str, ...] = ("ALL",)
    """Capabilities dropped (`--cap-drop` each)."""
    keepalive: tuple[str, ...] = Field(DEFAULT_KEEPALIVE, min_length=1)
    """What the container runs between start and stop; it must exit at once on SIGTERM."""


def not_on_path(binary: str) -> str:
    return f"Apple's `{binary}` CLI not found on PATH (it runs only on macOS)"


def find_here(binary: str = "container") -> Found | NotFound:
    """Found when the CLI is on PATH, answers `--version` and its API server runs.
    The OS is not looked at: the CLI is."""
    path = shutil.which(binary)
    if path is None:
        return NotFound(not_on_path(binary))
    try:
        version = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=5, check=False
        )
        if version.returncode != 0:
            return NotFound(f"`{path} --version` failed: {_words(version.stderr, version.stdout)}")
        status = subprocess.run(
            [path, "system", "status"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return NotFound(f"`{path}` did not run: {exc}")
    if status.returncode != 0:
        words = _words(status.stderr, status.stdout)
        return NotFound(
            f"the container API server is not running ({path} system status: "
            f"{words}); run `container system start`"
        )
    return Found({}, f"apple container at {path}")


def _words(*texts: str) -> str:
    """The CLI's message: its stderr, else its stdout, on one line."""
    for text in texts:
        if text.strip():
            return " ".join(text.split())
    return "no message"


def parse_list(text: str) -> list[tuple[str, dict[str, str], str]]:
    """(id, labels, state) of each container in `list --all --format json`: the 1.x
    shape (`status` a dict with `state`, a top-level `id`) and the pre-1.0 one
    (`status` a bare string, the id only in `configuration`)."""
    try:
        entries = json.loads(text or "[]")
    except ValueError as exc:
        raise BackendError(f"container list: not JSON: {exc}: {text[:200]!r}") from exc
    if not isinstance(entries, list):
        raise BackendError(f"container list: expected a JSON list, got {text[:200]!r}")
    out = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        configuration = entry.get("configuration") or {}
        ident = entry.get("id") or configuration.get("id")
        if not isinstance(ident, str):
            continue
        labels = configuration.get("labels") or {}
        status = entry.get("status")
        state = status.get("state", "unknown") if isinstance(status, dict) else str(status)
        out.append((ident, {str(k): str(v) for k, v in labels.items()}, state))
    return out


class AppleBackend:
    def __init__(self, options: AppleOptions, timeouts: Timeouts) -> None:
        self.options = options
        self._children: dict[str, set[subprocess.Popen[bytes]]] = {}  # for `kill`
        self._lock = threading.Lock()

    # -- protocol ----------------------------------------------------------------

    def describe(self, image: str | None, deadline: Deadline) -> dict[str, str]:
        """What `bench --json` records of the engine: the CLI's own version line."""
        return {"container_version": self._call("", ["--version"], deadline).stdout.strip()}

    def ping(self, deadline: Deadline) -> None:
        if shutil.which(self.options.binary) is None:
            raise BackendUnavailable(not_on_path(self.options.binary))
        self._call("", ["--version"], deadline)
        status = self._run("", ["system", "status"], deadline)
        if status.returncode != 0:
            raise BackendUnavailable(
                f"the container API server is not running: {_words(status.stderr, status.stdout)}"
                " (start it with `container system start`)"
            )

    def create(self, spec: SandboxSpec, deadline: Deadline) -> SandboxRef:
        if spec.pull_policy == "always":
            self._call(spec.name, ["image", "pull", spec.image], deadline)
        args = ["create", "--name", spec.name]
        for key, value in spec.labels.items():
            args += ["-l", f"{key}={value}"]
        args += ["-c", str(max(1, math.ceil(spec.cpus))), "-m", f"{spec.memory_mb}M"]
        if self.options.read_only:
            args.append("--read-only")
        for cap in self.options.cap_drop:
            args += ["--cap-drop", cap]
        args += [spec.image, *self.options.keepalive]
        self._call(spec.name, args, deadline)
        return SandboxRef(spec.name)

    def start(self, sandbox: SandboxRef, deadline: Deadline) -> None:
        self._call(sandbox.name, ["start", sandbox.name], deadline)

    def exec(self, sandbox: SandboxRef, command: Sequence[str], deadline: Deadline) -> ExecResult:
        done = self._run(sandbox.name, ["exec", sandbox.name, *command], deadline, merge=True)
        output = done.stdout
        if done.returncode != 0:
            self._raise_if_cli_error("exec", output)
        return ExecResult(done.returncode, output)

    def stop(self, sandbox: SandboxRef, grace_seconds: float, deadline: Deadline) -> None:
        grace = str(max(0, math.ceil(grace_seconds)))
        self._call(sandbox.name, ["stop", "-t", grace, sandbox.name], deadline)

    def remove(self, sandbox: SandboxRef, deadline: Deadline) -> None:
        self.kill(sandbox)  # a call the runner gave up on must not re-create it
        done = self._run(sandbox.name, ["delete", "-f", sandbox.name], deadline)
        if done.returncode != 0:
            words = _words(done.stderr, done.stdout)
            if NOT_FOUND not in words:
                self._raise("delete", words)
        if any(ident == sandbox.name for ident, _, _ in self._list(deadline)):
            raise BackendError(f"container delete -f {sandbox.name}: it is still listed")

    def list_managed(self, target: str, deadline: Deadline) -> list[ManagedSandbox]:
        return [
            ManagedSandbox.from_labels(ident, labels)
            for ident, labels, _ in self._list(deadline)
            if is_managed(labels, target)
        ]

    def kill(self, sandbox: SandboxRef) -> None:
        """SIGKILL the process group of every CLI call on this sandbox still running."""
        with self._lock:
            children = list(self._children.get(sandbox.name, ()))
        for child in children:
            _kill_group(child)

    def close(self) -> None:
        with self._lock:
            children = [c for group in self._children.values() for c in group]
        for child in children:
            _kill_group(child)

    # -- helpers -----------------------------------------------------------------

    def _list(self, deadline: Deadline) -> list[tuple[str, dict[str, str], str]]:
        done = self._call("", ["list", "--all", "--format", "json"], deadline)
        return parse_list(done.stdout)

    def _call(
        self, name: str, args: list[str], deadline: Deadline
    ) -> subprocess.CompletedProcess[str]:
        """`container ARGS`, which must succeed."""
        done = self._run(name, args, deadline)
        if done.returncode != 0:
            self._raise(args[0], _words(done.stderr, done.stdout))
        return done

    def _raise(self, what: str, words: str) -> None:
        self._raise_if_cli_error(what, words)
        raise BackendError(f"container {what}: {words}")

    @staticmethod
    def _raise_if_cli_error(what: str, words: str) -> None:
        if any(sign in words for sign in API_SERVER_DOWN):
            raise BackendUnavailable(f"the container API server is not running: {_words(words)}")
        if words.lstrip().startswith("Error: "):
            raise BackendError(f"container {what}: {_words(words)}")

    def _run(
        self, name: str, args: list[str], deadline: Deadline, *, merge: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """`container ARGS` as the leader of its own process group, known to `kill`
        while it runs, killed with its group at the deadline. `merge`: a command's
        output (`exec`), stderr into stdout, read up to the output cap (base.py)."""
        command = [self.options.binary, *args]
        if deadline.expired:
            raise BackendError(f"container {args[0]}: no time left before the deadline")
        try:
            child = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if merge else subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise BackendUnavailable(f"cannot run {self.options.binary}: {exc}") from exc
        with self._lock:
            self._children.setdefault(name, set()).add(child)
        try:
            try:
                if merge:
                    out, err = _read_answer(child, deadline), ""
                else:
                    answer = child.communicate(timeout=deadline.remaining())
                    out, err = (text.decode(errors="replace") for text in answer)
            except subprocess.TimeoutExpired:
                raise BackendError(
                    f"container {' '.join(args[:2])} did not finish within the deadline; killed"
                ) from None
        except BackendError:
            _kill_group(child)
            child.communicate()
            raise
        finally:
            with self._lock:
                group = self._children.get(name)
                if group is not None:
                    group.discard(child)
                    if not group:
                        del self._children[name]
        return subprocess.CompletedProcess(command, child.returncode, out, err)


def _read_answer(child: subprocess.Popen[bytes], deadline: Deadline) -> str:
    """A command's output, from `child`'s stdout within the output cap, once `child`
    has exited; TimeoutExpired when the deadline comes first."""
    assert child.stdout is not None
    output = Output()
    if not read_output(child.stdout, deadline, output):
        raise subprocess.TimeoutExpired(child.args, deadline.remaining())
    child.wait(timeout=deadline.remaining())
    child.stdout.close()
    return output.text()


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)


KIND = BackendKind(
    name="apple",
    options=AppleOptions,
    factory=AppleBackend,
    capabilities=Capabilities(
        images=Images.ENGINE, remote=False, needs_root=False, thread_safe=True
    ),
    aliases=("apple-container",),
    discover=find_here,
    summary="Apple `container` on macOS: one lightweight VM per container, through its CLI",
)
