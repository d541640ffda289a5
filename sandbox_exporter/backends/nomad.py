"""Nomad backend: one batch job per probe, through python-nomad; exec over Nomad's websocket.

create = register the job (`PUT /v1/job/<id>`) and read back the evaluation the
         register made (`GET /v1/evaluation/<id>`): the job is known and the
         scheduler has work for it;
start  = a blocking query on that evaluation until the scheduler is done with it
         (a placement failure ends here with the evaluation's `FailedTGAllocs`,
         in Nomad's words), then blocking queries on the job's allocations and on
         the allocation until its task is `running`; a `Driver Failure` (an image
         that cannot be pulled) or an allocation that ends fails the phase with the
         task event's own message;
exec   = `/v1/client/allocation/<alloc>/exec` over a websocket: stdin closed at
         once, stdout/stderr frames collected (up to the output cap, base.py), the
         exit code from the `exited`
         frame; a close 1008/1011 is Nomad's error (its reason is the message);
stop   = deregister the job (no purge), then a blocking query on the job's
         allocations until every one is terminal (kill_timeout = stop_grace);
remove = deregister with `purge=true` (a job that is not there is no error, as in
         Nomad), and confirm `GET /v1/job/<id>` is a 404.

Why parts are written by hand rather than taken from python-nomad:

- Deadlines. python-nomad's `timeout` is fixed when its endpoint objects are made,
  and objects shared by threads cannot change it safely. Every request here is made
  on a fresh python-nomad endpoint (`nomad.api.Job` ..., with the settings
  `nomad.Nomad` would give it, over one shared `requests.Session`: a few
  microseconds, where a whole `nomad.Nomad` costs a good part of a millisecond,
  BENCHMARKS.md, "Costs the code relies on") whose timeout is what is left of the
  deadline.
- Blocking queries. python-nomad has no `index`/`wait` parameters; they go through
  the endpoint's own `request(..., params={"index", "wait"})`, which returns the raw
  response with `X-Nomad-Index`. The `wait` asked for leaves room for Nomad's
  jitter (up to wait/16) inside the request timeout, and is never 0 (which Nomad
  reads as its 5-minute default).
- Exec. python-nomad has no exec and no websocket. websocket-client
  (`websocket.WebSocket`) is maintained, already installed with the Kubernetes
  extra (the kubernetes client uses it), synchronous like the rest of a backend
  call, and takes a timeout per connect and per receive, so the exec is bounded by
  its deadline and `kill` can abort it from another thread.
- The namespace on evaluation reads. python-nomad adds `namespace` to job and
  allocation endpoints but not to evaluation ones, and Nomad checks `read-job` on
  the request's namespace before the evaluation's (nomad/eval_endpoint.go GetEval):
  without it a token for a namespace other than `default` gets "Permission denied".
  So evaluations are read through the endpoint's `request` with the namespace.
- TLS server name. requests cannot set SNI/the checked host name; a small
  transport adapter passes `server_hostname`/`assert_hostname` to urllib3.

The job is hardened for the docker driver (podman: the keys it shares): all
capabilities dropped, read-only root, no network, no-new-privileges, a pids
limit; no restarts and no reschedule; the project's labels as job and task Meta.
`privileged` is never set. The token is a secret: never in `repr`, logs or
messages.

ACL (the namespace policy, docs/backends/nomad.md): submit-job (register, deregister,
purge), read-job (job, its allocations, evaluations, the allocation),
list-jobs (orphans), alloc-exec (exec).
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

from pydantic import Field, SecretStr, field_validator

from sandbox_exporter.backends.base import (
    NAME_PREFIX,
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
    is_managed,
)
from sandbox_exporter.backends.docker import DEFAULT_KEEPALIVE
from sandbox_exporter.backends.nomad_job import TASK, job
from sandbox_exporter.backends.nomad_messages import TERMINAL, placement_problem, start_problem
from sandbox_exporter.backends.websocket_exec import ExecSockets
from sandbox_exporter.config.settings import StrictModel, Timeouts

ACL_CAPABILITIES = ("submit-job", "read-job", "list-jobs", "alloc-exec")  # see the docstring
HEARTBEAT = 10.0  # seconds between `{}` frames on the exec websocket, as Nomad's CLI sends


class NomadConstraint(StrictModel):
    """A placement constraint: `{attribute: "${attr.kernel.name}", operator: "=", value: linux}`."""

    attribute: str = ""
    """The node attribute, in Nomad's own `${...}` syntax (not substituted from the
    environment).
    """
    operator: str = "="
    """Nomad's constraint operator (`=`, `!=`, `regexp`, ...)."""
    value: str = ""
    """The value the attribute is compared with."""


