"""Kubernetes backend: one Pod per probe, with the official `kubernetes` client.

create = POST the Pod (and, if asked, a deny-all NetworkPolicy first);
start  = watch the Pod from the create's resourceVersion until it is Running
         with its container started; a pull error, an unschedulable Pod or a
         crash ends the wait with the cluster's own words;
exec   = exec over the websocket channel protocol; output from stdout/stderr,
         exit status from the status channel;
stop   = DELETE with the grace period, then watch until the Pod is gone;
remove = delete what else was made (NetworkPolicy), delete the Pod if it is
         still there, and confirm nothing of this run is left.

The Pod follows the `restricted` Pod Security profile: non-root, seccomp
RuntimeDefault, all capabilities dropped, no privilege escalation, read-only
root, no service-account token.

Minimal RBAC in the probe namespace (see the README): pods create, get,
list, watch, delete; pods/exec create; networkpolicies create, delete, list
(only with network_policy: true); namespaces get and create only with
create_namespace: true.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import urllib3.exceptions
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

from exporter.backends.base import (
    CREATED_LABEL,
    INSTANCE_LABEL,
    MANAGED_LABEL,
    TARGET_LABEL,
    BackendError,
    BackendUnavailable,
    ExecResult,
    ManagedSandbox,
    SandboxSpec,
)
from exporter.config import KubernetesOptions, Target

RUN_LABEL = "sandbox-exporter.io/run"
PULL_POLICIES = {"if_not_present": "IfNotPresent", "always": "Always", "never": "Never"}
WAITING_FAILURES = {
    "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
}  # fmt: skip
_UNREACHABLE = (urllib3.exceptions.HTTPError, ConnectionError, OSError)


def _api_error(exc: Exception, doing: str) -> BackendError:
    """The cluster's own message; unreachable API servers are `unavailable`."""
    if isinstance(exc, ApiException):
        message = exc.reason or ""
        with contextlib.suppress(ValueError):
            message = json.loads(exc.body or "{}").get("message") or message
        if exc.status == 0 or exc.status is None:
            return BackendUnavailable(f"{doing}: cannot reach the API server: {message}")
        return BackendError(f"{doing}: API server answered {exc.status}: {message}")
    if isinstance(exc, _UNREACHABLE):
        return BackendUnavailable(f"{doing}: cannot reach the API server: {exc}")
    return BackendError(f"{doing}: {exc}")


def _run_label(spec: SandboxSpec) -> dict[str, str]:
    """Selects this run's Pod alone (a label value holds 63 bytes: not the whole name)."""
    return {RUN_LABEL: spec.name.rsplit("-", 1)[-1]}


