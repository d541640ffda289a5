"""Firecracker: what the root drive's handling costs in `create`, and what the VMM's
part of `start` costs booting against restoring a snapshot, with the real VMM.

1. `create` (VMM spawned and configured) with `rootfs_mode: read_only` (the shared
   image, linked) against `copy` (a copy-on-write clone where the filesystem can,
   else a full copy), for a root drive of --rootfs-mb, ABAB after one warm-up each.
2. The VMM's side of `start` for the tiny guest of tests/tiny_guest.py (a guest
   that never answers on vsock, so only the API call is timed, not the wait for
   the guest): `InstanceStart` against `PUT /snapshot/load` with `resume_vm` from
   a full snapshot of that guest (--memory-mb).

    python benchmarks/firecracker.py [-n 20] [--rootfs-mb 64] [--memory-mb 128]
        [--binary .cache/firecracker/firecracker]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpcore

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine_line
from sandbox_exporter.backends.base import Deadline, SandboxRef, SandboxSpec
from sandbox_exporter.backends.firecracker import FirecrackerBackend, FirecrackerOptions
from sandbox_exporter.backends.firecracker.api import call, configure
from sandbox_exporter.config.settings import Timeouts
from tests.tiny_guest import tiny_guest_image


def spec(name: str, memory_mb: int) -> SandboxSpec:
    return SandboxSpec(
        name=name,
        labels={},
        image="",
        pull_policy="never",
        cpus=1,
        memory_mb=memory_mb,
        pids_limit=0,
        stop_grace=1,
    )


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(q * len(ordered) + 0.5) - 1)]


def line(name: str, values: list[float]) -> str:
    return (
        f"  {name:<34} p50 {1000 * statistics.median(values):8.1f} ms   "
        f"p95 {1000 * p(values, 0.95):8.1f} ms   n={len(values)}"
    )


def filesystem(path: Path) -> str:
    out = subprocess.run(["df", "-T", str(path)], capture_output=True, text=True, check=False)
    rows = out.stdout.splitlines()
    return rows[1].split()[1] if len(rows) > 1 else "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20)
    parser.add_argument("--rootfs-mb", type=int, default=64)
    parser.add_argument("--memory-mb", type=int, default=128)
    parser.add_argument("--binary", default=".cache/firecracker/firecracker")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fc-bench-"))
    kernel, rootfs = work / "vmlinux", work / "rootfs.ext4"
    kernel.write_bytes(tiny_guest_image())
    with rootfs.open("wb") as drive:  # written data, not a sparse file: a copy must copy it
        for _ in range(args.rootfs_mb):
            drive.write(os.urandom(1 << 20))
    version = subprocess.run(
        [args.binary, "--version"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]
    print(machine_line())
    print(f"{version}; state directory on {filesystem(work)}")

    def backend(mode: str) -> FirecrackerBackend:
        options = FirecrackerOptions.model_validate(
            {
                "binary": os.path.abspath(args.binary),
                "kernel": str(kernel),
                "rootfs": str(rootfs),
                "rootfs_mode": mode,
                "state_dir": str(work / "state"),
                "boot_args": "console=ttyS0",
            }
        )
        return FirecrackerBackend(options, Timeouts())

    print(f"\ncreate, root drive of {args.rootfs_mb} MiB:")
    backends = {mode: backend(mode) for mode in ("read_only", "copy")}
    creates: dict[str, list[float]] = {mode: [] for mode in backends}
    for i in range(args.n + 1):
        for mode, fc in backends.items():
            name = f"sandbox-exporter-bench-{mode.replace('_', '-')}-{i}"
            began = time.perf_counter()
            fc.create(spec(name, args.memory_mb), Deadline.after(30))
            took = time.perf_counter() - began
            fc.remove(SandboxRef(name), Deadline.after(30))
            if i:  # the first of each is the warm-up
                creates[mode].append(took)
    for mode, values in creates.items():
        print(line(f"rootfs_mode: {mode}", values))

    print(f"\nthe VMM's part of start, tiny guest, {args.memory_mb} MiB:")
    fc = backends["read_only"]
    shape = (1, args.memory_mb)
    boots: list[float] = []
    loads: list[float] = []
    # the snapshot, made by hand: the backend's own set-up waits for a guest answer
    name = "sandbox-exporter-bench-template"
    vm = fc._launch(name, {}, Deadline.after(30))
    configure(httpcore, vm, fc.options, shape, Deadline.after(30))
    call(httpcore, vm, "PUT", "/actions", {"action_type": "InstanceStart"}, Deadline.after(30))
    call(httpcore, vm, "PATCH", "/vm", {"state": "Paused"}, Deadline.after(30))
    create = {"snapshot_type": "Full", "snapshot_path": "vmstate", "mem_file_path": "memory"}
    call(httpcore, vm, "PUT", "/snapshot/create", create, Deadline.after(60))
    template = work / "template"
    template.mkdir()
    for part in ("vmstate", "memory"):
        os.link(vm.root / part, template / part)
    fc.remove(SandboxRef(name), Deadline.after(30))
    memory = {"backend_type": "File", "backend_path": str(template / "memory")}
    load = {"snapshot_path": str(template / "vmstate"), "resume_vm": True, "mem_backend": memory}
    for i in range(args.n + 1):
        booted, restored = f"sandbox-exporter-bench-boot-{i}", f"sandbox-exporter-bench-load-{i}"
        vm = fc._launch(booted, {}, Deadline.after(30))
        configure(httpcore, vm, fc.options, shape, Deadline.after(30))
        began = time.perf_counter()
        call(httpcore, vm, "PUT", "/actions", {"action_type": "InstanceStart"}, Deadline.after(30))
        took_boot = time.perf_counter() - began
        fc.remove(SandboxRef(booted), Deadline.after(30))
        vm = fc._launch(restored, {}, Deadline.after(30))
        began = time.perf_counter()
        call(httpcore, vm, "PUT", "/snapshot/load", load, Deadline.after(30))
        took_load = time.perf_counter() - began
        fc.remove(SandboxRef(restored), Deadline.after(30))
        if i:
            boots.append(took_boot)
            loads.append(took_load)
    print(line("InstanceStart", boots))
    print(line("PUT /snapshot/load + resume", loads))
    for fc in backends.values():
        fc.close()
    subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
