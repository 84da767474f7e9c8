"""What a rebase must do, decided from two change lists, before anything is touched.

Like ``git rebase``: the image's own changes (relative to its old base) are replayed onto the
new base. The inputs are two lists of :class:`Change` with paths relative to a dataset's root,
one for the image (old base -> image) and one for the base (old base -> new base), as ``zfs
diff`` or a tree compare gives them. A path both sides touched is a :class:`Conflict`, unless
both ended with the same result; a directory whose entries changed on both sides is not one
(its children are compared instead). A rename counts as a removal of its old path and an
addition of its new one.

The policy decides conflicts: ``"image"`` replays the image's change, ``"base"`` keeps the new
base's version, None stops with :class:`RebaseConflict` before anything was changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

from protocol.errors import RebaseConflict, RebaseError

Prefer = Literal["image", "base"]
PREFER_CHOICES: Final = ("image", "base")

ADDED: Final = "+"
REMOVED: Final = "-"
MODIFIED: Final = "M"
RENAMED: Final = "R"


@dataclass(frozen=True)
class Change:
    change: str  # + - M R (zfs diff's letters)
    path: str  # relative to the dataset's root, "" for the root itself
    new_path: str | None = None  # renames only


@dataclass(frozen=True)
class Conflict:
    path: str
    image: str  # the image's change to the path (+ - M, or R- / R+ for a rename's two ends)
    base: str  # the base's change
    resolution: str  # "image", "base", or "same" (both sides ended equal)


@dataclass(frozen=True)
class RebasePlan:
    """The operations on the new clone, in the order they run."""

    removes: tuple[str, ...] = ()  # deepest first
    renames: tuple[tuple[str, str], ...] = ()  # shallowest first
    copies: tuple[str, ...] = ()  # paths made equal to the image's, shallowest first
    conflicts: tuple[Conflict, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)  # the image's changes by kind


def touched(changes: Iterable[Change]) -> dict[str, str]:
    """Each path a change list touches, with how (both ends of a rename)."""
    out: dict[str, str] = {}
    for c in changes:
        if c.change == RENAMED and c.new_path is not None:
            out[c.path] = "R-"
            out[c.new_path] = "R+"
        else:
            out[c.path] = c.change
    return out


def _depth(path: str) -> tuple[int, str]:
    return (path.count("/") + (1 if path else 0), path)


def make_plan(
    image: str,
    image_changes: Iterable[Change],
    base_changes: Iterable[Change],
    *,
    prefer: Prefer | None,
    is_dir: Callable[[str], bool],
    same_result: Callable[[str], bool],
) -> RebasePlan:
    """Plan the replay of ``image_changes`` onto the new base.

    ``is_dir(path)`` says whether a path is a directory on either side now; ``same_result(path)``
    whether the image and the new base hold equal entries there (or both none). Raises
    :class:`RebaseConflict` naming every conflicting path when ``prefer`` is None.
    """
    image_changes = list(image_changes)
    mine = touched(image_changes)
    theirs = touched(base_changes)
    conflicts: list[Conflict] = []
    base_wins: set[str] = set()
    for path in sorted(mine.keys() & theirs.keys()):
        if MODIFIED in (mine[path], theirs[path]) and is_dir(path):
            continue  # entries changed on both sides: their children decide
        if same_result(path):
            conflicts.append(Conflict(path, mine[path], theirs[path], "same"))
            base_wins.add(path)  # nothing to replay: the base already holds the image's result
            continue
        conflicts.append(Conflict(path, mine[path], theirs[path], prefer or "stop"))
        if prefer == "base":
            base_wins.add(path)
    stopped = [c.path for c in conflicts if c.resolution == "stop"]
    if stopped:
        raise RebaseConflict(image, stopped)

    removes: set[str] = set()
    renames: list[tuple[str, str]] = []
    copies: set[str] = set()
    counts = {"added": 0, "modified": 0, "removed": 0, "renamed": 0}
    names = {ADDED: "added", MODIFIED: "modified", REMOVED: "removed", RENAMED: "renamed"}
    for c in image_changes:
        counts[names[c.change]] += 1
        if c.change == REMOVED:
            if c.path not in base_wins:
                removes.add(c.path)
        elif c.change in (ADDED, MODIFIED):
            if c.path not in base_wins:
                copies.add(c.path)
        elif c.change == RENAMED and c.new_path is not None:
            if c.path not in base_wins and c.new_path not in base_wins:
                renames.append((c.path, c.new_path))
            if c.new_path not in base_wins:
                copies.add(c.new_path)
    return RebasePlan(
        removes=tuple(sorted(removes, key=lambda p: (-p.count("/"), p))),
        renames=tuple(sorted(renames, key=lambda r: _depth(r[0]))),
        copies=tuple(sorted(copies, key=_depth)),
        conflicts=tuple(conflicts),
        counts=counts,
    )


def relative(path: str, root: str) -> str:
    """A ``zfs diff`` path (absolute, under the mountpoint) relative to the dataset's root."""
    root = root.rstrip("/")
    if path == root:
        return ""
    if not path.startswith(root + "/"):
        raise RebaseError(f"zfs diff named {path}, which is not under {root}")
    return path[len(root) + 1 :]
