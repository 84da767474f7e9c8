"""The repository's keys: a random master key, keyed content ids, and AEAD for every object.

The master key never reaches the bucket in clear: a key slot (``keys/<id>``) holds it wrapped by
a key-encryption key derived from a passphrase (scrypt) or read from a key file. From the master
key two subkeys are derived with BLAKE3's key derivation mode: one keys the BLAKE3 content ids
(so an id says nothing about the data to someone without the key), one is the ChaCha20-Poly1305
key for blobs, pack headers, indexes and manifests. Every ciphertext is bound, through its
associated data, to its role and name, so an object cannot be swapped for another undetected.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from protocol.errors import ConfigError, StoreCorrupt

KEY_SIZE: Final = 32
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
FORMAT_VERSION: Final = 1
# Overhead of one sealed message: version byte, nonce, Poly1305 tag.
SEAL_OVERHEAD: Final = 1 + NONCE_SIZE + TAG_SIZE
# scrypt cost: 2**15 x 8 x 1 needs 32 MiB and about 0.1 s here; tests pass a smaller n.
SCRYPT_N: Final = 2**15
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1

_WRAP_AAD: Final = b"zfleet master key v1"


@dataclass(frozen=True)
class MasterKey:
    """The repository key and the subkeys derived from it. ``repr`` shows no key bytes."""

    secret: bytes = field(repr=False)
    id_key: bytes = field(init=False, repr=False)
    enc_key: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_SIZE:
            raise ConfigError("a master key is 32 bytes")
        for name, context in (("id_key", "zfleet content id"), ("enc_key", "zfleet aead")):
            derived = blake3.blake3(self.secret, derive_key_context=context).digest()
            object.__setattr__(self, name, derived)

    @classmethod
    def generate(cls) -> MasterKey:
        """A fresh random master key."""
        return cls(os.urandom(KEY_SIZE))


class Crypto:
    """Content ids and sealing with one repository's master key (thread-safe)."""

    def __init__(self, key: MasterKey) -> None:
        self._id_key = key.id_key
        self._aead = ChaCha20Poly1305(key.enc_key)

    def content_id(self, data: bytes | memoryview) -> bytes:
        """The 32-byte keyed BLAKE3 id of ``data``."""
        return blake3.blake3(data, key=self._id_key, max_threads=1).digest()

    def content_id_of_parts(self, parts: Iterable[bytes]) -> bytes:
        """:meth:`content_id` of the parts' concatenation."""
        hasher = blake3.blake3(key=self._id_key, max_threads=1)
        for part in parts:
            hasher.update(part)
        return hasher.digest()

    def stream_digest(self) -> blake3.blake3:
        """A keyed hasher for whole streams (checked at the end of a restore)."""
        return blake3.blake3(key=self._id_key)

    def seal(self, plaintext: bytes | memoryview, aad: bytes) -> bytes:
        """Encrypt and authenticate ``plaintext``; ``aad`` names its role (not stored)."""
        nonce = os.urandom(NONCE_SIZE)
        return bytes([FORMAT_VERSION]) + nonce + self._aead.encrypt(nonce, bytes(plaintext), aad)

    def open(self, sealed: bytes | memoryview, aad: bytes, what: str) -> bytes:
        """Decrypt what :meth:`seal` made; :class:`StoreCorrupt` naming ``what`` if it fails."""
        sealed = bytes(sealed)
        if len(sealed) < SEAL_OVERHEAD or sealed[0] != FORMAT_VERSION:
            raise StoreCorrupt(f"{what}: not a zfleet ciphertext (or truncated)")
        nonce = sealed[1 : 1 + NONCE_SIZE]
        try:
            return self._aead.decrypt(nonce, sealed[1 + NONCE_SIZE :], aad)
        except InvalidTag as e:
            raise StoreCorrupt(f"{what}: fails authentication (corrupt or tampered)") from e