class NomadOptions(BackendOptions):
    address: str = Field("http://127.0.0.1:4646", description="The agent's HTTP API.")
    token: SecretStr | None = Field(
        None, description='An ACL token; write "${NOMAD_TOKEN}" to take it from the environment.'
    )
    namespace: str = "default"
    """The Nomad namespace the probe jobs run in."""
    region: str | None = None
    """The Nomad region; null: the agent's."""
    ca_cert: str | None = Field(None, description="A CA bundle to verify the agent's certificate.")
    client_cert: str | None = None
    """Client certificate for mutual TLS."""
    client_key: str | None = None
    """The client certificate's key."""
    tls_server_name: str | None = None
    """The server name to verify the agent's certificate against."""
    tls_skip_verify: bool = False
    """Do not verify the agent's certificate (testing only)."""
    datacenters: tuple[str, ...] = ("*",)
    """The datacenters the probe job may be placed in."""
    node_pool: str | None = None
    """The node pool the probe job is placed in (Nomad 1.6+); null: Nomad's default."""
    constraints: tuple[NomadConstraint, ...] = ()
    """Placement constraints added to the probe job."""
    driver: Literal["docker", "podman", "exec"] = "docker"
    """The task driver that runs the probe: `docker`, `podman` or `exec`."""
    mhz_per_cpu: int = Field(
        1000,
        ge=1,
        description="Nomad counts CPU in MHz: a probe asks for `resources.cpus` times this.",
    )
    keepalive: tuple[str, ...] = Field(DEFAULT_KEEPALIVE, min_length=1)
    """What the task runs between start and stop; it must exit at once on SIGTERM."""

    @field_validator("address")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")


@dataclass(frozen=True)
class JobHandle(SandboxRef):
    """The job (its id is the sandbox's name) and the evaluation its register made."""

    eval_id: str = ""


