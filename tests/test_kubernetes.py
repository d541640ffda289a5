"""The Kubernetes backend, driving the real `kubernetes` client against the API-server
double in fake_kubernetes.py; and against a real cluster when KUBECONFIG points at one.
What is Kubernetes' alone is here (the Pod, watches, the cluster's refusals); what
every backend does is in test_backend_contract.py."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from sandbox_exporter.probing.prober import Prober
from sandbox_exporter.results import Phase, ProbeResult, Reason
from tests.fake_kubernetes import FakeKubernetes
from tests.helpers import double_prober, unreachable_message, wait_for

pytest.importorskip("kubernetes")


@pytest.fixture
def fake() -> Iterator[FakeKubernetes]:
    server = FakeKubernetes()
    yield server
    server.close()


def prober(kubeconfig: str, registry: CollectorRegistry | None = None, **settings: Any) -> Prober:
    options = {"kubeconfig": kubeconfig, "network_policy": True, **settings.pop("options", {})}
    return double_prober(
        "k8s", "k8s", "kubernetes", options, instance="k8s-test", registry=registry, **settings
    )


def run(p: Prober) -> ProbeResult:
    try:
        result = p.run()
    finally:
        p.close()
    assert result is not None
    return result


@pytest.fixture
def kubeconfig(fake: FakeKubernetes, tmp_path: Path) -> str:
    return fake.kubeconfig(str(tmp_path / "kubeconfig"))


def test_start_and_stop_watch_and_remove_deletes_the_policy(
    fake: FakeKubernetes, kubeconfig: str
) -> None:
    """How a lifecycle goes on the API server (the lifecycle itself, its metrics and
    what it leaves: test_backend_contract.py)."""
    result = run(prober(kubeconfig, options={"runtime_class": "gvisor"}))
    assert result.success, result.failure
    assert fake.exec_commands == [["echo", "hello"]]
    assert fake.pods == {}, "the pod is gone"
    assert fake.policies == {}, "and its NetworkPolicy"
    methods = [m for m, p in fake.requests if "/pods" in p or "networkpolicies" in p]
    assert methods.count("DELETE") == 2
    # start and stop watch from a resourceVersion; nothing polls
    watches = [p for m, p in fake.requests if m == "GET" and "watch=true" in p]
    assert len(watches) == 2, "one watch for start, one for stop"
    assert all("resourceVersion=" in p for p in watches)


def test_the_pod_is_restricted_and_labelled(fake: FakeKubernetes, kubeconfig: str) -> None:
    run(
        prober(
            kubeconfig,
            options={
                "runtime_class": "gvisor",
                "priority_class": "probes",
                "node_selector": {"pool": "sandbox"},
                "tolerations": [{"key": "sandbox", "operator": "Exists"}],
                "image_pull_secrets": ["registry"],
            },
        )
    )
    pod = next(obj for _, _, kind, obj in fake.events if kind == "ADDED")
    spec = pod["spec"]
    container = spec["containers"][0]
    assert spec["automountServiceAccountToken"] is False
    assert spec["restartPolicy"] == "Never"
    assert spec["runtimeClassName"] == "gvisor"
    assert spec["priorityClassName"] == "probes"
    assert spec["nodeSelector"] == {"pool": "sandbox"}
    assert spec["imagePullSecrets"] == [{"name": "registry"}]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["resources"]["limits"] == {"cpu": "1000m", "memory": "256Mi"}
    assert container["imagePullPolicy"] == "IfNotPresent", "pull_policy, for the kubelet"
    assert spec["terminationGracePeriodSeconds"] == 1, "stop_grace"
    labels = pod["metadata"]["labels"]
    assert labels["sandbox-exporter.io/managed"] == "true"
    assert labels["sandbox-exporter.io/instance"] == "k8s-test"
    assert pod["metadata"]["name"].startswith("sandbox-exporter-k8s-")


@pytest.mark.parametrize(
    ("fault", "phase", "reason", "message"),
    [
        ("forbidden", "create", "error", 'cannot create resource "pods"'),
        ("quota", "create", "error", "exceeded quota"),
        ("image_pull", "start", "error", "ErrImagePull: failed to pull image"),
        (
            "unschedulable",
            "start",
            "error",
            "unschedulable: 0/3 nodes are available: 3 Insufficient cpu",
        ),
        ("crash", "start", "error", "container exited (Error, exit code 1)"),
    ],
)
def test_failures_operators_meet(
    fake: FakeKubernetes, kubeconfig: str, fault: str, phase: str, reason: str, message: str
) -> None:
    fake.faults[fault] = True
    registry = CollectorRegistry()
    with capture_logs() as logs:
        result = run(prober(kubeconfig, registry))
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (Phase(phase), Reason(reason))
    labels = {"target": "k8s", "backend": "kubernetes"}
    assert (
        registry.get_sample_value(
            "sandbox_probe_failures_total", {**labels, "phase": phase, "reason": reason}
        )
        == 1
    )
    assert registry.get_sample_value("sandbox_probe_success", labels) == 0
    assert message in result.failure.message
    assert any(message in str(e.get("error")) for e in logs), "one log line says what happened"
    assert fake.pods == {}
    assert fake.policies == {}


def test_slow_scheduling_is_a_start_timeout(fake: FakeKubernetes, kubeconfig: str) -> None:
    fake.faults["slow_scheduling"] = 3
    result = run(prober(kubeconfig, timeouts={"start": "1s"}))
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (Phase.START, Reason.TIMEOUT)
    assert fake.pods == {}


def test_a_missing_namespace_and_creating_it(fake: FakeKubernetes, kubeconfig: str) -> None:
    result = run(prober(kubeconfig, options={"namespace": "elsewhere"}))
    assert result.failure is not None
    assert 'namespaces "elsewhere" not found' in result.failure.message
    created = run(prober(kubeconfig, options={"namespace": "elsewhere", "create_namespace": True}))
    assert created.success, created.failure
    assert "elsewhere" in fake.namespaces


@pytest.mark.parametrize(
    ("status", "words"),
    [(400, "container probe is not valid"), (403, 'cannot create resource "pods/exec"')],
)
def test_a_refused_exec_is_an_error_not_an_outage(
    fake: FakeKubernetes, kubeconfig: str, status: int, words: str
) -> None:
    """A refused exec handshake (400; 403 without `pods/exec`) is the cluster saying
    no, in its own words; the API server is up."""
    fake.faults["exec_refused"] = status
    registry = CollectorRegistry()
    result = run(prober(kubeconfig, registry))
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (Phase.EXEC, Reason.ERROR)
    assert f"answered {status}" in result.failure.message
    assert words in result.failure.message
    labels = {"target": "k8s", "backend": "kubernetes"}
    assert registry.get_sample_value("sandbox_backend_up", labels) == 1
    assert fake.pods == {}


@pytest.mark.parametrize(
    ("hang", "phase"), [("create", "create"), ("exec", "exec"), ("delete", "stop")]
)
def test_a_call_never_answered_leaves_no_thread_behind(
    fake: FakeKubernetes, kubeconfig: str, hang: str, phase: str
) -> None:
    """An API server that accepts a request and never answers: the phase times out,
    and the thread that made the call ends with its deadline, not never."""
    fake.faults["hang"] = {hang}
    before = set(threading.enumerate())
    result = run(
        prober(
            kubeconfig,
            timeouts={"create": "1s", "start": "5s", "exec": "1s", "stop": "2s", "remove": "1s"},
        )
    )
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (Phase(phase), Reason.TIMEOUT)
    assert fake.hung, "the double held the request"

    def left() -> list[str]:
        return [t.name for t in threading.enumerate() if t not in before and t.is_alive()]

    wait_for(lambda: not left(), timeout=10, what="every call's thread to end")


def test_a_policy_left_without_its_pod_is_collected(fake: FakeKubernetes, kubeconfig: str) -> None:
    from kubernetes import client, config

    api = client.NetworkingV1Api(config.new_client_from_config(config_file=kubeconfig))
    api.create_namespaced_network_policy(
        "sandbox-exporter-probes",
        {  # type: ignore[arg-type]
            "metadata": {
                "name": "sandbox-exporter-k8s-lonely",
                "labels": {
                    "sandbox-exporter.io/managed": "true",
                    "sandbox-exporter.io/instance": "k8s-test",
                    "sandbox-exporter.io/target": "k8s",
                    "sandbox-exporter.io/created-at": "1",
                },
            },
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        },
    )
    assert run(prober(kubeconfig)).success
    assert fake.policies == {}


@pytest.mark.skipif(
    not os.environ.get("KUBECONFIG"), reason="KUBECONFIG does not point at a cluster"
)
def test_a_real_cluster() -> None:
    """Runs unchanged against kind, k3s or any cluster KUBECONFIG names (image must be pullable)."""
    registry = CollectorRegistry()
    result = run(
        prober(
            os.environ["KUBECONFIG"],
            registry,
            options={"create_namespace": True, "network_policy": False},
            timeouts={"start": "120s"},
        )
    )
    assert result.success, result.failure


def test_cannot_reach_names_the_cluster_config_or_the_api_server(tmp_path: Path) -> None:
    def ping(options: dict[str, Any]) -> str:
        return unreachable_message({"name": "k", "backend": "kubernetes", "kubernetes": options})

    missing = str(tmp_path / "nonexistent-kubeconfig")
    assert ping({"kubeconfig": missing}).startswith(
        f"cannot load the Kubernetes cluster configuration from {missing}: "
    )
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    assert ping({"kubeconfig": str(kubeconfig)}).endswith(
        "cannot reach the Kubernetes API server at http://127.0.0.1:1: "
        "connection refused (nothing listens there)"
    )


def test_bench_reports_the_api_servers_version(fake: FakeKubernetes, kubeconfig: str) -> None:
    from sandbox_exporter.probing.prober import calls_for

    calls = calls_for(prober(kubeconfig).target)
    try:
        assert calls.describe(None, timeout=5) == {"kubernetes_version": "v1.30.0-fake"}
    finally:
        calls.close()
