"""The Firecracker backend: against the real Firecracker v1.12.1 VMM (and jailer) where this
machine can run it, and against the double (tests/firecracker_double.py) for the guest's
side, which needs a Linux guest that kvm-pvm cannot boot."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import signal
import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from sandbox_exporter.backends.base import (
    BackendError,
    BackendUnavailable,
    Deadline,
    SandboxRef,
    SandboxSpec,
)
from sandbox_exporter.backends.firecracker import (
    FirecrackerBackend,
    FirecrackerOptions,
    check_kvm,
    run_request,
    vm_id,
)
from sandbox_exporter.cli import main
from sandbox_exporter.config import ConfigError, Target
from sandbox_exporter.metrics.families import Metrics
from sandbox_exporter.probing.lifecycle import LifecycleRunner
from sandbox_exporter.probing.prober import Prober
from sandbox_exporter.results import Phase, ProbeResult
from tests.conftest import FirecrackerBinaries
from tests.fakes import thread_calls
from tests.firecracker_double import double_binary
from tests.helpers import alive, imageless_spec, make_config, make_target, wait_for
from tests.test_firecracker_guest import compile_listener, start_listener, stop_listener
from tests.tiny_guest import tiny_guest_image

LABELS = {
    "sandbox-exporter.io/managed": "true",
    "sandbox-exporter.io/target": "fc",
    "sandbox-exporter.io/instance": "test-instance",
    "sandbox-exporter.io/created-at": "1",
}
METRIC_LABELS = {"target": "fc", "backend": "firecracker"}


def spec(name: str = "sandbox-exporter-fc-12345678") -> SandboxSpec:
    return imageless_spec(name, LABELS, memory_mb=128, stop_grace=2)


def soon(seconds: float = 10) -> Deadline:
    return Deadline.after(seconds)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A tiny ELF kernel, a kernel that reboots on Ctrl-Alt-Del, a root drive image."""
    made = {
        "kernel": tmp_path / "vmlinux",
        "kernel_ctrl_alt_del": tmp_path / "vmlinux-cad",
        "rootfs": tmp_path / "rootfs.ext4",
    }
    made["kernel"].write_bytes(tiny_guest_image())
    made["kernel_ctrl_alt_del"].write_bytes(tiny_guest_image(reboot="ctrl-alt-del"))
    made["rootfs"].write_bytes(bytes(1 << 20))
    return made


def fc_target(binary: Path | str, files: dict[str, Path], state: Path, **more: Any) -> Target:
    options: dict[str, Any] = {
        "binary": str(binary),
        "kernel": str(files["kernel"]),
        "rootfs": str(files["rootfs"]),
        "state_dir": str(state),
        "vsock_attempt": "200ms",
        **more.pop("firecracker", {}),
    }
    return make_config(
        {
            "name": "fc",
            "backend": "firecracker",
            "firecracker": options,
            "command": ["sh", "-c", "echo hello"],
            "expect_output": "hello",
            **more,
        }
    ).targets[0]


def jailer_options(binaries: FirecrackerBinaries, base: Path) -> dict[str, Any]:
    """The real jailer, its VMMs as nobody, their jails under `base`."""
    return {"binary": str(binaries.jailer), "uid": 65534, "gid": 65534, "chroot_base": str(base)}


def probe(target: Target, runs: int) -> tuple[list[ProbeResult], CollectorRegistry]:
    """`runs` runs through one Prober (the runner and the metrics, as the daemon makes
    them): their results and its registry."""
    registry = CollectorRegistry()
    prober = Prober(target, "test-instance", Metrics(registry), stopping=threading.Event())
    try:
        results = [prober.run() for _ in range(runs)]
    finally:
        prober.close()
    assert None not in results
    return [r for r in results if r is not None], registry


def probe_once(target: Target) -> tuple[ProbeResult, CollectorRegistry]:
    results, registry = probe(target, 1)
    return results[0], registry


def backend_for(target: Target) -> FirecrackerBackend:
    assert isinstance(target.options, FirecrackerOptions)
    return FirecrackerBackend(target.options, target.timeouts)


@contextmanager
def created(
    backend: FirecrackerBackend, sandbox_spec: SandboxSpec | None = None
) -> Iterator[SandboxRef]:
    """A sandbox made on `backend` (the default spec), removed when the block ends, however."""
    sandbox = backend.create(sandbox_spec or spec(), soon())
    try:
        yield sandbox
    finally:
        backend.remove(sandbox, soon())


