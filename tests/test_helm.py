"""The Helm chart (helm/sandbox-exporter), rendered and linted by the real Helm engine
(helm-python-sdk embeds Helm's Go SDK: no helm binary is involved) and every manifest
checked against Kubernetes' own OpenAPI schemas (kubernetes-validate, strict: an unknown
field is an error) for several Kubernetes versions.

ServiceMonitor and PrometheusRule are CRDs of the Prometheus operator, which
kubernetes-validate does not know. They are checked against SERVICE_MONITOR and
PROMETHEUS_RULE below: the subset of the operator's CRD schemas (monitoring.coreos.com/v1)
that the chart writes, with unknown fields refused, as kubectl's strict field validation
refuses them.

The last test installs the chart into a real cluster when KUBECONFIG points at one."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import helm_python as helm
import helm_python._native as helm_native
import jsonschema
import kubernetes_validate
import pytest
import yaml

from sandbox_exporter.cli import ENV_PREFIX, build_parser
from sandbox_exporter.config import parse_config
from sandbox_exporter.config.sharding import Shard
from tests.fake_kubernetes import FakeKubernetes
from tests.helpers import double_prober

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "sandbox-exporter"
RELEASE, NAMESPACE = "se", "monitoring"
FULLNAME = "se-sandbox-exporter"
# the oldest Kubernetes this checks, a middle one and the newest kubernetes-validate knows
KUBE_VERSIONS = ("1.29.0", "1.33.0", kubernetes_validate.utils.latest_version())
CI_VALUES = sorted(p.stem.removesuffix("-values") for p in (CHART / "ci").glob("*-values.yaml"))
VALUE_SETS = ["defaults", *CI_VALUES]
WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet"}
K8S_TARGET = {"name": "k8s", "backend": "kubernetes"}


def values_of(name: str) -> dict[str, Any]:
    if name == "defaults":
        return {}
    loaded: dict[str, Any] = yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())
    return loaded


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object the chart makes with these values."""
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return [
        doc
        for path, text in sorted(manifests.items())
        if path.endswith((".yaml", ".yml"))
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def render_for(
    chart: helm.Chart, values: dict[str, Any], kube_version: str
) -> list[dict[str, Any]]:
    """As `render`, for that Kubernetes version (.Capabilities.KubeVersion) and with
    Helm's strict rendering (a template reading a missing value is an error). The
    Python binding (0.2.2) leaves these two render options out; the native library's
    render takes them, so this calls it directly."""
    options = {
        "name": RELEASE,
        "namespace": NAMESPACE,
        "kube_version": f"v{kube_version}",
        "strict": True,
    }
    manifests: dict[str, str] = json.loads(
        helm_native.call_string(
            "helm_render", chart._raw(), json.dumps(values), json.dumps(options)
        )
    )
    return [
        doc
        for path, text in sorted(manifests.items())
        if path.endswith((".yaml", ".yml"))
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def workload(docs: list[dict[str, Any]]) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] in WORKLOADS]
    assert len(found) == 1, [d["kind"] for d in found]
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = workload(docs)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["exporter"]
    found: dict[str, Any] = containers[0]
    return found


def env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The exporter's environment: name -> value, or the valueFrom mapping."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(docs)["env"]}


def config_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    data = one([d for d in docs if d["metadata"]["name"].endswith("-config")], "ConfigMap")
    loaded: dict[str, Any] = yaml.safe_load(data["data"]["config.yaml"])
    return loaded


# -- rendering, lint and the Kubernetes schemas ------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_lint_is_clean_in_strict_mode(name: str) -> None:
    for version in (KUBE_VERSIONS[0], KUBE_VERSIONS[-1]):
        report = helm.lint(
            CHART, values_of(name), strict=True, namespace=NAMESPACE, kube_version=f"v{version}"
        )
        assert report["errors"] == [], report
        # severity 1 is information ("icon is recommended"); 2 warning, 3 error
        assert [m for m in report["messages"] if m["severity"] > 1] == [], report


