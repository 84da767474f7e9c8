"""`zfs mount` and `zfs unmount` for the front end.

``zfs mount`` alone lists the mounted filesystems as OpenZFS does (``%-30s  %s``); with a name
it mounts that filesystem, with ``-a`` every one that may mount automatically (canmount=on, a
mountpoint, a loaded key). ``zfs unmount NAME`` (or its mountpoint) unmounts it with the
filesystems below it; ``-a`` unmounts all. The usage lines and refusals are OpenZFS 2.3.2's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

from protocol import names as rules
from workers.zfs.base import ObjType

if TYPE_CHECKING:
    from workers.zfs.front import Front

USAGE: Final[dict[str, str]] = {
    "mount": "mount [-j]\n\tmount [-flvO] [-o opts] <-a|-R filesystem|filesystem>",
    "unmount": "unmount [-fu] <-a | filesystem|mountpoint>",
}


def commands(front: Front) -> dict[str, Callable[[Sequence[str]], int]]:
    """The mount commands of ``zfs``, bound to one front-end invocation."""
    return {
        "mount": lambda args: mount(front, args),
        "unmount": lambda args: unmount(front, args),
    }


def _eligible(front: Front) -> list[str]:
    """Filesystems ``mount -a`` mounts, parents first."""
    names = []
    for obj in front.backend.list(None, types=[ObjType.FILESYSTEM]):
        got = front.backend.get(obj.name, ["canmount", "mountpoint", "mounted", "keystatus"])
        value = {k: v.value for k, v in got.items()}
        if value.get("mounted") == "yes" or value.get("canmount", "on") != "on":
            continue
        if value.get("mountpoint") in ("none", "legacy") or value.get("keystatus") == "unavailable":
            continue
        names.append(obj.name)
    return sorted(names, key=lambda n: n.count("/"))


def mount(front: Front, args: Sequence[str]) -> int:
    """``zfs mount [-a | filesystem]``."""
    from workers.zfs.front import Usage, opts

    found, operands = opts("mount", args, "ajflvOo:R:")
    if "-a" in found or "-R" in found:
        if operands:
            raise Usage("too many arguments")
        for name in _eligible(front):
            front.doing("mount", name)
            front.backend.mount(name)
        return 0
    if not operands:
        if "-o" in found:
            raise Usage("missing filesystem argument (specify -a for all)")
        front.out("".join(f"{name:<30}  {where}\n" for name, where in front.backend.mounted()))
        return 0
    if len(operands) > 1:
        raise Usage("too many arguments")
    name = operands[0]
    front.doing("open", name)
    rules.validate_dataset(name, existing=True)
    front.doing("mount", name)
    front.backend.mount(name)
    return 0


def unmount(front: Front, args: Sequence[str]) -> int:
    """``zfs unmount [-f] (-a | filesystem | mountpoint)``."""
    from workers.zfs.front import Usage, opts

    found, operands = opts("unmount", args, "afu")
    if "-a" in found:
        if operands:
            raise Usage("too many arguments")
        for name, _where in sorted(front.backend.mounted(), key=lambda m: -m[0].count("/")):
            if any(m[0] == name for m in front.backend.mounted()):  # a parent's took it along
                front.doing("unmount", name)
                front.backend.unmount(name)
        return 0
    if len(operands) != 1:
        raise Usage("missing filesystem argument" if not operands else "too many arguments")
    target = operands[0]
    if target.startswith("/"):
        by_path = {where: name for name, where in front.backend.mounted()}
        if target.rstrip("/") not in by_path:
            # as zfs_main.c unshare_unmount_path: not a mount, so umount2(2) is tried and fails
            reason = "Invalid argument" if os.path.exists(target) else "No such file or directory"
            front.err(f"warning: {target} not in/proc/self/mounts\n{target}: {reason}")
            return 1
        target = by_path[target.rstrip("/")]
    front.doing("open", target)
    rules.validate_dataset(target, existing=True)
    front.doing("unmount", target)
    front.backend.unmount(target)
    return 0
