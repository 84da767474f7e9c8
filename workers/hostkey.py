"""A host's own X25519 key pair: the private half in a file on the host, never anywhere else.

``zfleet keys host init --host NAME`` (run on that host) makes it under the data directory
(``<data_dir>/keys/<host>.x25519``, mode 0600 in a 0700 directory) and registers the public half
in Redis (bus/keyring.py); the worker opens group keys sealed to it (workers/keysteps.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from protocol.errors import ConfigError
from protocol.names import validate_component
from protocol.sealed import KEY_LEN, KeyPair


def key_path(data_dir: Path, host: str) -> Path:
    validate_component(host, what="host")
    return data_dir / "keys" / f"{host}.x25519"


def create(data_dir: Path, host: str) -> KeyPair:
    """A new key pair for ``host``; an existing one is kept and returned (never overwritten:
    group keys sealed to it would be lost)."""
    path = key_path(data_dir, host)
    if path.exists():
        return load(data_dir, host)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pair = KeyPair.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pair.private)
    finally:
        os.close(fd)
    return pair


def load(data_dir: Path, host: str) -> KeyPair:
    path = key_path(data_dir, host)
    try:
        private = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{host} has no key pair at {path}: run `zfleet keys host init --host {host}` here"
        ) from None
    if len(private) != KEY_LEN:
        raise ConfigError(f"{path} is not an X25519 private key ({len(private)} bytes)")
    return KeyPair.from_private(private)