SERVICE_MONITOR_SUBSET = """
type: object
additionalProperties: false
required: [apiVersion, kind, metadata, spec]
properties:
  apiVersion: {const: monitoring.coreos.com/v1}
  kind: {const: ServiceMonitor}
  metadata: {type: object}
  spec:
    type: object
    additionalProperties: false
    required: [selector, endpoints]
    properties:
      selector:
        type: object
        additionalProperties: false
        properties:
          matchLabels: {type: object, additionalProperties: {type: string}}
          matchExpressions: {type: array}
      endpoints:
        type: array
        minItems: 1
        items:
          type: object
          additionalProperties: false
          properties:
            port: {type: string}
            path: {type: string}
            scheme: {enum: [http, https]}
            interval: {type: string, pattern: "^[0-9]+(ms|s|m|h)$"}
            scrapeTimeout: {type: string, pattern: "^[0-9]+(ms|s|m|h)$"}
            tlsConfig: {type: object}
            basicAuth: {type: object}
            relabelings: {$ref: "#/$defs/relabelings"}
            metricRelabelings: {$ref: "#/$defs/relabelings"}
$defs:
  relabelings:
    type: array
    items:
      type: object
      additionalProperties: false
      properties:
        sourceLabels: {type: array, items: {type: string, pattern: "^[a-zA-Z_][a-zA-Z0-9_]*$"}}
        separator: {type: string}
        targetLabel: {type: string}
        regex: {type: string}
        modulus: {type: integer}
        replacement: {type: string}
        action:
          enum: [replace, Replace, keep, Keep, drop, Drop, hashmod, HashMod, labelmap,
                 LabelMap, labeldrop, LabelDrop, labelkeep, LabelKeep, lowercase, Lowercase,
                 uppercase, Uppercase, keepequal, KeepEqual, dropequal, DropEqual]
"""
PROMETHEUS_RULE_SUBSET = """
type: object
additionalProperties: false
required: [apiVersion, kind, metadata, spec]
properties:
  apiVersion: {const: monitoring.coreos.com/v1}
  kind: {const: PrometheusRule}
  metadata: {type: object}
  spec:
    type: object
    additionalProperties: false
    properties:
      groups:
        type: array
        items:
          type: object
          additionalProperties: false
          required: [name]
          properties:
            name: {type: string, minLength: 1}
            interval: {type: string}
            rules:
              type: array
              items:
                type: object
                additionalProperties: false
                required: [expr]
                oneOf: [{required: [record]}, {required: [alert]}]
                properties:
                  record: {type: string}
                  alert: {type: string}
                  expr: {type: [string, integer]}
                  for: {type: string}
                  labels: {type: object, additionalProperties: {type: string}}
                  annotations: {type: object, additionalProperties: {type: string}}
"""
CRD_SUBSETS = {
    "ServiceMonitor": yaml.safe_load(SERVICE_MONITOR_SUBSET),
    "PrometheusRule": yaml.safe_load(PROMETHEUS_RULE_SUBSET),
}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_manifest_is_valid_for_each_kubernetes_version(chart: helm.Chart, name: str) -> None:
    for version in KUBE_VERSIONS:
        docs = render_for(chart, values_of(name), version)
        assert docs == render(chart, values_of(name)), "the same as the default render"
        kinds = {d["kind"] for d in docs}
        assert {"ServiceAccount", "Service", "ConfigMap"} <= kinds
        assert kinds & WORKLOADS
        for doc in docs:
            where = f"{doc['kind']}/{doc['metadata']['name']}"
            if doc["kind"] in CRD_SUBSETS:
                jsonschema.Draft202012Validator(CRD_SUBSETS[doc["kind"]]).validate(doc)
                continue
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                pytest.fail(
                    f"{name}: {where} is not valid for Kubernetes {version}: {path}: {exc.message}"
                )


