"""Group keys on a member host: make, share and use a group's wrapping key (docs/keys.md).

The key is 32 random bytes given to ZFS as ``keyformat=hex`` on stdin (``keylocation=prompt``),
so it is never written to a file. It leaves this process only sealed to a member's X25519 public
key (protocol/sealed.py); results and log lines carry boxes, counts and names, never the key.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable
from pathlib import Path

import structlog

from protocol.errors import ConfigError, InvalidOperation
from protocol.keysteps import (
    GroupKeyLoadArgs,
    GroupKeyNewArgs,
    GroupKeyShareArgs,
    Recipient,
    Sealed,
    key_context,
)
from protocol.kinds import KEY_GROUP_PROPERTY
from protocol.sealed import KeyPair, SealError, b64, open_box, seal, unb64
from workers import hostkey
from workers.steps import Result, StepContext, handles

log = structlog.get_logger(__name__)

GROUP_PROP = KEY_GROUP_PROPERTY  # user property naming the group a dataset's key belongs to
ENCRYPTED = {"encryption": "on", "keyformat": "hex", "keylocation": "prompt"}


@functools.cache
def _data_dir() -> Path:
    from protocol.settings import load_settings

    return load_settings().data_dir


def host_pair(ctx: StepContext) -> KeyPair:
    """This host's key pair (a test may hand one in through ``ctx.extra``)."""
    pair = ctx.extra.get("host_key")
    if isinstance(pair, KeyPair):
        return pair
    return hostkey.load(Path(ctx.extra.get("data_dir") or _data_dir()), ctx.host)


def _seal_all(group: str, version: int, key: bytes, to: Iterable[Recipient]) -> dict[str, str]:
    return {f"{version}:{host}": b64(seal(bytes.fromhex(pub), key, key_context(group, version)))
            for host, pub in to}  # fmt: skip


def _open(ctx: StepContext, group: str, sealed: Iterable[Sealed]) -> list[tuple[int, bytes]]:
    pair = host_pair(ctx)
    out = []
    for version, box in sealed:
        try:
            out.append((version, open_box(pair, unb64(box), key_context(group, version))))
        except SealError as exc:
            raise ConfigError(
                f"{ctx.host} cannot open its copy of group {group!r} v{version}: {exc} "
                "(was its key pair made again after it joined?)"
            ) from None
    return out


@handles(GroupKeyNewArgs)
def new_group_key(ctx: StepContext, args: GroupKeyNewArgs) -> Result:
    """A fresh key: missing datasets are created encrypted with it, existing ones take it by
    ``zfs change-key`` (which needs their current key loaded). Another attempt makes another
    key and changes to it: the result of the attempt that finished is the one committed."""
    be = ctx.backend
    for ds in args.datasets:
        if be.exists(ds):
            state = be.get(ds, ["encryption", "keystatus"])
            if state["encryption"].value in ("off", "-"):
                raise InvalidOperation(
                    f"{ds} is not encrypted, and ZFS cannot encrypt an existing dataset: "
                    "create the group's dataset new, or send this one into it (docs/keys.md)"
                )
    key = os.urandom(32).hex().encode()
    created = changed = 0
    for ds in args.datasets:
        if be.exists(ds):
            be.change_key(ds, key=key, props={"keyformat": "hex"})
            changed += 1
        else:
            be.create(ds, props=ENCRYPTED, parents=True, key=key)
            created += 1
        be.set(ds, {GROUP_PROP: args.group})
    sealed = _seal_all(args.group, args.version, key, args.recipients)
    log.info("keys.group_key_made", group=args.group, version=args.version, created=created,
             changed=changed, sealed_for=len(sealed))  # fmt: skip
    return {"sealed": json.dumps(sealed), "created": created, "changed": changed}


@handles(GroupKeyShareArgs)
def share_group_key(ctx: StepContext, args: GroupKeyShareArgs) -> Result:
    """This member's copies opened and sealed again to the new members."""
    sealed: dict[str, str] = {}
    for version, key in _open(ctx, args.group, args.sealed):
        sealed.update(_seal_all(args.group, version, key, args.recipients))
    log.info("keys.group_key_shared", group=args.group, boxes=len(sealed))
    return {"sealed": json.dumps(sealed)}


@handles(GroupKeyLoadArgs)
def load_group_key(ctx: StepContext, args: GroupKeyLoadArgs) -> Result:
    """``zfs load-key`` of each dataset that is an encryption root with its key unavailable;
    the newest version first, then the older one (a replica not yet sent the rotation)."""
    be = ctx.backend
    keys_ = _open(ctx, args.group, args.sealed)
    loaded = already = 0
    for ds in args.datasets:
        state = be.get(ds, ["encryption", "keystatus", "encryptionroot"])
        if state["encryption"].value in ("off", "-"):
            raise InvalidOperation(f"{ds} is not encrypted: no key to load")
        root = state["encryptionroot"].value
        if state["keystatus"].value == "available":
            already += 1
            continue
        if root != ds:
            raise InvalidOperation(f"{ds} takes its key from {root}: load the group key there")
        for version, key in keys_:
            try:
                be.load_key(ds, key=key)
            except InvalidOperation as exc:
                if "Incorrect key" in str(exc):
                    continue
                raise
            log.info("keys.loaded", group=args.group, dataset=ds, version=version)
            loaded += 1
            break
        else:
            raise InvalidOperation(f"no version of group {args.group!r} opens {ds}")
    return {"loaded": loaded, "already": already}
