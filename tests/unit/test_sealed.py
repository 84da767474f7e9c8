"""Sealed boxes (protocol/sealed.py) and the key group record (bus/keyring.py) shapes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from protocol.errors import ConfigError
from protocol.sealed import KeyPair, SealError, b64, fingerprint, open_box, seal, unb64
from workers import hostkey


def test_a_box_opens_with_its_key_and_context_only() -> None:
    alice, mallory = KeyPair.generate(), KeyPair.generate()
    secret = os.urandom(32)
    box = seal(alice.public, secret, "zfleet group key team v1")
    assert secret not in box and len(box) == 3 + 32 + 12 + 32 + 16
    assert open_box(alice, box, "zfleet group key team v1") == secret
    wrong = ((mallory, "zfleet group key team v1"), (alice, "zfleet group key team v2"),
             (alice, "zfleet group key other v1"))  # fmt: skip
    for pair, context in wrong:
        with pytest.raises(SealError):
            open_box(pair, box, context)
    damaged = bytearray(box)
    damaged[-1] ^= 1
    with pytest.raises(SealError):
        open_box(alice, bytes(damaged), "zfleet group key team v1")
    with pytest.raises(SealError):
        open_box(alice, b"ZS1short", "x")
    assert seal(alice.public, secret, "c") != seal(alice.public, secret, "c")  # fresh each time
    assert unb64(b64(box)) == box
    with pytest.raises(SealError):
        unb64("not base64!")


def test_key_pair_repr_hides_the_private_half() -> None:
    pair = KeyPair.generate()
    assert pair.private.hex() not in repr(pair) and str(pair.private) not in repr(pair)
    assert repr(pair) == f"KeyPair(public={pair.public!r})"
    assert len(fingerprint(pair.public)) == 16


def test_host_key_file_is_private_and_never_replaced(tmp_path: Path) -> None:
    first = hostkey.create(tmp_path, "alpha")
    path = hostkey.key_path(tmp_path, "alpha")
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert hostkey.create(tmp_path, "alpha") == first  # kept: boxes sealed to it stay valid
    assert hostkey.load(tmp_path, "alpha") == first
    with pytest.raises(ConfigError, match="keys host init"):
        hostkey.load(tmp_path, "beta")
    path.write_bytes(b"short")
    with pytest.raises(ConfigError, match="not an X25519 private key"):
        hostkey.load(tmp_path, "alpha")
