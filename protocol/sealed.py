"""Sealed boxes: a secret encrypted to one X25519 public key, openable only with its private key.

Group wrapping keys travel through Redis this way (docs/keys.md): the sender makes an ephemeral
X25519 key pair, derives a one-time key from the Diffie-Hellman secret with HKDF-SHA256 (salted
with both public keys and bound to a *context* such as ``group:team:v3``), and encrypts with
ChaCha20-Poly1305 under that context as associated data. A box opened under another context, by
another key or after a single changed byte fails with :class:`SealError`; nothing in a box or
its error names the secret.

Box layout (89 bytes + the secret): ``b"ZS1"``, ephemeral public key (32), nonce (12), ciphertext
with its 16-byte tag.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocol.errors import ZfleetError

MAGIC: Final = b"ZS1"
KEY_LEN: Final = 32
NONCE_LEN: Final = 12
_INFO: Final = b"zfleet sealed box v1"
_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw


class SealError(ZfleetError):
    """A box that does not open: wrong key, wrong context, damaged or not a box."""


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair; its repr shows the public half only."""

    private: bytes = field(repr=False)
    public: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        return cls.from_private(X25519PrivateKey.generate().private_bytes(
            _RAW, _RAW_PRIV, serialization.NoEncryption()))  # fmt: skip

    @classmethod
    def from_private(cls, private: bytes) -> KeyPair:
        if len(private) != KEY_LEN:
            raise SealError(f"an X25519 private key is {KEY_LEN} bytes, not {len(private)}")
        pub = X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(_RAW, _RAW_PUB)
        return cls(private, pub)


def fingerprint(public: bytes) -> str:
    """A short name for a public key (first 16 hex digits of its SHA-256), for people to compare."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(public)
    return digest.finalize()[:8].hex()


def _key(shared: bytes, eph: bytes, recipient: bytes, context: bytes) -> bytes:
    hkdf = HKDF(hashes.SHA256(), KEY_LEN, salt=eph + recipient, info=_INFO + b"\0" + context)
    return hkdf.derive(shared)


def seal(recipient: bytes, secret: bytes, context: str) -> bytes:
    """``secret`` sealed to the X25519 public key ``recipient`` under ``context``."""
    if len(recipient) != KEY_LEN:
        raise SealError(f"an X25519 public key is {KEY_LEN} bytes, not {len(recipient)}")
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes(_RAW, _RAW_PUB)
    shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient))
    key = _key(shared, eph_pub, recipient, context.encode())
    nonce = os.urandom(NONCE_LEN)
    return MAGIC + eph_pub + nonce + ChaCha20Poly1305(key).encrypt(nonce, secret, context.encode())


def open_box(pair: KeyPair, box: bytes, context: str) -> bytes:
    """The secret in ``box``, if it was sealed to ``pair`` under ``context``; else SealError."""
    head = len(MAGIC) + KEY_LEN + NONCE_LEN
    if len(box) < head + 16 or not box.startswith(MAGIC):
        raise SealError("not a sealed box (or truncated)")
    eph_pub = box[len(MAGIC) : len(MAGIC) + KEY_LEN]
    nonce = box[len(MAGIC) + KEY_LEN : head]
    try:
        shared = X25519PrivateKey.from_private_bytes(pair.private).exchange(
            X25519PublicKey.from_public_bytes(eph_pub)
        )
        key = _key(shared, eph_pub, pair.public, context.encode())
        return ChaCha20Poly1305(key).decrypt(nonce, box[head:], context.encode())
    except (InvalidTag, ValueError):
        raise SealError(f"the box does not open with this key under {context!r}") from None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise SealError("not base64") from None
