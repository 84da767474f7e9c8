"""Transfer grants: the coordinator's signed permission for one stream into one target dataset.

A grant is ``<claims>.<mac>``: the claims are canonical JSON (sorted keys, no spaces) encoded as
URL-safe base64 without padding, and the MAC is HMAC-SHA256 over the encoded claims with the fleet
secret. Claims are readable without the secret (the sender uses them to label its reports); only a
holder of the secret can make one. This module is pure: replay protection is the stream server's
job (it remembers used transfer ids until their expiry).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, fields, replace
from typing import Any, Final

from protocol.errors import GrantError

GRANT_VERSION: Final = 1
MIN_SECRET_BYTES: Final = 16
_MAX_TOKEN_CHARS: Final = 4096  # a grant is a few hundred bytes; refuse anything absurd early
_U64_MAX: Final = 2**64 - 1


@dataclass(frozen=True)
class Grant:
    """What a grant allows: one stream (fromguid -> toguid) into ``dataset`` on ``host``.

    ``fromguid`` is 0 for a full stream. ``force`` allows ``zfs receive -F``; it is signed because
    a forced receive can roll the target back and destroy its newer snapshots.
    """

    transfer_id: str
    host: str
    dataset: str
    fromguid: int
    toguid: int
    expires: float  # unix seconds
    nonce: str = ""
    force: bool = False

    def expired(self, now: float | None = None) -> bool:
        """True once ``now`` (default: the clock) has reached the expiry."""
        return (time.time() if now is None else now) >= self.expires


def new_grant(
    *,
    transfer_id: str,
    host: str,
    dataset: str,
    fromguid: int,
    toguid: int,
    ttl: float,
    force: bool = False,
    now: float | None = None,
) -> Grant:
    """A grant valid for ``ttl`` seconds from ``now``, with a fresh random nonce."""
    if ttl <= 0:
        raise GrantError(f"grant lifetime must be positive, got {ttl}")
    start = time.time() if now is None else now
    return Grant(
        transfer_id=transfer_id,
        host=host,
        dataset=dataset,
        fromguid=fromguid,
        toguid=toguid,
        expires=start + ttl,
        nonce=secrets.token_hex(12),
        force=force,
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii"))


def _mac(secret: bytes, body: str) -> bytes:
    return hmac.new(secret, body.encode("ascii"), hashlib.sha256).digest()


def _check_secret(secret: bytes) -> None:
    if len(secret) < MIN_SECRET_BYTES:
        raise GrantError(f"fleet secret too short: {len(secret)} bytes, need {MIN_SECRET_BYTES}")


def sign_grant(secret: bytes, grant: Grant) -> str:
    """The grant as a token string signed with the fleet ``secret``."""
    _check_secret(secret)
    if not grant.nonce:
        grant = replace(grant, nonce=secrets.token_hex(12))
    # every field is a plain value: a shallow copy (asdict's deep copy cost most of a submit)
    claims = {"v": GRANT_VERSION, **{f.name: getattr(grant, f.name) for f in fields(grant)}}
    body = _b64(json.dumps(claims, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    return f"{body}.{_b64(_mac(secret, body))}"


def read_claims(token: str) -> Grant:
    """The grant's claims WITHOUT checking the signature (for labels and logs, never trust)."""
    body, _ = _split(token)
    return _decode_claims(body)


def verify_grant(secret: bytes, token: str, *, now: float | None = None) -> Grant:
    """The grant inside ``token`` once its MAC (compared in constant time) and expiry check out.

    Raises :class:`GrantError` for a malformed, forged or expired token.
    """
    _check_secret(secret)
    body, mac = _split(token)
    try:
        given = _unb64(mac)
    except (binascii.Error, ValueError) as exc:
        raise GrantError("grant signature is not base64") from exc
    if not hmac.compare_digest(given, _mac(secret, body)):
        raise GrantError("grant signature does not verify: forged, or signed with another secret")
    grant = _decode_claims(body)
    if grant.expired(now):
        raise GrantError(f"grant for transfer {grant.transfer_id!r} expired")
    return grant


def _split(token: str) -> tuple[str, str]:
    if not isinstance(token, str) or not token:
        raise GrantError("no grant given")
    if len(token) > _MAX_TOKEN_CHARS:
        raise GrantError(f"grant too long ({len(token)} characters)")
    body, sep, mac = token.partition(".")
    if not sep or not body or not mac or "." in mac:
        raise GrantError("grant is not of the form <claims>.<signature>")
    if not token.isascii():
        raise GrantError("grant holds non-ASCII characters")
    return body, mac


def _decode_claims(body: str) -> Grant:
    try:
        raw: Any = json.loads(_unb64(body))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise GrantError("grant claims are not base64 JSON") from exc
    if not isinstance(raw, dict):
        raise GrantError("grant claims are not an object")
    if raw.get("v") != GRANT_VERSION:
        raise GrantError(f"unknown grant version {raw.get('v')!r}")
    fields: dict[str, type | tuple[type, ...]] = {
        "transfer_id": str,
        "host": str,
        "dataset": str,
        "fromguid": int,
        "toguid": int,
        "expires": (int, float),
        "nonce": str,
        "force": bool,
    }
    for name, kind in fields.items():
        value = raw.get(name)
        # bool is an int in Python: do not let true/false pass as a guid
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise GrantError(f"grant claim {name!r} missing or of the wrong type")
    for name in ("fromguid", "toguid"):
        if not 0 <= raw[name] <= _U64_MAX:
            raise GrantError(f"grant claim {name!r} is not a 64-bit guid")
    return Grant(
        transfer_id=raw["transfer_id"],
        host=raw["host"],
        dataset=raw["dataset"],
        fromguid=raw["fromguid"],
        toguid=raw["toguid"],
        expires=float(raw["expires"]),
        nonce=raw["nonce"],
        force=raw["force"],
    )