def vmms_in(directory: Path) -> list[int]:
    """Processes whose working directory is in `directory` (the VMMs of its VMs)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cwd = os.readlink(f"/proc/{entry.name}/cwd")
            except OSError:
                continue
            if cwd.startswith(str(directory)) and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def nothing_left(state: Path) -> None:
    assert vmms_in(state) == [], "no VMM left running"
    assert not state.exists() or sorted(p.name for p in state.iterdir()) == [], "no file left"


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    """The backend's state directory; whatever a failed test left there is killed after."""
    directory = tmp_path / "state"
    yield directory
    for pid in vmms_in(directory):
        os.kill(pid, signal.SIGKILL)


# -- the real Firecracker VMM --------------------------------------------------------------


def test_a_missing_kernel_fails_create_in_firecrackers_own_words(
    firecracker_binaries: FirecrackerBinaries, files: dict[str, Path], state: Path
) -> None:
    files = {**files, "kernel": files["kernel"].with_name("no-such-vmlinux")}
    target = fc_target(firecracker_binaries.firecracker, files, state)
    result = LifecycleRunner(thread_calls(backend_for(target)), target, "test-instance").run()
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == ("create", "error")
    assert (
        "Firecracker refused PUT /boot-source: Boot source error: The kernel file cannot be "
        "opened: No such file or directory (os error 2)" in result.failure.message
    )
    nothing_left(state)


def test_the_real_vmm_boots_the_tiny_guest_then_start_ends_at_its_timeout(
    firecracker_binaries: FirecrackerBinaries, files: dict[str, Path], state: Path
) -> None:
    target = fc_target(
        firecracker_binaries.firecracker,
        files,
        state,
        firecracker={"boot_args": "console=ttyS0"},
        timeouts={"start": "1.5s"},
        stop_grace="300ms",
    )
    result, registry = probe_once(target)
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == ("start", "timeout")
    # the real VMM took the whole configuration and booted the guest, which wrote its
    # byte to the serial console (the log's tail); the guest has no vsock listener
    assert "guest did not answer on vsock port 52" in result.failure.message
    assert "| X" in result.failure.message or "log: X" in result.failure.message
    assert (
        registry.get_sample_value(
            "sandbox_phase_duration_seconds_count", {**METRIC_LABELS, "phase": "create"}
        )
        == 1
    )
    nothing_left(state)


def test_stop_waits_for_the_vmm_to_exit_after_ctrl_alt_del(
    firecracker_binaries: FirecrackerBinaries, files: dict[str, Path], state: Path
) -> None:
    files = {**files, "kernel": files["kernel_ctrl_alt_del"]}
    backend = backend_for(fc_target(firecracker_binaries.firecracker, files, state))
    with created(backend) as sandbox:
        with pytest.raises(BackendError, match="guest did not answer on vsock port 52"):
            backend.start(sandbox, soon(0.5))
        vm = backend._get(sandbox.name)
        assert vm.process is not None
        process = vm.process
        vm.answered = True  # as if it had: a guest that never answered is killed at once
        with capture_logs() as logs:
            backend.stop(sandbox, 5, soon())
        assert process.returncode == 0, "the VMM exited on its own when the guest rebooted"
        assert logs == []
    nothing_left(state)


def test_a_guest_that_ignores_ctrl_alt_del_is_killed_at_the_grace_period_and_logged(
    firecracker_binaries: FirecrackerBinaries, files: dict[str, Path], state: Path
) -> None:
    backend = backend_for(fc_target(firecracker_binaries.firecracker, files, state))
    with created(backend) as sandbox:
        with pytest.raises(BackendError):
            backend.start(sandbox, soon(0.5))
        vm = backend._get(sandbox.name)
        assert vm.process is not None
        process = vm.process
        vm.answered = True  # as if it had, then ignored Ctrl-Alt-Del
        with capture_logs() as logs:
            backend.stop(sandbox, 0.3, soon())
        assert process.returncode == -signal.SIGKILL
        assert [(e["event"], e["reason"]) for e in logs] == [
            ("vmm killed", "still running 0.3s after SendCtrlAltDel")
        ]
    nothing_left(state)


