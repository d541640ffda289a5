"""The config file's JSON Schema and reference page: generated from the models, checked
in current, and in agreement with the loader on what a file may say."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from sandbox_exporter import backends
from sandbox_exporter.config import ConfigError, parse_config, reference, schema
from sandbox_exporter.config.settings import Settings
from tests import yaml_language_server
from tests.conftest import unavailable
from tests.helpers import run_init
from tests.yaml_language_server import YamlLanguageServer

ROOT = Path(__file__).parent.parent
REFERENCE = ROOT / "docs" / "reference" / "configuration.md"
CHART_SCHEMA = ROOT / "helm" / "sandbox-exporter" / "values.schema.json"
REGENERATE = "stale: run scripts/generate-config-docs.sh and commit the result"
NAMESPACE = {"name": "ns", "backend": "namespace"}


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    checked_in = json.loads(schema.SCHEMA_FILE.read_text())
    jsonschema.Draft7Validator.check_schema(checked_in)
    return jsonschema.Draft7Validator(checked_in)


def errors(validator: jsonschema.Draft7Validator, document: Any) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_the_checked_in_schema_reference_and_chart_schema_are_what_the_models_give() -> None:
    assert schema.SCHEMA_FILE.read_text() == schema.render(), REGENERATE
    assert REFERENCE.read_text() == reference.render(), REGENERATE
    chart = json.loads(CHART_SCHEMA.read_text())
    assert chart == schema.in_chart_values(chart), REGENERATE
    assert chart["properties"]["config"]["properties"] == schema.json_schema()["properties"]


def test_config_schema_prints_the_checked_in_schema() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sandbox_exporter", "config", "schema"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == schema.SCHEMA_FILE.read_text()


def _model_keys(model: type[Any]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def test_every_key_the_loader_knows_is_in_the_schema_and_the_reference_with_a_description() -> None:
    document = json.loads(schema.SCHEMA_FILE.read_text())
    definitions = document["definitions"]
    assert set(definitions["Settings"]["properties"]) == _model_keys(Settings)
    page = REFERENCE.read_text()
    for kind in backends.kinds():
        block = definitions[kind.options.__name__]["properties"]
        assert set(block) == _model_keys(kind.options), kind.name
        assert f"### `{kind.name}`" in page
        for key in block:
            assert re.search(rf"^\| `{key}` \|", page, re.M), f"{kind.name}.{key}"
    undescribed = [
        f"{name}.{key}"
        for name, definition in definitions.items()
        for key, prop in definition.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert undescribed == [], "a field docstring is the key's description"


def test_every_shipped_example_is_valid(validator: jsonschema.Draft7Validator) -> None:
    examples = sorted((ROOT / "config" / "examples").glob("*.yaml"))
    assert len(examples) >= 5
    for example in examples:
        assert errors(validator, yaml.safe_load(example.read_text())) == [], example.name


def _documented_configs() -> list[tuple[str, Any]]:
    """Every YAML block in the README and docs/ that is a whole config (has `targets`)."""
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for number, block in enumerate(re.findall(r"```yaml\n(.*?)```", page.read_text(), re.S)):
            document = yaml.safe_load(block)
            if isinstance(document, dict) and "targets" in document:
                found.append((f"{page.relative_to(ROOT)} block {number}", document))
    return found


def test_every_config_in_the_readme_and_the_docs_is_valid_for_the_schema_and_the_loader(
    validator: jsonschema.Draft7Validator,
) -> None:
    documented = _documented_configs()
    assert any(where.startswith("README.md") for where, _ in documented), "the minimal config"
    for where, document in documented:
        assert errors(validator, document) == [], where
        variables = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", json.dumps(document)))
        parse_config(  # the loader too
            document, environ=dict.fromkeys(variables, "set"), discover=lambda: [dict(NAMESPACE)]
        )


def test_init_writes_a_first_line_that_points_editors_at_the_schema_and_validates(
    validator: jsonschema.Draft7Validator,
) -> None:
    done = run_init("-b", "namespace")
    assert done.returncode in (0, 1), done.stderr  # 1: namespace cannot run here
    first = done.stdout.splitlines()[0]
    assert first == f"# yaml-language-server: $schema={schema.SCHEMA_FILE}"
    assert errors(validator, yaml.safe_load(done.stdout)) == []
    hosted = run_init("-b", "namespace", "--schema", "x.json")
    assert hosted.stdout.startswith("# yaml-language-server: $schema=x.json\n")


# (document, what the schema says is wrong, or None when it is valid); the loader
# must agree on each
CASES: list[tuple[dict[str, Any], str | None]] = [
    ({"targets": [NAMESPACE]}, None),
    (
        {
            "instance": "probe-host-1",
            "defaults": {
                "interval": "1h30m",
                "jitter": "0",
                "timeouts": {"exec": "500ms"},
                "slo": {"objective": "99.5%", "time_to_exec": "1s", "window": "7d"},
                "histograms": {"native": False, "schema": -4},
            },
            "targets": [
                {**NAMESPACE, "jitter": "5s", "slo": {"objective": 0.99, "time_to_exec": "2s"}},
                {"name": "pods", "backend": "k8s", "kubernetes": {"runtime_class": "gvisor"}},
                {"name": "d", "backend": "docker", "burst": {"concurrency": 10}},
            ],
        },
        None,
    ),
    ({"defaults": {"resources": {"memory_mb": "${MEMORY:-128}"}}, "targets": [NAMESPACE]}, None),
    ({"defaults": {"interval": "${INTERVAL:-30s}"}, "targets": [NAMESPACE]}, None),
    ({"targets": "auto"}, None),
    ({"defaults": {"intreval": "60s"}, "targets": [NAMESPACE]}, "defaults: Additional"),
    ({"defaults": {"interval": 60}, "targets": [NAMESPACE]}, "defaults.interval: 60"),
    ({"defaults": {"interval": "5 minutes"}, "targets": [NAMESPACE]}, "defaults.interval"),
    ({"defaults": {"jitter": "10 %"}, "targets": [NAMESPACE]}, None),
    ({"defaults": {"jitter": "ten%"}, "targets": [NAMESPACE]}, "defaults.jitter"),
    ({"target": [NAMESPACE]}, "<top>: "),
    ({"targets": []}, "targets: "),
    ({"targets": "all"}, "targets: "),
    ({"targets": [{"name": "x", "backend": "dockr"}]}, "targets: "),
    ({"targets": [{"name": "Bad_Name", "backend": "namespace"}]}, "targets: "),
    ({"targets": [{**NAMESPACE, "docker": {}}]}, "targets: "),
    ({"targets": [{**NAMESPACE, "namespace": {"user_namespace": "sometimes"}}]}, "targets: "),
    ({"targets": [{**NAMESPACE, "burst": {"concurrency": 1}}]}, "targets: "),
    ({"targets": [{**NAMESPACE, "slo": {"objective": "100%", "time_to_exec": "1s"}}]}, "targets"),
    ({"targets": [{**NAMESPACE, "slo": {"objective": 99.5, "time_to_exec": "1s"}}]}, "targets"),
    (
        {
            "targets": [
                {**NAMESPACE, "slo": {"objective": 0.9, "time_to_exec": "1s", "window": "29d"}}
            ]
        },
        "targets",
    ),
    ({"targets": [{**NAMESPACE, "resources": {"memory_mb": 2}}]}, "targets"),
]


@pytest.mark.parametrize(("document", "wrong"), CASES)
def test_the_schema_and_the_loader_agree(
    validator: jsonschema.Draft7Validator, document: dict[str, Any], wrong: str | None
) -> None:
    said = errors(validator, document)
    try:
        parse_config(document, environ={}, discover=lambda: [dict(NAMESPACE)])
        loaded = None
    except ConfigError as exc:
        loaded = str(exc)
    if wrong is None:
        assert said == []
        assert loaded is None
    else:
        assert any(line.startswith(wrong) for line in said), said
        assert loaded is not None, "the schema refuses what the loader takes"


# -- in an editor: the real yaml-language-server ----------------------------------------


@pytest.fixture(scope="module")
def editor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[YamlLanguageServer]:
    executable, why = yaml_language_server.find()
    if executable is None:
        unavailable("yaml-language-server", why)
    assert executable is not None
    server = YamlLanguageServer(executable, tmp_path_factory.mktemp("workspace"))
    try:
        yield server
    finally:
        server.close()


def _init_output() -> str:
    done = run_init("-b", "namespace,docker")
    assert done.stdout.startswith("# yaml-language-server: $schema="), done.stderr
    return done.stdout


def test_an_editor_finds_the_schema_from_inits_first_line_and_the_starter_config_clean(
    editor: YamlLanguageServer, tmp_path: Path
) -> None:
    assert editor.diagnostics(tmp_path / "sandbox-exporter.yaml", _init_output()) == []


def test_an_editor_marks_each_mistake_where_it_was_typed(
    editor: YamlLanguageServer, tmp_path: Path
) -> None:
    modeline = _init_output().splitlines()[0]
    text = "\n".join(
        [
            modeline,
            "defaults:",
            "  intreval: 60s",  # line 2: a typo
            "  interval: 60",  # line 3: a bare number
            "targets:",
            "  - name: pods",
            "    backend: kubernetes",
            "    kubernetes:",
            "      namespac: probes",  # line 8: a typo in the backend's block
            "  - name: floor",
            "    backend: namespace",
            "    pull_policy: sometimes",  # line 11: not a choice
            "",
        ]
    )
    said = {
        (d["range"]["start"]["line"], d["message"])
        for d in editor.diagnostics(tmp_path / "broken.yaml", text)
    }
    lines = {line for line, _ in said}
    assert lines == {2, 3, 8, 11}, said
    assert (2, "Property intreval is not allowed.") in said
    assert (8, "Property namespac is not allowed.") in said
