"""What the Kubernetes backend sends and how it reads a Pod: the Pod and the
NetworkPolicy as the API's JSON, and whether a Pod runs or will not start. Pure
functions of their input, so they are read and tested without a cluster."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sandbox_exporter.backends.base import SandboxSpec

if TYPE_CHECKING:
    from sandbox_exporter.backends.kubernetes import KubernetesOptions

RUN_LABEL = "sandbox-exporter.io/run"
PULL_POLICIES = {"if_not_present": "IfNotPresent", "always": "Always", "never": "Never"}
WAITING_FAILURES = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}


def run_label(name: str) -> dict[str, str]:
    """Selects this run's Pod alone (a label value holds 63 bytes: not the whole name)."""
    return {RUN_LABEL: name.rsplit("-", 1)[-1]}


def pod_manifest(spec: SandboxSpec, options: KubernetesOptions) -> dict[str, Any]:
    """The Pod as the API's JSON (built as a dict: the client's models cost a
    millisecond a call to serialize, inside the timed create). It follows the
    `restricted` Pod Security profile."""
    o = options
    limits = {"cpu": f"{int(spec.cpus * 1000)}m", "memory": f"{spec.memory_mb}Mi"}
    pod_spec: dict[str, Any] = {
        "containers": [
            {
                "name": "probe",
                "image": spec.image,
                "imagePullPolicy": PULL_POLICIES[spec.pull_policy],
                "command": list(o.keepalive),
                "resources": {"requests": limits, "limits": limits},
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "runAsNonRoot": True,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": int(spec.stop_grace),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": o.run_as_user,
            "runAsGroup": o.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    optional = {
        "runtimeClassName": o.runtime_class,
        "nodeSelector": dict(o.node_selector) or None,
        "tolerations": [dict(t) for t in o.tolerations] or None,
        "imagePullSecrets": [{"name": s} for s in o.image_pull_secrets] or None,
        "priorityClassName": o.priority_class,
    }
    pod_spec.update({key: value for key, value in optional.items() if value is not None})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": spec.name, "labels": {**spec.labels, **run_label(spec.name)}},
        "spec": pod_spec,
    }


def network_policy(spec: SandboxSpec) -> dict[str, Any]:
    """A deny-all NetworkPolicy selecting this run's Pod alone."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": spec.name, "labels": dict(spec.labels)},
        "spec": {
            "podSelector": {"matchLabels": run_label(spec.name)},
            "policyTypes": ["Ingress", "Egress"],
        },
    }


def running(pod: dict[str, Any]) -> bool:
    """The Pod runs with every container started."""
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    return (
        status.get("phase") == "Running"
        and bool(statuses)
        and all("running" in (s.get("state") or {}) and s.get("started") for s in statuses)
    )


def start_problem(pod: dict[str, Any]) -> str | None:
    """Why this Pod will not start, in the cluster's words; None while it may."""
    name = pod["metadata"]["name"]
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            return f"pod {name} is unschedulable: {condition.get('message')}"
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        waiting = state.get("waiting")
        if waiting is not None and waiting.get("reason") in WAITING_FAILURES:
            return f"pod {name}: {waiting['reason']}: {waiting.get('message')}"
        terminated = state.get("terminated")
        if terminated is not None:
            message = terminated.get("message")
            return (
                f"pod {name}: container exited ({terminated.get('reason')}, "
                f"exit code {terminated.get('exitCode')}){f': {message}' if message else ''}"
            )
    if status.get("phase") in ("Failed", "Succeeded"):
        return (
            f"pod {name} ended ({status['phase']}): {status.get('message') or status.get('reason')}"
        )
    return None
