"""Step messages of group keys (docs/keys.md): made, shared and used on member hosts only.

    group-key-new    GroupKeyNewArgs    on the group's keeper: a fresh wrapping key, datasets
                                        created encrypted or changed to it (``zfs change-key``),
                                        the key sealed to every member's public key
    group-key-share  GroupKeyShareArgs  on the keeper: its sealed copy opened and sealed again
                                        to new members' public keys
    group-key-load   GroupKeyLoadArgs   on a member: its sealed copy opened, ``zfs load-key``
    group-key-commit GroupKeyCommitArgs in the coordinator: the sealed copies a step returned
                                        written to the group's record in Redis

Only sealed boxes (protocol/sealed.py) and public keys appear in these messages and in their
results: the clear key exists on member hosts alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from protocol.messages import message
from protocol.steps import StepArgs, register_step

Recipient = tuple[str, str]  # (host, X25519 public key in hex)
Sealed = tuple[int, str]  # (group key version, this host's sealed box in base64)


def key_context(group: str, version: int) -> str:
    """What a group key's sealed boxes are bound to: a box cannot pass for another group's."""
    return f"zfleet group key {group} v{version}"


@message("step.group-key-new", version=1, strict=True)
@dataclass(frozen=True)
class GroupKeyNewArgs(StepArgs):
    """A new key version: ``datasets`` (on this host) are created encrypted with it when missing,
    else moved to it with ``zfs change-key``; the result holds it sealed to ``recipients``."""

    KIND: ClassVar[str] = "group-key-new"
    group: str
    version: int
    datasets: tuple[str, ...]
    recipients: tuple[Recipient, ...]


@message("step.group-key-share", version=1, strict=True)
@dataclass(frozen=True)
class GroupKeyShareArgs(StepArgs):
    KIND: ClassVar[str] = "group-key-share"
    group: str
    sealed: tuple[Sealed, ...]  # this host's boxes, the versions to share
    recipients: tuple[Recipient, ...]


@message("step.group-key-load", version=1, strict=True)
@dataclass(frozen=True)
class GroupKeyLoadArgs(StepArgs):
    """``zfs load-key`` of ``datasets`` with the group key, newest version first (a replica that
    has not yet received the raw increment after a rotation still opens with the older one)."""

    KIND: ClassVar[str] = "group-key-load"
    group: str
    sealed: tuple[Sealed, ...]
    datasets: tuple[str, ...]


@message("step.group-key-commit", version=1, strict=True)
@dataclass(frozen=True)
class GroupKeyCommitArgs(StepArgs):
    KIND: ClassVar[str] = "group-key-commit"
    source_step: str


for _cls in (GroupKeyNewArgs, GroupKeyShareArgs, GroupKeyLoadArgs, GroupKeyCommitArgs):
    register_step(_cls)
