"""Notices when the config file's content changes (for --config.auto-reload-interval)."""

from __future__ import annotations

import hashlib
from pathlib import Path


class FileWatch:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._digest = self._read()

    def _read(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

    def changed(self) -> bool:
        """True once per change of content; a file that cannot be read is no change."""
        digest = self._read()
        if digest is None or digest == self._digest:
            return False
        self._digest = digest
        return True
