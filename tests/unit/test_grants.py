"""Grants: only the fleet secret makes one; tampering, expiry and junk are refused clearly."""

from __future__ import annotations

from dataclasses import replace

import pytest

from protocol.errors import GrantError
from protocol.grants import Grant, new_grant, read_claims, sign_grant, verify_grant

SECRET = b"fleet-secret-0123456789abcdef"
NOW = 1_800_000_000.0


def _grant(**over: object) -> Grant:
    base = new_grant(
        transfer_id="job1/step3/1",
        host="beta",
        dataset="tank/images/web",
        fromguid=0x5EC22A1DF8E9C54B,
        toguid=0xFFFF_FFFF_FFFF_FFFF,
        ttl=60,
        now=NOW,
    )
    return replace(base, **over)  # type: ignore[arg-type]


def test_round_trip_keeps_every_claim() -> None:
    grant = _grant(force=True)
    token = sign_grant(SECRET, grant)
    assert verify_grant(SECRET, token, now=NOW + 1) == grant
    assert read_claims(token) == grant


def test_each_grant_gets_a_fresh_nonce() -> None:
    first = new_grant(transfer_id="t", host="h", dataset="p/d", fromguid=0, toguid=1, ttl=5)
    second = new_grant(transfer_id="t", host="h", dataset="p/d", fromguid=0, toguid=1, ttl=5)
    assert first.nonce != second.nonce
    assert sign_grant(SECRET, first) != sign_grant(SECRET, second)


def test_wrong_secret_is_refused() -> None:
    token = sign_grant(SECRET, _grant())
    with pytest.raises(GrantError, match="does not verify"):
        verify_grant(b"another-secret-0123456789", token, now=NOW)


@pytest.mark.parametrize("claim", ["dataset", "toguid", "host", "expires", "force"])
def test_changing_any_claim_breaks_the_signature(claim: str) -> None:
    token = sign_grant(SECRET, _grant())
    changed = {
        "dataset": "tank/other",
        "toguid": 7,
        "host": "gamma",
        "expires": NOW + 10_000,
        "force": True,
    }[claim]
    forged_body = sign_grant(SECRET, _grant(**{claim: changed})).split(".")[0]
    forged = f"{forged_body}.{token.split('.')[1]}"
    with pytest.raises(GrantError, match="does not verify"):
        verify_grant(SECRET, forged, now=NOW)


def test_expired_grant_is_refused() -> None:
    token = sign_grant(SECRET, _grant())
    with pytest.raises(GrantError, match="expired"):
        verify_grant(SECRET, token, now=NOW + 60)


@pytest.mark.parametrize(
    "token",
    ["", "no-dot", "a.b.c", "!!!.???", "é.x", "x" * 5000],
)
def test_malformed_tokens_get_a_grant_error(token: str) -> None:
    with pytest.raises(GrantError):
        verify_grant(SECRET, token, now=NOW)


def test_signed_junk_claims_are_refused() -> None:
    # a token signed with the right secret but with claims of the wrong shape
    import base64
    import hashlib
    import hmac

    body = base64.urlsafe_b64encode(b'{"v":1,"toguid":true}').rstrip(b"=").decode()
    mac = hmac.new(SECRET, body.encode(), hashlib.sha256).digest()
    token = f"{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(GrantError, match="missing or of the wrong type"):
        verify_grant(SECRET, token, now=NOW)


def test_short_secret_is_refused() -> None:
    with pytest.raises(GrantError, match="too short"):
        sign_grant(b"short", _grant())
