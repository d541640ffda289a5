"""The Nomad backend, driving the real python-nomad and websocket-client against the
agent double in fake_nomad.py; and against a real agent when NOMAD_ADDR points at one.
What is Nomad's alone is here (the job, blocking queries, ACLs, TLS); what every
backend does is in test_backend_contract.py."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from sandbox_exporter.cli import main
from sandbox_exporter.config import parse_config
from sandbox_exporter.probing.prober import Prober
from sandbox_exporter.results import Phase, ProbeResult, Reason
from tests.fake_nomad import FakeNomad
from tests.helpers import double_prober, make_config, unreachable_message, wait_for

pytest.importorskip("nomad")

TOKEN = "s3cr3t-0000-nomad-token"
LABELS = {"target": "nomad", "backend": "nomad"}
NOMAD_PAGE = Path(__file__).parent.parent / "docs" / "backends" / "nomad.md"


@pytest.fixture
def fake() -> Iterator[FakeNomad]:
    server = FakeNomad(token=TOKEN)
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_NOMAD_TOKEN", TOKEN)


def prober(url: str, registry: CollectorRegistry | None = None, **settings: Any) -> Prober:
    options = {
        "address": url,
        "token": "${TEST_NOMAD_TOKEN}",
        "datacenters": ["dc1"],
        **settings.pop("options", {}),
    }
    return double_prober(
        "nomad", "nomad", "nomad", options, instance="nomad-test", registry=registry, **settings
    )


def run(p: Prober) -> ProbeResult:
    try:
        result = p.run()
    finally:
        p.close()
    assert result is not None
    return result


def nothing_left(fake: FakeNomad) -> None:
    assert fake.jobs() == [], "every job is purged"
    wait_for(lambda: not fake.live_allocations(), timeout=5, what="no allocation to run")


def test_start_and_stop_follow_blocking_queries(fake: FakeNomad) -> None:
    """How a lifecycle goes on the agent (the lifecycle itself, its metrics and what it
    leaves: test_backend_contract.py)."""
    result = run(prober(fake.url))
    assert result.success, result.failure
    assert fake.exec_commands == [["echo", "hello"]]
    assert fake.exec_frames[0] == {"stdin": {"close": True}}, "stdin closed at once"
    # start and stop follow blocking queries: every read of the evaluation, the job's
    # allocations and the allocation names an index and a wait, and each asks from the
    # index the last one answered (a new one each time: nothing polls the same state)
    for kind in ("/v1/evaluation/", "/v1/allocation/", "/allocations"):
        reads = [p for m, p in fake.requests if m == "GET" and kind in p and "index=" in p]
        assert reads, kind
        assert all("wait=" in p for p in reads)
        for phase_reads in _runs_from_zero(reads):
            indexes = [int(p.split("index=")[1].split("&")[0]) for p in phase_reads]
            assert indexes == sorted(set(indexes)), f"{kind}: {phase_reads}"
    reads = [p for m, p in fake.requests if m == "GET" and "/v1/allocation/" in p]
    assert len(reads) <= 6, f"a handful of blocking reads, not a poll loop: {reads}"
    methods = [(m, p.split("?")[0]) for m, p in fake.requests if m in ("PUT", "POST", "DELETE")]
    assert [m for m, _ in methods] == ["POST", "DELETE", "DELETE"], "register, stop, purge"
    assert any("purge=True" in p for m, p in fake.requests if m == "DELETE")
    nothing_left(fake)


def _runs_from_zero(reads: list[str]) -> list[list[str]]:
    """The reads split where one starts again from index 0 (a new wait: start, stop)."""
    runs: list[list[str]] = []
    for path in reads:
        if "index=0&" in path or not runs:
            runs.append([])
        runs[-1].append(path)
    return runs


def test_the_job_is_hardened_labelled_and_sized(fake: FakeNomad) -> None:
    run(
        prober(
            fake.url,
            options={
                "namespace": "default",
                "node_pool": "sandboxes",
                "constraints": [
                    {"attribute": "${attr.kernel.name}", "operator": "=", "value": "linux"}
                ],
            },
            resources={"cpus": 0.5, "memory_mb": 128, "pids": 48},
        )
    )
    job = fake.registered[0]
    assert job["Type"] == "batch"
    assert job["ID"].startswith("sandbox-exporter-nomad-")
    assert job["Datacenters"] == ["dc1"]
    assert job["NodePool"] == "sandboxes"
    assert job["Constraints"] == [
        {"LTarget": "${attr.kernel.name}", "Operand": "=", "RTarget": "linux"}
    ]
    group = job["TaskGroups"][0]
    assert group["RestartPolicy"] == {"Attempts": 0, "Mode": "fail"}
    assert group["ReschedulePolicy"] == {"Attempts": 0, "Unlimited": False}
    task = group["Tasks"][0]
    assert task["Driver"] == "docker"
    config = task["Config"]
    assert config["image"] == "busybox:1.36"
    assert config["cap_drop"] == ["ALL"]
    assert config["readonly_rootfs"] is True
    assert config["network_mode"] == "none"
    assert config["security_opt"] == ["no-new-privileges"]
    assert config["pids_limit"] == 48
    assert "privileged" not in config
    assert config["command"] == "sh"
    assert "trap 'exit 0' TERM" in config["args"][1], "a keep-alive that exits on SIGTERM"
    assert task["Resources"] == {"CPU": 500, "MemoryMB": 128}
    assert task["KillTimeout"] == 1_000_000_000, "stop_grace, in nanoseconds"
    for meta in (job["Meta"], task["Meta"]):
        assert meta["sandbox-exporter.io/managed"] == "true"
        assert meta["sandbox-exporter.io/instance"] == "nomad-test"
        assert meta["sandbox-exporter.io/target"] == "nomad"
        assert meta["sandbox-exporter.io/created-at"].isdigit()
    nothing_left(fake)


@pytest.mark.parametrize(
    ("fault", "value", "phase", "message"),
    [
        ("forbid", {"register"}, "create", "register job: Nomad answered 403: Permission denied"),
        (
            "placement",
            "constraint",
            "start",
            'placement failed: task group "probe": constraint "${attr.kernel.name} = windows" '
            "filtered 3 nodes",
        ),
        ("placement", "memory", "start", "memory exhausted on 3 nodes"),
        (
            "driver_failure",
            True,
            "start",
            "Driver Failure: Failed to pull `busybox:1.36`: Error response from daemon: manifest "
            "for busybox:1.36 not found",
        ),
        ("forbid", {"exec"}, "exec", "exec: Nomad closed the stream (1008): Permission denied"),
        (
            "exec_error",
            'OCI runtime exec failed: exec: "sh": executable file not found in $PATH',
            "exec",
            "exec: Nomad closed the stream (1011): OCI runtime exec failed",
        ),
    ],
)
def test_failures_operators_meet(
    fake: FakeNomad, fault: str, value: Any, phase: str, message: str
) -> None:
    fake.faults[fault] = value
    registry = CollectorRegistry()
    with capture_logs() as logs:
        result = run(prober(fake.url, registry))
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (Phase(phase), Reason.ERROR)
    assert message in result.failure.message
    assert (
        registry.get_sample_value(
            "sandbox_probe_failures_total", {**LABELS, "phase": phase, "reason": "error"}
        )
        == 1
    )
    assert registry.get_sample_value("sandbox_probe_success", LABELS) == 0
    assert registry.get_sample_value("sandbox_backend_up", LABELS) == 1
    assert any(message in str(e.get("error")) for e in logs), "one log line says what happened"
    nothing_left(fake)
    if fault == "placement":
        evaluation = next(e for e in fake.evals.values() if e["FailedTGAllocs"])
        assert evaluation["BlockedEval"] in result.failure.message


def test_slow_placement_is_a_start_timeout(fake: FakeNomad) -> None:
    fake.faults["slow_placement"] = 3
    result = run(prober(fake.url, timeouts={"start": "1s"}))
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (Phase.START, Reason.TIMEOUT)
    assert fake.jobs() == []
    blocked = [seconds for path, _, seconds in fake.blocking if "/v1/evaluation/" in path]
    assert blocked, "start waited in a blocking query on the evaluation"


def test_an_exec_waiting_for_its_command_keeps_the_stream_alive(
    fake: FakeNomad, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stdin is closed at once; while the command runs, `{}` heartbeats keep the
    stream alive (what a deadline does to it: test_backend_contract.py)."""
    from sandbox_exporter.backends import nomad

    monkeypatch.setattr(nomad, "HEARTBEAT", 0.1)
    result = run(prober(fake.url, command=["sleep", "60"], timeouts={"exec": "500ms"}))
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (Phase.EXEC, Reason.TIMEOUT)
    assert fake.exec_frames[0] == {"stdin": {"close": True}}
    assert {} in fake.exec_frames[1:], "heartbeats while waiting"
    nothing_left(fake)


