"""The Hyperlight backend: its logic on doubles of the SDK's Sandbox (tests/hyperlight_double.py,
named through the `sandbox_class` option so the worker process builds them too), and
the real SDK's failure paths on this machine (kvm-pvm: the VCPU exit; /dev/kvm hidden
under `unshare -m`: no hypervisor), and a real guest where a hypervisor runs one. What
every backend does is in test_backend_contract.py."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from sandbox_exporter.backends.base import (
    BackendError,
    BackendUnavailable,
    Deadline,
    SandboxRef,
    SandboxSpec,
)
from sandbox_exporter.backends.hyperlight import HyperlightBackend, HyperlightOptions
from sandbox_exporter.config.settings import Timeouts
from sandbox_exporter.daemon import Daemon
from sandbox_exporter.results import Phase, ProbeResult, Reason
from tests.helpers import imageless_spec, make_config, wait_for
from tests.test_server import call

ROOT = Path(__file__).parent.parent
LABELS = {"target": "hl", "backend": "hyperlight"}
KVM_PVM = "Unknown KVM VCPU exit: InternalError"
NO_HYPERVISOR = "No Hypervisor was found for Sandbox"


def hl_target(double: str | None = None, **options: Any) -> dict[str, Any]:
    block = {
        **options,
        **({"sandbox_class": f"tests.hyperlight_double:{double}"} if double else {}),
    }
    return {
        "name": "hl",
        "backend": "hyperlight",
        "interval": "1h",
        "timeouts": {"create": "10s", "exec": "10s"},
        "hyperlight": block,
    }


def probe_once(target: dict[str, Any]) -> tuple[Daemon, ProbeResult]:
    """One run of a one-target daemon (not started); shut down by the caller."""
    d = Daemon(make_config(target), listen_address=None)
    result = d.probers[0].run_now()
    assert result is not None
    return d, result


@pytest.fixture
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "calls"
    monkeypatch.setenv("HL_DOUBLE_RECORD", str(path))  # the worker inherits it
    return path


def recorded(path: Path) -> list[tuple[str, int]]:
    words = path.read_text().split() if path.exists() else []
    return [(words[i], int(words[i + 1])) for i in range(0, len(words), 2)]


def spec(name: str = "sandbox-exporter-hl-x") -> SandboxSpec:
    return imageless_spec(name)


def direct(double: str, **options: Any) -> HyperlightBackend:
    return HyperlightBackend(
        HyperlightOptions(sandbox_class=f"tests.hyperlight_double:{double}", **options), Timeouts()
    )


# -- the backend's logic on doubles ------------------------------------------------------


def test_each_phase_is_its_sdk_call_in_a_worker(record: Path) -> None:
    """Which SDK call each phase makes, in which process (the lifecycle itself, its
    metrics and failures: test_backend_contract.py)."""
    d, result = probe_once(hl_target("Sandbox", heap_size="64Mi"))
    d.shutdown()
    assert result.success, result.failure
    calls = recorded(record)
    assert [c for c, _ in calls] == [
        "built:python_guest.path",
        "run:trivial",  # ping: a guest runs here, once per worker
        "built:python_guest.path",
        "run:trivial",  # create, start
        "run:code",  # exec: the configured code, not the target's command
    ]
    assert {pid for _, pid in calls} != {os.getpid()}, "the SDK runs in a worker process"


def test_restore_mode_times_restore_of_the_set_up_snapshot_as_start(record: Path) -> None:
    d, result = probe_once(hl_target("Sandbox", start_mode="restore"))
    d.shutdown()
    assert result.success, result.failure
    assert [c for c, _ in recorded(record)] == [
        "built:python_guest.path",
        "run:trivial",
        "snapshot",  # set-up, at the first ping
        "restore:snap",  # start
        "run:code",  # exec
        "restore:snap",  # stop: nothing of the run is kept
    ]


def test_no_hypervisor_is_unavailable_at_the_first_run_of_a_guest() -> None:
    """Building touches no hypervisor; running does. (Through the runner, the ping's
    trial run says so before any sandbox is made: test_backend_contract.py.)"""
    backend = direct("NoHypervisor")
    sandbox = backend.create(spec(), Deadline.after(5))
    with pytest.raises(BackendUnavailable, match=f"cannot run a guest here: .*{NO_HYPERVISOR}"):
        backend.start(sandbox, Deadline.after(5))
    backend.remove(sandbox, Deadline.after(5))
    backend.remove(SandboxRef("never-made"), Deadline.after(5))  # not there: not an error


def test_any_other_native_error_is_an_error_with_the_sdks_words() -> None:
    backend = direct("BrokenGuest")
    sandbox = backend.create(spec(), Deadline.after(5))
    with pytest.raises(BackendError, match=r"start: .*guest module is corrupt") as caught:
        backend.start(sandbox, Deadline.after(5))
    assert not isinstance(caught.value, BackendUnavailable)


def test_stop_releases_the_sandbox_and_confirms_it() -> None:
    import weakref

    backend = direct("Sandbox")
    sandbox = backend.create(spec(), Deadline.after(5))
    built = weakref.ref(backend._live[sandbox.name])
    backend.stop(sandbox, 1, Deadline.after(5))
    assert built() is None, "no reference left: the micro-VM is freed"
    with pytest.raises(BackendError, match="no sandbox"):
        backend.exec(sandbox, ["ignored"], Deadline.after(5))


def test_a_run_holding_the_workers_interpreter_leaves_the_exporters_free(
    record: Path,
) -> None:
    """While the worker's native call holds its interpreter, /metrics answers (that the
    call then ends at its deadline, worker and all: test_backend_contract.py)."""
    target = hl_target("Held")
    target["timeouts"]["exec"] = "1s"
    d = Daemon(make_config(target), listen_address=None)
    prober = d.probers[0]
    d.start()
    try:
        wait_for(lambda: "run:code" in [c for c, _ in recorded(record)], what="the held run")
        worker = recorded(record)[-1][1]
        assert worker != os.getpid()
        status, _, body = call(d.app, "/metrics")
        assert status.startswith("200"), "the exporter's interpreter is free meanwhile"
        assert b'sandbox_probe_in_progress{backend="hyperlight",target="hl"} 1.0' in body
        wait_for(lambda: prober.last_result, timeout=15, what="the run to end")
    finally:
        d.shutdown()


def test_config_and_discovery_import_no_sdk_and_copy_nothing() -> None:
    script = (
        "import sys\n"
        "from sandbox_exporter.config import parse_config\n"
        "from sandbox_exporter.config.discovery import discover\n"
        "parse_config({'targets': [{'name': 'hl', 'backend': 'hyperlight',"
        " 'hyperlight': {'start_mode': 'restore'}}]})\n"
        "discover()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('hyperlight_sandbox', 'hyperlight_sandbox_backend_wasm', 'python_guest')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert done.stdout.strip() == "[]"


def test_bad_options_are_refused_at_config_load() -> None:
    from sandbox_exporter.config import ConfigError

    with pytest.raises(ConfigError, match="start_mode"):
        make_config({"name": "hl", "backend": "hyperlight", "hyperlight": {"start_mode": "warm"}})
    with pytest.raises(ConfigError, match="guest"):
        make_config({"name": "hl", "backend": "hyperlight", "hyperlight": {"guest": "js"}})


# -- the real SDK on this machine --------------------------------------------------------


@functools.cache
def real_guest() -> str | None:
    """None when a real guest runs here; otherwise why not (the SDK's words). Tried once."""
    import importlib.util

    if importlib.util.find_spec("hyperlight_sandbox") is None:
        return "the hyperlight packages are not installed"
    if not any(os.path.exists(d) for d in ("/dev/kvm", "/dev/mshv")):
        return "no /dev/kvm or /dev/mshv here"
    snippet = (
        "from hyperlight_sandbox import Sandbox\n"
        "print(Sandbox(backend='wasm', module='python_guest.path').run(\"print('hello')\").stdout)"
    )
    done = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode == 0 and "hello" in done.stdout:
        return None
    return (done.stderr.strip().splitlines() or ["no output"])[-1]


def test_kvm_pvm_is_unavailable_one_line_per_run_and_the_exporter_stays_healthy() -> None:
    why = real_guest()
    if why is None or KVM_PVM not in why:
        pytest.skip(f"the kvm-pvm failure is not what happens here: {why or 'guests run'}")
    d = Daemon(make_config(hl_target()), listen_address=None)
    try:
        with capture_logs() as logs:
            first = d.probers[0].run_now()
            second = d.probers[0].run_now()
        for result in (first, second):
            assert result is not None
            assert result.failure is not None
            assert (result.failure.phase, result.failure.reason) == (
                Phase.CREATE,
                Reason.UNAVAILABLE,
            )
            assert KVM_PVM in result.failure.message
        warnings = [e for e in logs if e["log_level"] == "warning"]
        assert [e["event"] for e in warnings] == ["backend unreachable"], "once per target"
        assert KVM_PVM in warnings[0]["error"]
        assert [e["event"] for e in logs if e["log_level"] == "debug"] == [
            "backend still unreachable"
        ], "the second run says it at debug"
        failures = {**LABELS, "phase": "create", "reason": "unavailable"}
        assert d.registry.get_sample_value("sandbox_probe_failures_total", failures) == 2
        assert d.registry.get_sample_value("sandbox_backend_up", LABELS) == 0
        status, _, _ = call(d.app, "/metrics")
        assert status.startswith("200")
    finally:
        d.shutdown()


def test_no_hypervisor_under_unshare_is_unavailable_with_the_sdks_words(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None or not os.path.exists("/dev/kvm"):
        pytest.skip("needs root, util-linux unshare and a /dev/kvm to hide")
    if real_guest() == "the hyperlight packages are not installed":
        pytest.skip("the hyperlight packages are not installed")
    config = tmp_path / "config.yaml"
    config.write_text("targets:\n  - name: hl\n    backend: hyperlight\n")
    probe = f"{sys.executable} -m sandbox_exporter probe --config.file {config} --target hl --json"
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount --bind /dev/null /dev/kvm && exec {probe}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["backend_up"] is False
    assert result["failures"] == [
        {
            "phase": "create",
            "reason": "unavailable",
            "message": "hyperlight cannot run a guest here: Failed to create sandbox: "
            f"failed to build ProtoWasmSandbox: {NO_HYPERVISOR}",
        }
    ]
    assert [json.loads(line)["event"] for line in done.stderr.splitlines()] == [
        "backend unreachable"
    ]


def test_a_real_guest_prints_hello_in_every_phase() -> None:
    why = real_guest()
    if why is not None:
        pytest.skip(f"no hypervisor here runs Hyperlight guests: {why}")
    for mode in ("boot", "restore"):
        d, result = probe_once(hl_target(start_mode=mode))
        d.shutdown()
        assert result.success, result.failure
        assert result.output is not None
        assert result.output.strip() == "hello"


def test_bench_skips_hyperlight_here_with_the_reason_or_measures_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from sandbox_exporter.cli import main

    why = real_guest()
    status = main(["bench", "-b", "hyperlight", "-i", "1", "--warmup", "0"])
    out = capsys.readouterr().out
    if why is None:
        assert status == 0
        assert "1/1" in out
    else:
        assert status == 1
        assert "hyperlight                skipped: hyperlight cannot run a guest here:" in out
        assert why.split(": ", 1)[-1][-60:] in out


def test_bench_reports_the_sandbox_librarys_version() -> None:
    from importlib import metadata

    from sandbox_exporter.backends.base import Deadline

    described = direct("Sandbox").describe(None, Deadline.after(5))
    assert described == {"hyperlight_sandbox": metadata.version("hyperlight-sandbox")}
    assert described["hyperlight_sandbox"] == "0.8.0"
