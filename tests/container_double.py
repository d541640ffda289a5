"""A stand-in for Apple's `container` CLI (1.2.2), for tests on machines without it.

Installed as `container` first on PATH by `tests/test_apple.py`. It keeps its
containers in a JSON file between calls ($CONTAINER_DOUBLE_STATE), as the real
CLI's API server does, and logs each call's arguments beside it. Switches
(environment):

- CONTAINER_DOUBLE_SHAPE=pre1: `list` answers the pre-1.0 shape (bare string status, no top-level id);
- CONTAINER_DOUBLE_FAIL=image: `create` of any image fails as an unknown image;
- CONTAINER_DOUBLE_FAIL=apiserver: `system status` says the API server is not
  running, every other command fails with the XPC error;

`exec` runs its command for real, on this host, its output streamed as it comes (the
CLI's own stdout and stderr are the command's), and appends the command's pid to
`exec.pids` beside the state file.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

STATE = Path(os.environ["CONTAINER_DOUBLE_STATE"])
FAIL = os.environ.get("CONTAINER_DOUBLE_FAIL", "")
XPC = (
    'Error: interrupted: "XPC connection error: Connection invalid"\n'
    "Ensure container system service has been started with container system start."
)


def fail(message: str, code: int = 1) -> None:
    print(message, file=sys.stderr)
    sys.exit(code)


def not_found(ident: str) -> None:
    fail(f'Error: notFound: "container with ID {ident} not found"')


def main(args: list[str]) -> None:
    with (STATE.parent / "calls.log").open("a") as log:
        log.write(json.dumps(args) + "\n")
    if args == ["--version"]:
        print("container CLI version 1.2.2 (build: release, commit: 1a2b3c4)")
        return
    if args[:2] == ["system", "status"]:
        if FAIL == "apiserver":
            fail("apiserver is not running and not registered with launchd")
        print("apiserver is running")
        return
    if FAIL == "apiserver":
        fail(XPC)
    with open(STATE.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        containers = json.loads(STATE.read_text()) if STATE.exists() else {}
        command(args, containers)
        STATE.write_text(json.dumps(containers))
    if args[0] == "exec":  # checked under the lock; run without it, as long as it takes
        run(args[2:])


def run(argv: list[str]) -> None:
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    with (STATE.parent / "exec.pids").open("a") as pids:
        pids.write(f"{child.pid}\n")
    sys.exit(child.wait())


def command(args: list[str], containers: dict[str, dict]) -> None:  # type: ignore[type-arg]
    verb, rest = args[0], args[1:]
    if args[:2] == ["image", "pull"]:
        if FAIL == "image":
            fail(f'Error: notFound: "image {args[2]} not found in registry"')
        print(f"pulled {args[2]}")
    elif verb == "create":
        options: dict = {"labels": {}, "capDrop": [], "readOnly": False}  # type: ignore[type-arg]
        while rest and rest[0].startswith("-"):
            flag = rest.pop(0)
            if flag == "--read-only":
                options["readOnly"] = True
            elif flag == "-l":
                key, _, value = rest.pop(0).partition("=")
                options["labels"][key] = value
            elif flag == "--cap-drop":
                options["capDrop"].append(rest.pop(0))
            elif flag in ("--name", "-c", "-m"):
                options[flag] = rest.pop(0)
            else:
                fail(f"Error: Unknown option '{flag}'", 64)
        image, *keepalive = rest
        if FAIL == "image":
            fail(f'Error: notFound: "image {image} not found in registry"')
        ident = options["--name"]
        if ident in containers:
            fail(f'Error: exists: "container with id {ident} already exists"')
        containers[ident] = {
            "state": "stopped",
            "image": image,
            "keepalive": keepalive,
            "labels": options["labels"],
            "cpus": int(options["-c"]),
            "memory": options["-m"],
            "readOnly": options["readOnly"],
            "capDrop": options["capDrop"],
        }
        print(ident)
    elif verb == "start":
        if rest[0] not in containers:
            not_found(rest[0])
        containers[rest[0]]["state"] = "running"
        print(rest[0])
    elif verb == "exec":
        ident = rest[0]
        if ident not in containers:
            not_found(ident)
        if containers[ident]["state"] != "running":
            fail(f'Error: invalidState: "container {ident} is not running"')
    elif verb == "stop":
        ident = rest[-1]
        if ident not in containers:
            not_found(ident)
        containers[ident]["state"] = "stopped"
        containers[ident]["stopGrace"] = rest[rest.index("-t") + 1] if "-t" in rest else None
        print(ident)
    elif verb == "delete":
        ident = rest[-1]
        if ident not in containers:
            not_found(ident)
        if containers[ident]["state"] == "running" and "-f" not in rest:
            fail(f'Error: invalidState: "container {ident} is running"')
        del containers[ident]
        print(ident)
    elif verb == "list":
        print(json.dumps([shape(ident, c) for ident, c in containers.items()]))
    else:
        fail(f"Error: Unexpected argument '{verb}'", 64)


def shape(ident: str, c: dict) -> dict:  # type: ignore[type-arg]
    configuration = {
        "id": ident,
        "labels": c["labels"],
        "image": {"reference": c["image"]},
        "resources": {"cpus": c["cpus"], "memoryInBytes": int(c["memory"].rstrip("M")) << 20},
        "readOnly": c["readOnly"],
    }
    if os.environ.get("CONTAINER_DOUBLE_SHAPE") == "pre1":
        return {"configuration": configuration, "status": c["state"], "networks": []}
    return {
        "configuration": configuration,
        "id": ident,
        "status": {"state": c["state"], "startedDate": 800000000.0},
        "networks": [],
    }


if __name__ == "__main__":
    main(sys.argv[1:])
