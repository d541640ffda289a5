"""`--web.config.file`: TLS and basic auth, in the format Prometheus exporters use.

```yaml
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert   # or NoClientCert, VerifyClientCertIfGiven
  client_ca_file: clients-ca.crt
  min_version: TLS12                              # TLS10 .. TLS13
basic_auth_users:
  prometheus: $2b$12$...                          # bcrypt hash
```

The file and the files it names are checked on every new connection and
reloaded when one changed, so certificates rotate without a restart. A change
that does not load is refused, logged, and the previous settings kept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import bcrypt
import structlog
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from sandbox_exporter.config.messages import dotted, field_problem

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}


class WebConfigError(Exception):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSServerConfig(_Strict):
    cert_file: str
    key_file: str
    client_auth_type: Literal[
        "NoClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"
    ] = "NoClientCert"
    client_ca_file: str | None = None
    min_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS12"
    max_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] | None = None


class WebConfigFile(_Strict):
    tls_server_config: TLSServerConfig | None = None
    basic_auth_users: dict[str, str] = {}

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt_hashes(cls, users: dict[str, str]) -> dict[str, str]:
        for user, hashed in users.items():
            if not hashed.startswith(("$2a$", "$2b$", "$2y$")):
                raise ValueError(f"{user}: expected a bcrypt hash ($2b$...), not a password")
        return users


def _same_cost_hash(users: dict[str, bytes]) -> bytes:
    """A hash of nothing anyone can send, at the cost of the configured ones, checked
    for unknown users: refusing them without a bcrypt check would tell, by the time
    it takes, which user names exist."""
    costs = [int(h.split(b"$")[2]) for h in users.values() if h.count(b"$") >= 3]
    rounds = max(costs, default=12)
    return bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(rounds=max(rounds, 4)))


@dataclass
class WebSettings:
    """The loaded settings: an SSL context (None: plain HTTP) and the users."""

    ssl_context: ssl.SSLContext | None
    users: dict[str, bytes]
    _verified: set[tuple[str, bytes]] = field(default_factory=set)
    _unknown_user: bytes = b""

    def __post_init__(self) -> None:
        if self.users and not self._unknown_user:
            self._unknown_user = _same_cost_hash(self.users)

    def authorized(self, header: str | None) -> bool:
        if not self.users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if hashed is None:
            bcrypt.checkpw(password.encode(), self._unknown_user)  # as long as a known user's
            return False
        # bcrypt is slow on purpose; remember passwords already verified (by digest)
        key = (user, hashlib.sha256(password.encode() + hashed).digest())
        if key in self._verified:
            return True
        if bcrypt.checkpw(password.encode(), hashed):
            self._verified.add(key)
            return True
        return False


class WebConfig:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._log = structlog.get_logger("sandbox_exporter")
        self._stamp: tuple[tuple[str, float, int], ...] = ()
        self._watched = [self.path]
        self._settings = self._load()  # at start-up a bad file is an error

    def current(self) -> WebSettings:
        """The settings, reloaded first if the file or a file it names changed."""
        with self._lock:
            if self._files_stamp() != self._stamp:
                try:
                    self._settings = self._load()
                    self._log.info("web config reloaded", file=str(self.path))
                except WebConfigError as exc:
                    self._stamp = self._files_stamp()  # do not retry on every connection
                    self._log.error("web config not reloaded; keeping the previous", error=str(exc))
            return self._settings

    def _files(self, parsed: WebConfigFile | None) -> list[Path]:
        files = [self.path]
        tls = parsed.tls_server_config if parsed else None
        if tls is not None:
            files += [
                self._resolve(f) for f in (tls.cert_file, tls.key_file, tls.client_ca_file) if f
            ]
        return files

    def _files_stamp(self) -> tuple[tuple[str, float, int], ...]:
        stamp = []
        for path in self._watched:
            try:
                st = path.stat()
                stamp.append((str(path), st.st_mtime, st.st_size))
            except OSError:
                stamp.append((str(path), -1.0, -1))
        return tuple(stamp)

    def _resolve(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() else self.path.parent / path

    def _load(self) -> WebSettings:
        where = str(self.path)
        try:
            data = yaml.safe_load(self.path.read_text()) or {}
            parsed = WebConfigFile.model_validate(data)
        except OSError as exc:
            raise WebConfigError(f"{where}: cannot read: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise WebConfigError(f"{where}: not valid YAML: {exc}") from None
        except ValidationError as exc:
            problems = "; ".join(
                f"{dotted(e['loc'])}: {field_problem(e)}" for e in exc.errors(include_url=False)
            )
            raise WebConfigError(f"{where}: {problems}") from None
        users = {user: hashed.encode() for user, hashed in parsed.basic_auth_users.items()}
        tls = parsed.tls_server_config
        settings = WebSettings(self._context(tls) if tls else None, users)
        self._watched = self._files(parsed)
        self._stamp = self._files_stamp()
        return settings

    def _context(self, tls: TLSServerConfig) -> ssl.SSLContext:
        where = f"{self.path}: tls_server_config"
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = TLS_VERSIONS[tls.min_version]
        if tls.max_version:
            context.maximum_version = TLS_VERSIONS[tls.max_version]
        try:
            context.load_cert_chain(self._resolve(tls.cert_file), self._resolve(tls.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(f"{where}: cert_file/key_file: {exc}") from None
        context.verify_mode = CLIENT_AUTH[tls.client_auth_type]
        if context.verify_mode != ssl.CERT_NONE:
            if not tls.client_ca_file:
                raise WebConfigError(f"{where}.client_ca_file: required by {tls.client_auth_type}")
            try:
                context.load_verify_locations(self._resolve(tls.client_ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise WebConfigError(f"{where}.client_ca_file: {exc}") from None
        return context
