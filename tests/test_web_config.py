"""TLS, client certificates and basic auth from --web.config.file, over real sockets."""

from __future__ import annotations

import base64
import http.client
import ssl
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import trustme

from sandbox_exporter.daemon import Daemon
from sandbox_exporter.web.webconfig import WebConfig, WebConfigError
from tests.fakes import FakeBackend, by_name
from tests.helpers import make_config, wait_for

PASSWORD = "s3cret"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def write_certs(ca: trustme.CA, directory: Path) -> None:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(directory / "server.key"))
    cert.cert_chain_pems[0].write_to_path(str(directory / "server.crt"))
    ca.cert_pem.write_to_path(str(directory / "clients-ca.crt"))


def web_config(directory: Path, *, users: bool = True, client_auth: str = "NoClientCert") -> Path:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    text = (
        "tls_server_config:\n"
        "  cert_file: server.crt\n  key_file: server.key\n"
        f"  client_auth_type: {client_auth}\n  client_ca_file: clients-ca.crt\n"
    )
    if users:
        text += f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    path = directory / "web.yaml"
    path.write_text(text)
    return path


def serve(path: Path) -> Daemon:
    config = make_config({"name": "fake", "backend": "namespace", "interval": "1h"})
    d = Daemon(
        config,
        listen_address="127.0.0.1:0",
        backends=by_name({"fake": FakeBackend()}),
        web_config=WebConfig(path),
    )
    d.start()
    wait_for(lambda: d.probers[0].last_result, what="the first run")  # quiet before the test
    return d


@pytest.fixture
def server(tmp_path: Path, ca: trustme.CA) -> Iterator[tuple[Daemon, Path]]:
    write_certs(ca, tmp_path)
    d = serve(web_config(tmp_path))
    yield d, tmp_path
    d.shutdown()


def request(
    d: Daemon, context: ssl.SSLContext, auth: str | None = None
) -> tuple[int, dict[str, str], tuple[str | None, object]]:
    """Status, headers, and the connection's (TLS version, server certificate)."""
    host, port = d.http.address if d.http else ("", 0)
    conn = http.client.HTTPSConnection(host, port, context=context, timeout=10)
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    conn.request("GET", "/metrics", headers=headers)
    sock = conn.sock
    assert isinstance(sock, ssl.SSLSocket)
    tls = (sock.version(), sock.getpeercert())
    response = conn.getresponse()
    response.read()
    return response.status, dict(response.getheaders()), tls


def client(ca: trustme.CA, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if cert is not None:
        cert.configure_cert(context)
    return context


def test_tls_and_basic_auth_right_wrong_missing(
    server: tuple[Daemon, Path], ca: trustme.CA
) -> None:
    d, _ = server
    status, _, (version, _) = request(d, client(ca), f"prometheus:{PASSWORD}")
    assert status == 200
    assert version in ("TLSv1.2", "TLSv1.3")
    for auth in (None, "prometheus:wrong", "someone:" + PASSWORD, "garbage"):
        status, headers, _ = request(d, client(ca), auth)
        assert status == 401, auth
        assert headers["WWW-Authenticate"] == 'Basic realm="sandbox-exporter"'


def test_plain_http_to_a_tls_port_gets_nothing(server: tuple[Daemon, Path]) -> None:
    d, _ = server
    host, port = d.http.address if d.http else ("", 0)

    def plain_get() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        conn.request("GET", "/metrics")
        conn.getresponse()

    with pytest.raises((ConnectionError, http.client.RemoteDisconnected, OSError)):
        plain_get()


def test_client_certificates_are_required_when_configured(tmp_path: Path, ca: trustme.CA) -> None:
    write_certs(ca, tmp_path)
    d = serve(web_config(tmp_path, users=False, client_auth="RequireAndVerifyClientCert"))
    try:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            request(d, client(ca))
        stranger = trustme.CA().issue_cert("intruder")
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            request(d, client(ca, stranger))
        status, _, _ = request(d, client(ca, ca.issue_cert("prometheus")))
        assert status == 200
    finally:
        d.shutdown()


def test_a_rotated_certificate_is_served_on_the_next_connection(
    server: tuple[Daemon, Path], ca: trustme.CA
) -> None:
    d, directory = server
    auth = f"prometheus:{PASSWORD}"
    first = request(d, client(ca), auth)[2][1]
    newer = trustme.CA()
    write_certs(newer, directory)
    status, _, (_, rotated) = request(d, client(newer), auth)
    assert status == 200
    assert rotated != first
    with pytest.raises(ssl.SSLError):
        request(d, client(ca), auth)  # the old CA no longer vouches for the server


def test_a_broken_web_config_names_the_problem(tmp_path: Path, ca: trustme.CA) -> None:
    (tmp_path / "web.yaml").write_text("basic_auth_users:\n  prometheus: plain-password\n")
    with pytest.raises(WebConfigError, match="expected a bcrypt hash"):
        WebConfig(tmp_path / "web.yaml")
    (tmp_path / "web.yaml").write_text(
        "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n"
    )
    with pytest.raises(WebConfigError, match="cert_file/key_file"):
        WebConfig(tmp_path / "web.yaml")
    (tmp_path / "web.yaml").write_text("tls_config: {}\n")
    with pytest.raises(WebConfigError, match="tls_config: unknown key"):
        WebConfig(tmp_path / "web.yaml")


def test_an_unknown_user_costs_a_bcrypt_check_like_a_known_one(
    tmp_path: Path, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answering an unknown user before any bcrypt check would tell, by timing, which
    user names exist: every refusal costs one check at the configured cost."""
    write_certs(ca, tmp_path)
    settings = WebConfig(web_config(tmp_path)).current()
    checked: list[bytes] = []
    real = bcrypt.checkpw

    def counted(password: bytes, hashed: bytes) -> bool:
        checked.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counted)

    def header(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    assert not settings.authorized(header("nobody", PASSWORD))
    assert not settings.authorized(header("prometheus", "wrong"))
    assert len(checked) == 2, "one bcrypt check each, known user or not"
    assert checked[0][:7] == checked[1][:7], "at the same cost ($2b$NN$)"
