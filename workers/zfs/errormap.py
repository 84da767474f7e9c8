"""OpenZFS's failure messages -> zfleet's typed errors.

The `zfs` command reports every failure as text on stderr (``cannot receive incremental stream:
destination fx/copy has been modified\\nsince most recent snapshot``) and a bare exit code, so the
real backend reads the words. The rules below were written against OpenZFS 2.3.2's own output
(tests/fixtures/zfs-streams/cli-errors.txt and cli-samples.txt). libzfs wraps long messages at
fixed columns, so patterns match against the text with its whitespace collapsed.

The first rule that matches wins; the order puts the specific before the general (a saved partial
receive also says "checksum mismatch").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from protocol.errors import (
    DatasetBusy,
    DatasetExists,
    DatasetNotFound,
    DestinationHasSnapshots,
    DestinationModified,
    HasDependentClones,
    HostUnreachable,
    InvalidOperation,
    KeyNotLoaded,
    NameError_,
    NoCommonSnapshot,
    OriginMissing,
    ResumeTokenStale,
    StreamChecksumError,
    StreamFormatError,
    StreamIncomplete,
    TokenError,
    ZfleetError,
    ZfsError,
)

USAGE_EXIT: Final = 2  # zfs's exit code for a command line it cannot parse

SSH_FAILED_EXIT: Final = 255  # ssh's exit code when it, not the remote command, failed
_SSH_TRANSPORT: Final = re.compile(
    r"ssh: connect to host|ssh: Could not resolve hostname|Connection (refused|timed out)"
    r"|Connection (closed|reset) by|kex_exchange_identification|Network is unreachable"
    r"|No route to host",
    re.IGNORECASE,
)
_TOKEN_IN_MESSAGE: Final = re.compile(r"zfs send -t (\S+)")
_CANNOT_NAME: Final = re.compile(r"cannot [a-z -]+ '([^']+)': (.*)")


def _flat(stderr: str) -> str:
    return " ".join(stderr.split())


def _headline(stderr: str) -> str:
    """The line that says what failed: the last ``cannot ...`` line, else the first line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    cannot = [line for line in lines if line.startswith("cannot ")]
    if cannot:
        return cannot[-1]
    return lines[0] if lines else "zfs failed without a message"


def _listed_after(stderr: str, marker: str) -> list[str]:
    """The names OpenZFS lists, one per line, after a line containing ``marker``."""
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        if marker in line:
            return [name.strip() for name in lines[i + 1 :] if name.strip()]
    return []


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern[str]
    build: Callable[[str, str, int], ZfleetError]  # (stderr, headline, exit code) -> error


def _zfs(cls: type[ZfsError]) -> Callable[[str, str, int], ZfleetError]:
    def build(stderr: str, headline: str, code: int) -> ZfleetError:
        return cls(headline, stderr=stderr, exit_code=code)

    return build


def _saved_partial(stderr: str, headline: str, code: int) -> ZfleetError:
    match = _TOKEN_IN_MESSAGE.search(stderr)
    return StreamIncomplete(
        headline, token=match.group(1) if match else None, stderr=stderr, exit_code=code
    )


def _incomplete(stderr: str, headline: str, code: int) -> ZfleetError:
    return StreamIncomplete(headline, stderr=stderr, exit_code=code)


def _newer_snapshots(stderr: str, headline: str, code: int) -> ZfleetError:
    newer = _listed_after(stderr, "use '-r' to force deletion")
    message = f"{headline} ({', '.join(newer)})" if newer else headline
    return DestinationHasSnapshots(message, stderr=stderr, exit_code=code)


def _dependent_clones(stderr: str, headline: str, code: int) -> ZfleetError:
    clones = _listed_after(stderr, "use '-R' to destroy")
    message = f"{headline} ({', '.join(clones)})" if clones else headline
    return HasDependentClones(message, stderr=stderr, exit_code=code)


