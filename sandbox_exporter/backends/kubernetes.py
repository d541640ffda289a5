"""Kubernetes backend: one Pod per probe, with the official `kubernetes` client.

create = POST the Pod (and, if asked, a deny-all NetworkPolicy first);
start  = watch the Pod from the create's resourceVersion until it is Running
         with its container started; a pull error, an unschedulable Pod or a
         crash ends the wait with the cluster's own words;
exec   = exec over the websocket channel protocol (v4.channel.k8s.io); output
         from stdout/stderr as it comes (up to the cap, base.py), exit status from
         the status channel;
stop   = DELETE with the grace period, then watch until the Pod is gone;
remove = delete what else was made (NetworkPolicy), delete the Pod if it is
         still there, and confirm nothing of this run is left.

Every request carries `_request_timeout` no longer than its call's remaining
deadline, and every watch a server-side timeout within it, so a call the runner
abandoned against an API server that never answers still ends with its deadline.

Exec is the one call made here rather than through the client's `stream()`,
with websocket-client (the library `stream()` itself uses) and the client's own
authentication and TLS settings. `stream()` opens its websocket with no timeout
at all (its `create_websocket` connects and reads the handshake on a blocking
socket), so an exec against an API server that accepts and never answers would
hold its thread for good; it reports a refused handshake (400; 403 without
`pods/exec`) as status 0, which reads as an outage; and it swaps the shared
ApiClient's `call_api` while it runs, which an abandoned exec never puts back.

The Pod (kubernetes_pod.py) follows the `restricted` Pod Security profile: non-root, seccomp
RuntimeDefault, all capabilities dropped, no privilege escalation, read-only
root, no service-account token.

Minimal RBAC in the probe namespace (docs/backends/kubernetes.md): pods create, get,
list, watch, delete; pods/exec create (and get); networkpolicies create,
delete, list (only with network_policy: true); namespaces get and create only
with create_namespace: true.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import ssl
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from pydantic import Field, field_validator

from sandbox_exporter.backends.base import (
    MANAGED_LABEL,
    TARGET_LABEL,
    BackendError,
    BackendKind,
    BackendOptions,
    BackendUnavailable,
    Capabilities,
    Deadline,
    ExecResult,
    Images,
    ManagedSandbox,
    Output,
    SandboxRef,
    SandboxSpec,
)
from sandbox_exporter.backends.docker import DEFAULT_KEEPALIVE
from sandbox_exporter.backends.kubernetes_pod import (
    network_policy,
    pod_manifest,
    running,
    start_problem,
)
from sandbox_exporter.backends.websocket_exec import ExecSockets
from sandbox_exporter.config.settings import Timeouts

CHANNEL_PROTOCOL = "v4.channel.k8s.io"
STDOUT, STDERR, STATUS = 1, 2, 3


class KubernetesOptions(BackendOptions):
    kubeconfig: str | None = Field(
        None,
        description="The kubeconfig file; null: in a cluster its service account, else "
        "$KUBECONFIG or ~/.kube/config.",
    )
    context: str | None = None
    """The kubeconfig context; null: its current context."""
    namespace: str = "sandbox-exporter-probes"
    """The namespace the probe Pods run in."""
    create_namespace: bool = False
    """Create `namespace` when it is missing (needs a ClusterRole on namespaces)."""
    runtime_class: str | None = None
    """The Pod's `runtimeClassName` (e.g. `gvisor`, `kata`); null: the cluster's default."""
    node_selector: dict[str, str] = Field(default_factory=dict, json_schema_extra={"default": {}})
    """The Pod's `nodeSelector`."""
    tolerations: tuple[dict[str, Any], ...] = ()
    """The Pod's tolerations, as in a Pod spec."""
    image_pull_secrets: tuple[str, ...] = ()
    """Names of Secrets the kubelet pulls `image` with."""
    priority_class: str | None = None
    """The Pod's `priorityClassName`; null: none."""
    network_policy: bool = Field(False, description="A deny-all NetworkPolicy for each probe Pod.")
    run_as_user: int = Field(65534, ge=1)
    """The uid the probe container runs as (the Pod is `runAsNonRoot`)."""
    keepalive: tuple[str, ...] = Field(DEFAULT_KEEPALIVE, min_length=1)
    """What the container runs between start and stop; it must exit at once on SIGTERM."""

    @field_validator("namespace")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not re.match(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", value):
            raise ValueError(f"must be a DNS label (lowercase letters, digits, '-'), got {value!r}")
        return value

    def runtime_name(self) -> str | None:
        return self.runtime_class


@dataclass(frozen=True)
class PodHandle(SandboxRef):
    """The Pod, and the resourceVersion its create returned (its watch starts there)."""

    resource_version: str | None = None


class KubernetesBackend:
    def __init__(self, options: KubernetesOptions, timeouts: Timeouts) -> None:
        from kubernetes import client  # the client: only now that a target uses this backend

        self._k8s = client
        self.options = options
        self.namespace = options.namespace
        self._api_client: Any = None
        self._lock = threading.Lock()
        self._exec_sockets = ExecSockets()  # for `kill`

    # -- plumbing ------------------------------------------------------------------

    def _client(self) -> Any:
        from kubernetes import config

        with self._lock:
            if self._api_client is None:
                configuration = self._k8s.Configuration()
                try:
                    if self.options.kubeconfig is None and os.environ.get(
                        "KUBERNETES_SERVICE_HOST"
                    ):
                        config.load_incluster_config(client_configuration=configuration)
                    else:
                        config.load_kube_config(
                            config_file=self.options.kubeconfig,
                            context=self.options.context,
                            client_configuration=configuration,
                        )
                except (config.ConfigException, OSError) as exc:
                    raise BackendUnavailable(
                        f"cannot load the Kubernetes cluster configuration from "
                        f"{self._config_source()}: {exc}"
                    ) from exc
                configuration.retries = False
                # Pin the proxy found at load (environment or kubeconfig): left "from the
                # environment", the client re-reads every environment variable on each
                # request, when its token hook sets the host again (BENCHMARKS.md, 1).
                configuration.proxy = configuration.proxy
                self._api_client = self._k8s.ApiClient(configuration)
            return self._api_client

    def _config_source(self) -> str:
        if self.options.kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            return "the pod's service account (in-cluster)"
        return self.options.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"

    def _address(self) -> str:
        """The API server this backend talks to, for messages."""
        client = self._api_client
        return str(client.configuration.host) if client is not None else self._config_source()

    @property
    def core(self) -> Any:
        return self._k8s.CoreV1Api(self._client())

    @property
    def networking(self) -> Any:
        return self._k8s.NetworkingV1Api(self._client())

    def _call(
        self,
        doing: str,
        fn: Any,
        *args: Any,
        deadline: Deadline,
        missing_ok: bool = False,
        **kwargs: Any,
    ) -> Any:
        """`fn(*args, **kwargs)` within `deadline`, its errors in the cluster's words; with
        `missing_ok`, None when the object is not there (404)."""
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(*args, _request_timeout=_timeout(deadline), **kwargs)
        except ApiException as exc:
            if missing_ok and exc.status == 404:
                return None
            raise _api_error(exc, doing, self._address()) from exc
        except BackendError:
            raise
        except Exception as exc:
            raise _api_error(exc, doing, self._address()) from exc

    # -- protocol --------------------------------------------------------------------

    def ping(self, deadline: Deadline) -> None:
        self._call("version", self._k8s.VersionApi(self._client()).get_code, deadline=deadline)

    def describe(self, image: str | None, deadline: Deadline) -> dict[str, str]:
        """What `bench --json` records of the cluster: the API server's version."""
        code = self._call(
            "version", self._k8s.VersionApi(self._client()).get_code, deadline=deadline
        )
        return {"kubernetes_version": str(code.git_version)}

    def create(self, spec: SandboxSpec, deadline: Deadline) -> PodHandle:
        if self.options.create_namespace:
            self._ensure_namespace(deadline)
        if self.options.network_policy:
            self._call(
                "create networkpolicy",
                self.networking.create_namespaced_network_policy,
                self.namespace,
                network_policy(spec),
                deadline=deadline,
            )
        created = self._call(
            "create pod",
            self.core.create_namespaced_pod,
            self.namespace,
            pod_manifest(spec, self.options),
            deadline=deadline,
            _preload_content=False,
        )
        return PodHandle(spec.name, _json(created)["metadata"]["resourceVersion"])

    def start(self, sandbox: PodHandle, deadline: Deadline) -> None:
        name = sandbox.name
        for pod in self._watch_pod(name, sandbox.resource_version, deadline):
            if pod is None:
                raise BackendError(f"pod {name} was deleted while starting")
            problem = start_problem(pod)
            if problem:
                raise BackendError(problem)
            if running(pod):
                return
        raise BackendError(f"pod {name} was not running when the watch ended")

    def exec(self, sandbox: PodHandle, command: Sequence[str], deadline: Deadline) -> ExecResult:
        output, status = Output(), b""
        with self._exec_socket(sandbox.name, command, deadline) as ws:
            import websocket

            while True:
                ws.settimeout(_timeout(deadline))
                try:
                    opcode, data = ws.recv_data()
                except websocket.WebSocketConnectionClosedException:
                    break
                except (websocket.WebSocketException, OSError) as exc:
                    raise _api_error(exc, "exec", self._address()) from exc
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    break
                if data and data[0] in (STDOUT, STDERR):
                    output.add(data[1:])
                elif data and data[0] == STATUS:
                    status += data[1:]
        return ExecResult(_exit_code(status), output.text())

    def stop(self, sandbox: SandboxRef, grace_seconds: float, deadline: Deadline) -> None:
        name = sandbox.name
        deleted = self._call(
            "delete pod",
            self.core.delete_namespaced_pod,
            name,
            self.namespace,
            grace_period_seconds=int(grace_seconds),
            deadline=deadline,
            missing_ok=True,
            _preload_content=False,
        )
        if deleted is None:
            return
        rv = (_json(deleted).get("metadata") or {}).get("resourceVersion")
        for pod in self._watch_pod(name, rv, deadline):
            if pod is None:
                return
        if self._exists(name, deadline):
            raise BackendError(f"pod {name} still exists after its grace period")

    def remove(self, sandbox: SandboxRef, deadline: Deadline) -> None:
        name = sandbox.name
        if self.options.network_policy:
            self._call(
                "delete networkpolicy",
                self.networking.delete_namespaced_network_policy,
                name,
                self.namespace,
                deadline=deadline,
                missing_ok=True,
            )
        if self._exists(name, deadline):  # after a normal stop, this one look is all
            self.stop(sandbox, 0, deadline)  # watches until the Pod is gone
            if self._exists(name, deadline):
                raise BackendError(f"pod {name} is still there after removal")

    def list_managed(self, target: str, deadline: Deadline) -> list[ManagedSandbox]:
        selector = f"{MANAGED_LABEL}=true,{TARGET_LABEL}={target}"
        pods = self._call(
            "list pods",
            self.core.list_namespaced_pod,
            self.namespace,
            label_selector=selector,
            deadline=deadline,
        )
        objects = list(pods.items)
        if self.options.network_policy:  # a policy whose Pod never came, or is gone
            policies = self._call(
                "list networkpolicies",
                self.networking.list_namespaced_network_policy,
                self.namespace,
                label_selector=selector,
                deadline=deadline,
            )
            objects += policies.items
        found: dict[str, ManagedSandbox] = {}
        for obj in objects:
            name = obj.metadata.name
            found.setdefault(name, ManagedSandbox.from_labels(name, obj.metadata.labels or {}))
        return list(found.values())

    def kill(self, sandbox: SandboxRef) -> None:
        """Close the exec websocket of this sandbox, if one is open; every other request
        ends with its own timeout."""
        self._exec_sockets.abort(sandbox.name)

    def close(self) -> None:
        if self._api_client is not None:
            self._api_client.close()

    # -- helpers ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _exec_socket(self, name: str, command: Sequence[str], deadline: Deadline) -> Iterator[Any]:
        """An open exec websocket (v4.channel.k8s.io) to the Pod's container, with the
        client's authentication and TLS settings, connected within `deadline`."""
        from kubernetes.stream.ws_client import get_websocket_url, websocket_proxycare

        api_client = self._client()
        cfg = api_client.configuration
        path = f"/api/v1/namespaces/{self.namespace}/pods/{name}/exec"
        streams = [("stdout", "true"), ("stderr", "true"), ("stdin", "false"), ("tty", "false")]
        query = [("command", word) for word in command] + streams
        url = get_websocket_url(f"{cfg.host}{path}?{urlencode(query)}")
        headers: dict[str, str] = {}
        api_client.update_params_for_auth(headers, [], ["BearerToken"], path, "GET", None)
        options: dict[str, Any] = {
            "header": [f"{k}: {v}" for k, v in headers.items()]
            + [f"sec-websocket-protocol: {CHANNEL_PROTOCOL}"],
            "timeout": _timeout(deadline),
        }
        if cfg.proxy or cfg.proxy_headers:
            options = websocket_proxycare(options, cfg, url, headers)
        address = self._address()
        with self._exec_sockets.connect(
            name,
            url,
            sslopt=_ssl_options(cfg, url),
            refused=_refused,
            unreachable=lambda exc: _api_error(exc, "exec", address),
            close_timeout=3.0,
            **options,
        ) as ws:
            yield ws

    def _ensure_namespace(self, deadline: Deadline) -> None:
        if (
            self._call(
                "read namespace",
                self.core.read_namespace,
                self.namespace,
                deadline=deadline,
                missing_ok=True,
            )
            is None
        ):
            body = self._k8s.V1Namespace(metadata=self._k8s.V1ObjectMeta(name=self.namespace))
            self._call("create namespace", self.core.create_namespace, body, deadline=deadline)

    def _exists(self, name: str, deadline: Deadline) -> bool:
        pod = self._call(
            "read pod",
            self.core.read_namespaced_pod,
            name,
            self.namespace,
            deadline=deadline,
            missing_ok=True,
            _preload_content=False,
        )
        return pod is not None

    def _watch_pod(
        self, name: str, rv: str | None, deadline: Deadline
    ) -> Iterator[dict[str, Any] | None]:
        """Yield the Pod (its JSON) at each change (None once deleted), from
        resourceVersion `rv`, until `deadline`."""
        from kubernetes import watch

        w = watch.Watch()
        try:
            for event in w.stream(
                self.core.list_namespaced_pod,
                self.namespace,
                field_selector=f"metadata.name={name}",
                resource_version=rv,
                timeout_seconds=max(1, int(deadline.remaining())),
                _request_timeout=_timeout(deadline),
                deserialize=False,
            ):
                if event["type"] == "DELETED":
                    yield None
                    return
                yield event["object"]
        except BackendError:
            raise
        except KeyError as exc:  # the client reads an ERROR event's raw_object, absent raw
            raise BackendError(
                f"watch of pod {name} failed: the API server ended it with an error event"
            ) from exc
        except Exception as exc:
            raise _api_error(exc, "watch pod", self._address()) from exc
        finally:
            w.stop()


def _json(response: Any) -> dict[str, Any]:
    """The body of a response the client left raw (`_preload_content=False`)."""
    parsed: dict[str, Any] = json.loads(response.data or b"{}")
    return parsed


def _timeout(deadline: Deadline) -> float:
    """A request timeout: the time left, but never 0 (which would mean none)."""
    return max(deadline.remaining(), 0.001)


def _status_message(body: bytes | str | None, fallback: str) -> str:
    """The `message` of a Kubernetes Status body, else `fallback`."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        return str(json.loads(body or "{}").get("message") or fallback)
    return fallback


def _api_error(exc: Exception, doing: str, address: str) -> BackendError:
    """The cluster's own message; an API server that cannot be reached is `unavailable`."""
    import urllib3.exceptions
    from kubernetes.client.exceptions import ApiException

    server = "the Kubernetes API server"
    if isinstance(exc, ApiException):
        message = _status_message(exc.body, exc.reason or "")
        if exc.status == 0 or exc.status is None:
            return BackendUnavailable(f"{doing}: cannot reach {server} at {address}: {message}")
        return BackendError(f"{doing}: API server answered {exc.status}: {message}")
    if isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | OSError):
        return BackendUnavailable(f"{doing}: {BackendUnavailable.at(server, address, exc)}")
    import websocket

    if isinstance(exc, websocket.WebSocketException):
        return BackendUnavailable(f"{doing}: {BackendUnavailable.at(server, address, exc)}")
    return BackendError(f"{doing}: {exc}")