def test_the_crd_subsets_refuse_what_the_operator_would() -> None:
    """The subsets are not vacuous: a misspelt field or a wrong action is an error."""
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {},
            "endpoints": [{"port": "http", "relabelings": [{"sourceLabel": ["a"]}]}],
        },
    }
    with pytest.raises(jsonschema.ValidationError, match="sourceLabel"):
        jsonschema.validate(monitor, CRD_SUBSETS["ServiceMonitor"])
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "x"},
        "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "1", "fro": "5m"}]}]},
    }
    with pytest.raises(jsonschema.ValidationError, match="fro"):
        jsonschema.validate(rule, CRD_SUBSETS["PrometheusRule"])


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_rendered_config_is_one_the_exporter_accepts(
    chart: helm.Chart, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render(chart, values_of(name))
    monkeypatch.setenv("NODE_NAME", "node-1")  # the DaemonSet's config reads it
    config = parse_config(config_of(docs), source="<chart>", instance=FULLNAME)
    assert config.targets
    # and every SANDBOX_EXPORTER_ variable the Pod sets is read by `run` as its flag
    variables = {k: v for k, v in env(docs).items() if k.startswith(ENV_PREFIX)}
    for key, value in variables.items():  # those from the downward API: a stand-in
        monkeypatch.setenv(key, value if isinstance(value, str) else "0")
    args = build_parser().parse_args(["run"])
    for key, value in variables.items():
        flag = key.removeprefix(ENV_PREFIX).lower()
        assert getattr(args, flag) == (value if isinstance(value, str) else "0"), key


# -- the Pod ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_pod_is_hardened_in_every_mode(chart: helm.Chart, name: str) -> None:
    docs = render(chart, values_of(name))
    pod = workload(docs)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
    security = container(docs)["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in security
    # the one writable place, /tmp, is an emptyDir
    mounts = {m["mountPath"]: m["name"] for m in container(docs)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    # each probe from its own value, on its own path
    assert container(docs)["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert container(docs)["readinessProbe"]["httpGet"]["path"] == "/-/ready"


@pytest.mark.parametrize(("grace", "margin"), [(60, 5), (30, 10), (2, 1)])
def test_the_shutdown_bound_fits_the_grace_period(
    chart: helm.Chart, grace: int, margin: int
) -> None:
    docs = render(chart, {"terminationGracePeriodSeconds": grace, "shutdownMarginSeconds": margin})
    assert workload(docs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == grace
    assert env(docs)["SANDBOX_EXPORTER_SHUTDOWN_TIMEOUT"] == f"{grace - margin}s"


def test_deployment_is_one_replica_recreated(chart: helm.Chart) -> None:
    docs = render(chart, values_of("deployment"))
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert env(docs)["SANDBOX_EXPORTER_INSTANCE"] == FULLNAME
    assert "SANDBOX_EXPORTER_SHARD_COUNT" not in env(docs)
    assert env(render(chart, {"instance": "probe-central"}))["SANDBOX_EXPORTER_INSTANCE"] == (
        "probe-central"
    )


def test_statefulset_shards_by_pod_index_and_is_its_pods_name(chart: helm.Chart) -> None:
    values = values_of("statefulset")
    docs = render(chart, values)
    statefulset = one(docs, "StatefulSet")
    replicas = values["statefulSet"]["replicas"]
    assert statefulset["spec"]["replicas"] == replicas
    assert statefulset["spec"]["serviceName"] == one(docs, "Service")["metadata"]["name"]
    variables = env(docs)
    assert variables["SANDBOX_EXPORTER_SHARD_COUNT"] == str(replicas)
    assert variables["SANDBOX_EXPORTER_SHARD_INDEX"] == {
        "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
    }
    assert variables["SANDBOX_EXPORTER_INSTANCE"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # every target of the config is probed by exactly one of the replicas
    names = [t["name"] for t in config_of(docs)["targets"]]
    owners = {n: [i for i in range(replicas) if Shard(i, replicas).owns(n)] for n in names}
    assert all(len(o) == 1 for o in owners.values()), owners


def test_statefulset_needs_kubernetes_1_28_for_the_pod_index_label(chart: helm.Chart) -> None:
    # (helm lint does not catch it: in lint mode Helm's `fail` only logs)
    values = values_of("statefulset")
    with pytest.raises(helm.HelmRenderError, match=r"needs Kubernetes 1\.28 or later"):
        render_for(chart, values, "1.27.0")
    assert one(render_for(chart, values, "1.28.0"), "StatefulSet")
    for mode in ("Deployment", "DaemonSet"):
        assert workload(render_for(chart, {"mode": mode}, "1.27.0"))["kind"] == mode


def test_daemonset_instance_from_the_node_name(chart: helm.Chart) -> None:
    docs = render(chart, {"mode": "DaemonSet"})
    daemonset = one(docs, "DaemonSet")
    assert daemonset["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"] == 0
    containers = daemonset["spec"]["template"]["spec"]["containers"]
    names = [e["name"] for e in containers[0]["env"]]
    # NODE_NAME comes first: $(NODE_NAME) expands only variables defined before it
    assert names.index("NODE_NAME") < names.index("SANDBOX_EXPORTER_INSTANCE")
    assert env(docs)["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env(docs)["SANDBOX_EXPORTER_INSTANCE"] == f"{FULLNAME}-$(NODE_NAME)"
    prefixed = render(chart, {"mode": "DaemonSet", "instance": "se"})
    assert env(prefixed)["SANDBOX_EXPORTER_INSTANCE"] == "se-$(NODE_NAME)"


def test_daemonset_mounts_the_engine_socket_only_when_asked(chart: helm.Chart) -> None:
    def host_paths(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        pod = workload(docs)["spec"]["template"]["spec"]
        return [v["hostPath"] for v in pod["volumes"] if "hostPath" in v]

    for name in VALUE_SETS:
        values = values_of(name)
        asked = values.get("daemonSet", {}).get("hostSocket", {}).get("enabled", False)
        assert bool(host_paths(render(chart, values))) == asked, name
    docs = render(chart, values_of("daemonset"))
    assert host_paths(docs) == [{"path": "/var/run/docker.sock", "type": "Socket"}]
    pod = workload(docs)["spec"]["template"]["spec"]
    assert pod["securityContext"]["supplementalGroups"] == [998]
    assert {"name": "engine-socket", "mountPath": "/var/run/docker.sock"} in (
        container(docs)["volumeMounts"]
    )
    with pytest.raises(helm.HelmRenderError, match="is for mode DaemonSet"):
        render(chart, {"daemonSet": {"hostSocket": {"enabled": True}}})


# -- RBAC -------------------------------------------------------------------------------

POD_RULES = {
    ("", "pods"): {"create", "get", "list", "watch", "delete"},
    ("", "pods/exec"): {"create", "get"},
}
POLICY_RULES = {("networking.k8s.io", "networkpolicies"): {"create", "delete", "list"}}


def rules(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    found: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert not {"resourceNames", "nonResourceURLs"} & set(rule)
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert (group, resource) not in found, "one rule per resource"
                found[group, resource] = set(rule["verbs"])
    return found


@pytest.mark.parametrize("name", VALUE_SETS)
def test_nothing_cluster_wide(chart: helm.Chart, name: str) -> None:
    docs = render(chart, values_of(name))
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    for binding in (d for d in docs if d["kind"] == "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
        ]


def test_the_role_has_exactly_the_verbs_of_the_kubernetes_backend(chart: helm.Chart) -> None:
    docs = render(chart, values_of("deployment"))
    roles = {d["metadata"]["namespace"]: rules(d) for d in docs if d["kind"] == "Role"}
    # the ci values: network_policy in one namespace, not in the other; a Docker target
    # gets nothing
    assert roles == {
        "sandbox-exporter-probes": POD_RULES | POLICY_RULES,
        "sandbox-exporter-probes-gvisor": POD_RULES,
    }
    bindings = {d["metadata"]["namespace"] for d in docs if d["kind"] == "RoleBinding"}
    assert bindings == set(roles)
    namespaces = [d for d in docs if d["kind"] == "Namespace"]
    assert {n["metadata"]["name"] for n in namespaces} == set(roles)
    for namespace in namespaces:
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def requests_as_rbac(requests: list[tuple[str, str]]) -> dict[tuple[str, str], set[str]]:
    """What an API server's authorizer asks of each request: (group, resource) -> verbs.
    The exec websocket is a GET, authorized as `get` on pods/exec; API servers that check
    websocket upgrades as `create` too (and kubectl's POST exec) need `create`."""
    found: dict[tuple[str, str], set[str]] = {}
    for method, path_qs in requests:
        url = urlparse(path_qs)
        match = re.match(
            r"^/(?:api/v1|apis/([^/]+)/v1)/namespaces/[^/]+/([^/]+)(?:/([^/]+))?"
            r"(?:/([^/]+))?$",
            url.path,
        )
        if match is None:
            assert url.path in ("/version", "/version/"), path_qs  # public, no RBAC
            continue
        group, resource, name, sub = match.groups()
        key = (group or "", f"{resource}/{sub}" if sub else resource)
        if method == "GET":
            verb = "get" if name else ("watch" if "watch=true" in url.query else "list")
        else:
            verb = {"POST": "create", "DELETE": "delete", "PUT": "update", "PATCH": "patch"}[method]
        found.setdefault(key, set()).add(verb)
        if sub == "exec":
            found[key].add("create")
    return found


def orphan(kubeconfig: str, name: str, instance: str) -> None:
    """A Pod a killed exporter of `instance` left behind."""
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    api.create_namespaced_pod(
        "sandbox-exporter-probes",
        {  # type: ignore[arg-type]
            "metadata": {
                "name": name,
                "labels": {
                    "sandbox-exporter.io/managed": "true",
                    "sandbox-exporter.io/instance": instance,
                    "sandbox-exporter.io/target": "k8s",
                    "sandbox-exporter.io/created-at": "1",
                },
            },
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
        },
    )


@pytest.mark.parametrize("network_policy", [True, False])
def test_the_role_is_what_the_backend_asks_of_a_real_client(
    chart: helm.Chart, tmp_path: Path, network_policy: bool
) -> None:
    """The real `kubernetes` client, driven by the exporter (the start-up sweep, which
    removes a Pod a killed exporter left, two whole runs and a periodic collection)
    against the API-server double, which records every request: the verbs those requests
    need are the Role's, no more, no fewer."""
    fake = FakeKubernetes()
    try:
        kubeconfig = fake.kubeconfig(str(tmp_path / "kubeconfig"))
        orphan(kubeconfig, "sandbox-exporter-k8s-orphan", instance="rbac")
        del fake.requests[:]  # from here on, the exporter's requests only
        options = {"kubeconfig": kubeconfig, "network_policy": network_policy}
        prober = double_prober("k8s", "kubernetes", "kubernetes", options, instance="rbac")
        try:
            for _ in range(2):
                result = prober.run()
                assert result is not None
                assert result.success, result.failure
            prober.collector.collect()
        finally:
            prober.close()
    finally:
        fake.close()
    used = requests_as_rbac(fake.requests)
    target = {
        "kubernetes": {"namespace": "sandbox-exporter-probes", "network_policy": network_policy}
    }
    docs = render(
        chart, {"config": {"targets": [{"name": "k8s", "backend": "kubernetes", **target}]}}
    )
    assert rules(one(docs, "Role")) == used


def test_the_probe_namespaces_come_from_the_config_or_the_values(chart: helm.Chart) -> None:
    def role_namespaces(values: dict[str, Any]) -> dict[str, bool]:
        docs = render(chart, values)
        return {
            d["metadata"]["namespace"]: ("networking.k8s.io", "networkpolicies") in rules(d)
            for d in docs
            if d["kind"] == "Role"
        }

    targets = [
        {"name": "a", "backend": "k8s", "kubernetes": {"namespace": "probes-a"}},
        {"name": "b", "backend": "kubernetes"},  # the backend's default namespace
        {
            "name": "c",
            "backend": "kubernetes",
            "kubernetes": {"namespace": "probes-a", "network_policy": True},
        },
        {
            "name": "remote",
            "backend": "kubernetes",  # another cluster: no Role here
            "kubernetes": {"kubeconfig": "/etc/remote/kubeconfig", "namespace": "remote"},
        },
        {"name": "d", "backend": "docker"},
    ]
    assert role_namespaces({"config": {"targets": targets}}) == {
        "probes-a": True,
        "sandbox-exporter-probes": False,
    }
    # the config's content is unknown to the chart: the namespaces are named
    existing = {"configFrom": {"configMap": "mine"}}
    assert role_namespaces(existing) == {}
    docs = render(chart, existing)
    assert workload(docs)["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    named = {
        **existing,
        "kubernetesProbes": {"namespaces": [{"name": "x", "networkPolicies": True}, {"name": "y"}]},
    }
    assert role_namespaces(named) == {"x": True, "y": False}
    assert (
        workload(render(chart, named))["spec"]["template"]["spec"]["automountServiceAccountToken"]
        is True
    )
    # the release's own namespace is never created by the chart
    same = {"kubernetesProbes": {"namespaces": [{"name": NAMESPACE}]}}
    assert not [d for d in render(chart, same) if d["kind"] == "Namespace"]
    assert not [
        d
        for d in render(chart, {"kubernetesProbes": {"createNamespaces": False}})
        if d["kind"] == "Namespace"
    ]


def test_create_namespace_in_the_config_is_refused(chart: helm.Chart) -> None:
    target = {"name": "k", "backend": "kubernetes", "kubernetes": {"create_namespace": True}}
    with pytest.raises(helm.HelmRenderError, match="ClusterRole this chart does not grant"):
        render(chart, {"config": {"targets": [target]}})


# -- config -----------------------------------------------------------------------------


def test_the_checksum_annotation_follows_the_config(chart: helm.Chart) -> None:
    def checksum(values: dict[str, Any]) -> str | None:
        metadata = workload(render(chart, values))["spec"]["template"]["metadata"]
        found: str | None = (metadata.get("annotations") or {}).get("checksum/config")
        return found

    base = checksum({})
    assert base is not None
    assert re.fullmatch("[0-9a-f]{64}", base)
    assert checksum({}) == base
    changed = {"config": {"defaults": {"interval": "30s"}}}
    assert checksum(changed) not in (None, base)
    assert checksum({"podAnnotations": {"team": "sandboxes"}}) == base
    assert checksum({"rollOnConfigChange": False}) is None
    assert checksum({"configFrom": {"secret": "mine"}}) is None


def test_an_existing_configmap_or_secret_and_the_web_config_secret(chart: helm.Chart) -> None:
    docs = render(
        chart,
        {
            "configFrom": {"secret": "exporter-config", "key": "exporter.yaml"},
            "webConfig": {"existingSecret": "web", "scheme": "HTTPS"},
        },
    )
    assert not [d for d in docs if d["kind"] == "ConfigMap"]
    pod = workload(docs)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["secret"] == {"secretName": "exporter-config"}
    assert volumes["web-config"]["secret"] == {"secretName": "web"}
    variables = env(docs)
    assert variables["SANDBOX_EXPORTER_CONFIG_FILE"] == "/etc/sandbox-exporter/config/exporter.yaml"
    assert (
        variables["SANDBOX_EXPORTER_WEB_CONFIG_FILE"] == "/etc/sandbox-exporter/web/web-config.yml"
    )
    assert variables["SANDBOX_EXPORTER_CONFIG_AUTO_RELOAD_INTERVAL"] == "30s"
    assert container(docs)["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    # whole directories, never subPath: a subPath mount never sees an update
    assert all("subPath" not in m for m in container(docs)["volumeMounts"])
    with pytest.raises(helm.HelmRenderError, match="not both"):
        render(chart, {"configFrom": {"secret": "a", "configMap": "b"}})


# -- observability: rules and dashboard are the repository's files ----------------------


def test_the_rules_are_the_repositorys_files(chart: helm.Chart) -> None:
    docs = render(chart, {"prometheusRule": {"enabled": True}})
    groups = one(docs, "PrometheusRule")["spec"]["groups"]
    files = [
        ROOT / "config/prometheus/recording.rules.yml",
        ROOT / "config/prometheus/alerts.rules.yml",
    ]
    assert groups == [g for f in files for g in yaml.safe_load(f.read_text())["groups"]]
    only_alerts = render(
        chart,
        {
            "prometheusRule": {
                "enabled": True,
                "recording": False,
                "disabledAlerts": ["SandboxBackendDown"],
            }
        },
    )
    alerts = [
        r["alert"] for g in one(only_alerts, "PrometheusRule")["spec"]["groups"] for r in g["rules"]
    ]
    assert alerts
    assert "SandboxBackendDown" not in alerts
    assert all(a.startswith("Sandbox") for a in alerts)


def test_the_dashboard_is_the_repositorys_file(chart: helm.Chart) -> None:
    docs = render(chart, {"grafanaDashboard": {"enabled": True}})
    dashboard = one([d for d in docs if d["metadata"]["name"].endswith("-dashboard")], "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((ROOT / "grafana/sandbox-exporter.json").read_text())
    assert json.loads(dashboard["data"]["sandbox-exporter.json"]) == shipped


def test_the_chart_files_are_links_to_the_repositorys_not_copies() -> None:
    """What the chart reads with .Files.Get is the repository's file through a symlink
    (Helm's loader follows it; `helm package` stores the content), so it cannot drift."""
    links = {
        "alerts.rules.yml": "config/prometheus/alerts.rules.yml",
        "recording.rules.yml": "config/prometheus/recording.rules.yml",
        "sandbox-exporter.json": "grafana/sandbox-exporter.json",
    }
    assert sorted(p.name for p in (CHART / "files").iterdir()) == sorted(links)
    for name, target in links.items():
        path = CHART / "files" / name
        assert path.is_symlink(), f"{path} must be a symlink, not a copy"
        assert path.resolve() == (ROOT / target).resolve()


def test_a_packaged_chart_holds_the_files_themselves(chart: helm.Chart, tmp_path: Path) -> None:
    """`helm package` stores what the links point at: the archive installs on its own."""
    archive = helm.package(CHART, destination=tmp_path)
    values = {"prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}}
    with helm.Chart.load(archive) as packaged:
        assert render(packaged, values) == render(chart, values)


def test_servicemonitor_labels_each_daemonset_series_with_its_node(chart: helm.Chart) -> None:
    node = {
        "sourceLabels": ["__meta_kubernetes_pod_node_name"],
        "targetLabel": "node",
        "action": "replace",
    }
    for mode in sorted(WORKLOADS):
        docs = render(chart, {"mode": mode, "serviceMonitor": {"enabled": True}})
        endpoint = one(docs, "ServiceMonitor")["spec"]["endpoints"][0]
        assert endpoint["port"] == "http"
        assert endpoint["path"] == "/metrics"
        assert (node in endpoint.get("relabelings", [])) == (mode == "DaemonSet"), mode
        selector = one(docs, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
        assert selector.items() <= one(docs, "Service")["metadata"]["labels"].items()


def test_optional_objects_are_off_by_default(chart: helm.Chart) -> None:
    kinds = {d["kind"] for d in render(chart, {})}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    assert [d["metadata"]["name"] for d in render(chart, {}) if d["kind"] == "ConfigMap"] == [
        f"{FULLNAME}-config"
    ]


# -- values the chart refuses -----------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mode": "ReplicaSet"}, "/mode"),
        ({"mode": "deployment"}, "/mode"),
        ({"replicas": 3}, "additional properties 'replicas' not allowed"),
        ({"statefulSet": {"replicas": 0}}, "/statefulSet/replicas"),
        ({"logLevel": "verbose"}, "/logLevel"),
        ({"instance": "has spaces"}, "/instance"),
        ({"instance": "x" * 64}, "/instance"),
        ({"terminationGracePeriodSeconds": 1}, "/terminationGracePeriodSeconds"),
        ({"configAutoReloadInterval": "30 seconds"}, "/configAutoReloadInterval"),
        (
            {"daemonSet": {"hostSocket": {"enabled": True, "hostPath": "docker.sock"}}},
            "/daemonSet/hostSocket/hostPath",
        ),
        ({"serviceMonitor": {"enabeld": True}}, "'enabeld' not allowed"),
        (
            {"kubernetesProbes": {"namespaces": [{"name": "Not_A_Label"}]}},
            "/kubernetesProbes/namespaces/0/name",
        ),
        # `config` is checked against the exporter's own schema (config/schema.py)
        (
            {"config": {"defaults": {"intreval": "60s"}, "targets": [K8S_TARGET]}},
            "at '/config/defaults': additional properties 'intreval' not allowed",
        ),
        (
            {"config": {"targets": [{**K8S_TARGET, "kubernetes": {"namespac": "probes"}}]}},
            "at '/config/targets/0/kubernetes': additional properties 'namespac' not allowed",
        ),
        ({"config": {"targets": [{**K8S_TARGET, "interval": 60}]}}, "/config/targets/0/interval"),
    ],
)
def test_the_schema_refuses_bad_values(
    chart: helm.Chart, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(message)):
        render(chart, values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"terminationGracePeriodSeconds": 10, "shutdownMarginSeconds": 10},
            "terminationGracePeriodSeconds (10) must exceed shutdownMarginSeconds (10)",
        ),
        ({"mode": "StatefulSet", "instance": "x"}, "must be empty in mode StatefulSet"),
        (
            {
                "config": {
                    "targets": [
                        {"name": "k", "backend": "kubernetes", "kubernetes": {"namespace": "${NS}"}}
                    ]
                }
            },
            "name the probe namespaces in kubernetesProbes.namespaces",
        ),
    ],
)
def test_the_templates_refuse_what_the_schema_cannot_see(
    chart: helm.Chart, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(chart, values)


# -- documentation ----------------------------------------------------------------------

# values whose content is passed through to Kubernetes or to the exporter as a whole: the
# README documents them by their own name, not each key of their default
PASS_THROUGH = {
    "config",
    "resources",
    "podSecurityContext",
    "securityContext",
    "livenessProbe",
    "readinessProbe",
    "grafanaDashboard.labels",
}


def value_paths(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Each value's dotted path: the leaves, and the pass-through values whole."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in PASS_THROUGH:
            yield from value_paths(value, f"{path}.")
        else:
            yield path


def test_the_chart_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    table = readme.split("\n## Values\n")[1].split("\n## ")[0]
    documented = set(re.findall(r"^\| `([^`]+)` \|", table, re.MULTILINE))
    paths = set(value_paths(yaml.safe_load((CHART / "values.yaml").read_text())))
    assert paths - documented == set(), "values missing from the README's table"
    assert documented - paths == set(), "README rows for values that do not exist"


def test_the_schema_knows_every_value(chart: helm.Chart) -> None:
    schema = chart.schema
    assert schema is not None
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(defaults) | {"global"} == set(schema["properties"])


# -- a real cluster ---------------------------------------------------------------------


@pytest.mark.skipif(
    not os.environ.get("KUBECONFIG"), reason="KUBECONFIG does not point at a cluster"
)
def test_install_into_a_real_cluster() -> None:  # pragma: no cover - needs a cluster
    """Installs the rendered chart (mode Deployment, one Kubernetes target) into the
    cluster KUBECONFIG names, in namespaces of its own, and waits for the exporter's first
    successful probe, read from its /metrics through the API server's service proxy.
    The image must be one the cluster can run: SANDBOX_EXPORTER_IMAGE (repository:tag;
    default sandbox-exporter:0.1.0, e.g. loaded with `kind load docker-image`)."""
    from kubernetes import client, config, utils

    suffix = uuid.uuid4().hex[:6]
    release_ns, probe_ns = f"se-helm-{suffix}", f"se-helm-probes-{suffix}"
    repository, _, tag = os.environ.get(
        "SANDBOX_EXPORTER_IMAGE", "sandbox-exporter:0.1.0"
    ).rpartition(":")
    values = {
        "image": {"repository": repository, "tag": tag},
        "config": {
            "defaults": {"interval": "10s"},
            "targets": [
                {
                    "name": "k8s",
                    "backend": "kubernetes",
                    "timeouts": {"start": "120s"},
                    "kubernetes": {"namespace": probe_ns},
                }
            ],
        },
    }
    with helm.Chart.load(CHART) as loaded:
        docs = [
            doc
            for text in loaded.render(values, name="se", namespace=release_ns).values()
            for doc in yaml.safe_load_all(text)
            if doc and "kind" in doc
        ]
    config.load_kube_config()
    api = client.ApiClient()
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": release_ns}})  # type: ignore[arg-type]
    try:
        for doc in sorted(docs, key=lambda d: d["kind"] != "Namespace"):
            utils.create_from_dict(api, doc, namespace=doc["metadata"].get("namespace"))
        deadline = time.monotonic() + 300
        text = ""
        while time.monotonic() < deadline:
            try:
                text = core.connect_get_namespaced_service_proxy_with_path(
                    f"{FULLNAME}:http", release_ns, "metrics"
                )
            except client.ApiException:
                text = ""
            if re.search(
                r'^sandbox_probes_total\{[^}]*result="success"[^}]*\} [1-9]', text, re.MULTILINE
            ):
                break
            time.sleep(5)
        else:
            pytest.fail(f"no successful probe within 300 s; last /metrics:\n{text[-2000:]}")
    finally:
        for namespace in (probe_ns, release_ns):
            try:
                core.delete_namespace(namespace)
            except client.ApiException as exc:
                if exc.status != 404:
                    raise
