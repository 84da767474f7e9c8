"""`zfs hold`, `zfs release` and `zfs holds` for the front end.

Each snapshot is taken on its own and the failures counted, as zfs_do_hold_rele_impl does: a
missing dataset is "cannot open", a missing snapshot "dataset does not exist", a tag held twice or
never held is refused in libzfs's words (EZFS_REFTAG_HOLD, EZFS_REFTAG_RELE); exit 1 if any failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from protocol import names as rules
from workers.zfs.front_errors import EXIT_FAILURE
from workers.zfs.front_table import table

if TYPE_CHECKING:
    from workers.zfs.front import Front


def commands(front: Front) -> dict[str, Callable[[Sequence[str]], int]]:
    """The hold commands of ``zfs``, bound to one front-end invocation."""
    return {
        "hold": lambda args: hold(front, args),
        "release": lambda args: release(front, args),
        "holds": lambda args: holds(front, args),
    }


def snapshots(front: Front, names: Sequence[str], recursive: bool) -> list[str]:
    """The snapshots named (checked), with ``-r`` also those of that name below them."""
    for name in names:
        rules.validate_snapshot(name, existing=True)
    if not recursive:
        return list(names)
    result = []
    for name in names:
        dataset, short = name.split("@", 1)
        result += [o.name for o in front.backend.list(dataset) if o.name.endswith(f"@{short}")]
    return result


def _tag_and_snapshots(front: Front, command: str, args: Sequence[str]) -> tuple[str, list[str]]:
    """``zfs hold|release [-r] tag snapshot...``: the tag and the snapshots it applies to."""
    from workers.zfs.front import Usage, opts

    found, operands = opts(command, args, "r")
    if len(operands) < 2:
        raise Usage("too few arguments")
    return operands[0], snapshots(front, operands[1:], "-r" in found)


def hold(front: Front, args: Sequence[str]) -> int:
    """``zfs hold [-r] tag snapshot...``."""
    return _hold_or_release(front, "hold", args)


def release(front: Front, args: Sequence[str]) -> int:
    """``zfs release [-r] tag snapshot...``."""
    return _hold_or_release(front, "release", args)


def _hold_or_release(front: Front, command: str, args: Sequence[str]) -> int:
    """Each snapshot alone, the failures counted (zfs_do_hold_rele_impl), exit 1 if any."""
    tag, snaps = _tag_and_snapshots(front, command, args)
    holding = command == "hold"
    verb = "hold snapshot" if holding else "release hold from snapshot"
    failed = 0
    for snap in snaps:
        if not front.opened(snap.split("@", 1)[0], ""):
            failed += 1
            continue
        if not front.backend.exists(snap):
            front.err(f"cannot {verb} '{snap}': dataset does not exist")
            failed += 1
            continue
        if (tag in front.backend.holds(snap)) == holding:
            why = "tag already exists on this" if holding else "no such tag on this"
            front.err(f"cannot {verb} '{snap}': {why} dataset")
            failed += 1
            continue
        front.doing(verb, snap)
        (front.backend.hold if holding else front.backend.release)(tag, [snap])
    return EXIT_FAILURE if failed else 0


def _when(seconds: int, *, parsable: bool) -> str:
    """A hold's time as print_holds shows it (local time, or seconds with -p)."""
    if not seconds:
        return "-"
    if parsable:
        return str(seconds)
    return time.strftime("%a %b %e %H:%M %Y", time.localtime(seconds))


def holds(front: Front, args: Sequence[str]) -> int:
    """``zfs holds [-rH] snapshot...``: a NAME, TAG, TIMESTAMP table."""
    from workers.zfs.front import Usage, opts

    found, operands = opts("holds", args, "rHp")
    if not operands:
        raise Usage("missing snapshot argument")
    rows = []
    names = snapshots(front, operands, "-r" in found)
    for snap in names:
        front.doing("open", snap)
        for tag, when in front.backend.hold_times(snap).items():
            rows.append([snap, tag, _when(when, parsable="-p" in found)])
    if "-H" in found:
        front.out(table(["NAME", "TAG", "TIMESTAMP"], rows, scripted=True))
        return 0
    # print_holds (zfs_main.c) sizes NAME over every snapshot asked about, held or not
    name_width = max([len("NAME"), *(len(n) for n in names)])
    tag_width = max([len("TAG"), *(len(r[1]) for r in rows)])
    for row in [["NAME", "TAG", "TIMESTAMP"], *rows]:
        front.out(f"{row[0]:<{name_width}}  {row[1]:<{tag_width}}  {row[2]}\n")
    return 0
