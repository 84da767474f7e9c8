"""Native encryption, simulated: a wrapping key from the user, a master key for the data.

As in OpenZFS, the user's key (passphrase, raw or hex) only wraps a random master key; the master
key encrypts the data. A raw send (``-w``) carries records encrypted with the master key and the
wrapped master key, so the receiver stores the data sealed and needs the user's key to read it.
Record encryption is deterministic (the nonce is a keyed hash of the plaintext), so equal records
encrypt to equal ciphertext and still deduplicate, as ZFS's encrypted dedup does.

A loaded key is kept in the pool's metadata: that table plays the part of kernel memory.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Final

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from protocol.errors import InvalidOperation, KeyNotLoaded, ZfsError

CIPHER: Final = "aes-256-gcm"
KEY_LEN: Final = 32
NONCE_LEN: Final = 12
DEFAULT_ITERS: Final = 350_000  # OpenZFS's default pbkdf2iters
MIN_ITERS: Final = 100_000  # OpenZFS refuses fewer


@dataclass(frozen=True)
class KeyMaterial:
    """What identifies an encryption root's key (all of it is safe to send)."""

    keyformat: str
    salt: bytes
    iters: int
    wrapped: bytes  # nonce + AES-GCM(wrapping key, master key)

    def to_json(self) -> dict[str, Any]:
        return {
            "keyformat": self.keyformat,
            "salt": self.salt.hex(),
            "iters": self.iters,
            "wrapped": self.wrapped.hex(),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> KeyMaterial:
        try:
            return cls(
                str(raw["keyformat"]),
                bytes.fromhex(raw["salt"]),
                int(raw["iters"]),
                bytes.fromhex(raw["wrapped"]),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ZfsError(f"encryption metadata is damaged: {exc}") from exc


def wrapping_key(name: str, keyformat: str, key: bytes, salt: bytes, iters: int) -> bytes:
    """Derive the key that wraps the master key from what the user gave."""
    if keyformat == "passphrase":
        phrase = key.rstrip(b"\n")
        if not 8 <= len(phrase) <= 512:
            raise InvalidOperation(
                f"Key load error: Passphrase too short (min 8) or too long (max 512) for '{name}'."
            )
        return hashlib.pbkdf2_hmac("sha1", phrase, salt, iters, KEY_LEN)
    if keyformat == "hex":
        try:
            raw = bytes.fromhex(key.strip().decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raw = b""
        key = raw
    if len(key) != KEY_LEN:
        raise InvalidOperation(f"Key load error: Raw key too short (expected {KEY_LEN}).")
    return key


def new_key(name: str, keyformat: str, key: bytes, iters: int) -> tuple[KeyMaterial, bytes, bytes]:
    """A fresh master key wrapped by the user's key: (material, master key, wrapping key)."""
    if keyformat not in ("passphrase", "raw", "hex"):
        raise InvalidOperation(
            f"cannot create '{name}': Keyformat required for new encryption root."
        )
    salt = os.urandom(8)
    master = os.urandom(KEY_LEN)
    wrap = wrapping_key(name, keyformat, key, salt, iters)
    return KeyMaterial(keyformat, salt, iters, wrap_master(wrap, master)), master, wrap


def wrap_master(wrap: bytes, master: bytes) -> bytes:
    """The master key sealed under a wrapping key (what ``wrapped`` holds)."""
    nonce = os.urandom(NONCE_LEN)
    return nonce + AESGCM(wrap).encrypt(nonce, master, b"zfleet-sim-master")


def unwrap(name: str, material: KeyMaterial, key: bytes) -> bytes:
    """The master key, or OpenZFS's "Incorrect key" refusal."""
    wrap = wrapping_key(name, material.keyformat, key, material.salt, material.iters)
    return unwrap_with(name, material, wrap)


def unwrap_with(name: str, material: KeyMaterial, wrap: bytes) -> bytes:
    """The master key from an already derived wrapping key."""
    try:
        return AESGCM(wrap).decrypt(
            material.wrapped[:NONCE_LEN], material.wrapped[NONCE_LEN:], b"zfleet-sim-master"
        )
    except InvalidTag:
        raise InvalidOperation(f"Key load error: Incorrect key provided for '{name}'.") from None


def seal(master: bytes, data: bytes) -> bytes:
    """Encrypt one record or bonus; equal plaintexts give equal ciphertexts."""
    nonce = blake3.blake3(data, key=master).digest(NONCE_LEN)
    return nonce + AESGCM(master).encrypt(nonce, data, None)


def unseal(master: bytes, data: bytes) -> bytes:
    """Decrypt what :func:`seal` made; a wrong key or damaged data is a ZfsError."""
    if len(data) < NONCE_LEN + 16:
        raise ZfsError("encrypted record is truncated")
    try:
        return AESGCM(master).decrypt(data[:NONCE_LEN], data[NONCE_LEN:], None)
    except InvalidTag:
        raise ZfsError("encrypted record fails authentication") from None


def require_loaded(name: str, crypt: dict[str, Any] | None) -> bytes | None:
    """The master key of an encrypted dataset (None when not encrypted); KeyNotLoaded if locked."""
    if not crypt:
        return None
    loaded = crypt.get("loaded")
    if not loaded:
        raise KeyNotLoaded(f"cannot open '{name}': encryption key not loaded")
    return bytes.fromhex(loaded)