class NomadBackend:
    def __init__(self, options: NomadOptions, timeouts: Timeouts) -> None:
        import nomad  # python-nomad: only now that a target uses this backend
        import requests

        self._nomad = nomad
        self.options = options
        self._session = requests.Session()
        if options.tls_server_name:
            self._session.mount("https://", _server_name_adapter(options.tls_server_name))
        verify: bool | str = not options.tls_skip_verify
        if options.ca_cert and not options.tls_skip_verify:
            verify = options.ca_cert
        # what `nomad.Nomad(...)` hands each of its endpoints, from the options alone (not
        # NOMAD_TOKEN & co.: the config says where a secret comes from)
        self._settings: dict[str, Any] = {
            "address": options.address,
            "uri": options.address,
            "port": None,
            "user_agent": None,
            "namespace": options.namespace,
            "token": self._token(),
            "version": "v1",
            "verify": verify,
            "region": options.region,
            "cert": (options.client_cert, options.client_key)
            if options.client_cert and options.client_key
            else (),
            "session": self._session,
        }
        self._lock = threading.Lock()
        self._allocs: dict[str, str] = {}  # job -> its allocation, found by start
        self._exec_sockets = ExecSockets()  # for `kill`

    # -- plumbing ------------------------------------------------------------------

    def _api(self, deadline: Deadline) -> _Client:
        """python-nomad's endpoints, each request of which ends within `deadline`."""
        return _Client(self._nomad.api, {**self._settings, "timeout": _timeout(deadline)})

    def _token(self) -> str | None:
        token = self.options.token
        return token.get_secret_value() if token is not None else None

    def _call(
        self, doing: str, fn: Any, *args: Any, missing_ok: bool = False, **kwargs: Any
    ) -> Any:
        """`fn(*args, **kwargs)`, its errors in Nomad's words; with `missing_ok`, None on 404."""
        from nomad.api import exceptions

        try:
            return fn(*args, **kwargs)
        except exceptions.URLNotFoundNomadException as exc:
            if missing_ok:
                return None
            raise _api_error(exc, doing, self.options.address) from exc
        except (exceptions.BaseNomadException, exceptions.TimeoutNomadException) as exc:
            raise _api_error(exc, doing, self.options.address) from exc
        except BackendError:
            raise
        except Exception as exc:
            raise _api_error(exc, doing, self.options.address) from exc

    def _blocking(
        self, doing: str, endpoint: Any, path: Sequence[str], index: int, deadline: Deadline
    ) -> tuple[Any, int]:
        """A blocking query: the body once Nomad's index for `path` passes `index`, or
        when the wait (within `deadline`) expires; and the new X-Nomad-Index."""
        remaining = deadline.remaining()
        if remaining <= 0:
            raise BackendError(f"{doing}: the deadline passed")
        wait_ms = max(1, int(remaining * 1000 * 16 / 17) - 50)  # + jitter (wait/16) < remaining
        params = {"index": str(index), "wait": f"{wait_ms}ms", "namespace": self.options.namespace}
        response = self._call(
            doing, endpoint.request, *path, params=params, method="get", timeout=_timeout(deadline)
        )
        try:
            new_index = int(response.headers.get("X-Nomad-Index", index))
        except ValueError:
            new_index = index
        return response.json(), new_index

    # -- protocol --------------------------------------------------------------------

    def ping(self, deadline: Deadline) -> None:
        self._call("status", self._api(deadline).status.leader.get_leader)

    def describe(self, image: str | None, deadline: Deadline) -> dict[str, str]:
        """What `bench --json` records of the agent: its version."""
        agent = self._call("agent self", self._api(deadline).agent.get_agent) or {}
        version = (agent.get("config") or {}).get("Version") or {}
        found = version.get("Version") or (agent.get("member") or {}).get("Tags", {}).get("build")
        return {"nomad_version": str(found or "")}

    def create(self, spec: SandboxSpec, deadline: Deadline) -> JobHandle:
        registered = self._call(
            "register job",
            self._api(deadline).job.register_job,
            spec.name,
            {"Job": job(spec, self.options)},
        )
        eval_id = str(registered.get("EvalID") or "")
        if not eval_id:
            raise BackendError(f"register job: Nomad made no evaluation for job {spec.name}")
        # get_evaluation(eval_id), with the namespace python-nomad leaves off (see above)
        self._call(
            "read evaluation",
            self._api(deadline).evaluation.request,
            eval_id,
            method="get",
            params={"namespace": self.options.namespace},
        )
        return JobHandle(spec.name, eval_id)

    def start(self, sandbox: JobHandle, deadline: Deadline) -> None:
        name = sandbox.name
        evaluation = self._await_evaluation(sandbox, deadline)
        problem = placement_problem(evaluation)
        if problem:
            raise BackendError(f"job {name}: {problem}")
        alloc_id = self._await_allocation(name, deadline)
        with self._lock:
            self._allocs[name] = alloc_id
        index = 0
        while True:
            alloc, index = self._blocking(
                "read allocation", self._api(deadline).allocation, [alloc_id], index, deadline
            )
            problem = start_problem(alloc)
            if problem:
                raise BackendError(f"job {name}: {problem}")
            state = ((alloc.get("TaskStates") or {}).get(TASK) or {}).get("State")
            if alloc.get("ClientStatus") == "running" and state == "running":
                return

    def exec(self, sandbox: SandboxRef, command: Sequence[str], deadline: Deadline) -> ExecResult:
        import websocket

        output = Output()
        exit_code: int | None = None
        with self._exec_socket(sandbox.name, command, deadline) as ws:
            last_sent = time.monotonic()
            _send(ws, json.dumps({"stdin": {"close": True}}))
            while True:
                now = time.monotonic()
                if now - last_sent >= HEARTBEAT:
                    _send(ws, "{}")
                    last_sent = now
                ws.settimeout(max(0.001, min(deadline.remaining(), last_sent + HEARTBEAT - now)))
                try:
                    opcode, data = ws.recv_data()
                except websocket.WebSocketTimeoutException:
                    if deadline.expired:
                        raise BackendError(
                            "exec: Nomad sent no exit code before the deadline"
                        ) from None
                    continue
                except websocket.WebSocketConnectionClosedException:
                    break
                except (websocket.WebSocketException, OSError) as exc:
                    raise _api_error(exc, "exec", self.options.address) from exc
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    code, reason = _close_frame(data)
                    if code not in (1000, None) or exit_code is None:
                        if code in (1000, None):
                            reason = reason or "the stream ended without an exit code"
                        raise BackendError(f"exec: Nomad closed the stream ({code}): {reason}")
                    break
                if opcode != websocket.ABNF.OPCODE_TEXT:
                    continue
                frame = json.loads(data or b"{}")
                for stream in ("stdout", "stderr"):
                    chunk = (frame.get(stream) or {}).get("data")
                    if chunk:
                        output.add(base64.b64decode(chunk))
                if frame.get("exited"):
                    exit_code = int((frame.get("result") or {}).get("exit_code") or 0)
        if exit_code is None:
            raise BackendError("exec: Nomad closed the stream without an exit code")
        return ExecResult(exit_code, output.text())

    def stop(self, sandbox: SandboxRef, grace_seconds: float, deadline: Deadline) -> None:
        name = sandbox.name
        stopped = self._call(
            "deregister job", self._api(deadline).job.deregister_job, name, missing_ok=True
        )
        if stopped is None or not stopped.get("EvalID"):  # no such job: nothing runs
            return
        index = 0
        while True:
            allocs, index = self._blocking(
                "list allocations", self._api(deadline).job, [name, "allocations"], index, deadline
            )
            if all(a.get("ClientStatus") in TERMINAL for a in allocs or []):
                return

    def remove(self, sandbox: SandboxRef, deadline: Deadline) -> None:
        name = sandbox.name
        with self._lock:
            self._allocs.pop(name, None)
        self._call(
            "purge job", self._api(deadline).job.deregister_job, name, purge=True, missing_ok=True
        )
        job = self._call("read job", self._api(deadline).job.get_job, name, missing_ok=True)
        if job is not None:
            raise BackendError(f"job {name} is still there after its purge")

    def list_managed(self, target: str, deadline: Deadline) -> list[ManagedSandbox]:
        stubs = self._call(
            "list jobs", self._api(deadline).jobs.get_jobs, prefix=NAME_PREFIX, meta=True
        )
        found = []
        for stub in stubs or []:
            name = str(stub.get("ID", ""))
            meta = stub.get("Meta")
            if meta is None:  # an agent older than the `meta` parameter (1.6)
                job = self._call("read job", self._api(deadline).job.get_job, name, missing_ok=True)
                meta = (job or {}).get("Meta")
            meta = {str(k): str(v) for k, v in (meta or {}).items()}
            if is_managed(meta, target):
                found.append(ManagedSandbox.from_labels(name, meta))
        return found

    def kill(self, sandbox: SandboxRef) -> None:
        """Abort the exec websocket of this sandbox, if one is open; every HTTP request
        ends with its own timeout."""
        self._exec_sockets.abort(sandbox.name)

    def close(self) -> None:
        self._session.close()

    # -- helpers ----------------------------------------------------------------------

    def _await_evaluation(self, sandbox: JobHandle, deadline: Deadline) -> dict[str, Any]:
        """The register's evaluation once the scheduler is done with it."""
        index = 0
        while True:
            evaluation, index = self._blocking(
                "read evaluation",
                self._api(deadline).evaluation,
                [sandbox.eval_id],
                index,
                deadline,
            )
            if evaluation.get("Status") not in ("pending", None):
                return dict(evaluation)

    def _await_allocation(self, name: str, deadline: Deadline) -> str:
        """The job's allocation (the newest, should a reschedule have made another)."""
        index = 0
        while True:
            allocs, index = self._blocking(
                "list allocations", self._api(deadline).job, [name, "allocations"], index, deadline
            )
            if allocs:
                newest = max(allocs, key=lambda a: int(a.get("CreateIndex") or 0))
                return str(newest["ID"])

    @contextlib.contextmanager
    def _exec_socket(self, name: str, command: Sequence[str], deadline: Deadline) -> Iterator[Any]:
        with self._lock:
            alloc_id = self._allocs.get(name)
        api = self._api(deadline)
        if alloc_id is None:
            allocs = self._call("list allocations", api.job.get_allocations, name) or []
            running = [a for a in allocs if a.get("ClientStatus") == "running"]
            if not running:
                raise BackendError(f"exec: job {name} has no running allocation")
            alloc_id = str(running[0]["ID"])
        o = self.options
        query = {
            "task": TASK,
            "command": json.dumps(list(command)),
            "tty": "false",
            "namespace": o.namespace,
        }
        if o.region:
            query["region"] = o.region
        base = o.address.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        url = f"{base}/v1/client/allocation/{alloc_id}/exec?{urlencode(query)}"
        token = self._token()
        header = [f"X-Nomad-Token: {token}"] if token else []
        with self._exec_sockets.connect(
            name,
            url,
            sslopt=self._ssl_options(url),
            refused=_refused,
            unreachable=lambda exc: _api_error(exc, "exec", o.address),
            close_timeout=0.1,
            header=header,
            timeout=_timeout(deadline),
        ) as ws:
            yield ws

    def _ssl_options(self, url: str) -> dict[str, Any]:
        import ssl

        if not url.startswith("wss://"):
            return {}
        o = self.options
        if o.tls_skip_verify:
            options: dict[str, Any] = {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}
        else:
            options = {"cert_reqs": ssl.CERT_REQUIRED}
            if o.ca_cert:
                options["ca_certs"] = o.ca_cert
        if o.client_cert and o.client_key:
            options.update(certfile=o.client_cert, keyfile=o.client_key)
        if o.tls_server_name:
            options["server_hostname"] = o.tls_server_name
        return options


