"""Run `sandbox-exporter run` as a process for a benchmark, and read its JSON log."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent


class ExporterProcess:
    def __init__(
        self, config: dict[str, Any], *extra: str, keep_events: set[str] | None = None
    ) -> None:
        """`keep_events`: keep only these log events (a long run logs millions of lines)."""
        self._keep = keep_events
        self._config = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)  # noqa: SIM115
        json.dump(config, self._config)  # JSON is YAML
        self._config.close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox_exporter", "run", "--config.file", self._config.name,
             "--web.listen-address", "127.0.0.1:0", *extra],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.logs: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 30
        while not any(e.get("event") == "listening" for e in self.logs):
            if time.monotonic() > deadline:
                raise RuntimeError("the exporter did not start listening")
            time.sleep(0.05)  # polling a child's log with a deadline, not a test
        self.address = next(e["address"] for e in self.logs if e.get("event") == "listening")

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                entry = json.loads(line)
            except ValueError:
                entry = {"event": "unparsed", "line": line}
            entry["_seen"] = time.monotonic()
            if self._keep is None or entry.get("event") in self._keep | {"listening"}:
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
        Path(self._config.name).unlink()
        return code