@pytest.mark.parametrize("driver", ["podman", "exec"])
def test_the_other_drivers(fake: FakeNomad, driver: str) -> None:
    assert run(prober(fake.url, options={"driver": driver})).success
    task = fake.registered[0]["TaskGroups"][0]["Tasks"][0]
    assert task["Driver"] == driver
    config = task["Config"]
    assert "privileged" not in config
    if driver == "podman":
        assert config["image"] == "busybox:1.36"
        assert config["cap_drop"] == ["ALL"]
        assert config["readonly_rootfs"] is True
        assert config["network_mode"] == "none"
    else:
        assert "image" not in config, "exec runs the host's binaries"
        assert config["command"] == "sh"
    nothing_left(fake)


def test_the_agent_going_away_during_start(fake: FakeNomad) -> None:
    """The agent goes down while start waits on the allocation: `unavailable`; the job
    it could not purge is collected by the next run's sweep once the agent is back."""
    fake.faults["down_during"] = "start"
    registry = CollectorRegistry()
    result = run(prober(fake.url, registry))
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (Phase.START, Reason.UNAVAILABLE)
    assert registry.get_sample_value("sandbox_backend_up", LABELS) == 0
    assert len(fake.jobs()) == 1, "the agent was down: nothing could be purged"
    fake.faults.clear()
    fake.restart()
    registry = CollectorRegistry()
    assert run(prober(fake.url, registry)).success
    assert registry.get_sample_value("sandbox_orphans_removed_total", LABELS) == 1
    nothing_left(fake)