def _refused(exc: Any) -> BackendError:
    """An exec handshake the API server answered with an error status: it is up, and
    says no (400, 403 without pods/exec, 404 ...)."""
    status = int(exc.status_code)
    message = _status_message(exc.resp_body, exc.status_message or str(exc))
    if status >= 500:
        return BackendUnavailable(f"exec: API server answered {status}: {message}")
    return BackendError(f"exec: API server answered {status}: {message}")


def _exit_code(status: bytes) -> int:
    """The exit code from the status channel (a Status object; as the client reads it)."""
    try:
        parsed = json.loads(status or b"{}")
    except ValueError:
        return -1
    if parsed.get("status") == "Success":
        return 0
    for cause in (parsed.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            with contextlib.suppress(TypeError, ValueError):
                return int(cause.get("message"))
    return -1


def _ssl_options(cfg: Any, url: str) -> dict[str, Any]:
    """TLS for the exec websocket from the client's configuration, as its `stream()` does."""
    if not url.startswith("wss://"):
        return {}
    options: dict[str, Any] = {"cert_reqs": ssl.CERT_NONE}
    if cfg.verify_ssl:
        import certifi

        options = {"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": cfg.ssl_ca_cert or certifi.where()}
        if cfg.assert_hostname is not None:
            options["check_hostname"] = cfg.assert_hostname
    if cfg.cert_file:
        options["certfile"] = cfg.cert_file
    if cfg.key_file:
        options["keyfile"] = cfg.key_file
    if cfg.tls_server_name:
        options["server_hostname"] = cfg.tls_server_name
    return options


KIND = BackendKind(
    name="kubernetes",
    options=KubernetesOptions,
    factory=KubernetesBackend,
    capabilities=Capabilities(
        images=Images.ENGINE, remote=True, needs_root=False, thread_safe=True
    ),
    aliases=("k8s",),
    extra="kubernetes",
    summary="a Pod per probe in a cluster (optional runtimeClassName, NetworkPolicy)",
)
