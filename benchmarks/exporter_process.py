"""Run `sandbox-exporter run` as a process for a benchmark, and read its JSON log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent


class ExporterProcess:
    def __init__(
        self,
        config: dict[str, Any],
        *extra: str,
        keep_events: set[str] | None = None,
        keep: Callable[[dict[str, Any]], bool] | None = None,
        launcher: Sequence[str] = ("-m", "sandbox_exporter"),
        env: dict[str, str] | None = None,
    ) -> None:
        """`keep_events`, `keep`: keep only these log events, or those `keep` accepts (a
        long run logs millions of lines). `launcher`: what follows the interpreter on
        its command line, before `run`; `env`: added to the environment."""
        if keep is None and keep_events is not None:
            events = keep_events

            def keep(entry: dict[str, Any]) -> bool:
                return entry.get("event") in events

        self._keep = keep
        self._config = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)  # noqa: SIM115
        self._config.close()
        self.config_path = Path(self._config.name)
        self.write_config(config)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                *launcher,
                "run",
                "--config.file",
                str(self.config_path),
                "--web.listen-address",
                "127.0.0.1:0",
                *extra,
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.logs: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 30
        while not any(e.get("event") == "listening" for e in self.logs):
            if time.monotonic() > deadline:
                raise RuntimeError("the exporter did not start listening")
            time.sleep(0.05)  # polling a child's log with a deadline, not a test
        self.address = next(e["address"] for e in self.logs if e.get("event") == "listening")

    def write_config(self, config: dict[str, Any]) -> None:
        """Replace the config file (a reload, SIGHUP, reads it)."""
        partial = self.config_path.with_suffix(".partial")
        partial.write_text(json.dumps(config))  # JSON is YAML
        partial.replace(self.config_path)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                entry = json.loads(line)
            except ValueError:
                entry = {"event": "unparsed", "line": line}
            entry["_seen"] = time.monotonic()
            if self._keep is None or self._keep(entry) or entry.get("event") == "listening":
                self.logs.append(entry)

    def status(self, field: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def fds(self) -> int:
        return len(list(Path(f"/proc/{self.proc.pid}/fd").iterdir()))

    def stop(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(timeout=120)
        self.config_path.unlink()
        return code
