"""Parsers for OpenZFS's script-friendly output (``-H`` tab-separated, ``-p`` exact numbers).

Pure functions over text, so they are tested against real OpenZFS output in the fixtures. A line
that cannot be read raises :class:`protocol.errors.InvalidOperation` naming the line: a parser
that guessed would hand the planner a wrong inventory.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final

from protocol.errors import InvalidOperation
from workers.zfs.base import DiffChange, DiffEntry, ObjType, PoolInfo, PropertyValue, ZfsObject

# The columns of one `zfs list -t all -Hp -o ...` call, in order; user properties follow them.
LIST_COLUMNS: Final[tuple[str, ...]] = (
    "name",
    "type",
    "guid",
    "createtxg",
    "creation",
    "origin",
    "used",
    "referenced",
    "written",
    "receive_resume_token",
    "encryption",
    "keystatus",
)
POOL_COLUMNS: Final[tuple[str, ...]] = ("name", "size", "allocated", "free", "health")
GET_FIELDS: Final[tuple[str, ...]] = ("name", "property", "value", "source")

_NONE: Final = "-"
_OCTAL_ESCAPE: Final = re.compile(r"\\0([0-7]{3})")


def _bad(what: str, line: str) -> InvalidOperation:
    return InvalidOperation(f"unreadable {what} output line: {line!r}")


def _lines(text: str) -> Iterable[str]:
    return (line for line in text.splitlines() if line.strip())


def _int(value: str, what: str, line: str) -> int:
    """``-p`` numbers; ``-`` (bookmarks have no ``used``) reads as 0."""
    if value == _NONE:
        return 0
    try:
        return int(value)
    except ValueError:
        raise _bad(what, line) from None


def _opt(value: str) -> str | None:
    return None if value in (_NONE, "") else value


def parse_list(
    text: str,
    columns: Sequence[str] = LIST_COLUMNS,
    user_props: Sequence[str] = (),
) -> list[ZfsObject]:
    """Rows of ``zfs list -Hp -o <columns>,<user_props>`` as :class:`ZfsObject`.

    ``columns`` must contain name, type, guid and createtxg; the others are optional so that
    older recorded outputs (such as the fixtures) parse too. User properties whose value is ``-``
    are unset and left out.
    """
    names = [*columns, *user_props]
    objects = []
    for line in _lines(text):
        cells = line.split("\t")
        if len(cells) != len(names):
            raise _bad("zfs list", line)
        row = dict(zip(names, cells, strict=True))
        try:
            kind = ObjType(row["type"])
        except ValueError:
            raise _bad("zfs list", line) from None
        objects.append(
            ZfsObject(
                name=row["name"],
                type=kind,
                guid=_int(row["guid"], "zfs list", line),
                createtxg=_int(row["createtxg"], "zfs list", line),
                creation=_int(row.get("creation", _NONE), "zfs list", line),
                origin=_opt(row.get("origin", _NONE)),
                used=_int(row.get("used", _NONE), "zfs list", line),
                referenced=_int(row.get("referenced", _NONE), "zfs list", line),
                written=_int(row.get("written", _NONE), "zfs list", line),
                receive_resume_token=_opt(row.get("receive_resume_token", _NONE)),
                encryption=_opt(row.get("encryption", _NONE)),
                keystatus=_opt(row.get("keystatus", _NONE)),
                user_props={p: row[p] for p in user_props if row[p] != _NONE},
            )
        )
    return objects


def parse_get(text: str) -> dict[str, dict[str, PropertyValue]]:
    """``zfs get -Hp -o name,property,value,source``: name -> property -> value and source.

    A value may itself hold tabs (user properties can), so the value is everything between the
    property and the last column.
    """
    result: dict[str, dict[str, PropertyValue]] = {}
    for line in _lines(text):
        cells = line.split("\t")
        if len(cells) < len(GET_FIELDS):
            raise _bad("zfs get", line)
        name, prop, source = cells[0], cells[1], cells[-1]
        value = "\t".join(cells[2:-1])
        result.setdefault(name, {})[prop] = PropertyValue(value=value, source=source)
    return result


def parse_user_props(text: str) -> dict[str, dict[str, str]]:
    """``zfs get -Hp -o name,property,value,source all``, keeping only user properties.

    User properties are the ones with a colon in their name (``zfleet:role``).
    """
    return {
        name: {prop: pv.value for prop, pv in props.items() if ":" in prop}
        for name, props in parse_get(text).items()
    }


def parse_pools(text: str) -> list[PoolInfo]:
    """``zpool list -Hp -o name,size,allocated,free,health``."""
    pools = []
    for line in _lines(text):
        cells = line.split("\t")
        if len(cells) != len(POOL_COLUMNS):
            raise _bad("zpool list", line)
        pools.append(
            PoolInfo(
                name=cells[0],
                size=_int(cells[1], "zpool list", line),
                allocated=_int(cells[2], "zpool list", line),
                free=_int(cells[3], "zpool list", line),
                health=cells[4],
            )
        )
    return pools


def parse_estimate(text: str) -> int:
    """The byte count of ``zfs send -nP``: its ``size`` line (``size\\t390632``)."""
    for line in _lines(text):
        cells = line.split("\t")
        if cells[0] == "size" and len(cells) == 2:
            return _int(cells[1], "zfs send -nP", line)
    raise InvalidOperation(f"zfs send -nP printed no size line: {text.strip()!r}")


def parse_hold_times(text: str) -> dict[str, int]:
    """``zfs holds -Hp snapshot``: each tag -> the hold's time (seconds since the epoch)."""
    times = {}
    for line in _lines(text):
        cells = line.split("\t")
        if len(cells) != 3 or not cells[2].isdigit():
            raise _bad("zfs holds", line)
        times[cells[1]] = int(cells[2])
    return times


def parse_holds(text: str) -> list[str]:
    """``zfs holds -H snapshot``: the tags, one per line (``name\\ttag\\ttimestamp``)."""
    tags = []
    for line in _lines(text):
        cells = line.split("\t")
        if len(cells) != 3:
            raise _bad("zfs holds", line)
        tags.append(cells[1])
    return tags


def unescape_path(path: str) -> str:
    r"""``zfs diff`` writes unprintable bytes and spaces as ``\0ooo`` octal escapes."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), path)


def parse_diff(text: str) -> list[DiffEntry]:
    """``zfs diff -H``: ``M\\t/path``, or ``R\\t/old\\t/new`` for renames."""
    entries = []
    for line in _lines(text):
        cells = line.split("\t")
        try:
            change = DiffChange(cells[0])
        except ValueError:
            raise _bad("zfs diff", line) from None
        if change is DiffChange.RENAMED:
            if len(cells) != 3:
                raise _bad("zfs diff", line)
            entries.append(DiffEntry(change, unescape_path(cells[1]), unescape_path(cells[2])))
        else:
            if len(cells) != 2:
                raise _bad("zfs diff", line)
            entries.append(DiffEntry(change, unescape_path(cells[1])))
    return entries


def parse_receive_verbose(text: str) -> str | None:
    """The last snapshot ``zfs receive -v`` says it received into, if it said so.

    The line reads ``receiving full stream of fx/base@s1 into fx/copy@s1``.
    """
    found = None
    for line in _lines(text):
        match = re.match(r"receiving .* stream of \S+ into (\S+)", line)
        if match:
            found = match.group(1)
    return found
