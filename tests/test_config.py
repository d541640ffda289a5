"""Config loading, validation messages and `check-config`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox_exporter import backends
from sandbox_exporter.backends.base import BackendKind, BackendOptions
from sandbox_exporter.cli import main
from sandbox_exporter.config import ConfigError, load_config, parse_config
from sandbox_exporter.config.settings import Settings

EXAMPLES = sorted((Path(__file__).parent.parent / "config" / "examples").glob("*.yaml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), environ={})
    return caught.value.problems


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_pass_as_shipped_in_a_bare_environment(path: Path) -> None:
    checked = subprocess.run(
        [sys.executable, "-m", "sandbox_exporter", "check-config", "--config.file", str(path)],
        env={},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_defaults_merge_into_targets_key_by_key(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
defaults:
  interval: 5m
  jitter: 20%
  timeouts: {create: 10s, exec: 2s}
targets:
  - name: a
    backend: Docker
    timeouts: {exec: 500ms}
  - name: b
    backend: namespace
    interval: 1h30m
    jitter: 3s
""",
        )
    )
    a, b = config.targets
    assert a.backend == "docker", "backend names are case-insensitive"
    assert a.interval == 300
    assert a.jitter_seconds == 60
    assert (a.timeouts.create, a.timeouts.exec, a.timeouts.start) == (10, 0.5, 60)
    assert b.interval == 5400
    assert b.jitter_seconds == 3
    assert b.timeouts.exec == 2


def test_env_references_are_substituted(tmp_path: Path) -> None:
    path = write(
        tmp_path, "targets:\n  - {name: a, backend: docker, docker: {base_url: '${URL}'}}\n"
    )
    config = load_config(path, environ={"URL": "tcp://127.0.0.1:2375"})
    assert config.targets[0].options.base_url == "tcp://127.0.0.1:2375"  # type: ignore[attr-defined]
    with pytest.raises(
        ConfigError, match=r"targets\[0\]\.docker\.base_url: environment variable URL"
    ):
        load_config(path, environ={})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "targets:\n  - {name: a, backend: namespace, colour: red}\n",
            "targets[0] (a).colour: unknown key",
        ),
        ("defaults: {intervall: 5s}\ntargets: auto\n", "defaults.intervall: unknown key"),
        (
            "targets:\n  - {name: a, backend: namespace, interval: 5 minutes}\n",
            "targets[0] (a).interval: expected a duration such as 500ms, 30s, 5m or 1h30m, got '5 minutes'",
        ),
        (
            "targets:\n  - {name: a, backend: namespace, interval: 60}\n",
            "targets[0] (a).interval: expected a duration such as 500ms, 30s, 5m or 1h30m, got 60 (a bare number",
        ),
        (
            "targets:\n  - {name: a, backend: namespace, timeouts: {exec: 0s}}\n",
            "targets[0] (a).timeouts.exec: must be more than 0s",
        ),
        (
            "targets:\n  - {name: a, backend: namespace, interval: 400d}\n",
            "targets[0] (a).interval: must be more than 0s and at most 24h",
        ),
        ("targets:\n  - {backend: namespace}\n", "targets[0].name: required but missing"),
        ("targets:\n  - {name: a}\n", "targets[0] (a).backend: required but missing"),
        (
            "targets:\n  - {name: a, backend: lxc}\n",
            "targets[0] (a).backend: unknown backend 'lxc'; known: apple, docker, firecracker, hyperlight, kubernetes, namespace, nomad, podman",
        ),
        ("targets:\n  - {name: A B, backend: namespace}\n", "targets[0] (A B).name: must be 1-40"),
        (
            "targets:\n  - {name: a, backend: namespace}\n  - {name: a, backend: namespace}\n",
            "targets[1].name: 'a' is already the name of targets[0]",
        ),
        (
            "targets:\n  - {name: a, backend: namespace, docker: {}}\n",
            "targets[0] (a): a 'docker' block is given but backend is 'namespace'",
        ),
        (
            "targets:\n  - {name: a, backend: namespace, pull_policy: sometimes}\n",
            "targets[0] (a).pull_policy: expected 'if_not_present', 'always' or 'never', got 'sometimes'",
        ),
        (
            "targets:\n  - {name: a, backend: namespace, buckets: [1, 0.5]}\n",
            "targets[0] (a).buckets: bucket boundaries must be strictly increasing",
        ),
        (
            "targets:\n  - {name: a, backend: namespace, resources: {memory_mb: 99999999999}}\n",
            "targets[0] (a).resources.memory_mb: must be at most 4194304, got 99999999999",
        ),
        (
            "targets:\n  - {name: a, backend: namespace, command: echo}\n",
            "targets[0] (a).command: expected a list, got 'echo'",
        ),
        ("targets: docker\n", "targets: expected a list of targets, or `auto`, got 'docker'"),
        (
            "targets:\n  - docker\n",
            "targets[0]: expected a target (name, backend, ...), got 'docker'",
        ),
        ("instance: [a]\ntargets: auto\n", "instance: expected text"),
        (
            "targets:\n  - {name: a, backend: namespace, stop_grace: 1m}\n",
            "targets[0] (a).stop_grace: 1m must be shorter than timeouts.stop (30s)",
        ),
        ("targets: []\n", "targets: at least one target is needed"),
        ("defaults: {}\n", "targets: required: a list of targets, or `auto`"),
        ("colour: red\ntargets: auto\n", "colour: unknown key"),
        ("targets: [\n", "not valid YAML at line"),
        ("- a\n- b\n", "expected a mapping at the top level"),
    ],
)
def test_bad_config_names_file_field_and_expectation(
    tmp_path: Path, text: str, expected: str
) -> None:
    found = problems(tmp_path, text)
    path = str(tmp_path / "config.yaml")
    assert all(line.startswith(f"{path}: ") for line in found), found
    assert any(expected in line for line in found), found


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        "targets:\n  - {name: a, backend: lxc}\n  - {name: b, backend: namespace, interval: x}\n",
    )
    assert len(found) == 2