# -- key slots --------------------------------------------------------------------------------


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: object, what: str) -> bytes:
    if not isinstance(s, str):
        raise StoreCorrupt(f"key slot field {what} is missing")
    try:
        return base64.b64decode(s, validate=True)
    except ValueError as e:
        raise StoreCorrupt(f"key slot field {what} is not base64") from e


def _scrypt(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=KEY_SIZE, n=n, r=r, p=p).derive(passphrase.encode())


def keyfile_kek(keyfile_bytes: bytes) -> bytes:
    """The key-encryption key from a key file's content (at least 32 bytes of randomness)."""
    if len(keyfile_bytes) < KEY_SIZE:
        raise ConfigError("a key file must hold at least 32 bytes (make one from /dev/urandom)")
    return blake3.blake3(keyfile_bytes, derive_key_context="zfleet 2026 key file").digest()


def wrap_with_passphrase(key: MasterKey, passphrase: str, *, n: int = SCRYPT_N) -> bytes:
    """A key slot (JSON bytes) holding ``key`` wrapped by a scrypt-derived key."""
    if not passphrase:
        raise ConfigError("the passphrase is empty")
    salt = os.urandom(16)
    kek = _scrypt(passphrase, salt, n, SCRYPT_R, SCRYPT_P)
    slot = {"kdf": "scrypt", "n": n, "r": SCRYPT_R, "p": SCRYPT_P, "salt": _b64(salt)}
    return _wrap(key, kek, slot)


def wrap_with_keyfile(key: MasterKey, keyfile_bytes: bytes) -> bytes:
    """A key slot (JSON bytes) holding ``key`` wrapped by a key file's derived key."""
    return _wrap(key, keyfile_kek(keyfile_bytes), {"kdf": "keyfile"})


def _wrap(key: MasterKey, kek: bytes, slot: dict[str, object]) -> bytes:
    nonce = os.urandom(NONCE_SIZE)
    wrapped = ChaCha20Poly1305(kek).encrypt(nonce, key.secret, _WRAP_AAD)
    slot |= {"version": FORMAT_VERSION, "nonce": _b64(nonce), "wrapped": _b64(wrapped)}
    return json.dumps(slot, sort_keys=True).encode()


def unwrap(
    slot_bytes: bytes, *, passphrase: str | None = None, keyfile: bytes | None = None
) -> MasterKey:
    """The master key from a key slot; :class:`ConfigError` when the secret is wrong."""
    try:
        slot = json.loads(slot_bytes)
    except ValueError as e:
        raise StoreCorrupt("key slot is not JSON") from e
    if not isinstance(slot, dict) or slot.get("version") != FORMAT_VERSION:
        raise StoreCorrupt("key slot has an unknown format")
    kdf = slot.get("kdf")
    if kdf == "scrypt":
        if passphrase is None:
            raise ConfigError("this key slot needs a passphrase")
        params = [slot.get(k) for k in ("n", "r", "p")]
        if not all(isinstance(v, int) and 0 < v <= 2**20 for v in params):
            raise StoreCorrupt("key slot has bad scrypt parameters")
        n, r, p = (int(v) for v in params)  # type: ignore[arg-type]
        kek = _scrypt(passphrase, _unb64(slot.get("salt"), "salt"), n, r, p)
    elif kdf == "keyfile":
        if keyfile is None:
            raise ConfigError("this key slot needs a key file")
        kek = keyfile_kek(keyfile)
    else:
        raise StoreCorrupt(f"key slot uses an unknown kdf {kdf!r}")
    nonce = _unb64(slot.get("nonce"), "nonce")
    try:
        wrapped = _unb64(slot.get("wrapped"), "wrapped")
        secret = ChaCha20Poly1305(kek).decrypt(nonce, wrapped, _WRAP_AAD)
    except (InvalidTag, ValueError) as e:
        raise ConfigError("wrong passphrase or key file for this repository") from e
    return MasterKey(secret)
