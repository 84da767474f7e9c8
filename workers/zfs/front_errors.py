"""Typed errors -> the words and exit codes OpenZFS uses for the same failures.

The front end speaks like `zfs` so that scripts, people and zfleet's own real backend (whose
workers.zfs.errormap reads these words back) cannot tell it from the real command. The messages
are OpenZFS 2.3.2's, as recorded in tests/fixtures/zfs-streams/cli-errors.txt and
cli-samples.txt; the line breaks are libzfs's own.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Final

from protocol.errors import (
    ConfigError,
    DatasetBusy,
    DatasetExists,
    DatasetNotFound,
    DestinationHasSnapshots,
    DestinationModified,
    HasDependentClones,
    KeyNotLoaded,
    NameError_,
    NoCommonSnapshot,
    OriginMissing,
    ResumeTokenStale,
    StreamChecksumError,
    StreamFormatError,
    StreamIncomplete,
    StreamTruncated,
    TokenError,
    ZfleetError,
)
from workers.zfs.base import ObjType, ZfsBackend

EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_SET_REFUSED: Final = 255  # zfs set: a refused property or value (its callback returns -1)
EXIT_SEND_RESUME: Final = 255  # zfs send -t exits with libzfs's -1
EXIT_INTERRUPTED: Final = 130  # what a shell reports for a command SIGINT ended


@dataclass(frozen=True)
class Context:
    """What the command was doing when it failed: ``cannot <verb> '<subject>'``."""

    verb: str
    subject: str
    new_stream: bool = True  # receive only: a full stream (vs. an incremental one)
    resume: bool = False  # receive only: a stream `zfs send -t` made


def _receive_message(error: ZfleetError, ctx: Context) -> str | None:
    kind = "resume" if ctx.resume else "new filesystem" if ctx.new_stream else "incremental"
    target = ctx.subject.split("@", 1)[0]  # libzfs names the dataset, even for `receive fs@snap`
    if isinstance(error, DatasetExists | DestinationHasSnapshots) and str(error).startswith(
        "cannot receive"
    ):
        return str(error)  # the backend's words name the case (a clone, a snapshot it holds)
    if isinstance(error, NoCommonSnapshot):
        return (
            f"cannot receive incremental stream: most recent snapshot of {target} does not\n"
            "match incremental source"
        )
    if isinstance(error, DatasetExists):
        return (
            f"cannot receive new filesystem stream: destination '{target}' exists\n"
            "must specify -F to overwrite it"
        )
    if isinstance(error, DestinationModified):
        return (
            f"cannot receive incremental stream: destination {target} has been modified\n"
            "since most recent snapshot"
        )
    if isinstance(error, DestinationHasSnapshots):
        return (
            f"cannot receive {kind} stream: destination has snapshots\n"
            "must destroy them to overwrite it"
        )
    if isinstance(error, OriginMissing):
        return f"cannot receive {kind} stream: local origin for clone {ctx.subject} does not exist"
    if isinstance(error, StreamIncomplete) and error.token:
        return (
            f"cannot receive {kind} stream: checksum mismatch or incomplete stream.\n"
            "Partially received snapshot is saved.\n"
            "A resuming stream can be generated on the sending system by running:\n"
            f"    zfs send -t {error.token}"
        )
    if isinstance(error, StreamIncomplete | StreamTruncated):
        return f"cannot receive {kind} stream: incomplete stream"
    if isinstance(error, StreamChecksumError):
        return f"cannot receive {kind} stream: checksum mismatch"
    if isinstance(error, StreamFormatError):
        return "cannot receive: invalid stream (bad magic number)"
    return None


def _dependents(backend: ZfsBackend, snapshot: str) -> list[str]:
    """The clones of ``snapshot`` (or of any snapshot of a dataset) and their snapshots."""
    found: list[str] = []
    try:
        objects = backend.list()
    except ZfleetError:
        return found

    def depends(origin: str) -> bool:
        # a snapshot's own clones; a filesystem's: clones of its or its descendants' snapshots
        of = origin.split("@", 1)[0]
        return snapshot == origin or (
            "@" not in snapshot and (of == snapshot or of.startswith(snapshot + "/"))
        )

    clones = sorted(o.name for o in objects if o.origin is not None and depends(o.origin))
    # in the order zfs would destroy them: a clone's snapshots first, then the clone
    for clone in clones:
        found += [o.name for o in objects if o.dataset == clone and o.name != clone]
        found.append(clone)
    return found


def _newer(backend: ZfsBackend, snapshot: str) -> list[str]:
    """Snapshots and bookmarks of the dataset taken after ``snapshot``."""
    dataset = snapshot.split("@", 1)[0]
    try:
        # as `zfs list -t snapshot,bookmark DATASET`: the dataset's own snapshots and bookmarks
        kinds = [ObjType.SNAPSHOT, ObjType.BOOKMARK]
        objects = backend.list(dataset, recursive=False, types=kinds)
    except ZfleetError:
        return []
    mine = next((o for o in objects if o.name == snapshot), None)
    if mine is None:
        return []
    return [
        o.name
        for o in sorted(objects, key=lambda o: o.createtxg)
        if o.type in (ObjType.SNAPSHOT, ObjType.BOOKMARK) and o.createtxg > mine.createtxg
    ]


# libzfs's reasons for refusing a resume token, by a word our decoder's reason contains
_TOKEN_REASONS: Final = (
    ("checksum", "incorrect checksum"),
    ("version", "invalid version"),
    ("hex", "payload is not hex-encoded"),
    ("decompress", "decompression failed"),
    ("zlib", "decompression failed"),
    ("nvlist", "nvlist_unpack failed"),
)


def _token_reason(reason: str) -> str:
    """OpenZFS's wording for a corrupt token (``resume token is corrupt (incorrect checksum)``)."""
    lowered = reason.lower()
    for word, words in _TOKEN_REASONS:
        if word in lowered:
            return f"resume token is corrupt ({words})"
    return "resume token is corrupt (invalid format)"


