"""Where backend calls run: a call that holds the interpreter lock runs in a worker
process that its deadline kills; threaded calls are abandoned and their sandbox's
leftovers killed; a shutdown can cut any of them short."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from sandbox_exporter import backends
from sandbox_exporter.backends.base import BackendError, SandboxRef
from sandbox_exporter.daemon import Daemon
from sandbox_exporter.probing.calls import Interrupt, Interrupted, PhaseTimeout
from sandbox_exporter.probing.worker import ProcessCalls
from sandbox_exporter.results import Phase, Reason
from tests.fakes import FakeBackend, thread_calls
from tests.helpers import alive, imageless_spec, make_config, make_target, wait_for
from tests.test_server import call


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backend `held` (tests/held_backend.py) registered: one module, one registry line."""
    monkeypatch.setitem(backends.MODULES, "held", "tests.held_backend")


def recorded(directory: Path) -> list[tuple[str, int]]:
    path = directory / "calls"
    lines = path.read_text().split() if path.exists() else []
    return [(lines[i], int(lines[i + 1])) for i in range(0, len(lines), 2)]


def held_target(directory: Path, **options: Any) -> dict[str, Any]:
    return {
        "name": "held",
        "backend": "held",
        "interval": "1h",
        "timeouts": {"start": "1s"},
        "held": {"record_dir": str(directory), **options},
    }


def test_a_call_holding_the_interpreter_ends_at_its_timeout_and_leaves_nothing(
    held: None, tmp_path: Path
) -> None:
    d = Daemon(make_config(held_target(tmp_path)), listen_address=None)
    prober = d.probers[0]
    d.start()
    try:
        wait_for(
            lambda: ("start", _pid(tmp_path)) in recorded(tmp_path), what="start holding the lock"
        )
        worker = _pid(tmp_path)
        assert worker != os.getpid(), "the backend runs in a worker process"
        # the exporter's interpreter is free meanwhile: /metrics answers
        status, _, body = call(d.app, "/metrics")
        assert status.startswith("200")
        assert b'sandbox_probe_in_progress{backend="held",target="held"} 1.0' in body
        result = wait_for(lambda: prober.last_result, timeout=15, what="the run to end")
        assert result.failure is not None
        assert (result.failure.phase, result.failure.reason) == (Phase.START, Reason.TIMEOUT)
        assert not alive(worker), "the worker holding the lock was killed"
        # cleanup ran in a new worker: the sandbox was removed
        assert [m for m, _ in recorded(tmp_path)][-1] == "remove"
        assert recorded(tmp_path)[-1][1] != worker
    finally:
        d.shutdown()
    last_worker = recorded(tmp_path)[-1][1]
    wait_for(lambda: not alive(last_worker), what="the last worker gone at shutdown")
    assert [m for m, _ in recorded(tmp_path)][-1] == "close", "its backend closed first"
    assert not _children(), "no process left"


def test_a_worker_that_dies_is_an_error_and_the_next_call_gets_a_new_one(
    held: None, tmp_path: Path
) -> None:
    target = make_config(held_target(tmp_path, hold_in=None, crash_in="exec")).targets[0]
    worker_calls = ProcessCalls("tests.held_backend", target.options, target.timeouts, "held")
    try:
        sandbox = worker_calls.create(_spec("a"), timeout=10)
        first = worker_calls.worker_pid
        with pytest.raises(
            BackendError, match=r"worker process of held died during exec \(exit status 3\)"
        ):
            worker_calls.exec(sandbox, ["echo", "hello"], timeout=10)
        worker_calls.remove(sandbox, timeout=10)
        assert worker_calls.worker_pid not in (None, first)
    finally:
        worker_calls.close()
    assert not _children()


def test_an_interrupt_cuts_a_worker_call_short(held: None, tmp_path: Path) -> None:
    target = make_config(held_target(tmp_path)).targets[0]
    worker_calls = ProcessCalls("tests.held_backend", target.options, target.timeouts, "held")
    interrupt = Interrupt()
    threading.Timer(0.2, interrupt.fire, args=(0.0,)).start()
    try:
        with pytest.raises(Interrupted):
            worker_calls.start(SandboxRef("a"), timeout=60, interrupt=interrupt)
    finally:
        worker_calls.close()
    assert not _children()


def test_a_thread_call_past_its_deadline_is_abandoned_and_its_sandbox_killed() -> None:
    backend = FakeBackend(hang={"start"})
    try:
        with pytest.raises(PhaseTimeout, match="start did not finish within 100ms"):
            thread_calls(backend).start(SandboxRef("a"), timeout=0.1)
        assert backend.called("kill") == ["a"]
    finally:
        backend.release.set()


def test_a_failure_at_the_deadline_is_a_timeout() -> None:
    """The backend's own socket timeout may fire a hair before the runner's wait ends:
    whatever it raised then, the call timed out."""

    def slow(method: str) -> None:
        threading.Event().wait(0.2)  # the engine takes 200 ms, then its socket times out

    backend = FakeBackend(on_call=slow, errors={"exec": BackendError("read timed out")})
    with pytest.raises(PhaseTimeout, match="exec did not finish within 150ms"):
        thread_calls(backend).exec(SandboxRef("a"), ["true"], timeout=0.15)


def test_an_interrupt_cuts_a_thread_call_short_and_the_run_cleans_up() -> None:
    from sandbox_exporter.probing.lifecycle import LifecycleRunner

    backend = FakeBackend(hang={"exec"})
    interrupt = Interrupt()
    backend.on_call = lambda m: interrupt.fire(0.0 + 1e12) if m == "exec" else None
    try:
        result = LifecycleRunner(thread_calls(backend), make_target(), "i").run(interrupt=interrupt)
    finally:
        backend.release.set()
    assert result.cancelled
    assert result.failure is None
    assert backend.called("remove"), "the sandbox is removed even so"


def _spec(name: str) -> Any:
    return imageless_spec(name)


def _pid(directory: Path) -> int:
    calls_made = recorded(directory)
    return calls_made[-1][1] if calls_made else -1


def _children() -> list[int]:
    """This process's live child processes."""
    me = str(os.getpid())
    found = []
    for task in Path(f"/proc/{me}/task").iterdir():
        for pid in (task / "children").read_text().split():
            if alive(int(pid)):
                found.append(int(pid))
    return found


def test_a_registered_module_is_a_backend_everywhere(
    held: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One module and one registry line: its block in the config, its name for -b and
    in the help text, its options handed to it, nothing else edited."""
    from sandbox_exporter.cli import main
    from sandbox_exporter.commands.bench import parse_backend_names
    from sandbox_exporter.config.discovery import discover

    config = make_config(held_target(tmp_path, hold_in=None))
    assert config.targets[0].options.record_dir == str(tmp_path)  # type: ignore[attr-defined]
    assert parse_backend_names("HELD") == ["held"]
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "held" in capsys.readouterr().out
    assert "held" not in {t["backend"] for t in discover()[0]}, "found only if it says how"