def _bad_name(stderr: str, headline: str, code: int) -> ZfleetError:
    match = _CANNOT_NAME.match(headline)
    if match:
        return NameError_(match.group(1), match.group(2))
    return NameError_("", headline)


def _protocol(
    cls: type[StreamChecksumError | StreamFormatError | TokenError],
) -> Callable[[str, str, int], ZfleetError]:
    def build(stderr: str, headline: str, code: int) -> ZfleetError:
        return cls(headline)

    return build


def _rule(pattern: str, build: Callable[[str, str, int], ZfleetError]) -> _Rule:
    return _Rule(re.compile(pattern, re.IGNORECASE), build)


RULES: Final[tuple[_Rule, ...]] = (
    _rule(r"partially received snapshot is saved", _saved_partial),
    _rule(
        r"resume token is corrupt|invalid resume token|resume token .* is corrupt",
        _protocol(TokenError),
    ),
    _rule(
        r"no longer the same snapshot used in the initial send"
        r"|used in the initial send no longer exists"
        r"|resume token .*(stale|does not match)",
        _zfs(ResumeTokenStale),
    ),
    _rule(r"has been modified since most recent snapshot", _zfs(DestinationModified)),
    _rule(
        r"does not match incremental source|incremental source .* does not exist",
        _zfs(NoCommonSnapshot),
    ),
    _rule(r"destination has snapshots", _zfs(DestinationHasSnapshots)),
    _rule(r"destination '[^']*' exists", _zfs(DatasetExists)),
    _rule(
        r"unable to restore to destination|local origin for clone .* does not exist",
        _zfs(OriginMissing),
    ),
    _rule(r"incomplete stream", _incomplete),
    _rule(r"checksum mismatch", _protocol(StreamChecksumError)),
    _rule(r"bad magic number|invalid stream", _protocol(StreamFormatError)),
    _rule(r"more recent snapshots or bookmarks exist", _newer_snapshots),
    _rule(r"has dependent clones", _dependent_clones),
    _rule(r"being held|dataset is busy|pool or dataset is busy|is busy", _zfs(DatasetBusy)),
    _rule(r"keys must be (un)?loaded for encryption root", _zfs(InvalidOperation)),
    _rule(
        r"key not loaded|key must be loaded|key is not currently loaded"
        r"|encryption key .* (not loaded|unavailable)",
        _zfs(KeyNotLoaded),
    ),
    _rule(
        r"invalid character|in name|name is too long|leading slash|trailing slash"
        r"|empty component|missing '[@#]' delimiter|reserved name|multiple '[@#]'"
        r"|both '@' and '#'|self reference|parent reference|must begin with a letter"
        r"|pool name is reserved|empty (snapshot |bookmark )?name|is not allowed after the"
        r"|doesn't begin with a letter|name is reserved|misplaced '@'",
        _bad_name,
    ),
    _rule(
        r"dataset does not exist|no such pool|could not find any snapshots|does not exist",
        _zfs(DatasetNotFound),
    ),
    _rule(r"already exists", _zfs(DatasetExists)),
)


def error_from_stderr(stderr: str, exit_code: int) -> ZfleetError:
    """The typed error for a failed `zfs`/`zpool` run, from its stderr and exit code.

    Messages no rule knows become :class:`InvalidOperation` with OpenZFS's own words, so the
    caller always gets a ``ZfleetError`` and the text is never lost.
    """
    flat = _flat(stderr)
    headline = _headline(stderr)
    if exit_code == SSH_FAILED_EXIT and _SSH_TRANSPORT.search(flat):
        # ssh's own failure: zfs never ran, so trying again later is safe
        return HostUnreachable(headline, stderr=stderr, exit_code=exit_code)
    for rule in RULES:
        if rule.pattern.search(flat):
            return rule.build(stderr, headline, exit_code)
    if exit_code == USAGE_EXIT:
        return InvalidOperation(
            f"zfs refused its arguments: {headline}", stderr=stderr, exit_code=exit_code
        )
    return InvalidOperation(headline, stderr=stderr, exit_code=exit_code)