def test_independent_problems_come_in_one_run_each_once(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
defaults: {interval: 0s, jitter: 150%, colour: red}
targets:
  - {name: Bad Name, backend: namespace}
  - {name: ok, backend: namespace, stop_grace: 1m}
  - {name: ok, backend: docker, docker: {base_url: "${NOPE}"}}
  - {name: x, backend: namespace, pull_policy: sometimes}
""",
    )
    fields = [line.split(": ")[1] for line in found]
    assert sorted(fields) == sorted(
        [
            "defaults.interval",
            "defaults.jitter",
            "defaults.colour",  # and not again per target
            "targets[0] (Bad Name).name",
            "targets[1] (ok).stop_grace",  # a check between fields, though other fields fail
            "targets[2].name",  # the duplicate, though targets[0] is invalid
            "targets[2].docker.base_url",  # the unset variable, and no more about that field
            "targets[3] (x).pull_policy",
        ]
    ), found


def test_a_problem_of_defaults_is_reported_there_once(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        "defaults: {stop_grace: 40s, image: ''}\n"
        "targets:\n  - {name: a, backend: namespace}\n  - {name: b, backend: namespace}\n"
        "  - {name: c, backend: docker, image: busybox, timeouts: {stop: 1m}}\n",
    )
    assert [line.split(": ")[1] for line in found] == ["defaults.image", "defaults.stop_grace"]


def test_env_references_may_carry_a_default(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "targets:\n  - {name: a, backend: docker, docker: {base_url: '${URL:-unix:///d.sock}'}}\n",
    )
    for environ, expected in (
        ({}, "unix:///d.sock"),
        ({"URL": ""}, "unix:///d.sock"),
        ({"URL": "tcp://h:1"}, "tcp://h:1"),
    ):
        options = load_config(path, environ=environ).targets[0].options
        assert options.base_url == expected  # type: ignore[attr-defined]


_ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(
    backend=st.sampled_from(sorted(backends.MODULES)),
    key=st.sampled_from([*Settings.model_fields, "timeouts.exec", "resources.cpus", "block"]),
    value=_ANY_VALUE,
)
def test_no_message_is_in_the_library_s_words(backend: str, key: str, value: object) -> None:
    target: dict[str, object] = {"name": "t", "backend": backend}
    if key == "block":
        target[backend] = value
    elif "." in key:
        outer, inner = key.split(".")
        target[outer] = {inner: value}
    else:
        target[key] = value
    try:
        parse_config({"targets": [target]})
    except ConfigError as exc:
        for line in exc.problems:
            assert "Input should" not in line, line
            assert "valid tuple" not in line, line
            assert line.startswith("<built-in defaults>: targets[0]"), line


def test_targets_auto_uses_discovery() -> None:
    found = [{"name": "namespace", "backend": "namespace"}]
    config = parse_config(
        {"targets": "auto", "defaults": {"interval": "5s"}}, discover=lambda: found
    )
    assert [(t.name, t.backend, t.interval) for t in config.targets] == [
        ("namespace", "namespace", 5)
    ]
    with pytest.raises(ConfigError, match="found no backend"):
        parse_config({"targets": "auto"}, discover=list)


def test_every_registered_backend_declares_itself_and_has_its_block() -> None:
    for name in backends.MODULES:
        kind = backends.kind(name)
        assert isinstance(kind, BackendKind)
        assert kind.name == name
        assert issubclass(kind.options, BackendOptions)
        block = dict(kind.example or {})  # what its required options usually hold
        config = parse_config({"targets": [{"name": "t", "backend": name, name: block}]})
        assert isinstance(config.targets[0].options, kind.options)
    assert backends.kind(" K8S ").name == "kubernetes", "aliases, any case, trimmed"


def test_check_config_exit_codes_and_messages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path, "targets:\n  - {name: floor, backend: namespace, interval: 15s}\n")
    assert main(["check-config", "--config.file", str(good)]) == 0
    assert "floor: backend namespace, every 15s" in capsys.readouterr().out

    bad = tmp_path / "bad.yaml"
    bad.write_text("targets:\n  - {name: floor, backend: namespace, interval: soon}\n")
    assert main(["check-config", "--config.file", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: targets[0] (floor).interval: expected a duration" in err

    assert main(["check-config", "--config.file", str(tmp_path / "missing.yaml")]) == 1
    assert "cannot read the file" in capsys.readouterr().err


def test_flags_can_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path, "targets:\n  - {name: floor, backend: namespace}\n")
    monkeypatch.setenv("SANDBOX_EXPORTER_CONFIG_FILE", str(good))
    assert main(["check-config"]) == 0
    assert str(good) in capsys.readouterr().out


def test_bad_listen_address_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "targets:\n  - {name: floor, backend: namespace}\n")
    assert main(["run", "--config.file", str(good), "--web.listen-address", "nine"]) == 1
    assert "--web.listen-address" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--web.nice", v) for v in ("25", "-1", "ten")]
    + [("--web.max-scrapes-per-second", v) for v in ("-1", "many", "nan")],
)
def test_bad_web_flags_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    good = write(tmp_path, "targets:\n  - {name: floor, backend: namespace}\n")
    assert (
        main(
            ["run", "--config.file", str(good), "--web.listen-address", "127.0.0.1:0", flag, value]
        )
        == 1
    )
    assert flag in capsys.readouterr().err