# the offending character, as our rules quote it with repr: '!', "'", '\x01', '\udcff'
_CHAR: Final = re.compile(r"invalid character ('(?:.|\\x[0-9a-f]{2}|\\u[0-9a-f]{4})'|\"'\")")
# protocol.names' rules -> zfs_validate_name's words (lib/libzfs/libzfs_dataset.c), first match
_NAME_RULES: Final = (
    (re.compile(r"reserved for OpenZFS's temporary names"), "invalid character % in name"),
    (_CHAR, "invalid character '{}' in name"),
    (re.compile(r"name is too long"), "name is too long"),
    (re.compile(r"leading slash"), "leading slash in name"),
    (re.compile(r"trailing slash"), "trailing slash in name"),
    (
        re.compile(r"empty (?:component|name)"),
        "empty component or misplaced '@' or '#' delimiter in name",
    ),
    (
        re.compile(r"multiple .* delimiters|both '@' and '#'"),
        "multiple '@' and/or '#' delimiters in name",
    ),
    (re.compile(r"self reference"), "self reference, '.' is found in name"),
    (re.compile(r"parent reference"), "parent reference, '..' is found in name"),
    (re.compile(r"must begin with a letter"), "pool doesn't begin with a letter"),
    (re.compile(r"pool name is reserved"), "name is reserved"),
    (re.compile(r"'/' is not allowed after"), "invalid character '/' in name"),
)


# zpool_name_valid (lib/libzfs/libzfs_pool.c) words the pool rules its own way
_POOL_RULES: Final = (
    (_CHAR, "invalid character '{}' in pool name"),
    (re.compile(r"must begin with a letter"), "name must begin with a letter"),
    (re.compile(r"pool name is reserved \("), "name is reserved"),
    (re.compile(r"pool name is reserved"), "pool name is reserved"),
    (re.compile(r"name is too long"), "name is too long"),
    (re.compile(r"empty component"), "empty component in name"),
)