_ENDPOINTS = {
    "job": "Job",
    "jobs": "Jobs",
    "allocation": "Allocation",
    "evaluation": "Evaluation",
    "status": "Status",
    "agent": "Agent",
}


class _Client:
    """The python-nomad endpoints a call uses, made for that call: `nomad.Nomad(...)`
    makes all 27 of them, inside a timed phase; one endpoint costs a few microseconds."""

    def __init__(self, api: Any, settings: dict[str, Any]) -> None:
        self._api = api
        self._settings = settings

    def __getattr__(self, name: str) -> Any:
        if name not in _ENDPOINTS:
            raise AttributeError(name)
        return getattr(self._api, _ENDPOINTS[name])(**self._settings)


def _server_name_adapter(server_name: str) -> Any:
    """A requests transport that sends and checks `server_name` as the TLS server name."""
    from requests.adapters import HTTPAdapter

    class ServerNameAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs.update(server_hostname=server_name, assert_hostname=server_name)
            super().init_poolmanager(*args, **kwargs)

    return ServerNameAdapter()


def _timeout(deadline: Deadline) -> float:
    """A request timeout: the time left, but never 0 (which would mean none)."""
    return max(deadline.remaining(), 0.001)


def _refused(exc: Any) -> BackendError:
    """An exec handshake Nomad answered with an error status, in its words."""
    body = exc.resp_body.decode(errors="replace") if exc.resp_body else ""
    return BackendError(f"exec: Nomad answered {exc.status_code}: {body.strip() or exc}")


