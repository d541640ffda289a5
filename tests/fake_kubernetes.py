"""A test double of the Kubernetes API server that the real `kubernetes` client talks to.

It speaks, on loopback, the real paths and JSON shapes of the calls the backend
makes: version; namespaces get/create; pods create/get/list/watch/delete;
networkpolicies create/delete/list; and pod exec over a websocket with the
v4.channel.k8s.io protocol (stdout on channel 1, stderr on 2, the status on 3,
its exit code in details.causes as the client parses it). The command runs for real,
on this host (loopback_app.Commands), its output sent as it comes; what is still
running when the pod is deleted goes with it.

Pods move Pending -> (PodScheduled) -> ContainerCreating -> Running with
realistic conditions and containerStatuses, each change a watch event with a
growing resourceVersion. `faults` makes it misbehave: forbidden, quota,
image_pull, unschedulable, crash, slow_scheduling (seconds), exec_refused (the
status of a refused exec handshake: 400, or 403 without `pods/exec`), hang (a set
of "create", "exec", "delete": those requests are accepted and never answered);
`stop()` takes the whole server down (unreachable).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.loopback_app import LoopbackApp

STEP = 0.02  # seconds between a pod's status changes
CHANNELS = {"stdout": b"\x01", "stderr": b"\x02"}  # v4.channel.k8s.io


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.json_response(body, status=code)


class FakeKubernetes(LoopbackApp):
    def __init__(self) -> None:
        self.namespaces: set[str] = {"default", "sandbox-exporter-probes"}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.policies: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []  # rv, ns, type, object
        self.faults: dict[str, Any] = {}
        self.requests: list[tuple[str, str]] = []
        self.exec_commands: list[list[str]] = []
        self.hung: list[tuple[str, str]] = []
        self._rv = 100
        self._start()

    # -- lifecycle of the double --------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/version", self.version)
        app.router.add_get("/version/", self.version)
        app.router.add_get("/api/v1/namespaces/{ns}", self.get_namespace)
        app.router.add_post("/api/v1/namespaces", self.create_namespace)
        app.router.add_post("/api/v1/namespaces/{ns}/pods", self.create_pod)
        app.router.add_get("/api/v1/namespaces/{ns}/pods", self.list_pods)
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}", self.get_pod)
        app.router.add_delete("/api/v1/namespaces/{ns}/pods/{name}", self.delete_pod)
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}/exec", self.exec)
        app.router.add_post("/api/v1/namespaces/{ns}/pods/{name}/exec", self.exec)
        base = "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies"
        app.router.add_post(base, self.create_policy)
        app.router.add_get(base, self.list_policies)
        app.router.add_delete(base + "/{name}", self.delete_policy)
        app.middlewares.append(self._record)
        return app

    def kubeconfig(self, path: str) -> str:
        with open(path, "w") as handle:
            json.dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                },
                handle,
            )
        return path

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        if request.headers.get("Authorization") != "Bearer fake-token":
            return _status(401, "Unauthorized", "Unauthorized")
        if self._hangs(request):
            self.hung.append((request.method, request.path))
            await asyncio.Event().wait()  # accepted, never answered (until the client gives up)
        response: web.StreamResponse = await handler(request)
        return response

    def _hangs(self, request: web.Request) -> bool:
        hang = self.faults.get("hang", set())
        path = request.path
        return (
            ("create" in hang and request.method == "POST" and path.endswith("/pods"))
            or ("exec" in hang and path.endswith("/exec"))
            or ("delete" in hang and request.method == "DELETE" and "/pods/" in path)
        )

    # -- store ----------------------------------------------------------------------

    async def _emit(self, ns: str, kind: str, pod: dict[str, Any]) -> None:
        self._rv += 1
        pod["metadata"]["resourceVersion"] = str(self._rv)
        self.events.append((self._rv, ns, kind, copy.deepcopy(pod)))
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    # -- handlers -------------------------------------------------------------------

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "major": "1",
                "minor": "30",
                "gitVersion": "v1.30.0-fake",
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.22.0",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        )

    async def get_namespace(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        if ns not in self.namespaces:
            return _status(404, "NotFound", f'namespaces "{ns}" not found')
        return web.json_response(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns},
                "status": {"phase": "Active"},
            }
        )

    async def create_namespace(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.namespaces.add(body["metadata"]["name"])
        return web.json_response({**body, "status": {"phase": "Active"}}, status=201)

    async def create_pod(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        pod = await request.json()
        name = pod["metadata"]["name"]
        if "forbidden" in self.faults:
            return _status(
                403,
                "Forbidden",
                f'pods is forbidden: User "system:serviceaccount:'
                f'monitoring:sandbox-exporter" cannot create resource "pods" in API '
                f'group "" in the namespace "{ns}"',
            )
        if "quota" in self.faults:
            return _status(
                403,
                "Forbidden",
                f'pods "{name}" is forbidden: exceeded quota: '
                "probes, requested: pods=1, used: pods=5, limited: pods=5",
            )
        if ns not in self.namespaces:
            return _status(404, "NotFound", f'namespaces "{ns}" not found')
        if (ns, name) in self.pods:
            return _status(409, "AlreadyExists", f'pods "{name}" already exists')
        pod["metadata"].update({"namespace": ns, "uid": f"uid-{name}", "creationTimestamp": _now()})
        pod["status"] = {"phase": "Pending", "qosClass": "Guaranteed"}
        self.pods[(ns, name)] = pod
        await self._emit(ns, "ADDED", pod)
        self._spawn(self._progress(ns, name))
        return web.json_response(pod, status=201)

    async def _progress(self, ns: str, name: str) -> None:
        """Pending -> scheduled -> creating -> running (or the configured failure)."""
        await asyncio.sleep(STEP + float(self.faults.get("slow_scheduling", 0)))
        pod = self.pods.get((ns, name))
        if pod is None:
            return
        container = pod["spec"]["containers"][0]
        if "unschedulable" in self.faults:
            pod["status"]["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "lastTransitionTime": _now(),
                    "message": "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 "
                    "nodes are available: 3 No preemption victims found.",
                }
            ]
            await self._emit(ns, "MODIFIED", pod)
            return
        pod["spec"]["nodeName"] = "node-1"
        pod["status"]["conditions"] = [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": _now()}
        ]
        waiting = {"waiting": {"reason": "ContainerCreating"}}
        pod["status"]["containerStatuses"] = [
            {
                "name": container["name"],
                "image": container["image"],
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "started": False,
                "state": waiting,
            }
        ]
        await self._emit(ns, "MODIFIED", pod)
        await asyncio.sleep(STEP)
        if (ns, name) not in self.pods:
            return
        status = pod["status"]["containerStatuses"][0]
        if "image_pull" in self.faults:
            for reason in ("ErrImagePull", "ImagePullBackOff"):
                status["state"] = {
                    "waiting": {
                        "reason": reason,
                        "message": f'Back-off pulling image "{container["image"]}"'
                        if reason == "ImagePullBackOff"
                        else f'failed to pull image "{container["image"]}": not found',
                    }
                }
                await self._emit(ns, "MODIFIED", pod)
                await asyncio.sleep(STEP)
            return
        if "crash" in self.faults:
            status["state"] = {
                "terminated": {
                    "exitCode": 1,
                    "reason": "Error",
                    "message": "sh: not found",
                    "startedAt": _now(),
                    "finishedAt": _now(),
                }
            }
            pod["status"]["phase"] = "Failed"
            await self._emit(ns, "MODIFIED", pod)
            return
        status.update({"state": {"running": {"startedAt": _now()}}, "started": True, "ready": True})
        pod["status"].update({"phase": "Running", "podIP": "10.0.0.9", "startTime": _now()})
        pod["status"]["conditions"] += [
            {"type": t, "status": "True", "lastTransitionTime": _now()}
            for t in ("Initialized", "ContainersReady", "Ready")
        ]
        await self._emit(ns, "MODIFIED", pod)

    async def get_pod(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        pod = self.pods.get((ns, name))
        if pod is None:
            return _status(404, "NotFound", f'pods "{name}" not found')
        return web.json_response(pod)

    def _matches(self, pod: dict[str, Any], request: web.Request) -> bool:
        field = request.query.get("fieldSelector", "")
        if field.startswith("metadata.name=") and pod["metadata"]["name"] != field.split("=", 1)[1]:
            return False
        labels = pod["metadata"].get("labels") or {}
        for term in filter(None, request.query.get("labelSelector", "").split(",")):
            key, _, value = term.partition("=")
            if labels.get(key) != value:
                return False
        return True

    async def list_pods(self, request: web.Request) -> web.StreamResponse:
        ns = request.match_info["ns"]
        if request.query.get("watch") in ("true", "1"):
            return await self._watch(request, ns)
        items = [p for (n, _), p in self.pods.items() if n == ns and self._matches(p, request)]
        return web.json_response(
            {
                "apiVersion": "v1",
                "kind": "PodList",
                "items": items,
                "metadata": {"resourceVersion": str(self._rv)},
            }
        )

    async def _watch(self, request: web.Request, ns: str) -> web.StreamResponse:
        since = int(request.query.get("resourceVersion") or self._rv)
        deadline = self._loop.time() + float(request.query.get("timeoutSeconds", 30))
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        assert self._changed is not None
        while True:
            for rv, event_ns, kind, obj in list(self.events):
                if rv > since and event_ns == ns and self._matches(obj, request):
                    try:
                        await response.write(
                            json.dumps({"type": kind, "object": obj}).encode() + b"\n"
                        )
                    except ConnectionError:
                        return response  # the client stopped watching
                    since = rv
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                break
            async with self._changed:
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=remaining)
                except TimeoutError:
                    break
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    async def delete_pod(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        pod = self.pods.get((ns, name))
        if pod is None:
            return _status(404, "NotFound", f'pods "{name}" not found')
        grace = int(request.query.get("gracePeriodSeconds", 30))
        pod["metadata"]["deletionTimestamp"] = _now()
        pod["metadata"]["deletionGracePeriodSeconds"] = grace
        await self._emit(ns, "MODIFIED", pod)
        answer = copy.deepcopy(pod)

        async def finish() -> None:
            await asyncio.sleep(STEP)  # the keep-alive exits at once on SIGTERM
            await self.commands.end(f"{ns}/{name}")  # and what an exec left running with it
            if self.pods.pop((ns, name), None) is not None:
                await self._emit(ns, "DELETED", pod)

        self._spawn(finish())
        return web.json_response(answer)

    async def exec(self, request: web.Request) -> web.StreamResponse:
        ns, name = request.match_info["ns"], request.match_info["name"]
        pod = self.pods.get((ns, name))
        if pod is None or pod["status"].get("phase") != "Running":
            return _status(400, "BadRequest", f"pod {name} is not running")
        command = request.query.getall("command")
        self.exec_commands.append(command)
        refused = self.faults.get("exec_refused")
        if refused == 403:
            return _status(
                403,
                "Forbidden",
                f'pods "{name}" is forbidden: User "system:'
                'serviceaccount:monitoring:sandbox-exporter" cannot create resource '
                f'"pods/exec" in API group "" in the namespace "{ns}"',
            )
        if refused == 400:
            return _status(400, "BadRequest", f"container probe is not valid for pod {name}")
        ws = web.WebSocketResponse(protocols=("v4.channel.k8s.io",))
        await ws.prepare(request)

        async def send(stream: str, data: bytes) -> None:
            await ws.send_bytes(CHANNELS[stream] + data)

        try:
            code = await self.commands.run(f"{ns}/{name}", command, send)
        except ConnectionError:  # the client went away; the command goes on (`Commands`)
            return ws
        if code == 0:
            status = {"metadata": {}, "status": "Success"}
        else:
            status = {
                "metadata": {},
                "status": "Failure",
                "reason": "NonZeroExitCode",
                "message": f"command terminated with non-zero exit code: {code}",
                "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
            }
        await ws.send_bytes(b"\x03" + json.dumps(status).encode())
        await ws.close()
        return ws

    async def create_policy(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        body = await request.json()
        body["metadata"]["namespace"] = ns
        self.policies[(ns, body["metadata"]["name"])] = body
        return web.json_response(body, status=201)

    async def list_policies(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        items = [p for (n, _), p in self.policies.items() if n == ns and self._matches(p, request)]
        return web.json_response(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicyList",
                "items": items,
                "metadata": {},
            }
        )

    async def delete_policy(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        if self.policies.pop((ns, name), None) is None:
            return _status(404, "NotFound", f'networkpolicies.networking.k8s.io "{name}" not found')
        return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success"})
