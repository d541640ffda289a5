"""Hyperlight micro-VMs through the `hyperlight-sandbox` Python SDK (extra `[hyperlight]`):
a Wasm guest (the Python guest) in a micro-VM on KVM or MSHV, no image, no daemon.

Phases, with `start_mode: boot` (the default):

create = the SDK's `Sandbox` object built: guest module resolved, heap and stack set.
         The SDK is lazy here: no hypervisor is touched yet.
start  = the micro-VM initialised by a first trivial run (`pass`).
exec   = the configured `code` run in the guest: `ExecResult(exit_code, stdout + stderr)`,
         checked against the target's `expect_output` as for every backend. The target's
         `command` means nothing to this backend: the guest runs Python source, not a
         process, so `code` takes its place. Output past the cap (base.py) fails it: the
         SDK hands a run's output over whole, so the worker holds it, but it goes no
         further.
stop   = the Sandbox released (the exporter's last reference dropped, which frees the
         micro-VM), confirmed by its being collected.
remove = whatever is left for that name released; nothing there is not an error.

Before the first run, `ping` (the runner's untimed check that the backend answers)
runs a trivial guest once per worker process, until one has run: a hypervisor that
cannot run guests is thus reported as `unavailable` before any sandbox is made, and
`bench` skips the backend with the SDK's words.

With `start_mode: restore`, the warm path: at set-up (that first `ping` of a worker
process) one Sandbox is built, run once and snapshotted.
Then create = the sandbox handed out (nothing built), start = `restore()` of that
snapshot (what is timed as `start`), exec = the code run, stop = `restore()` again so
nothing of the run is kept, and the Sandbox is released when the backend closes.

Native calls may hold the interpreter, so the backend is `thread_safe=False`: it lives
in a worker process that a timeout kills. Every native failure is a plain
`RuntimeError`; "No Hypervisor was found" and "Unknown KVM VCPU exit" (a hypervisor
that cannot run guests, as KVM under kvm-pvm) are `BackendUnavailable`, any other one a
`BackendError`, each with the SDK's words.

The SDK is imported in the worker only, when the backend is built: importing the Python
guest copies a 44 MB file into a cache directory, which config loading and discovery
must not do (they look with `importlib.util.find_spec`, which imports nothing).

`sandbox_class` is a seam for tests: `module:attribute` of a class built as the SDK's
`Sandbox` is (keyword arguments) with its `run`, `snapshot` and `restore`.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import os
import sys
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

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
)
from sandbox_exporter.config.settings import Timeouts

PACKAGES = ("hyperlight_sandbox", "hyperlight_sandbox_backend_wasm", "python_guest")
HYPERVISORS = ("/dev/kvm", "/dev/mshv")
GUEST_MODULES = {"python": "python_guest.path"}
TRIVIAL = "pass"
# what the SDK says when no hypervisor here can run a guest
UNAVAILABLE_WORDS = ("No Hypervisor was found", "Unknown KVM VCPU exit")


class HyperlightOptions(BackendOptions):
    guest: Literal["python"] = "python"
    """The guest the micro-VM runs: the Wasm Python guest."""
    code: str = "print('hello')"
    """The Python code the exec phase runs in the guest."""
    start_mode: Literal["boot", "restore"] = "boot"
    """`boot` the guest each run, or `restore` it from a snapshot taken once."""
    heap_size: str | None = None
    """The guest's heap, e.g. `64Mi`; null: the SDK's default."""
    stack_size: str | None = None
    """The guest's stack, e.g. `1Mi`; null: the SDK's default."""
    sandbox_class: str | None = None
    """For tests: `module:attribute` used in place of the SDK's Sandbox."""


def missing_here() -> str | None:
    """Why Hyperlight cannot be tried here (packages, hypervisor device); None if it can.
    Imports nothing."""
    absent = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if absent:
        return (
            f"the Python packages are not installed ({', '.join(absent)}): "
            "install sandbox-exporter[hyperlight]"
        )
    if not any(os.path.exists(device) for device in HYPERVISORS):
        return f"no hypervisor device here ({' or '.join(HYPERVISORS)})"
    return None


def find_here() -> Found | NotFound:
    if not sys.platform.startswith("linux"):
        return NotFound(f"needs KVM or MSHV on Linux; this is {sys.platform}")
    why = missing_here()
    if why is not None:
        return NotFound(why)
    device = next(d for d in HYPERVISORS if os.path.exists(d))
    return Found({}, f"the local hypervisor ({device})")


def native_error(exc: BaseException, doing: str) -> BackendError:
    """The SDK's error as the runner reads it: unavailable when no hypervisor runs guests."""
    words = str(exc).strip() or type(exc).__name__
    if isinstance(exc, RuntimeError) and any(w in words for w in UNAVAILABLE_WORDS):
        return BackendUnavailable(f"hyperlight cannot run a guest here: {words}")
    return BackendError(f"hyperlight {doing}: {words}")


def _load_class(path: str | None) -> Any:
    if path is None:
        from hyperlight_sandbox import Sandbox

        return Sandbox
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass
class _Warm:
    sandbox: Any
    snapshot: Any


