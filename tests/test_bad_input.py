"""Bad input: config that no input can crash, and hostile HTTP that never disturbs the
scheduler."""

from __future__ import annotations

import re
import socket
import string
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox_exporter.config import ConfigError, parse_config
from sandbox_exporter.daemon import Daemon
from sandbox_exporter.web.serving import ServingOptions
from tests.fakes import FakeBackend, by_name
from tests.helpers import make_config, wait_for

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(
        ["30s", "5m", "-5s", "0s", "10%", "auto", "docker", "namespace", "${NOPE}", "1e400"]
    ),
)
KEYS = [
    "instance",
    "defaults",
    "targets",
    "name",
    "backend",
    "interval",
    "jitter",
    "image",
    "pull_policy",
    "command",
    "expect_output",
    "timeouts",
    "resources",
    "buckets",
    "docker",
    "namespace",
    "podman",
    "nomad",
    "hyperlight",
    "apple",
    "create",
    "start",
    "exec",
    "cpus",
    "memory_mb",
    "max_age",
]
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=5),
    ),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_no_document_crashes_the_loader(document: Any) -> None:
    problems = problems_of(document, "fuzz")
    assert problems is None or (problems and all(p.startswith("fuzz: ") for p in problems))


def problems_of(document: Any, source: str) -> list[str] | None:
    """None for a valid config; its problems otherwise. Any other exception escapes."""
    try:
        parse_config(document, source=source, discover=list)
    except ConfigError as exc:
        return exc.problems
    return None


VALID: dict[str, Any] = {
    "defaults": {"interval": "30s", "timeouts": {"exec": "5s"}, "resources": {"cpus": 1}},
    "targets": [
        {"name": "a", "backend": "docker", "docker": {"base_url": "unix:///x"}},
        {"name": "b", "backend": "namespace"},
    ],
}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out += _paths(child, (*prefix, index))
    return out


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_paths(VALID)[1:]), scalars | st.lists(scalars, max_size=3))
def test_any_single_field_replaced_gives_a_config_or_a_named_error(
    path: tuple[Any, ...], value: Any
) -> None:
    import copy

    document = copy.deepcopy(VALID)
    node = document
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    problems = problems_of(document, "mutant")
    assert problems is None or all(p.startswith("mutant: ") for p in problems), problems


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-5s", "expected a duration"),
        ("99999999h", "at most 24h"),
        ("1e400s", "expected a duration"),
        (10**30, "a bare number"),
    ],
)
def test_negative_huge_and_absurd_durations_are_named(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"targets": [{"name": "a", "backend": "namespace", "interval": value}]})


@pytest.fixture
def served() -> Iterator[tuple[Daemon, str, int]]:
    config = make_config(
        {"name": "fake", "backend": "namespace", "interval": "200ms", "jitter": "0s"}
    )
    backend = FakeBackend()
    # clients that send nothing are dropped after half a second (30 s by default)
    d = Daemon(
        config,
        listen_address="127.0.0.1:0",
        backends=by_name({"fake": backend}),
        serving=ServingOptions(read_timeout=0.5),
    )
    d.start()
    host, port = d.http.address if d.http else ("", 0)
    yield d, host, port
    d.shutdown()


def raw(host: str, port: int, data: bytes) -> bytes:
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status(answer: bytes) -> int:
    """The status code; an HTTP/0.9-style answer (no status line) carries it in its page."""
    if answer.startswith(b"HTTP/"):
        return int(answer.split(b" ", 2)[1])
    match = re.search(rb"Error code: (\d{3})", answer)
    return int(match.group(1)) if match else 0


def runs(d: Daemon) -> float:
    return (
        d.registry.get_sample_value(
            "sandbox_probes_total", {"target": "fake", "backend": "namespace", "result": "success"}
        )
        or 0.0
    )


HOSTILE = [
    b"GET /probe?target=%ZZ%%&record=\xff HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /probe?target=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /probe?target=fake&timeout=forever HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /probe?target=fake&debug=perhaps HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /" + b"x" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 70000 + b"\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(200)) + b"\r\n",
    b"BREW /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    b"DELETE /-/reload HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # a TLS hello on plain HTTP
    b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    b"garbage\r\n\r\n",
]


def test_hostile_requests_get_4xx_and_do_not_disturb_probing(
    served: tuple[Daemon, str, int],
) -> None:
    d, host, port = served
    wait_for(lambda: runs(d) >= 1, what="a first run")
    for request in HOSTILE:
        answer = raw(host, port, request)
        code = status(answer)
        assert 400 <= code < 500 or answer == b"", (request[:60], answer[:120])
    before = runs(d)
    wait_for(lambda: runs(d) >= before + 2, what="probes still running on schedule")
    assert d.health() is None


def test_slow_clients_neither_block_others_nor_keep_threads(
    served: tuple[Daemon, str, int],
) -> None:
    d, host, port = served
    idle = [socket.create_connection((host, port), timeout=10) for _ in range(20)]
    for conn in idle[:10]:
        conn.sendall(b"GET /metr")  # a request trickled and never finished
    answer = raw(host, port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status(answer) == 200, "a slow client blocks no one else"
    for conn in idle:  # the server hung up on each after its timeout
        conn.settimeout(10)
        assert conn.recv(1024) == b""
        conn.close()
    before = runs(d)
    wait_for(lambda: runs(d) >= before + 2, what="probes still running on schedule")


def test_unicode_and_control_characters_in_target_names_are_refused_cleanly() -> None:
    for name in ["tab\tname", "émoji🙂", "a/b", "x" * 300, "", "-lead", string.punctuation]:
        with pytest.raises(ConfigError, match=r"targets\[0\].*name"):
            parse_config({"targets": [{"name": name, "backend": "namespace"}]})