def libzfs_rule(rule: str, *, pool: bool = False) -> str:
    """The words ``zfs`` (or ``zpool``, for a bare pool name) uses for a broken naming rule."""
    for pattern, words in _POOL_RULES if pool else _NAME_RULES:
        match = pattern.search(rule)
        if match:
            # libzfs prints the character itself (%c), not a Python repr of it
            chars = [ast.literal_eval(g) for g in match.groups() if g]
            return words.format(*chars[:1])
    return rule


def render(error: ZfleetError, ctx: Context, backend: ZfsBackend) -> tuple[str, int]:
    """OpenZFS's message (without the final newline) and exit code for ``error``."""
    subject = ctx.subject
    if isinstance(error, ConfigError):
        return str(error), EXIT_USAGE
    if isinstance(error, NameError_):
        bare = not any(sep in error.name for sep in "/@#")  # a pool's own name: zpool's words
        words = libzfs_rule(error.rule, pool=bare)
        return f"cannot {ctx.verb} '{error.name}': {words}", EXIT_FAILURE
    if isinstance(error, TokenError):
        return f"cannot resume send: {_token_reason(str(error))}", EXIT_SEND_RESUME
    if isinstance(error, ResumeTokenStale):
        return (
            f"cannot resume send: '{subject}' used in the initial send no longer exists",
            EXIT_SEND_RESUME,
        )
    if ctx.verb == "receive":
        message = _receive_message(error, ctx)
        if message is not None:
            return message, EXIT_FAILURE
    if isinstance(error, HasDependentClones):
        listed = "".join(f"\n{name}" for name in _dependents(backend, subject))
        kind = "snapshot" if "@" in subject else "filesystem"
        return (
            f"cannot destroy '{subject}': {kind} has dependent clones\n"
            f"use '-R' to destroy the following datasets:{listed}",
            EXIT_FAILURE,
        )
    if isinstance(error, DestinationHasSnapshots) and ctx.verb == "rollback":
        listed = "".join(f"\n{name}" for name in _newer(backend, subject))
        return (
            f"cannot rollback to '{subject}': more recent snapshots or bookmarks exist\n"
            f"use '-r' to force deletion of the following snapshots and bookmarks:{listed}",
            EXIT_FAILURE,
        )
    if isinstance(error, DatasetBusy) and ctx.verb == "destroy" and "@" in subject:
        return (
            f"cannot destroy snapshot {subject}: it's being held. "
            f"Run 'zfs holds -r {subject}' to see holders.",
            EXIT_FAILURE,
        )
    if isinstance(error, DatasetNotFound) and str(error).startswith("cannot "):
        return str(error), EXIT_FAILURE  # the backend names what is missing (parent, origin...)
    if isinstance(error, DatasetNotFound) and "no such pool" in str(error):
        return f"cannot open '{subject}': no such pool", EXIT_FAILURE
    if isinstance(error, DatasetNotFound):
        return f"cannot open '{subject}': dataset does not exist", EXIT_FAILURE
    if isinstance(error, DatasetExists):
        return f"cannot {ctx.verb} '{subject}': dataset already exists", EXIT_FAILURE
    if isinstance(error, DatasetBusy) and str(error).startswith("cannot destroy snapshot "):
        return str(error), EXIT_FAILURE  # destroy -r met a held snapshot below: it names it
    if isinstance(error, DatasetBusy):
        return f"cannot {ctx.verb} '{subject}': dataset is busy", EXIT_FAILURE
    if str(error).startswith(("Key load error:", "Key unload error:", "Key change error:")):
        return str(error), EXIT_FAILURE  # libzfs's own prefix for key commands, no "cannot"
    if isinstance(error, KeyNotLoaded):
        return f"cannot {ctx.verb} '{subject}': encryption key not loaded", EXIT_FAILURE
    if str(error).startswith(("cannot ", "warning: cannot ")):
        return str(error), EXIT_FAILURE  # the backend already speaks OpenZFS's words
    return f"cannot {ctx.verb} '{subject}': {error}", EXIT_FAILURE