class KubernetesBackend:
    kind = "kubernetes"

    def __init__(self, target: Target) -> None:
        options = target.options
        assert isinstance(options, KubernetesOptions)
        self.options = options
        self.namespace = options.namespace
        self.pull_policy = PULL_POLICIES[target.pull_policy]
        self.grace = target.stop_grace
        self.timeouts = target.timeouts
        self._api_client: Any = None
        self._rv: dict[str, str] = {}  # resourceVersion of each created Pod, for its watch

    # -- plumbing ------------------------------------------------------------------

    def _client(self) -> Any:
        if self._api_client is None:
            configuration = client.Configuration()
            try:
                if self.options.kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                    config.load_incluster_config(client_configuration=configuration)
                else:
                    config.load_kube_config(config_file=self.options.kubeconfig,
                                            context=self.options.context,
                                            client_configuration=configuration)  # fmt: skip
            except (config.ConfigException, OSError) as exc:
                raise BackendUnavailable(f"cannot load the cluster configuration: {exc}") from exc
            configuration.retries = False
            self._api_client = client.ApiClient(configuration)
        return self._api_client

    @property
    def core(self) -> Any:
        return client.CoreV1Api(self._client())

    @property
    def networking(self) -> Any:
        return client.NetworkingV1Api(self._client())

    def _call(
        self, doing: str, fn: Any, *args: Any, missing_ok: bool = False, **kwargs: Any
    ) -> Any:
        """`fn(*args, **kwargs)`, its errors in the cluster's words; with `missing_ok`,
        None when the object is not there (404)."""
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            if missing_ok and exc.status == 404:
                return None
            raise _api_error(exc, doing) from exc
        except Exception as exc:
            raise _api_error(exc, doing) from exc

    # -- protocol --------------------------------------------------------------------

    def ping(self) -> None:
        self._call("version", client.VersionApi(self._client()).get_code, _request_timeout=10)

    def image_present(self, image: str) -> bool:
        return True  # the kubelet pulls, per imagePullPolicy, inside the start phase

    def pull_image(self, image: str) -> None:
        raise BackendError("images are pulled by the kubelet; pull_policy sets imagePullPolicy")

    def create(self, spec: SandboxSpec) -> None:
        if self.options.create_namespace:
            self._ensure_namespace()
        if self.options.network_policy:
            self._call("create networkpolicy", self.networking.create_namespaced_network_policy,
                       self.namespace, self._network_policy(spec))  # fmt: skip
        created = self._call("create pod", self.core.create_namespaced_pod, self.namespace,
                             self._pod(spec))  # fmt: skip
        self._rv[spec.name] = created.metadata.resource_version

    def start(self, name: str) -> None:
        rv = self._rv.get(name)
        deadline = int(self.timeouts.start) + 1
        for pod in self._watch_pod(name, rv, deadline):
            if pod is None:
                raise BackendError(f"pod {name} was deleted while starting")
            problem = self._start_problem(pod)
            if problem:
                raise BackendError(problem)
            if self._running(pod):
                return
        raise BackendError(f"pod {name} was not running when the watch ended")

    def exec(self, name: str, command: list[str]) -> ExecResult:
        try:
            response = stream(
                self.core.connect_get_namespaced_pod_exec, name, self.namespace,
                command=command, stdout=True, stderr=True, stdin=False, tty=False,
                _preload_content=False,
            )  # fmt: skip
            response.run_forever(timeout=self.timeouts.exec)
            output = response.read_stdout() + response.read_stderr()
            code = response.returncode
            response.close()
        except Exception as exc:
            raise _api_error(exc, "exec") from exc
        return ExecResult(code if code is not None else -1, output)

    def stop(self, name: str, grace_seconds: float) -> None:
        deleted = self._call("delete pod", self.core.delete_namespaced_pod, name, self.namespace,
                             grace_period_seconds=int(grace_seconds), missing_ok=True)  # fmt: skip
        if deleted is None:
            return
        rv = getattr(getattr(deleted, "metadata", None), "resource_version", None)
        for pod in self._watch_pod(name, rv, int(self.timeouts.stop) + 1):
            if pod is None:
                return
        if self._exists(name):
            raise BackendError(f"pod {name} still exists after its grace period")

    def remove(self, name: str) -> None:
        if self.options.network_policy:
            self._call("delete networkpolicy", self.networking.delete_namespaced_network_policy,
                       name, self.namespace, missing_ok=True)  # fmt: skip
        if self._exists(name):
            self.stop(name, 0)
        self._rv.pop(name, None)
        if self._exists(name):
            raise BackendError(f"pod {name} is still there after removal")

    def list_managed(self, instance: str, target: str) -> list[ManagedSandbox]:
        selector = f"{MANAGED_LABEL}=true,{INSTANCE_LABEL}={instance},{TARGET_LABEL}={target}"
        pods = self._call("list pods", self.core.list_namespaced_pod, self.namespace,
                          label_selector=selector)  # fmt: skip
        objects = list(pods.items)
        if self.options.network_policy:  # a policy whose Pod never came, or is gone
            policies = self._call("list networkpolicies",
                                  self.networking.list_namespaced_network_policy,
                                  self.namespace, label_selector=selector)  # fmt: skip
            objects += policies.items
        found: dict[str, ManagedSandbox] = {}
        for obj in objects:
            labels = obj.metadata.labels or {}
            created = labels.get(CREATED_LABEL, "")
            found.setdefault(obj.metadata.name, ManagedSandbox(
                name=obj.metadata.name, target=target, instance=instance,
                created_at=float(created) if created.isdigit() else None,
            ))  # fmt: skip
        return list(found.values())

    def close(self) -> None:
        if self._api_client is not None:
            self._api_client.close()

    # -- helpers ----------------------------------------------------------------------

    def _ensure_namespace(self) -> None:
        if self._call("read namespace", self.core.read_namespace, self.namespace,
                      missing_ok=True) is None:  # fmt: skip
            body = client.V1Namespace(metadata=client.V1ObjectMeta(name=self.namespace))
            self._call("create namespace", self.core.create_namespace, body)

    def _exists(self, name: str) -> bool:
        pod = self._call("read pod", self.core.read_namespaced_pod, name, self.namespace,
                         missing_ok=True)  # fmt: skip
        return pod is not None

    def _watch_pod(self, name: str, rv: str | None, seconds: int) -> Any:
        """Yield the Pod at each change (None once deleted), from resourceVersion `rv`."""
        w = watch.Watch()
        try:
            for event in w.stream(
                self.core.list_namespaced_pod, self.namespace,
                field_selector=f"metadata.name={name}", resource_version=rv,
                timeout_seconds=seconds, _request_timeout=seconds + 5,
            ):  # fmt: skip
                if event["type"] == "DELETED":
                    yield None
                    return
                if event["type"] == "ERROR":
                    raise BackendError(f"watch of pod {name} failed: {event['raw_object']}")
                yield event["object"]
        except BackendError:
            raise
        except Exception as exc:
            raise _api_error(exc, "watch pod") from exc
        finally:
            w.stop()

    @staticmethod
    def _running(pod: Any) -> bool:
        statuses = pod.status.container_statuses or []
        return (
            pod.status.phase == "Running"
            and bool(statuses)
            and all(
                s.state is not None and s.state.running is not None and s.started for s in statuses
            )
        )

    @staticmethod
    def _start_problem(pod: Any) -> str | None:
        """Why this Pod will not start, in the cluster's words; None while it may."""
        name = pod.metadata.name
        for condition in pod.status.conditions or []:
            if (
                condition.type == "PodScheduled"
                and condition.status == "False"
                and (condition.reason == "Unschedulable")
            ):
                return f"pod {name} is unschedulable: {condition.message}"
        for status in pod.status.container_statuses or []:
            waiting = status.state.waiting if status.state else None
            if waiting is not None and waiting.reason in WAITING_FAILURES:
                return f"pod {name}: {waiting.reason}: {waiting.message}"
            terminated = status.state.terminated if status.state else None
            if terminated is not None:
                detail = f": {terminated.message}" if terminated.message else ""
                return (
                    f"pod {name}: container exited ({terminated.reason}, "
                    f"exit code {terminated.exit_code}){detail}"
                )
        if pod.status.phase in ("Failed", "Succeeded"):
            return (
                f"pod {name} ended ({pod.status.phase}): {pod.status.message or pod.status.reason}"
            )
        return None

    def _pod(self, spec: SandboxSpec) -> Any:
        o = self.options
        limits = {"cpu": f"{int(spec.cpus * 1000)}m", "memory": f"{spec.memory_mb}Mi"}
        container = client.V1Container(
            name="probe",
            image=spec.image,
            image_pull_policy=self.pull_policy,
            command=list(o.keepalive),
            resources=client.V1ResourceRequirements(requests=limits, limits=limits),
            security_context=client.V1SecurityContext(
                allow_privilege_escalation=False,
                read_only_root_filesystem=True,
                run_as_non_root=True,
                capabilities=client.V1Capabilities(drop=["ALL"]),
            ),
        )
        pod_spec = client.V1PodSpec(
            containers=[container],
            restart_policy="Never",
            automount_service_account_token=False,
            termination_grace_period_seconds=int(self.grace),
            runtime_class_name=o.runtime_class,
            node_selector=dict(o.node_selector) or None,
            tolerations=[dict(t) for t in o.tolerations] or None,
            image_pull_secrets=[{"name": s} for s in o.image_pull_secrets] or None,
            priority_class_name=o.priority_class,
            security_context=client.V1PodSecurityContext(
                run_as_non_root=True,
                run_as_user=o.run_as_user,
                run_as_group=o.run_as_user,
                seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
            ),
        )
        return client.V1Pod(
            metadata=client.V1ObjectMeta(
                name=spec.name, labels={**spec.labels, **_run_label(spec)}
            ),
            spec=pod_spec,
        )

    def _network_policy(self, spec: SandboxSpec) -> Any:
        return client.V1NetworkPolicy(
            metadata=client.V1ObjectMeta(name=spec.name, labels=dict(spec.labels)),
            spec=client.V1NetworkPolicySpec(
                pod_selector=client.V1LabelSelector(match_labels=_run_label(spec)),
                policy_types=["Ingress", "Egress"],
            ),
        )