class HyperlightBackend:
    def __init__(self, options: HyperlightOptions, timeouts: Timeouts) -> None:
        self.options = options
        self.sandbox_class = _load_class(options.sandbox_class)
        self._live: dict[str, Any] = {}  # name -> Sandbox
        self._warm: _Warm | None = None  # start_mode: restore
        self._proven = False  # a guest has run in this worker

    # -- protocol ----------------------------------------------------------------

    def describe(self, image: str | None, deadline: Deadline) -> dict[str, str]:
        """What `bench --json` records of the sandbox library: its version."""
        from importlib import metadata

        try:
            return {"hyperlight_sandbox": metadata.version("hyperlight-sandbox")}
        except metadata.PackageNotFoundError:
            return {}

    def ping(self, deadline: Deadline) -> None:
        """Unavailable unless the packages and a hypervisor device are here and, until
        one has once run in this worker, a trivial guest runs (the restore mode's set-up)."""
        if self.options.sandbox_class is None:
            why = missing_here()
            if why is not None:
                raise BackendUnavailable(f"hyperlight: {why}")
        if self._proven:
            return
        if self.options.start_mode == "restore":
            self._set_up()
        else:
            self._run(self._build(), TRIVIAL, "trial run")
            gc.collect()
        self._proven = True

    def create(self, spec: SandboxSpec, deadline: Deadline) -> SandboxRef:
        if self.options.start_mode == "restore":
            self._live[spec.name] = self._set_up().sandbox
        else:
            self._live[spec.name] = self._build()
        return SandboxRef(spec.name)

    def start(self, sandbox: SandboxRef, deadline: Deadline) -> None:
        live, warm = self._get(sandbox.name), self._warm
        if warm is not None:
            self._native("restore", lambda: live.restore(warm.snapshot))
        else:
            self._run(live, TRIVIAL, "start")

    def exec(self, sandbox: SandboxRef, command: Sequence[str], deadline: Deadline) -> ExecResult:
        """`command` is not used: the guest runs the configured `code`."""
        result = self._run(self._get(sandbox.name), self.options.code, "exec")
        output = Output()
        for text in (result.stdout, result.stderr):
            output.add((text or "").encode(errors="replace"))
        return ExecResult(int(result.exit_code), output.text())

    def stop(self, sandbox: SandboxRef, grace_seconds: float, deadline: Deadline) -> None:
        self._release(sandbox.name)

    def remove(self, sandbox: SandboxRef, deadline: Deadline) -> None:
        self._release(sandbox.name)

    def list_managed(self, target: str, deadline: Deadline) -> list[ManagedSandbox]:
        return []  # nothing outlives the worker process: its micro-VMs die with it

    def kill(self, sandbox: SandboxRef) -> None:
        """Never called: a worker's calls are ended by killing the worker."""

    def close(self) -> None:
        for name in list(self._live):
            self._live.pop(name, None)
        self._warm = None
        gc.collect()

    # -- helpers -----------------------------------------------------------------

    def _build(self) -> Any:
        kwargs: dict[str, Any] = {"backend": "wasm", "module": GUEST_MODULES[self.options.guest]}
        if self.options.heap_size is not None:
            kwargs["heap_size"] = self.options.heap_size
        if self.options.stack_size is not None:
            kwargs["stack_size"] = self.options.stack_size
        return self._native("build the Sandbox", lambda: self.sandbox_class(**kwargs))

    def _set_up(self) -> _Warm:
        if self._warm is None:
            sandbox = self._build()
            self._run(sandbox, TRIVIAL, "set-up")
            snapshot = self._native("snapshot", sandbox.snapshot)
            self._warm = _Warm(sandbox, snapshot)
        return self._warm

    def _run(self, sandbox: Any, code: str, doing: str) -> Any:
        result = self._native(doing, lambda: sandbox.run(code))
        if doing != "exec" and int(result.exit_code) != 0:
            raise BackendError(
                f"hyperlight {doing}: the guest exited {result.exit_code}: "
                f"{(result.stderr or result.stdout or '').strip()}"
            )
        return result

    @staticmethod
    def _native(doing: str, call: Any) -> Any:
        try:
            return call()
        except (RuntimeError, ValueError, TypeError, OSError) as exc:
            raise native_error(exc, doing) from None

    def _get(self, name: str) -> Any:
        live = self._live.get(name)
        if live is None:
            raise BackendError(f"hyperlight: no sandbox {name!r} in this worker")
        return live

    def _release(self, name: str) -> None:
        live = self._live.pop(name, None)
        if live is None:
            return
        warm = self._warm
        if warm is not None and live is warm.sandbox:
            self._native("restore", lambda: warm.sandbox.restore(warm.snapshot))
            return  # the warm sandbox stays for the next run; released at close
        gone = weakref.ref(live)
        del live
        gc.collect()
        if gone() is not None:
            raise BackendError(f"hyperlight: the Sandbox of {name!r} is still referenced")


KIND = BackendKind(
    name="hyperlight",
    options=HyperlightOptions,
    factory=HyperlightBackend,
    capabilities=Capabilities(
        images=Images.NONE, remote=False, needs_root=False, thread_safe=False
    ),
    extra="hyperlight",
    discover=find_here,
    summary="Hyperlight micro-VMs (Wasm Python guest) through the hyperlight-sandbox SDK",
)