def orphan(
    fake: FakeNomad, name: str, instance: str, age: float, namespace: str = "default"
) -> None:
    meta = {
        "sandbox-exporter.io/managed": "true",
        "sandbox-exporter.io/instance": instance,
        "sandbox-exporter.io/target": "nomad",
        "sandbox-exporter.io/created-at": str(int(time.time() - age)),
        "sandbox-exporter.io/expires-at": str(int(time.time() - age + 60)),
    }
    fake.add_job(
        {
            "ID": name,
            "Name": name,
            "Type": "batch",
            "Meta": meta,
            "Namespace": namespace,
            "TaskGroups": [
                {
                    "Name": "probe",
                    "Tasks": [
                        {
                            "Name": "probe",
                            "Driver": "docker",
                            "Config": {"image": "busybox:1.36"},
                            "Meta": meta,
                        }
                    ],
                }
            ],
        }
    )


def test_the_token_is_sent_and_never_shown(fake: FakeNomad) -> None:
    fake.faults["forbid"] = {"exec"}
    with capture_logs() as logs:
        p = prober(fake.url)
        options = p.target.options
        result = run(p)
    assert result.failure is not None
    assert set(fake.tokens_seen) == {TOKEN}, "every request and the websocket carry it"
    assert TOKEN not in repr(options)
    assert TOKEN not in options.model_dump_json()
    assert TOKEN not in str(logs)
    assert TOKEN not in result.failure.message


