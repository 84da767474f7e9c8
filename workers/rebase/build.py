"""Filling the new clone: a whole tree made equal (keep-content), or a plan replayed.

Both run in the temporary clone of the new base (``dst``) and only read the image (``src``).
Directories get their metadata last, deepest first, because writing their children moves their
mtime; a directory the plan does not touch but whose entries the replay changed gets its own
metadata back, so the replay leaves no trace but the image's changes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from protocol.errors import RebaseError, RebaseVerifyError

from . import tree as trees
from .plan import ADDED, MODIFIED, REMOVED, Change, RebasePlan


@dataclass(frozen=True)
class Built:
    counts: dict[str, int] = field(default_factory=dict)
    removed: int = 0
    verified: int = 0
    digest: str | None = None


def _depth(rel: str) -> tuple[int, str]:
    return (rel.count("/") + (1 if rel else 0), rel)


def _full(root: Path, rel: str) -> str:
    return str(root / rel) if rel else str(root)


def _remove(root: Path, rel: str) -> bool:
    full = _full(root, rel)
    if not os.path.lexists(full):
        return False
    try:
        trees.remove(full)
    except OSError as exc:
        raise RebaseError(f"cannot remove {full}: {exc.strerror}") from exc
    return True


def _set_meta(root: Path, rel: str, entry: trees.Entry) -> None:
    try:
        trees.set_meta(_full(root, rel), entry)
    except OSError as exc:
        raise RebaseError(f"cannot set the metadata of {_full(root, rel)}: {exc.strerror}") from exc


def sync_tree(
    src: Path,
    dst: Path,
    entries: Mapping[str, trees.Entry],
    budget: trees.Budget,
    result: trees.SyncResult,
    *,
    have: Mapping[str, trees.Entry] | None = None,
) -> tuple[dict[str, int], int]:
    """Make the paths of ``entries`` (a scan of ``src``, or of a subtree of it) equal in ``dst``
    and remove what ``have`` (a scan of ``dst``) holds beyond them. Returns counts, removed."""
    removed = 0
    if have is not None:
        for rel in trees.order_for_removal([p for p in have if p not in entries]):
            removed += _remove(dst, rel)
    groups = trees.link_groups(entries)
    theirs = trees.link_groups(have) if have is not None else {}
    done: set[str] = set()
    dirs: list[str] = []
    counts = {"added": 0, "changed": 0, "unchanged": 0, "removed": removed}
    for rel in sorted(entries, key=_depth):
        want = entries[rel]
        link_to = next((m for m in groups.get(rel, ()) if m in done), None)
        existed = os.path.lexists(_full(dst, rel))
        changed = trees.sync_entry(
            src,
            dst,
            rel,
            want,
            budget=budget,
            result=result,
            link_to=link_to,
            links_match=rel in groups and groups.get(rel) == theirs.get(rel),
        )
        done.add(rel)
        if want.kind == "dir":
            dirs.append(rel)
        key = "changed" if changed else "unchanged"
        counts["added" if not existed else key] += 1
    for rel in reversed(dirs):
        _set_meta(dst, rel, entries[rel])
    return counts, removed


def keep_content_build(
    src: Path, dst: Path, budget: trees.Budget, result: trees.SyncResult
) -> Built:
    """Make ``dst`` hold exactly ``src``'s tree, then prove it: every path's fingerprint."""
    entries = trees.scan(src)
    counts, removed = sync_tree(src, dst, entries, budget, result, have=trees.scan(dst))
    want = trees.fingerprint(src, entries)
    got = trees.fingerprint(dst)
    wrong = trees.compare(want, got)
    if wrong:
        raise RebaseVerifyError(
            f"the rebased tree differs from the image at {len(wrong)} path(s): "
            + ", ".join(wrong[:10]),
            wrong,
        )
    return Built(counts, removed, len(got), trees.tree_hash(got))


def tree_changes(
    old: Mapping[str, trees.Fingerprint], new: Mapping[str, trees.Fingerprint]
) -> list[Change]:
    """Path-by-path changes from one fingerprinted tree to another (no renames: a tree
    compare cannot tell a rename from a removal plus an addition)."""
    out = [Change(REMOVED, p) for p in old if p not in new]
    out += [Change(ADDED, p) for p in new if p not in old]
    out += [Change(MODIFIED, p) for p in new if p in old and old[p] != new[p]]
    return sorted(out, key=lambda c: (c.path, c.change))


def _parent(rel: str) -> str | None:
    if not rel:
        return None
    return rel.rsplit("/", 1)[0] if "/" in rel else ""


def apply_plan(
    plan: RebasePlan, src: Path, dst: Path, budget: trees.Budget, result: trees.SyncResult
) -> tuple[int, int]:
    """Replay ``plan`` in ``dst`` from ``src``; verify what it wrote. Returns removed, verified."""
    copies = set(plan.copies)
    touched = [*plan.removes, *(p for r in plan.renames for p in r), *plan.copies]
    parents: dict[str, trees.Entry] = {}
    for rel in touched:
        par = _parent(rel)
        if par is not None and par not in copies and par not in parents:
            full = _full(dst, par)
            if os.path.isdir(full) and not os.path.islink(full):
                parents[par] = trees.entry_of(full)
    removed = sum(_remove(dst, rel) for rel in plan.removes)
    for old, new in plan.renames:
        fo, fn = _full(dst, old), _full(dst, new)
        # keep the base's object (and its shared records) when it is still there to move
        if os.path.lexists(fo) and not os.path.lexists(fn) and os.path.isdir(os.path.dirname(fn)):
            try:
                os.rename(fo, fn)
            except OSError as exc:
                raise RebaseError(f"cannot rename {fo} to {fn}: {exc.strerror}") from exc
    groups: dict[str, tuple[str, ...]] | None = None
    done: set[str] = set()
    dirs: list[tuple[str, trees.Entry]] = []
    for rel in plan.copies:
        if rel in done:
            continue
        full = _full(src, rel)
        if not os.path.lexists(full):
            raise RebaseError(f"{full} changed while the image was being rebased")
        want = trees.entry_of(full)
        if want.kind == "dir" and not os.path.lexists(_full(dst, rel)):
            # a directory the base does not have: bring all of it (a rename of a directory the
            # base removed, or an added one whose children zfs diff lists too)
            sub = {f"{rel}/{k}" if k else rel: e for k, e in trees.scan(Path(full)).items()}
            sync_tree(src, dst, sub, budget, result)
            done.update(sub)
            continue
        link_to = None
        if want.kind == "file" and want.nlink > 1:
            if groups is None:
                groups = trees.link_groups(trees.scan(src))
            for other in groups.get(rel, ()):
                if other != rel and (
                    other in done or (other not in copies and trees.equal_entry(src, dst, other))
                ):
                    link_to = other
                    break
        trees.sync_entry(src, dst, rel, want, budget=budget, result=result, link_to=link_to)
        done.add(rel)
        if want.kind == "dir":
            dirs.append((rel, want))
    for rel, entry in reversed(dirs):
        _set_meta(dst, rel, trees.entry_of(_full(src, rel)) if rel in copies else entry)
    for rel, entry in sorted(parents.items(), key=lambda kv: _depth(kv[0]), reverse=True):
        if os.path.isdir(_full(dst, rel)):
            _set_meta(dst, rel, entry)
    wrong = [rel for rel in plan.copies if not trees.equal_entry(src, dst, rel)]
    wrong += [rel for rel in plan.removes if os.path.lexists(_full(dst, rel))]
    if wrong:
        raise RebaseVerifyError(
            f"the rebased tree does not hold the image's changes at {len(wrong)} path(s): "
            + ", ".join(sorted(wrong)[:10]),
            sorted(wrong),
        )
    return removed, len(plan.copies) + len(plan.removes)
