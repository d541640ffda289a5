"""A test double of a Nomad agent's HTTP API that the real python-nomad and
websocket-client talk to, unchanged.

It serves on loopback the paths and JSON shapes of the calls the backend makes:
status/leader; job register (PUT/POST /v1/job/<id>), read, deregister (with and
without purge), its allocations and evaluations; the job list (prefix, meta);
evaluations; allocations; and alloc exec over a websocket.

Modelled as Nomad does it (command/agent/http.go, alloc_endpoint.go,
plugins/drivers/proto): every write moves one Raft-like index; reads answer with
`X-Nomad-Index`; a read with `?index=N` (N > 0) is a blocking query that really
blocks (a condition variable) until the object it reads changes past N or `wait`
(plus a random jitter of up to wait/16) runs out. A register makes a `pending`
evaluation; the "scheduler" then completes it and places an allocation (or, told
to, fails placement: `FailedTGAllocs` metrics and a `BlockedEval`). The
allocation moves pending -> running -> complete (or failed), with TaskStates and
Events (Received, Task Setup, Driver, Started | Driver Failure + Not Restarting,
Killing, Killed). The exec websocket takes the client's JSON text frames (stdin
data/close, tty_size, `{}` heartbeats), answers base64 stdout frames and
`{"exited":true,"result":{...}}` (exit code 0 as `{}`), then closes 1000; errors
after the upgrade are a close frame 1008 (or 1011 for a 500) with the error text.
The command runs for real, on this host (loopback_app.Commands), its output sent as
it comes; what is still running when the task is killed goes with it.

With a token, ACLs are on: a request without it is a 403, and `capabilities` (a
set of namespace capabilities the token's policy grants) makes each endpoint check
the one Nomad checks. `faults` makes it misbehave: forbid (a set of "register", "exec": 403 /
close 1008 "Permission denied"), placement ("constraint" or "memory"),
driver_failure, exec_error (the text of a 500 inside the exec: close 1011),
slow_placement (seconds),
down_during ("start": the agent goes away while start's blocking query waits);
`stop()` takes the agent down (connections refused), `restart()` brings it back on
the same port.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import random
import ssl
import time
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from tests.loopback_app import LoopbackApp

STEP = 0.02  # seconds between an allocation's status changes
TASK = "probe"


def _id() -> str:
    return str(uuid.uuid4())


def _text(status: int, message: str) -> web.Response:
    """Nomad answers an error with its message as text/plain."""
    return web.Response(status=status, text=message)


def _duration(text: str) -> float:
    """A Go duration as Nomad's `wait` takes it (the units the client sends)."""
    for unit, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return float(text[: -len(unit)]) * scale
    raise ValueError(text)


def _capability(request: web.Request) -> str | None:
    """The namespace capability Nomad's ACL checks for this request (its endpoints'
    `AllowNsOp` calls: nomad/job_endpoint.go, eval_endpoint.go, alloc_endpoint.go)."""
    path, method = request.path, request.method
    if path == "/v1/status/leader":
        return None
    if path == "/v1/jobs":
        return "list-jobs"
    if path.startswith("/v1/client/allocation/") and path.endswith("/exec"):
        return "alloc-exec"
    if path.startswith("/v1/job/") and method in ("PUT", "POST", "DELETE"):
        return "submit-job"
    return "read-job"