def test_a_vmm_killed_while_start_waits_is_reported_and_cleaned_up(
    firecracker_binaries: FirecrackerBinaries, files: dict[str, Path], state: Path
) -> None:
    backend = backend_for(fc_target(firecracker_binaries.firecracker, files, state))
    sandbox = backend.create(spec(), soon())
    outcome: list[BaseException] = []

    def start() -> None:
        try:
            backend.start(sandbox, soon(30))
        except BaseException as exc:
            outcome.append(exc)

    waiting = threading.Thread(target=start)
    waiting.start()
    try:
        process = backend._get(sandbox.name).process
        assert process is not None
        wait_for(lambda: backend._get(sandbox.name).booted, what="InstanceStart")
        os.kill(process.pid, signal.SIGKILL)
        waiting.join(10)
        assert not waiting.is_alive(), "start noticed the VMM's death, long before its deadline"
    finally:
        backend.remove(sandbox, soon())
    assert len(outcome) == 1
    assert isinstance(outcome[0], BackendError)
    assert "the VMM was killed by signal 9 while waiting for the guest; its log: " in str(
        outcome[0]
    )
    nothing_left(state)


@pytest.mark.parametrize("rootfs_mode", ["read_only", "copy"])
def test_the_jailer_runs_the_vmm_in_its_chroot_and_everything_goes_at_remove(
    firecracker_binaries: FirecrackerBinaries,
    files: dict[str, Path],
    state: Path,
    tmp_path: Path,
    rootfs_mode: str,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("the jailer needs root")
    base = tmp_path / "jailer"
    jailer = jailer_options(firecracker_binaries, base)
    target = fc_target(
        firecracker_binaries.firecracker,
        files,
        state,
        firecracker={"jailer": jailer, "boot_args": "console=ttyS0", "rootfs_mode": rootfs_mode},
    )
    backend = backend_for(target)
    backend.ping(soon())
    with created(backend) as sandbox:
        root = base / "firecracker" / vm_id(sandbox.name) / "root"
        process = backend._get(sandbox.name).process
        assert process is not None
        status = Path(f"/proc/{process.pid}/status").read_text()
        assert "Uid:\t65534" in status, "the VMM runs as the jail's user"
        jailed_root = os.stat(f"/proc/{process.pid}/root")  # pivot_root: it reads as "/"
        assert (jailed_root.st_dev, jailed_root.st_ino) == (root.stat().st_dev, root.stat().st_ino)
        assert {"api.sock", "v.sock", "rootfs.ext4", "vmlinux"} <= {p.name for p in root.iterdir()}
        if rootfs_mode == "copy":  # its own drive, which the jailed VMM may write
            assert (root / "rootfs.ext4").stat().st_uid == 65534
        with pytest.raises(BackendError, match="guest did not answer on vsock port 52"):
            backend.start(sandbox, soon(1))
        backend.stop(sandbox, 0.2, soon())
    nothing_left(state)
    assert list((base / "firecracker").iterdir()) == [], "the jail is gone"


def test_snapshot_set_up_with_the_real_vmm_fails_plainly_when_the_guest_never_answers(
    firecracker_binaries: FirecrackerBinaries, files: dict[str, Path], state: Path
) -> None:
    target = fc_target(
        firecracker_binaries.firecracker,
        files,
        state,
        firecracker={"start_mode": "snapshot"},
        timeouts={"create": "1s"},
    )
    result, registry = probe_once(target)
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == ("create", "unavailable")
    assert "guest did not answer on vsock port 52" in result.failure.message
    assert registry.get_sample_value("sandbox_backend_up", METRIC_LABELS) == 0
    nothing_left(state)


def test_the_real_vmm_restores_one_snapshot_into_each_vms_own_directory(
    firecracker_binaries: FirecrackerBinaries,
    files: dict[str, Path],
    state: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = fc_target(
        firecracker_binaries.firecracker,
        files,
        state,
        firecracker={"start_mode": "snapshot", "boot_args": "console=ttyS0"},
    )
    backend = backend_for(target)
    backend.ping(soon())
    # the tiny guest has no vsock listener: make the set-up's snapshot without the wait
    with monkeypatch.context() as patched:
        patched.setattr(
            "sandbox_exporter.backends.firecracker.backend.wait_for_guest",
            lambda vm, options, deadline: None,
        )
        backend.prepare(spec(), soon())
    assert backend._snapshots.path is not None
    made = {p.name: p.stat().st_size for p in backend._snapshots.path.iterdir()}
    assert made["memory"] == 128 << 20, made
    sandboxes = [backend.create(spec(f"sandbox-exporter-fc-{n}"), soon()) for n in "ab"]
    try:
        for sandbox in sandboxes:
            # the real VMM took the load: the wait for the guest is what fails
            with pytest.raises(BackendError, match="guest did not answer on vsock port 52"):
                backend.start(sandbox, soon(0.5))
            # the vsock socket the snapshot names (relative) is made in this VM's directory
            assert (state / sandbox.name / "v.sock").is_socket()
        for sandbox in sandboxes:
            backend.stop(sandbox, 0.2, soon())
    finally:
        for sandbox in sandboxes:
            backend.remove(sandbox, soon())
        backend.close()
    nothing_left(state)


# -- availability -----------------------------------------------------------------------------


def test_a_missing_binary_is_unavailable_not_a_crash(files: dict[str, Path], state: Path) -> None:
    backend = backend_for(fc_target("/nonexistent/firecracker", files, state))
    with pytest.raises(BackendUnavailable, match="/nonexistent/firecracker does not exist"):
        backend.ping(soon())


def test_kvm_must_open_and_make_a_vm(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match=r"cannot open .*: No such file"):
        check_kvm(str(tmp_path / "kvm"))
    (tmp_path / "kvm").write_bytes(b"")
    with pytest.raises(BackendUnavailable, match="cannot create a VM"):
        check_kvm(str(tmp_path / "kvm"))
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        check_kvm()  # this machine's kvm-pvm makes VMs


def test_unavailable_is_backend_up_zero_and_one_log_line(
    files: dict[str, Path], state: Path
) -> None:
    target = fc_target("/nonexistent/firecracker", files, state)
    with capture_logs() as logs:
        results, registry = probe(target, 3)
    for result in results:
        assert result.failure is not None
        assert result.failure.reason == "unavailable"
    assert registry.get_sample_value("sandbox_backend_up", METRIC_LABELS) == 0
    assert len([e for e in logs if e.get("log_level") in ("warning", "error")]) == 1


# -- the guest's side, through the double --------------------------------------------------


def test_exec_returns_output_in_order_and_the_exit_status(
    tmp_path: Path, files: dict[str, Path], state: Path
) -> None:
    backend = backend_for(fc_target(double_binary(tmp_path), files, state))
    with created(backend) as sandbox:
        backend.start(sandbox, soon())
        answer = backend.exec(sandbox, ["sh", "-c", "echo out; echo err >&2; exit 3"], soon())
        missing = backend.exec(sandbox, ["no-such-command"], soon())
        big = backend.exec(sandbox, ["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' a"], soon())
        backend.stop(sandbox, 5, soon())
    assert (answer.exit_code, answer.output) == (3, "out\nerr\n")
    assert missing.exit_code == 127
    assert "no-such-command" in missing.output
    assert big.output == "a" * 300000
    nothing_left(state)


@pytest.mark.parametrize(
    ("knobs", "phase", "reason", "words"),
    [
        ({"boot": "hang"}, "start", "timeout", "accepted and then nothing came"),
        ({"vsock": "refuse"}, "start", "timeout", "closed the connection without OK"),
        ({"crash": "start"}, "start", "error", "the VMM was killed by signal 6 at PUT /actions"),
        ({"crash": "exec"}, "exec", "error", "the VMM was killed by signal 6 during the command"),
    ],
)
def test_each_failure_is_its_phase_and_reason_and_nothing_is_left(
    tmp_path: Path,
    files: dict[str, Path],
    state: Path,
    knobs: dict[str, str],
    phase: str,
    reason: str,
    words: str,
) -> None:
    target = fc_target(
        double_binary(tmp_path, **knobs), files, state, timeouts={"start": "1s"}, stop_grace="300ms"
    )
    result, registry = probe_once(target)
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (phase, reason)
    assert words in result.failure.message
    if reason == "timeout":  # what each kind of attempt met, counted
        assert "guest did not answer on vsock port 52 (attempts: " in result.failure.message
    assert (
        registry.get_sample_value("sandbox_probes_total", {**METRIC_LABELS, "result": "failure"})
        == 1
    )
    nothing_left(state)


def test_a_guest_ignoring_ctrl_alt_del_still_stops_within_the_phase(
    tmp_path: Path, files: dict[str, Path], state: Path
) -> None:
    target = fc_target(
        double_binary(tmp_path, ctrl_alt_del="ignore"), files, state, stop_grace="300ms"
    )
    with capture_logs() as logs:
        result = LifecycleRunner(thread_calls(backend_for(target)), target, "test-instance").run()
    assert result.success, result.failure
    assert any(e["event"] == "vmm killed" for e in logs)
    nothing_left(state)


def test_snapshot_mode_restores_each_vm_from_one_snapshot(
    tmp_path: Path, files: dict[str, Path], state: Path
) -> None:
    target = fc_target(
        double_binary(tmp_path), files, state, firecracker={"start_mode": "snapshot"}
    )
    backend = backend_for(target)
    backend.ping(soon())
    backend.prepare(spec(), soon())
    snapshot = backend._snapshots.path
    assert snapshot is not None
    assert {"vmstate", "memory"} <= {p.name for p in snapshot.iterdir()}
    backend.prepare(spec(), soon())
    assert backend._snapshots.path == snapshot, "made once per shape"
    # two VMs restored side by side: each has its own sockets (relative to its directory)
    first, second = (backend.create(spec(f"sandbox-exporter-fc-{n}"), soon()) for n in "ab")
    try:
        for sandbox in (first, second):
            backend.start(sandbox, soon())
        outputs = [
            backend.exec(s, ["sh", "-c", "echo hello"], soon()).output for s in (first, second)
        ]
        assert outputs == ["hello\n", "hello\n"]
        for sandbox in (first, second):
            backend.stop(sandbox, 5, soon())
    finally:
        for sandbox in (first, second):
            backend.remove(sandbox, soon())
        backend.close()
    nothing_left(state)


def test_snapshot_mode_through_the_runner(
    tmp_path: Path, files: dict[str, Path], state: Path
) -> None:
    target = fc_target(
        double_binary(tmp_path), files, state, firecracker={"start_mode": "snapshot"}
    )
    results, _ = probe(target, 2)
    assert all(r.success for r in results), [r.failure for r in results]
    nothing_left(state)


def test_rootfs_copy_mode_gives_each_vm_its_own_drive(
    tmp_path: Path, files: dict[str, Path], state: Path
) -> None:
    backend = backend_for(
        fc_target(double_binary(tmp_path), files, state, firecracker={"rootfs_mode": "copy"})
    )
    with created(backend) as sandbox:
        drive = state / sandbox.name / "rootfs.ext4"
        assert not drive.is_symlink()
        assert drive.stat().st_ino != files["rootfs"].stat().st_ino
        assert drive.read_bytes() == files["rootfs"].read_bytes()
    nothing_left(state)


def test_a_deep_state_directory_still_reaches_the_sockets(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)  # a socket path there is over 108 bytes
    target = fc_target(double_binary(tmp_path), files, deep)
    result = LifecycleRunner(thread_calls(backend_for(target)), target, "test-instance").run()
    assert result.success, result.failure
    nothing_left(deep)


def test_a_reused_pid_is_not_killed(tmp_path: Path, files: dict[str, Path], state: Path) -> None:
    backend = backend_for(fc_target(double_binary(tmp_path), files, state))
    sandbox = backend.create(spec(), soon())
    vm = backend._get(sandbox.name)
    assert vm.process is not None
    record = state / sandbox.name / "pid"
    # the record names the VMM with another start time: a different process now
    pid, _, started = record.read_text().strip().partition(" ")
    record.write_text(f"{pid} {int(started) + 1}\n")
    backend._vms.pop(sandbox.name)  # as a restarted exporter: only the record is known
    backend.remove(SandboxRef(sandbox.name), soon())
    assert alive(vm.process.pid), "not the recorded process: left alone"
    vm.process.kill()
    vm.process.wait()


# -- configuration and the protocol ---------------------------------------------------------


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError) as caught:
        make_target(
            "firecracker",
            firecracker={
                "kernel": "/k",
                "rootfs": "/r",
                "start_mode": "snapshot",
                "jailer": {"uid": 1, "gid": 1},
            },
        )
    assert "cannot be used with jailer" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        make_target("firecracker", firecracker={"rootfs": "/r"})
    assert "kernel" in str(caught.value)


def test_the_run_request_is_the_contracts_bytes() -> None:
    assert run_request(["sh", "-c", "echo hello; exit 3"]) == (
        b"RUN 3\n2\nsh2\n-c18\necho hello; exit 3"
    )


def test_vm_ids_fit_firecrackers_limit() -> None:
    assert vm_id("sandbox-exporter-fc-12345678") == "sandbox-exporter-fc-12345678"
    long = vm_id("sandbox-exporter-" + "x" * 40 + "-12345678-b3")
    assert len(long) == 64
    assert long != vm_id("sandbox-exporter-" + "x" * 40 + "-12345678-b4")


def test_bench_runs_a_configured_firecracker_target(
    tmp_path: Path, files: dict[str, Path], state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "targets": [
                    {
                        "name": "fc",
                        "backend": "firecracker",
                        "firecracker": {
                            "binary": str(double_binary(tmp_path)),
                            "kernel": str(files["kernel"]),
                            "rootfs": str(files["rootfs"]),
                            "state_dir": str(state),
                        },
                    }
                ]
            }
        )
    )
    assert (
        main(
            ["bench", "--config.file", str(config), "-b", "firecracker", "-i", "2", "--warmup", "0"]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "fc p50" in table
    assert "2/2" in table
    nothing_left(state)


def test_bench_names_firecracker_without_a_config_and_is_told_what_to_do(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert main(["bench", "-b", "firecracker"]) == 2
    assert capsys.readouterr().err.strip() == (
        "bench: -b/--backends: firecracker was not found here: `firecracker` is not on PATH: "
        "scripts/fetch-firecracker.sh fetches it. Name its target in a config and pass it with -c"
    )


def stock_guests_cannot_boot() -> str | None:
    """Why a stock Linux guest cannot boot here; None where KVM runs one."""
    if Path("/sys/module/kvm_pvm").exists():
        return (
            "kvm-pvm: stock Linux guests do not boot on this nested KVM (the tiny "
            "hand-made guest above does)"
        )
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "no usable /dev/kvm"
    return None


@pytest.mark.parametrize("start_mode", ["boot", "snapshot"])
def test_a_real_guest_built_by_the_script_runs_the_whole_lifecycle(
    request: pytest.FixtureRequest,
    firecracker_binaries: FirecrackerBinaries,
    state: Path,
    start_mode: str,
) -> None:
    why = stock_guests_cannot_boot()
    if why is not None:
        pytest.skip(why)
    image = request.getfixturevalue("firecracker_guest_image")
    target = make_config(
        {
            "name": "fc",
            "backend": "firecracker",
            "stop_grace": "5s",
            "command": ["sh", "-c", "echo hello; cat /proc/sys/kernel/hostname >/dev/null"],
            "firecracker": {
                "binary": str(firecracker_binaries.firecracker),
                "kernel": str(image.kernel),
                "initrd": str(image.initrd),
                "rootfs": str(image.rootfs),
                "state_dir": str(state),
                "start_mode": start_mode,
            },
        }
    ).targets[0]
    with capture_logs() as logs:
        results, _ = probe(target, 3)
    for result in results:
        assert result.success, result.failure
    assert not [e for e in logs if e["event"] == "vmm killed"], "the guest powered off on stop"
    nothing_left(state)


def test_the_backend_and_the_real_guest_listener_agree_byte_for_byte(
    tmp_path: Path, files: dict[str, Path], state: Path
) -> None:
    """The double relays the vsock connection to guest/firecracker/listener.c (compiled
    for the host, on a Unix socket): the backend's requests and its reading of the
    answers against the listener the guest image runs."""
    listener_binary = tmp_path / "sandbox-guest"
    compile_listener(listener_binary)
    guest = start_listener(listener_binary, tmp_path / "guest.sock")
    try:
        binary = double_binary(tmp_path, guest_listener=str(guest.path))
        backend = backend_for(fc_target(binary, files, state))
        with created(backend) as sandbox:
            backend.start(sandbox, soon())
            answers = [
                backend.exec(sandbox, command, soon())
                for command in (
                    ["sh", "-c", "echo out; echo err >&2; exit 3"],
                    ["no-such-command"],
                    ["sh", "-c", "kill -TERM $$"],
                    ["sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' a"],
                    ["printf", "%s|", "", "two words", "ü"],
                )
            ]
            backend.stop(sandbox, 1, soon())
    finally:
        stop_listener(guest)
    assert [(a.exit_code, a.output) for a in answers] == [
        (3, "out\nerr\n"),
        (127, "sandbox-guest: cannot run no-such-command: No such file or directory\n"),
        (143, ""),
        (0, "a" * 1000000),
        (0, "|two words|ü|"),
    ]
    nothing_left(state)


def test_snapshots_of_a_killed_exporter_go_and_those_in_use_stay(
    tmp_path: Path, files: dict[str, Path], state: Path
) -> None:
    target = fc_target(
        double_binary(tmp_path), files, state, firecracker={"start_mode": "snapshot"}
    )
    first, second = backend_for(target), backend_for(target)  # two targets, one directory
    for backend in (first, second):
        backend.ping(soon())
        backend.prepare(spec(), soon())
    kept, killed = first._snapshots.path, second._snapshots.path
    assert kept is not None
    assert killed is not None
    assert kept != killed, "each its own"
    # `second` dies without closing: its lock goes with its descriptor, its files stay;
    # a minute later they are a leftover (younger, a set-up may not hold its lock yet)
    assert second._snapshots.owner is not None
    os.close(second._snapshots.owner)
    for directory in (kept, killed):
        os.utime(directory, (0, 0))
    third = backend_for(target)
    third.ping(soon())
    third.prepare(spec(), soon())
    assert kept.exists(), "in use by `first`: kept"
    assert not killed.exists(), "its maker is gone: removed"
    for backend in (first, third):
        backend.close()
    nothing_left(state)


def test_a_snapshot_set_up_that_fails_early_leaves_nothing_behind(
    tmp_path: Path, files: dict[str, Path], state: Path
) -> None:
    broken = tmp_path / "broken-firecracker"
    broken.write_text("#!/bin/sh\necho 'cannot start' >&2\nexit 1\n")
    broken.chmod(0o755)
    target = fc_target(broken, files, state, firecracker={"start_mode": "snapshot"})
    backend = backend_for(target)
    backend.ping(soon())
    for _ in range(3):
        with pytest.raises(BackendError, match="the VMM exited 1 before its API socket answered"):
            backend.prepare(spec(), soon())
    assert backend._vms == {}
    assert backend._snapshots.owner is None
    backend.close()
    nothing_left(state)


def test_the_vmm_dying_between_start_and_exec_is_said_so(
    tmp_path: Path, files: dict[str, Path], state: Path
) -> None:
    backend = backend_for(fc_target(double_binary(tmp_path), files, state))
    with created(backend) as sandbox:
        backend.start(sandbox, soon())
        process = backend._get(sandbox.name).process
        assert process is not None
        process.kill()
        with pytest.raises(BackendError, match="the VMM was killed by signal 9 during the command"):
            backend.exec(sandbox, ["true"], soon())
    nothing_left(state)


def test_another_guest_port_is_told_to_the_guest_and_used(
    tmp_path: Path, files: dict[str, Path], state: Path
) -> None:
    target = fc_target(
        double_binary(tmp_path, guest_ports="1234"), files, state, firecracker={"guest_port": 1234}
    )
    backend = backend_for(target)
    with created(backend) as sandbox:
        answer = backend._get(sandbox.name).client.request("GET", "http://localhost/vm/config")
        boot = json.loads(answer.content)["boot-source"]
        assert boot["boot_args"].endswith(" sandbox_guest.port=1234")
        backend.start(sandbox, soon())
        assert backend.exec(sandbox, ["echo", "hi"], soon()).output == "hi\n"
    nothing_left(state)


def test_a_guest_slower_than_one_vsock_attempt_is_waited_for(
    tmp_path: Path, files: dict[str, Path], state: Path
) -> None:
    # before the guest is up a CONNECT hangs: each attempt ends at vsock_attempt (200ms)
    target = fc_target(double_binary(tmp_path, boot_delay="0.7"), files, state)
    result = LifecycleRunner(thread_calls(backend_for(target)), target, "test-instance").run()
    assert result.success, result.failure
    assert result.durations[Phase.START] >= 0.7
    nothing_left(state)


def test_a_restarted_exporter_removes_an_orphans_jail_from_the_config_alone(
    firecracker_binaries: FirecrackerBinaries,
    files: dict[str, Path],
    state: Path,
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("the jailer needs root")
    base = tmp_path / "jailer"
    jailer = jailer_options(firecracker_binaries, base)
    target = fc_target(
        firecracker_binaries.firecracker, files, state, firecracker={"jailer": jailer}
    )
    earlier = backend_for(target)
    left = earlier.create(spec("sandbox-exporter-fc-orphan2"), soon())
    process = earlier._get(left.name).process
    assert process is not None
    # a record may not name what is deleted: a planted path is never read
    (state / left.name / "jail").write_text(str(tmp_path / "precious"))
    (tmp_path / "precious").mkdir()
    later = backend_for(target)
    assert [s.name for s in later.list_managed("fc", soon())] == [left.name]
    later.remove(SandboxRef(left.name), soon())
    process.wait(5)
    assert list((base / "firecracker").iterdir()) == []
    assert (tmp_path / "precious").is_dir()
    nothing_left(state)


def test_a_state_directory_others_can_write_is_refused(
    files: dict[str, Path], tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    backend = backend_for(fc_target("/bin/true", files, shared))
    with pytest.raises(BackendUnavailable, match="can be written by others"):
        backend.state.ensure()


def test_a_vsock_socket_swapped_for_a_link_to_another_is_refused(
    tmp_path: Path, files: dict[str, Path], state: Path
) -> None:
    backend = backend_for(fc_target(double_binary(tmp_path), files, state))
    sandbox = backend.create(spec(), soon())
    other = socket.socket(socket.AF_UNIX)
    try:
        backend.start(sandbox, soon())
        other.bind(str(tmp_path / "other.sock"))  # some socket the exporter may reach
        other.listen()
        vsock = state / sandbox.name / "v.sock"
        vsock.unlink()
        vsock.symlink_to(tmp_path / "other.sock")
        with pytest.raises(BackendError, match=r"served by pid \d+, not its VMM"):
            backend.exec(sandbox, ["true"], soon())
    finally:
        other.close()
        backend.remove(sandbox, soon())
    nothing_left(state)


other_requests: list[str] = []


class _Answers204(http.server.BaseHTTPRequestHandler):
    """Another HTTP service on a Unix socket, which answers anything with 204."""

    def _answer(self) -> None:
        other_requests.append(self.requestline)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.end_headers()

    do_GET = do_PUT = do_PATCH = _answer

    def log_message(self, *args: Any) -> None:
        pass


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def test_an_api_socket_swapped_for_a_link_to_another_service_is_refused(
    tmp_path: Path, files: dict[str, Path], state: Path
) -> None:
    target = fc_target(double_binary(tmp_path), files, state)
    backend = backend_for(target)
    sandbox = backend.create(spec(), soon())
    other = _UnixHTTPServer(str(tmp_path / "other.sock"), _Answers204)
    serving = threading.Thread(target=other.serve_forever, daemon=True)
    serving.start()
    try:
        vm = backend._get(sandbox.name)
        api = state / sandbox.name / "api.sock"
        api.unlink()
        api.symlink_to(tmp_path / "other.sock")
        for connection in vm.client.connections:  # as after the VMM dropped its connection
            connection.close()
        with pytest.raises(BackendError, match=r"the API socket of .* is served by pid \d+"):
            backend.start(sandbox, soon())
        assert other_requests == [], "nothing was sent to the other service"
    finally:
        other.shutdown()
        other.server_close()
        backend.remove(sandbox, soon())
    nothing_left(state)


def test_bench_reports_the_vmms_version(
    firecracker_binaries: FirecrackerBinaries, files: dict[str, Path], state: Path
) -> None:
    described = thread_calls(
        backend_for(fc_target(firecracker_binaries.firecracker, files, state))
    ).describe(None, timeout=10)
    assert described == {
        "firecracker_version": "Firecracker v1.12.1",
        "start_mode": "boot",
        "kernel_sha256": hashlib.sha256(files["kernel"].read_bytes()).hexdigest(),
        "rootfs_sha256": hashlib.sha256(files["rootfs"].read_bytes()).hexdigest(),
    }
