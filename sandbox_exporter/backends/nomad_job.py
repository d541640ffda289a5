"""The Nomad job a probe registers, built from the sandbox spec and the target's
options: a batch job of one task, hardened for the docker driver (podman: the keys
it shares), with no restarts and no reschedule, and the project's labels as job and
task Meta. A pure function, apart from the backend that sends it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sandbox_exporter.backends.base import SandboxSpec

if TYPE_CHECKING:
    from sandbox_exporter.backends.nomad import NomadOptions

TASK = "probe"  # the task group's and the task's name
NANOSECONDS = 1_000_000_000


def job(spec: SandboxSpec, o: NomadOptions) -> dict[str, Any]:
    """The job as the HTTP API's JSON (durations in nanoseconds)."""
    meta = dict(spec.labels)
    keepalive = list(o.keepalive)
    config: dict[str, Any] = {"command": keepalive[0], "args": keepalive[1:]}
    if o.driver in ("docker", "podman"):
        config.update(
            {
                "image": spec.image,
                "force_pull": spec.pull_policy == "always",
                "cap_drop": ["ALL"],
                "readonly_rootfs": True,
                "network_mode": "none",
                "security_opt": ["no-new-privileges"],
            }
        )
        if o.driver == "docker":
            config["pids_limit"] = spec.pids_limit
    else:  # exec: the host's binaries in a chroot, no image
        config["cap_drop"] = ["all"]
    task: dict[str, Any] = {
        "Name": TASK,
        "Driver": o.driver,
        "Config": config,
        "Meta": meta,
        "Resources": {"CPU": max(1, int(spec.cpus * o.mhz_per_cpu)), "MemoryMB": spec.memory_mb},
        "KillSignal": "SIGTERM",
        "KillTimeout": int(spec.stop_grace * NANOSECONDS),
        "LogConfig": {"MaxFiles": 1, "MaxFileSizeMB": 1},
    }
    job: dict[str, Any] = {
        "ID": spec.name,
        "Name": spec.name,
        "Type": "batch",
        "Namespace": o.namespace,
        "Datacenters": list(o.datacenters),
        "Meta": meta,
        "Constraints": [
            {"LTarget": c.attribute, "Operand": c.operator, "RTarget": c.value}
            for c in o.constraints
        ]
        or None,
        "TaskGroups": [
            {
                "Name": TASK,
                "Count": 1,
                "RestartPolicy": {"Attempts": 0, "Mode": "fail"},
                "ReschedulePolicy": {"Attempts": 0, "Unlimited": False},
                "EphemeralDisk": {"SizeMB": 10},
                "Tasks": [task],
            }
        ],
    }
    if o.region:
        job["Region"] = o.region
    if o.node_pool:
        job["NodePool"] = o.node_pool
    return {k: v for k, v in job.items() if v is not None}
