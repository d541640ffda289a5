"""MkDocs hook (mkdocs.yml `hooks:`): publishes the config file's JSON Schema at the
site's root as `config.schema.json`, from the copy checked in with the package, so a
hosted site can be named in `init --schema <site>/config.schema.json`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

SCHEMA = Path(__file__).parents[1] / "sandbox_exporter/config/sandbox-exporter.schema.json"


def on_files(files: Files, config: Any, **_: Any) -> Files:
    files.append(File.generated(config, "config.schema.json", abs_src_path=str(SCHEMA)))
    return files