def _send(ws: Any, text: str) -> None:
    """Send a frame; a stream Nomad already closed says why in its close frame, read next."""
    import websocket

    with contextlib.suppress(websocket.WebSocketException, OSError):
        ws.send(text)


def _close_frame(data: bytes | None) -> tuple[int | None, str]:
    """A close frame's status code and reason."""
    if not data or len(data) < 2:
        return None, ""
    return int.from_bytes(data[:2], "big"), data[2:].decode(errors="replace")


def _api_error(exc: BaseException, doing: str, address: str) -> BackendError:
    """Nomad's own answer; an agent that cannot be reached is `unavailable`."""
    import requests
    from nomad.api import exceptions

    if isinstance(exc, exceptions.BaseNomadException):
        response = exc.nomad_resp
        if isinstance(response, requests.Response):
            text = (response.text or response.reason or "").strip()
            return BackendError(f"{doing}: Nomad answered {response.status_code}: {text}")
        exc = response if isinstance(response, BaseException) else exc
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return BackendError(f"{doing}: Nomad at {address} did not answer in time")
    if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError | OSError):
        return BackendUnavailable(f"{doing}: {BackendUnavailable.at('Nomad', address, exc)}")
    import websocket

    if isinstance(exc, websocket.WebSocketTimeoutException):
        return BackendError(f"{doing}: Nomad at {address} did not answer in time")
    if isinstance(exc, websocket.WebSocketException):
        return BackendUnavailable(f"{doing}: {BackendUnavailable.at('Nomad', address, exc)}")
    return BackendError(f"{doing}: {exc}")


KIND = BackendKind(
    name="nomad",
    options=NomadOptions,
    factory=NomadBackend,
    capabilities=Capabilities(
        images=Images.ENGINE, remote=True, needs_root=False, thread_safe=True
    ),
    extra="nomad",
    summary="a batch job per probe on a Nomad cluster (docker, podman or exec driver)",
)
