"""--shard.index / --shard.count: N exporters split one config's targets as
Prometheus's hashmod would, checked against a real Prometheus."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox_exporter.backends.base import NotFound
from sandbox_exporter.backends.namespace import find_here
from sandbox_exporter.config.sharding import Shard, hashmod
from tests.helpers import make_config, wait_for
from tests.process import ExporterProcess
from tests.test_dashboard_and_rules import free_port, tool

NAMES = [f"target-{i}" for i in range(40)] + ["docker", "gvisor", "eu-west-1-kata"]


def test_hashmod_is_prometheus_s(tmp_path: Path) -> None:
    """Prometheus relabels each name with `hashmod`; its answer is ours."""
    modulus = 7
    config = {
        "global": {"scrape_interval": "1h"},
        "scrape_configs": [
            {
                "job_name": "shards",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{20000 + i}"], "labels": {"name": name}}
                    for i, name in enumerate(NAMES)
                ],
                "relabel_configs": [
                    {
                        "source_labels": ["name"],
                        "modulus": modulus,
                        "target_label": "shard",
                        "action": "hashmod",
                    }
                ],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address={url}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def targets() -> list[dict[str, Any]]:
            try:
                with urllib.request.urlopen(f"http://{url}/api/v1/targets", timeout=5) as r:
                    found: list[dict[str, Any]] = json.loads(r.read())["data"]["activeTargets"]
            except OSError:
                return []
            return found if len(found) == len(NAMES) else []

        active = wait_for(targets, timeout=60, what="Prometheus's relabelled targets")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    theirs = {t["labels"]["name"]: int(t["labels"]["shard"]) for t in active}
    assert theirs == {name: hashmod(name, modulus) for name in NAMES}


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_the_shards_split_the_targets_each_to_one(count: int) -> None:
    config = make_config(*({"name": n, "backend": "namespace"} for n in NAMES))
    shards = [{t.name for t in Shard(i, count).of(config).targets} for i in range(count)]
    assert set().union(*shards) == set(NAMES)
    assert sum(len(s) for s in shards) == len(NAMES), "no target in two shards"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--shard.count", "0"], "--shard.count: must be at least 1, got 0"),
        (["--shard.count", "3", "--shard.index", "3"], "--shard.index: must be from 0 to 2"),
        (["--shard.index", "x"], "--shard.index: expected a whole number, got 'x'"),
    ],
)
def test_bad_shard_flags_name_the_flag(tmp_path: Path, flags: list[str], message: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("targets:\n  - {name: a, backend: namespace}\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sandbox_exporter",
            "check-config",
            "--config.file",
            str(config),
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert message in done.stderr


@pytest.mark.namespace
@pytest.mark.skipif(isinstance(find_here(), NotFound), reason="needs the namespace backend")
def test_a_shard_probes_its_targets_only_and_keeps_to_them_on_reload(tmp_path: Path) -> None:
    names = ["a", "b", "c", "d", "e", "f"]
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "defaults": {"interval": "1h"},
                "targets": [{"name": n, "backend": "namespace"} for n in names],
            }
        )
    )
    mine = {n for n in names if hashmod(n, 2) == 1}
    exporter = ExporterProcess(config, "--shard.count", "2", "--shard.index", "1")
    try:
        started = wait_for(lambda: exporter.event("started"), timeout=30, what="start-up")
        assert {t.split(" ")[0] for t in started["targets"]} == mine
        assert started["shard"] == "shard 1 of 2"
        names.append("g")
        config.write_text(
            yaml.safe_dump(
                {
                    "defaults": {"interval": "1h"},
                    "targets": [{"name": n, "backend": "namespace"} for n in names],
                }
            )
        )
        exporter.proc.send_signal(1)  # SIGHUP
        wait_for(lambda: exporter.event("config reloaded"), timeout=30, what="the reload")
        served = {
            line.split('target="')[1].split('"')[0]
            for line in exporter.metrics().splitlines()
            if line.startswith("sandbox_target_info{")
        }
        assert served == {n for n in names if hashmod(n, 2) == 1}
    finally:
        assert exporter.stop() == 0
