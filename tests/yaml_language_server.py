"""The real yaml-language-server (what VS Code's YAML extension runs), driven over stdio
as an editor drives it: open a document, read the diagnostics it publishes.

scripts/test.sh installs it from npm into .cache/yaml-language-server
(`SANDBOX_EXPORTER_YAML_LANGUAGE_SERVER` names its executable); elsewhere `find()` says
why it is not there. The Language Server Protocol's framing (a Content-Length header,
then JSON-RPC) is written here as there is no maintained Python LSP *client* library
to drive a server with; it is a dozen lines.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent
INSTALLED = (
    ROOT / ".cache" / "yaml-language-server" / "node_modules" / ".bin" / "yaml-language-server"
)


def find() -> tuple[str | None, str]:
    """(the server's executable, or None and why not)."""
    named = os.environ.get("SANDBOX_EXPORTER_YAML_LANGUAGE_SERVER")
    for candidate in (named, str(INSTALLED), shutil.which("yaml-language-server")):
        if candidate and Path(candidate).exists():
            return candidate, ""
    return None, "yaml-language-server is not installed (scripts/test.sh installs it from npm)"


class YamlLanguageServer:
    def __init__(self, executable: str, root: Path) -> None:
        self.process = subprocess.Popen(
            [executable, "--stdio"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.ids = 0
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._reader, daemon=True).start()
        self.request(
            "initialize", {"processId": os.getpid(), "rootUri": root.as_uri(), "capabilities": {}}
        )
        self.notify("initialized", {})
        # no schema store: it would be fetched from the network
        settings = {"validate": True, "schemaStore": {"enable": False}, "hover": True}
        self.notify("workspace/didChangeConfiguration", {"settings": {"yaml": settings}})

    def diagnostics(self, path: Path, text: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """What the server reports for `text` opened as `path`, once it has validated it."""
        uri = path.as_uri()
        self.notify(
            "textDocument/didOpen",
            {"textDocument": {"uri": uri, "languageId": "yaml", "version": 1, "text": text}},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self._next(deadline)
            if (
                message.get("method") == "textDocument/publishDiagnostics"
                and message["params"]["uri"] == uri
            ):
                found: list[dict[str, Any]] = message["params"]["diagnostics"]
                return found
        raise TimeoutError(f"no diagnostics for {uri} within {timeout}s")

    def close(self) -> None:
        try:
            self.request("shutdown", None)
            self.notify("exit", None)
            self.process.wait(timeout=10)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()

    def request(self, method: str, params: Any) -> Any:
        self.ids += 1
        wanted = self.ids
        self._send({"jsonrpc": "2.0", "id": wanted, "method": method, "params": params})
        deadline = time.monotonic() + 30
        while True:
            message = self._next(deadline)
            if message.get("id") == wanted and "method" not in message:
                return message.get("result")
            if "id" in message and "method" in message:  # a request of the server's
                self._send({"jsonrpc": "2.0", "id": message["id"], "result": None})

    def notify(self, method: str, params: Any) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def _send(self, message: dict[str, Any]) -> None:
        body = json.dumps(message).encode()
        assert self.process.stdin is not None
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.process.stdin.flush()

    def _next(self, deadline: float) -> dict[str, Any]:
        try:
            message = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError("yaml-language-server did not answer in time") from None
        if message is None:
            raise EOFError("yaml-language-server closed its output")
        return message

    def _reader(self) -> None:
        """Each framed message from the server's stdout, in order; None at its end."""
        stdout = self.process.stdout
        assert stdout is not None
        while True:
            length = 0
            while (line := stdout.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if not length:
                self.messages.put(None)
                return
            self.messages.put(json.loads(stdout.read(length)))
