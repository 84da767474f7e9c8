"""Fleet CA: `zfleet ca` makes certificates that give mutual TLS, and refuses other CAs."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import cli
from app.cli.ca import init_ca, issue_host
from protocol.errors import ConfigError
from workers.tls import TlsConfig, client_context, server_context


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> str:
    """Run one TLS handshake over a socket pair; return what the server read, or raise."""
    left, right = socket.socketpair()
    received: list[bytes] = []

    def serve() -> None:
        try:
            with server.wrap_socket(left, server_side=True) as tls:
                received.append(tls.recv(16))
        except (ssl.SSLError, OSError):
            received.append(b"")

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(right, server_hostname=name) as tls:
            tls.sendall(b"hello")
            tls.recv(1)  # the server closes; a refused client certificate surfaces here
    finally:
        thread.join(10)
    return received[0].decode()


def test_cli_creates_ca_and_host_certificates(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["ca", "init", str(tmp_path / "ca")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["ca", "issue", str(tmp_path / "ca"), "beta"])
    assert result.exit_code == 0, result.output
    key = tmp_path / "ca" / "beta.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode) == 0o600
    again = runner.invoke(cli, ["ca", "init", str(tmp_path / "ca")])
    assert again.exit_code != 0 and "refusing to overwrite" in again.output


def test_issue_without_ca_and_bad_host_names_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="zfleet ca init"):
        issue_host(tmp_path, "beta")
    init_ca(tmp_path)
    with pytest.raises(ConfigError, match="invalid host name"):
        issue_host(tmp_path, "bad host/../x")


def test_mutual_tls_between_fleet_hosts(tmp_path: Path) -> None:
    init_ca(tmp_path)
    issue_host(tmp_path, "alpha")
    issue_host(tmp_path, "beta")
    server = server_context(TlsConfig.for_host(tmp_path, "beta"))
    client = client_context(TlsConfig.for_host(tmp_path, "alpha"))
    assert _handshake(server, client, "beta") == "hello"


def test_client_from_another_ca_is_refused(tmp_path: Path) -> None:
    fleet, rogue = tmp_path / "fleet", tmp_path / "rogue"
    init_ca(fleet)
    init_ca(rogue)
    issue_host(fleet, "beta")
    issue_host(rogue, "alpha")
    server = server_context(TlsConfig.for_host(fleet, "beta"))
    # the rogue client trusts the fleet CA, so only the server's check can stop it
    rogue_client = TlsConfig(fleet / "ca.crt", rogue / "alpha.crt", rogue / "alpha.key")
    with pytest.raises((ssl.SSLError, OSError)):
        _handshake(server, client_context(rogue_client), "beta")


def test_client_refuses_a_server_with_the_wrong_name(tmp_path: Path) -> None:
    init_ca(tmp_path)
    issue_host(tmp_path, "alpha")
    issue_host(tmp_path, "gamma")
    server = server_context(TlsConfig.for_host(tmp_path, "gamma"))
    client = client_context(TlsConfig.for_host(tmp_path, "alpha"))
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server, client, "beta")


def test_missing_tls_files_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TLS files"):
        server_context(TlsConfig.for_host(tmp_path, "nobody"))


def test_issue_with_ip_addresses_names_them_in_the_certificate(tmp_path: Path) -> None:
    from cryptography import x509

    init_ca(tmp_path)
    files = issue_host(tmp_path, "beta", ips=("127.0.0.1", "::1"))
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["beta"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    with pytest.raises(ConfigError, match="invalid IP"):
        issue_host(tmp_path, "gamma", ips=("not-an-ip",))