class FakeNomad(LoopbackApp):
    def __init__(self, token: str | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl = ssl_context  # serve HTTPS (and WSS) with it
        self.token = token  # when set, ACLs are on: requests without it get 403
        # the namespace capabilities the token's policy grants (None: all of them)
        self.capabilities: set[str] | None = None
        self.policy_namespace = "default"  # the namespace the policy grants them on
        self.jobs_by_id: dict[str, dict[str, Any]] = {}
        self.evals: dict[str, dict[str, Any]] = {}
        self.allocs: dict[str, dict[str, Any]] = {}
        self.registered: list[dict[str, Any]] = []  # every job body registered, in order
        self.faults: dict[str, Any] = {}
        self.requests: list[tuple[str, str]] = []
        self.blocking: list[tuple[str, int, float]] = []  # path, index, seconds it blocked
        self.exec_commands: list[list[str]] = []
        self.exec_frames: list[dict[str, Any]] = []  # what clients sent on exec websockets
        self.tokens_seen: list[str | None] = []
        self._index = 10
        self._start()

    # -- lifecycle of the double --------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/v1/status/leader", self.leader)
        r.add_get("/v1/agent/self", self.agent_self)
        r.add_put("/v1/job/{id}", self.register)
        r.add_post("/v1/job/{id}", self.register)
        r.add_get("/v1/job/{id}", self.read_job)
        r.add_delete("/v1/job/{id}", self.deregister)
        r.add_get("/v1/job/{id}/allocations", self.job_allocations)
        r.add_get("/v1/job/{id}/evaluations", self.job_evaluations)
        r.add_get("/v1/jobs", self.list_jobs)
        r.add_get("/v1/evaluation/{id}", self.read_evaluation)
        r.add_get("/v1/allocation/{id}", self.read_allocation)
        r.add_get("/v1/client/allocation/{id}/exec", self.exec)
        app.middlewares.append(self._record)
        return app

    def jobs(self) -> list[str]:
        """The ids of the jobs the agent still knows (stopped ones too, until purged)."""
        return sorted(self.jobs_by_id)

    def live_allocations(self) -> list[str]:
        return sorted(
            a["ID"] for a in self.allocs.values() if a["ClientStatus"] in ("pending", "running")
        )

    def add_job(self, job: dict[str, Any]) -> None:
        """A job someone else registered (an orphan), from any thread."""
        self._on_loop(self._register(job))

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        token = request.headers.get("X-Nomad-Token")
        self.tokens_seen.append(token)
        if self.token is not None and request.path != "/v1/status/leader" and token != self.token:
            return _text(403, "ACL token not found" if token else "Permission denied")
        # exec says no after the upgrade (see `exec`); everything else before answering
        needed = _capability(request)
        if needed not in (None, "alloc-exec") and not self._allowed(request, needed):
            return _text(403, "Permission denied")
        response: web.StreamResponse = await handler(request)
        return response

    def _allowed(self, request: web.Request, capability: str | None) -> bool:
        """The policy grants `capability` on the request's namespace (`?namespace=`,
        else "default": Nomad's RequestNamespace)."""
        if self.capabilities is None or capability is None:
            return True
        namespace = request.query.get("namespace") or "default"
        return namespace == self.policy_namespace and capability in self.capabilities

    # -- store ----------------------------------------------------------------------

    async def _bump(self) -> int:
        self._index += 1
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()
        return self._index

    async def _blocking(self, request: web.Request, read: Any) -> web.Response:
        """Answer `read()` -> (body, index) now, or, with `?index=N`, once index > N or
        the wait (with Nomad's jitter) is over; 404 when `read()` is None."""
        wanted = int(request.query.get("index", "0") or 0)
        wait = _duration(request.query.get("wait", "5m"))
        wait = min(wait, 600.0)
        wait += random.uniform(0, wait / 16)  # as Nomad's blockingRPC adds
        began = self._loop.time()
        deadline = began + wait
        assert self._changed is not None
        if (
            wanted > 0
            and self.faults.get("down_during") == "start"
            and "allocation" in request.path
        ):
            self._spawn(self._stop())  # the agent goes away while this query waits
            await asyncio.Event().wait()  # cancelled by the shutdown: the connection drops
        while True:
            found = read()
            if found is None:
                return _text(404, "not found")
            body, index = found
            remaining = deadline - self._loop.time()
            if wanted == 0 or index > wanted or remaining <= 0:
                if wanted:
                    self.blocking.append((request.path, wanted, self._loop.time() - began))
                return web.json_response(
                    body,
                    headers={
                        "X-Nomad-Index": str(max(index, 1)),
                        "X-Nomad-KnownLeader": "true",
                        "X-Nomad-LastContact": "0",
                    },
                )
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=remaining)

    # -- handlers: jobs -------------------------------------------------------------

    async def leader(self, request: web.Request) -> web.Response:
        return web.json_response("127.0.0.1:4647")

    async def agent_self(self, request: web.Request) -> web.Response:
        """The agent's own description, as command/agent/agent_endpoint.go writes it
        (trimmed to what a client reads: its version, and the member's build tag)."""
        version = {"Version": "1.7.7", "VersionPrerelease": "", "VersionMetadata": ""}
        return web.json_response(
            {"config": {"Version": version}, "member": {"Tags": {"build": "1.7.7"}}}
        )

    async def register(self, request: web.Request) -> web.Response:
        body = await request.json()
        job = body.get("Job")
        if not isinstance(job, dict) or job.get("ID") != request.match_info["id"]:
            return _text(400, "Job ID does not match name")
        if "register" in self.faults.get("forbid", set()):
            return _text(403, "Permission denied")
        self.registered.append(copy.deepcopy(job))
        return web.json_response(await self._register(job))

    async def _register(self, job: dict[str, Any]) -> dict[str, Any]:
        index = await self._bump()
        job = {
            **copy.deepcopy(job),
            "Status": "pending",
            "Stop": False,
            "CreateIndex": index,
            "ModifyIndex": index,
            "JobModifyIndex": index,
            "SubmitTime": time.time_ns(),
            "Version": 0,
        }
        job.setdefault("Namespace", "default")
        self.jobs_by_id[job["ID"]] = job
        evaluation = await self._evaluation(job, "job-register")
        self._spawn(self._schedule(job["ID"], evaluation["ID"]))
        return {
            "EvalID": evaluation["ID"],
            "EvalCreateIndex": evaluation["CreateIndex"],
            "JobModifyIndex": index,
            "Warnings": "",
            "Index": evaluation["CreateIndex"],
            "LastContact": 0,
            "KnownLeader": False,
        }

    async def _evaluation(
        self, job: dict[str, Any], trigger: str, status: str = "pending"
    ) -> dict[str, Any]:
        index = await self._bump()
        evaluation = {
            "ID": _id(),
            "Namespace": job["Namespace"],
            "Priority": 50,
            "Type": job.get("Type", "batch"),
            "TriggeredBy": trigger,
            "JobID": job["ID"],
            "Status": status,
            "StatusDescription": "",
            "FailedTGAllocs": None,
            "BlockedEval": "",
            "CreateIndex": index,
            "ModifyIndex": index,
            "CreateTime": time.time_ns(),
        }
        self.evals[evaluation["ID"]] = evaluation
        return evaluation

    async def _schedule(self, job_id: str, eval_id: str) -> None:
        """The scheduler: place the job's one allocation, or fail placement."""
        await asyncio.sleep(STEP + float(self.faults.get("slow_placement", 0)))
        job, evaluation = self.jobs_by_id.get(job_id), self.evals[eval_id]
        if job is None or job["Stop"]:
            evaluation.update(Status="complete", ModifyIndex=await self._bump())
            return
        placement = self.faults.get("placement")
        if placement:
            metrics: dict[str, Any] = {
                "NodesEvaluated": 3,
                "NodesFiltered": 0,
                "NodesAvailable": {"dc1": 3},
                "ClassFiltered": None,
                "ConstraintFiltered": None,
                "NodesExhausted": 0,
                "ClassExhausted": None,
                "DimensionExhausted": None,
                "QuotaExhausted": None,
                "CoalescedFailures": 0,
            }
            if placement == "constraint":
                metrics.update(
                    NodesFiltered=3, ConstraintFiltered={"${attr.kernel.name} = windows": 3}
                )
            else:
                metrics.update(NodesExhausted=3, DimensionExhausted={"memory": 3})
            blocked = await self._evaluation(job, "queued-allocs", status="blocked")
            evaluation.update(
                Status="complete",
                FailedTGAllocs={TASK: metrics},
                BlockedEval=blocked["ID"],
                ModifyIndex=await self._bump(),
            )
            return
        task = job["TaskGroups"][0]["Tasks"][0]
        index = await self._bump()
        alloc = {
            "ID": _id(),
            "Namespace": job["Namespace"],
            "EvalID": eval_id,
            "Name": f"{job_id}.{TASK}[0]",
            "NodeID": "node-1",
            "NodeName": "client-1",
            "JobID": job_id,
            "TaskGroup": TASK,
            "DesiredStatus": "run",
            "ClientStatus": "pending",
            "ClientDescription": "",
            "TaskStates": {
                task["Name"]: {"State": "pending", "Failed": False, "Restarts": 0, "Events": []}
            },
            "CreateIndex": index,
            "ModifyIndex": index,
            "CreateTime": time.time_ns(),
        }
        self.allocs[alloc["ID"]] = alloc
        evaluation.update(Status="complete", ModifyIndex=await self._bump())
        await self._event(alloc, "Received", "Task received by client")
        await asyncio.sleep(STEP)
        await self._event(alloc, "Task Setup", "Building Task Directory")
        image = task["Config"].get("image", "")
        await self._event(alloc, "Driver", f"Downloading image {image}" if image else "")
        await asyncio.sleep(STEP)
        if alloc["DesiredStatus"] != "run":
            return
        if self.faults.get("driver_failure"):
            await self._event(
                alloc,
                "Driver Failure",
                f"Failed to pull `{image}`: Error response from daemon: manifest "
                f"for {image} not found: manifest unknown: manifest unknown",
                state="dead",
                failed=True,
            )
            await self._event(
                alloc, "Not Restarting", "Error was unrecoverable", client_status="failed"
            )
            return
        await self._event(
            alloc, "Started", "Task started by client", state="running", client_status="running"
        )

    async def _event(
        self,
        alloc: dict[str, Any],
        kind: str,
        message: str,
        *,
        state: str | None = None,
        failed: bool = False,
        client_status: str | None = None,
    ) -> None:
        task_state = next(iter(alloc["TaskStates"].values()))
        event = {
            "Type": kind,
            "Time": time.time_ns(),
            "DisplayMessage": message,
            "Message": "",
            "DriverError": message if kind == "Driver Failure" else "",
            "FailsTask": failed,
            "Details": {},
        }
        task_state["Events"].append(event)
        if state:
            task_state["State"] = state
            if state == "running":
                task_state["StartedAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        task_state["Failed"] = task_state["Failed"] or failed
        if client_status:
            alloc["ClientStatus"] = client_status
        alloc["ModifyIndex"] = await self._bump()

    async def _stop_allocs(self, job_id: str) -> None:
        """The client kills the job's allocations (kill_timeout: the keep-alive exits at
        once on SIGTERM)."""
        for alloc in [a for a in self.allocs.values() if a["JobID"] == job_id]:
            if alloc["ClientStatus"] not in ("pending", "running"):
                continue
            alloc["DesiredStatus"] = "stop"
            await self._event(alloc, "Killing", "Sent interrupt. Waiting 1s before force killing")
            self._spawn(self._killed(alloc))

    async def _killed(self, alloc: dict[str, Any]) -> None:
        await asyncio.sleep(STEP)
        await self.commands.end(alloc["ID"])  # what an exec left running goes with the task
        await self._event(
            alloc, "Killed", "Task successfully killed", state="dead", client_status="complete"
        )

    async def read_job(self, request: web.Request) -> web.Response:
        job = self.jobs_by_id.get(request.match_info["id"])
        if job is None or job["Namespace"] != (request.query.get("namespace") or "default"):
            return _text(404, "job not found")
        return web.json_response(job, headers={"X-Nomad-Index": str(job["ModifyIndex"])})

    async def deregister(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        job = self.jobs_by_id.get(job_id)
        if job is not None and job["Namespace"] != (request.query.get("namespace") or "default"):
            job = None
        purge = request.query.get("purge", "false").lower() in ("1", "t", "true")
        if job is None:  # nomad/job_endpoint.go Deregister: no job, no error, no evaluation
            return web.json_response(
                {"EvalID": "", "EvalCreateIndex": 0, "JobModifyIndex": 0, "Index": self._index}
            )
        job.update(Stop=True, Status="dead", ModifyIndex=await self._bump())
        if purge:
            del self.jobs_by_id[job_id]
        evaluation = await self._evaluation(job, "job-deregister", status="complete")
        await self._stop_allocs(job_id)
        return web.json_response(
            {
                "EvalID": evaluation["ID"],
                "EvalCreateIndex": evaluation["CreateIndex"],
                "JobModifyIndex": job["ModifyIndex"],
                "Index": evaluation["CreateIndex"],
            }
        )

    def _job_allocs(self, job_id: str) -> tuple[list[dict[str, Any]], int]:
        allocs = [a for a in self.allocs.values() if a["JobID"] == job_id]
        stubs = [
            {
                k: a[k]
                for k in (
                    "ID",
                    "EvalID",
                    "Name",
                    "NodeID",
                    "JobID",
                    "TaskGroup",
                    "DesiredStatus",
                    "ClientStatus",
                    "TaskStates",
                    "CreateIndex",
                    "ModifyIndex",
                    "CreateTime",
                )
            }
            for a in allocs
        ]
        return stubs, max([a["ModifyIndex"] for a in allocs], default=1)

    async def job_allocations(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        return await self._blocking(request, lambda: self._job_allocs(job_id))

    async def job_evaluations(self, request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        evals = [e for e in self.evals.values() if e["JobID"] == job_id]
        return web.json_response(evals)

    async def list_jobs(self, request: web.Request) -> web.Response:
        prefix = request.query.get("prefix", "")
        meta = request.query.get("meta", "false").lower() in ("1", "t", "true")
        stubs = []
        namespace = request.query.get("namespace") or "default"
        for job in self.jobs_by_id.values():
            if job["ID"].startswith(prefix) and job["Namespace"] == namespace:
                stub = {
                    k: job.get(k)
                    for k in (
                        "ID",
                        "Name",
                        "Namespace",
                        "Type",
                        "Status",
                        "Stop",
                        "CreateIndex",
                        "ModifyIndex",
                        "SubmitTime",
                    )
                }
                if meta:
                    stub["Meta"] = job.get("Meta")
                stubs.append(stub)
        return web.json_response(stubs, headers={"X-Nomad-Index": str(self._index)})

    # -- handlers: evaluations and allocations ----------------------------------------

    async def read_evaluation(self, request: web.Request) -> web.Response:
        eval_id = request.match_info["id"]

        def read() -> tuple[dict[str, Any], int] | None:
            evaluation = self.evals.get(eval_id)
            return None if evaluation is None else (evaluation, evaluation["ModifyIndex"])

        return await self._blocking(request, read)

    async def read_allocation(self, request: web.Request) -> web.Response:
        alloc_id = request.match_info["id"]

        def read() -> tuple[dict[str, Any], int] | None:
            alloc = self.allocs.get(alloc_id)
            return None if alloc is None else (alloc, alloc["ModifyIndex"])

        return await self._blocking(request, read)

    # -- exec --------------------------------------------------------------------------

    async def exec(self, request: web.Request) -> web.StreamResponse:
        """As alloc_endpoint.go's allocExec: the websocket is upgraded first; every error
        after that is a close frame (1011 for a 500, else 1008) with the error text."""
        alloc = self.allocs.get(request.match_info["id"])
        try:
            command = json.loads(request.query.get("command", ""))
        except ValueError as exc:
            return _text(500, f"failed to marshal command into json: {exc}")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        task = request.query.get("task", "")
        if "exec" in self.faults.get("forbid", set()) or not self._allowed(request, "alloc-exec"):
            await ws.close(code=1008, message=b"Permission denied")
            return ws
        if alloc is None:
            await ws.close(
                code=1008, message=f'Unknown allocation "{request.match_info["id"]}"'.encode()
            )
            return ws
        if task not in alloc["TaskStates"]:
            await ws.close(code=1008, message=f'unknown task name "{task}"'.encode())
            return ws
        if alloc["TaskStates"][task]["State"] != "running":
            await ws.close(code=1008, message=f'task "{task}" is not running.'.encode())
            return ws
        self.exec_commands.append(command)
        if "exec_error" in self.faults:  # the task driver failed the exec: a 500 -> 1011
            await ws.close(code=1011, message=self.faults["exec_error"].encode())
            return ws
        reading = asyncio.ensure_future(self._read_frames(ws))  # stdin close, heartbeats

        async def send(stream: str, data: bytes) -> None:
            await ws.send_str(json.dumps({stream: {"data": base64.b64encode(data).decode()}}))

        try:
            code = await self.commands.run(alloc["ID"], command, send)
        except ConnectionError:  # the client went away; the command goes on (`Commands`)
            return ws
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
        await ws.send_str(json.dumps({"stdout": {"close": True}}))
        result: dict[str, Any] = {"exit_code": code} if code else {}  # omitempty, as the proto
        await ws.send_str(json.dumps({"exited": True, "result": result}))
        await ws.close(code=1000)
        return ws

    async def _read_frames(self, ws: web.WebSocketResponse) -> None:
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                self.exec_frames.append(json.loads(message.data))