def test_a_wrong_token_is_nomads_403(fake: FakeNomad, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_NOMAD_TOKEN", "wrong")
    result = run(prober(fake.url))
    assert result.failure is not None
    assert (result.failure.phase, result.failure.reason) == (Phase.CREATE, Reason.ERROR)
    assert "Nomad answered 403: ACL token not found" in result.failure.message


def test_the_documented_acl_policy_is_all_it_takes(fake: FakeNomad) -> None:
    """A token with exactly the capabilities docs/backends/nomad.md gives runs the whole
    lifecycle and the orphan sweep; without any one of them, something fails with
    Nomad's 403."""
    from sandbox_exporter.backends.nomad import ACL_CAPABILITIES

    page = NOMAD_PAGE.read_text()
    policy = ", ".join(f'"{c}"' for c in ACL_CAPABILITIES)
    assert f"capabilities = [{policy}]" in page
    fake.capabilities = set(ACL_CAPABILITIES)
    fake.policy_namespace = "probes"  # not "default": every request must name it
    orphan(fake, "sandbox-exporter-nomad-old", "nomad-test", 7200, namespace="probes")
    registry = CollectorRegistry()
    result = run(prober(fake.url, registry, options={"namespace": "probes"}))
    assert result.success, result.failure
    assert registry.get_sample_value("sandbox_orphans_removed_total", LABELS) == 1
    nothing_left(fake)
    for missing in ACL_CAPABILITIES:
        fake.capabilities = set(ACL_CAPABILITIES) - {missing}
        with capture_logs() as logs:
            result = run(prober(fake.url, options={"namespace": "probes"}))
        said = [str(e.get("error")) for e in logs if "Permission denied" in str(e.get("error"))]
        assert said, f"nothing says what {missing} is needed for"
        if missing == "list-jobs":  # the sweep fails (logged); the probe itself runs
            assert "list jobs: Nomad answered 403" in said[0]
        else:
            assert result.failure is not None, f"runs without {missing}"
            assert "Permission denied" in result.failure.message
        fake.capabilities = None
        fake.jobs_by_id.clear()


def test_the_documented_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first YAML block of docs/backends/nomad.md is a valid target."""
    import yaml

    block = NOMAD_PAGE.read_text().split("```yaml\n", 1)[1].split("```", 1)[0]
    monkeypatch.setenv("NOMAD_TOKEN", "from-the-environment")
    target = parse_config(yaml.safe_load(block)).targets[0]
    options: Any = target.options
    assert options.token.get_secret_value() == "from-the-environment"
    assert options.constraints[0].attribute == "${attr.kernel.name}", "Nomad's, not ours"
    assert options.datacenters == ("dc1",)


def test_the_doubles_blocking_queries_block_until_the_index_moves_or_the_wait_ends(
    fake: FakeNomad,
) -> None:
    """What the backend relies on, through the real client: `index`/`wait` hold the
    answer until the object changes (then a higher X-Nomad-Index) or the wait, plus up
    to wait/16 of jitter, is over (then the same index)."""
    import nomad

    orphan(fake, "sandbox-exporter-nomad-blocking", "nomad-test", 0)
    api = nomad.Nomad(address=fake.url, token=TOKEN, timeout=5)
    wait_for(lambda: fake.live_allocations(), what="the allocation to be placed")
    wait_for(lambda: any(a["ClientStatus"] == "running" for a in fake.allocs.values()))
    index = int(
        api.job.request(
            "sandbox-exporter-nomad-blocking", "allocations", method="get", params={"index": 0}
        ).headers["X-Nomad-Index"]
    )
    began = time.monotonic()
    idle = api.job.request(
        "sandbox-exporter-nomad-blocking",
        "allocations",
        method="get",
        params={"index": index, "wait": "400ms"},
        timeout=5,
    )
    held = time.monotonic() - began
    assert 0.4 <= held < 0.4 * 17 / 16 + 0.2, held
    assert int(idle.headers["X-Nomad-Index"]) == index
    threading.Timer(
        0.2, lambda: api.job.deregister_job("sandbox-exporter-nomad-blocking", purge=True)
    ).start()
    began = time.monotonic()
    woken = api.job.request(
        "sandbox-exporter-nomad-blocking",
        "allocations",
        method="get",
        params={"index": index, "wait": "30s"},
        timeout=35,
    )
    assert time.monotonic() - began < 5, "woken by the change, not the wait"
    assert int(woken.headers["X-Nomad-Index"]) > index
    nothing_left(fake)


def test_tls_with_a_ca_a_client_certificate_and_a_server_name(tmp_path: Path) -> None:
    """HTTPS and WSS: the agent's certificate names only `server.global.nomad` (as
    Nomad's do), the address is an IP, and the agent asks for a client certificate."""
    import ssl

    import trustme

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("server.global.nomad").configure_cert(server_context)
    ca.configure_trust(server_context)
    server_context.verify_mode = ssl.CERT_REQUIRED
    client = ca.issue_cert("client.global.nomad")
    paths = {
        "ca_cert": tmp_path / "ca.pem",
        "client_cert": tmp_path / "cli.pem",
        "client_key": tmp_path / "cli-key.pem",
    }
    ca.cert_pem.write_to_path(str(paths["ca_cert"]))
    client.cert_chain_pems[0].write_to_path(str(paths["client_cert"]))
    client.private_key_pem.write_to_path(str(paths["client_key"]))
    fake = FakeNomad(token=TOKEN, ssl_context=server_context)
    try:
        assert fake.url.startswith("https://127.0.0.1:")
        tls = {key: str(path) for key, path in paths.items()}
        result = run(prober(fake.url, options={**tls, "tls_server_name": "server.global.nomad"}))
        assert result.success, result.failure
        assert fake.exec_commands == [["echo", "hello"]], "the websocket went over TLS too"
        nothing_left(fake)
        wrong = run(prober(fake.url, options=tls))  # the IP is not in the certificate
        assert wrong.failure is not None
        assert wrong.failure.reason == Reason.UNAVAILABLE
        assert "certificate" in wrong.failure.message.lower()
    finally:
        fake.close()


def test_options_are_checked() -> None:
    with pytest.raises(Exception, match="must be an http"):
        make_config({"name": "n", "backend": "nomad", "nomad": {"address": "nomad:4646"}})
    with pytest.raises(Exception, match="driver"):
        make_config({"name": "n", "backend": "nomad", "nomad": {"driver": "qemu"}})


def test_cannot_reach_names_the_agent() -> None:
    message = unreachable_message(
        {"name": "n", "backend": "nomad", "nomad": {"address": "http://127.0.0.1:1"}}
    )
    assert message.endswith(
        "cannot reach Nomad at http://127.0.0.1:1: connection refused (nothing listens there)"
    )


def test_bench_against_the_double(
    fake: FakeNomad, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bench.yaml"
    config.write_text(
        "instance: bench-nomad\n"
        "defaults: {image: 'busybox:1.36'}\n"
        "targets:\n"
        f"  - {{name: nomad, backend: nomad, nomad: {{address: '{fake.url}', "
        "token: '${TEST_NOMAD_TOKEN}', datacenters: [dc1]}}\n"
    )
    assert (
        main(["bench", "-b", "nomad", "--config.file", str(config), "-i", "3", "--warmup", "0"])
        == 0
    )
    out = capsys.readouterr().out
    assert "nomad p50" in out
    assert "3/3" in out
    assert fake.jobs() == []


@pytest.mark.skipif(
    not os.environ.get("NOMAD_ADDR"), reason="NOMAD_ADDR does not point at an agent"
)
def test_a_real_agent() -> None:
    """Runs unchanged against `nomad agent -dev` or any agent NOMAD_ADDR names (with
    NOMAD_TOKEN when ACLs are on; the image must be pullable)."""
    token = "${NOMAD_TOKEN}" if os.environ.get("NOMAD_TOKEN") else None
    options: dict[str, Any] = {"datacenters": ["*"], "token": token}
    registry = CollectorRegistry()
    result = run(
        prober(
            os.environ["NOMAD_ADDR"],
            registry,
            options=options,
            timeouts={"start": "120s", "stop": "30s"},
        )
    )
    assert result.success, result.failure


def test_bench_reports_the_agents_version(fake: FakeNomad) -> None:
    from sandbox_exporter.probing.prober import calls_for

    calls = calls_for(prober(fake.url).target)
    try:
        assert calls.describe(None, timeout=5) == {"nomad_version": "1.7.7"}
    finally:
        calls.close()
