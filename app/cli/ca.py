"""`zfleet ca`: a fleet certificate authority for the data plane's mutual TLS.

`zfleet ca init DIR` makes the CA (``ca.crt``, ``ca.key``); `zfleet ca issue DIR HOST` makes
``HOST.crt``/``HOST.key`` signed by it. Every host presents its certificate to its peers and trusts
only the fleet CA, so a stream server accepts connections only from fleet members and a sender
talks only to the host it meant (the host name is the certificate's DNS name).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import click
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocol.errors import ConfigError

CA_CERT: Final = "ca.crt"
CA_KEY: Final = "ca.key"
CA_DAYS: Final = 3650
HOST_DAYS: Final = 825
_HOST_RE: Final = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9-]{1,63})*$"
)


@dataclass(frozen=True)
class HostFiles:
    """Where a host's certificate, key and the fleet CA certificate are."""

    cert: Path
    key: Path
    ca: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    # create with 0600 from the start: a key must never be readable, even for an instant
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def init_ca(directory: Path, *, name: str = "zfleet fleet CA") -> Path:
    """Create a fleet CA in ``directory``; returns the CA certificate's path. Never overwrites."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if cert_path.exists() or key_path.exists():
        raise ConfigError(f"a CA already exists in {directory}; refusing to overwrite it")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise ConfigError(f"no fleet CA in {directory}: run `zfleet ca init {directory}`") from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"the fleet CA in {directory} cannot be read: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"the fleet CA key in {directory} is not an EC key")
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ConfigError(f"{directory / CA_CERT} is not a self-signed CA certificate") from exc
    return cert, key


def issue_host(directory: Path, host: str, *, ips: tuple[str, ...] = ()) -> HostFiles:
    """Issue a server-and-client certificate for ``host``, signed by the CA in ``directory``."""
    if not _HOST_RE.match(host):
        raise ConfigError(f"invalid host name {host!r}: letters, digits, '-' and '.' only")
    try:
        addresses = [ipaddress.ip_address(ip) for ip in ips]
    except ValueError as exc:
        raise ConfigError(f"invalid IP address in {ips!r}") from exc
    ca_cert, ca_key = _load_ca(directory)
    cert_path, key_path = directory / f"{host}.crt", directory / f"{host}.key"
    if cert_path.exists() or key_path.exists():
        raise ConfigError(f"{host} already has a certificate in {directory}")
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(host)]
    names.extend(x509.IPAddress(a) for a in addresses)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=HOST_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return HostFiles(cert=cert_path, key=key_path, ca=directory / CA_CERT)


@click.group()
def ca() -> None:
    """Manage the fleet certificate authority used for TLS between host workers."""


@ca.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def init_command(directory: Path) -> None:
    """Create a fleet CA in DIRECTORY (ca.crt, and ca.key readable by you only)."""
    try:
        path = init_ca(directory)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"fleet CA created: {path}")


@ca.command("issue")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("host")
@click.option("--ip", "ips", multiple=True, help="Also valid for this IP address (repeatable).")
def issue_command(directory: Path, host: str, ips: tuple[str, ...]) -> None:
    """Issue HOST.crt and HOST.key in DIRECTORY, signed by the fleet CA there."""
    try:
        files = issue_host(directory, host, ips=ips)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"certificate for {host}: {files.cert} (key {files.key})")
