"""`sandbox-exporter run` as a real process, for tests: its JSON log and its /metrics."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import wait_for

ROOT = Path(__file__).parent.parent


class ExporterProcess:
    def __init__(self, config: Path, *extra: str) -> None:
        self.config = config
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sandbox_exporter",
                "run",
                "--config.file",
                str(config),
                "--web.listen-address",
                "127.0.0.1:0",
                *extra,
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.logs: list[dict[str, Any]] = []
        self.drained = threading.Event()  # set once stderr is closed and every line read
        threading.Thread(target=self._read, daemon=True).start()
        listening = wait_for(lambda: self.event("listening"), timeout=30, what="listening log line")
        self.url = f"http://{listening['address']}"

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                self.logs.append(json.loads(line))
            except ValueError:
                self.logs.append({"event": "unparsed", "line": line})
        self.drained.set()

    def event(self, name: str) -> dict[str, Any] | None:
        """The latest log line with this event."""
        return next((e for e in reversed(self.logs) if e.get("event") == name), None)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def sample(self, name: str, **labels: str) -> float | None:
        """The first sample `name` whose labels include `labels`."""
        for family in text_string_to_metric_families(self.metrics()):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return None

    def kill(self) -> None:
        """SIGKILL it if it still runs, and reap it (a test's teardown)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)
