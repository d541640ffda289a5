"""Config loading, validation messages and `check-config`."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox_exporter import backends
from sandbox_exporter.backends.base import BackendKind, BackendOptions
from sandbox_exporter.cli import main
from sandbox_exporter.config import ConfigError, load_config, parse_config

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
def test_examples_are_valid(path: Path) -> None:
    sockets = ("DOCKER_URL", "DOCKER_HOST", "PODMAN_URL", "PODMAN_RUNSC_URL")
    config = load_config(path, environ={name: "unix:///run/x.sock" for name in sockets})
    assert config.targets


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
        ("targets:\n  - {name: a, backend: namespace, colour: red}\n",
         "targets[0] (a).colour: unknown key"),
        ("defaults: {intervall: 5s}\ntargets: auto\n", "defaults.intervall: unknown key"),
        ("targets:\n  - {name: a, backend: namespace, interval: 5 minutes}\n",
         "targets[0] (a).interval: expected a duration such as 500ms, 30s, 5m or 1h30m, got '5 minutes'"),
        ("targets:\n  - {name: a, backend: namespace, interval: 60}\n",
         "targets[0] (a).interval: expected a duration such as 500ms, 30s, 5m or 1h30m, got 60 (a bare number"),
        ("targets:\n  - {name: a, backend: namespace, timeouts: {exec: 0s}}\n",
         "targets[0] (a).timeouts.exec: must be more than 0s"),
        ("targets:\n  - {name: a, backend: namespace, interval: 400d}\n",
         "targets[0] (a).interval: must be more than 0s and at most 24h"),
        ("targets:\n  - {backend: namespace}\n", "targets[0].name: required but missing"),
        ("targets:\n  - {name: a}\n", "targets[0] (a).backend: required but missing"),
        ("targets:\n  - {name: a, backend: lxc}\n",
         "targets[0] (a).backend: unknown backend 'lxc'; known: docker, kubernetes, namespace, podman"),
        ("targets:\n  - {name: A B, backend: namespace}\n", "targets[0] (A B).name: must be 1-40"),
        ("targets:\n  - {name: a, backend: namespace}\n  - {name: a, backend: namespace}\n",
         "targets[1].name: 'a' is already the name of targets[0]"),
        ("targets:\n  - {name: a, backend: namespace, docker: {}}\n",
         "targets[0] (a): a 'docker' block is given but backend is 'namespace'"),
        ("targets:\n  - {name: a, backend: namespace, pull_policy: sometimes}\n",
         "targets[0] (a).pull_policy: Input should be 'if_not_present', 'always' or 'never'"),
        ("targets:\n  - {name: a, backend: namespace, buckets: [1, 0.5]}\n",
         "targets[0] (a).buckets: bucket boundaries must be strictly increasing"),
        ("targets:\n  - {name: a, backend: namespace, resources: {memory_mb: 99999999999}}\n",
         "targets[0] (a).resources.memory_mb: Input should be less than or equal to"),
        ("targets:\n  - {name: a, backend: namespace, stop_grace: 1m}\n",
         "stop_grace (1m) must be shorter than timeouts.stop (30s)"),
        ("targets: []\n", "targets: at least one target is needed"),
        ("defaults: {}\n", "targets: required but missing"),
        ("targets: [\n", "not valid YAML at line"),
        ("- a\n- b\n", "expected a mapping at the top level"),
    ],
)  # fmt: skip
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
        config = parse_config({"targets": [{"name": "t", "backend": name, name: {}}]})
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
    assert main(["run", "--config.file", str(good), "--web.listen-address", "127.0.0.1:0",
                 flag, value]) == 1  # fmt: skip
    assert flag in capsys.readouterr().err
