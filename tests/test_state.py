"""The state-directory helper of local backends: records that outlive the exporter."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sandbox_exporter.backends.base import ManagedSandbox
from sandbox_exporter.backends.state import StateDirectory, start_time
from tests.helpers import wait_for

LABELS = {
    "sandbox-exporter.io/managed": "true",
    "sandbox-exporter.io/target": "t",
    "sandbox-exporter.io/instance": "i",
    "sandbox-exporter.io/created-at": "100",
    "sandbox-exporter.io/expires-at": "200",
}


def test_a_new_process_finds_what_a_killed_one_recorded_and_removes_it(tmp_path: Path) -> None:
    earlier = StateDirectory(tmp_path)
    earlier.ensure()
    earlier.create("sandbox-exporter-t-1", LABELS)
    child = subprocess.Popen(["sleep", "60"])
    earlier.add_process("sandbox-exporter-t-1", child.pid)
    later = StateDirectory(tmp_path)  # the restarted exporter knows only the disk
    assert later.managed("t") == [ManagedSandbox("sandbox-exporter-t-1", "t", "i", 100, 200)]
    assert later.managed("other-target") == []
    assert later.processes("sandbox-exporter-t-1") == [child.pid]
    later.remove("sandbox-exporter-t-1")
    assert child.wait(timeout=10) == -9
    assert not (tmp_path / "sandbox-exporter-t-1").exists()
    later.remove("sandbox-exporter-t-1")  # gone already: not an error


def test_a_reused_pid_is_never_signalled(tmp_path: Path) -> None:
    state = StateDirectory(tmp_path)
    state.create("sandbox-exporter-t-2", LABELS)
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        # the record says this pid, but started at another time: another process now
        (tmp_path / "sandbox-exporter-t-2" / "pid").write_text(f"{bystander.pid} 1\n")
        assert start_time(bystander.pid) != "1"
        assert state.processes("sandbox-exporter-t-2") == []
        state.remove("sandbox-exporter-t-2")
        wait_for(lambda: not (tmp_path / "sandbox-exporter-t-2").exists(), what="removed")
        assert bystander.poll() is None, "the bystander lives"
    finally:
        bystander.kill()
        bystander.wait()


def test_records_that_are_not_ours_are_ignored(tmp_path: Path) -> None:
    state = StateDirectory(tmp_path)
    state.create("sandbox-exporter-t-3", {**LABELS, "sandbox-exporter.io/managed": "false"})
    (tmp_path / "sandbox-exporter-t-4").mkdir()
    (tmp_path / "sandbox-exporter-t-4" / "meta.json").write_text("not json")
    (tmp_path / "unrelated").mkdir()
    assert state.managed("t") == []
