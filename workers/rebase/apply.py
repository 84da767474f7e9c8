"""Rebase one image onto a base snapshot on this host, over any ZfsBackend; and undo it.

:func:`rebase` makes ``image`` a clone of ``onto`` (``BASE@SNAP``) that holds:

- with ``keep_content`` (representation only): exactly the image's tree. Every path is compared
  and only what differs is written (files patched record by record), then every file's hash and
  metadata are checked against the image before the swap;
- otherwise: the new base plus the image's own changes since its old base (``old_base``, by
  default the image's origin), read from ``zfs diff`` when the image descends from the old base,
  or from a tree compare when it does not. Paths changed on both sides are conflicts (see
  plan.py); an image without any old base is compared with the new base as a whole.

The order, and what a failure at each point leaves:

1. checks (a snapshot to rebase onto, a mounted filesystem without children, no partial
   receive, room for ``drop_old``): a clear :class:`RebaseError`, nothing touched;
2. ``hooks.before``, then no process may hold files under the image (:class:`ImageInUse`);
3. the base is cloned to ``NAME.rebase-<time>`` (mounted beside the image) and filled; the
   changes are planned (a conflict under the stop policy ends here), written, and verified;
4. the clone's verified state is snapshotted (``NAME@rebase-<time>``: the point replicas that
   hold the base receive as an incremental), the image's own properties are copied onto it, and
   the swap (swap.py) puts it in the image's place.

Any failure in 3-4 (a conflict, a full pool, a verify mismatch, a ZFS error) unwinds every
step: temporary clones destroyed, names and mountpoints as before. ``hooks.after`` runs in every
case once ``before`` has. The image itself is only ever read until the swap renames it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog

from protocol.errors import (
    DatasetNotFound,
    ImageInUse,
    RebaseError,
    RebaseVerifyError,
    ZfleetError,
    ZfsError,
)
from workers.zfs.base import ObjType, ZfsBackend

from . import swap
from . import tree as trees
from .build import apply_plan, keep_content_build, tree_changes
from .hooks import Hooks, refuse_if_busy
from .plan import Change, Conflict, Prefer, make_plan, relative

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RebaseReport:
    image: str
    onto: str
    old_base: str | None
    method: str  # keep-content | zfs-diff | tree | none (already a clone of onto)
    backup: str | None  # where the old image is kept (None when dropped or nothing was done)
    snapshot: str | None  # the rebased image's snapshot of its verified state
    dropped: bool
    counts: dict[str, int] = field(default_factory=dict)  # the image's changes by kind
    conflicts: tuple[Conflict, ...] = ()
    files_written: int = 0
    bytes_written: int = 0
    removed: int = 0
    verified: int = 0  # paths whose content and metadata were checked after writing
    tree_hash: str | None = None  # keep-content: one hash of the whole verified tree
    used_before: int = 0  # the image dataset's `used` before
    used_after: int = 0  # the rebased image's `used` (its own blocks only)
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _int_prop(backend: ZfsBackend, name: str, prop: str) -> int:
    value = backend.get(name, [prop]).get(prop)
    try:
        return int(value.value) if value is not None else 0
    except ValueError:
        return 0


def _check_snapshot(backend: ZfsBackend, name: str, what: str) -> None:
    if "@" not in name:
        raise RebaseError(f"{what} '{name}' is not a snapshot (expected DATASET@SNAPSHOT)")
    try:
        backend.get(name, ["type"])
    except (DatasetNotFound, ZfsError) as exc:
        raise RebaseError(f"{what} '{name}' does not exist") from exc


def _check_image(backend: ZfsBackend, image: str, onto: str, *, drop_old: bool) -> str:
    """Refuse what cannot be rebased; returns the image's mountpoint."""
    if "@" in image or "#" in image:
        raise RebaseError(f"image '{image}' must be a filesystem, not a snapshot or bookmark")
    try:
        kind = backend.get(image, ["type"])["type"].value
    except (DatasetNotFound, KeyError) as exc:
        raise RebaseError(f"image '{image}' does not exist") from exc
    if kind != "filesystem":
        raise RebaseError(f"image '{image}' is a {kind}; only filesystems can be rebased")
    base_ds = onto.split("@", 1)[0]
    if base_ds == image or base_ds.startswith(image + "/"):
        raise RebaseError(f"cannot rebase '{image}' onto its own snapshot '{onto}'")
    if image.split("/", 1)[0] != base_ds.split("/", 1)[0]:
        raise RebaseError(f"cannot rebase '{image}' onto '{onto}': they are in different pools")
    children = backend.list(image, types=[ObjType.FILESYSTEM, ObjType.VOLUME])
    if len(children) > 1:
        raise RebaseError(
            f"cannot rebase '{image}': it has child datasets ({children[1].name}...); "
            "rebase them one by one"
        )
    token = backend.get(image, ["receive_resume_token"]).get("receive_resume_token")
    if token is not None and token.value not in ("-", ""):
        raise ImageInUse(f"cannot rebase '{image}': a resumable receive into it is in progress")
    enc = backend.get(image, ["encryption"]).get("encryption")
    base_enc = backend.get(onto, ["encryption"]).get("encryption")
    if enc is not None and enc.value != "off" and (base_enc is None or base_enc.value == "off"):
        raise RebaseError(f"cannot rebase encrypted '{image}' onto unencrypted '{onto}'")
    mountpoint = backend.mountpoint(image)
    if mountpoint is None or not os.path.isdir(mountpoint):
        raise RebaseError(f"cannot rebase '{image}': it is not mounted")
    if drop_old:
        for snap in backend.list(image, recursive=False, types=[ObjType.SNAPSHOT]):
            clones = backend.get(snap.name, ["clones"]).get("clones")
            if clones is not None and clones.value not in ("", "-"):
                raise RebaseError(
                    f"cannot drop the old '{image}': {clones.value} depend on {snap.name} "
                    "(rebase without --drop-old, or rebase those first)"
                )
            if backend.holds(snap.name):
                raise RebaseError(f"cannot drop the old '{image}': {snap.name} has holds")
    return mountpoint


def _budget(backend: ZfsBackend, parent: str) -> trees.Budget:
    """What the new clone may write: the pool's free space and every quota above it."""
    pool = parent.split("/", 1)[0]
    limits = [p.free for p in backend.pools() if p.name == pool]
    available = _int_prop(backend, parent, "available")
    if available:
        limits.append(available)
    name = parent
    while True:
        quota = _int_prop(backend, name, "quota")
        if quota:
            limits.append(max(0, quota - _int_prop(backend, name, "used")))
        if "/" not in name:
            break
        name = name.rsplit("/", 1)[0]
    return trees.Budget(min(limits) if limits else None)


class _Views:
    """Snapshots' files, readable: temporary clones mounted beside the image (a clone costs
    ZFS nothing; the same call works on every backend, where ``.zfs/snapshot`` would not)."""

    def __init__(
        self,
        backend: ZfsBackend,
        image: str,
        mountpoint: str,
        ts: str,
        *,
        undo: swap.Undo,
        taken: Callable[[str], bool],
    ) -> None:
        self.taken = taken
        self.backend, self.image, self.mountpoint, self.ts, self.undo = (
            backend,
            image,
            mountpoint,
            ts,
            undo,
        )
        self.roots: dict[str, Path] = {}
        self.names: list[str] = []

    def get(self, snapshot: str) -> Path:
        if snapshot not in self.roots:
            backend = self.backend
            name = swap.free_name(backend, f"{self.image}.rebase-view-{self.ts}", self.taken)
            backend.clone(
                snapshot, name, props={"mountpoint": self.mountpoint + name[len(self.image) :]}
            )
            self.names.append(name)
            self.undo.push(f"destroy {name}", lambda: swap.destroy_quietly(backend, name))
            where = backend.mountpoint(name)
            if where is None:
                raise RebaseError(
                    f"cannot read {snapshot}: its temporary clone {name} did not mount"
                )
            self.roots[snapshot] = Path(where)
        return self.roots[snapshot]

    def close(self) -> None:
        for name in self.names:
            swap.destroy_quietly(self.backend, name)
        self.names.clear()


def rebase(
    backend: ZfsBackend,
    image: str,
    onto: str,
    *,
    old_base: str | None = None,
    prefer: Prefer | None = None,
    keep_content: bool = False,
    drop_old: bool = False,
    hooks: Hooks | None = None,
    now: Callable[[], float] = time.time,
) -> RebaseReport:
    """Make ``image`` a clone of ``onto``; see the module docstring. Raises RebaseError."""
    started = time.monotonic()
    hooks = hooks or Hooks()
    _check_snapshot(backend, onto, "base")
    mountpoint = _check_image(backend, image, onto, drop_old=drop_old)
    origin = backend.get(image, ["origin"]).get("origin")
    current_origin = origin.value if origin is not None and origin.value not in ("-", "") else None
    if old_base is not None:
        _check_snapshot(backend, old_base, "old base")
    elif not keep_content:
        old_base = current_origin
    used_before = _int_prop(backend, image, "used")
    if current_origin == onto and (keep_content or old_base in (None, onto)):
        return RebaseReport(
            image,
            onto,
            old_base,
            "none",
            None,
            None,
            False,
            used_before=used_before,
            used_after=used_before,
            seconds=time.monotonic() - started,
        )
    ts = swap.stamp(now())

    # a directory where a clone would be mounted is never reused: mounting would change it
    def spot_taken(name: str) -> bool:
        return os.path.lexists(mountpoint + name[len(image) :])

    tmp = swap.free_name(backend, f"{image}.rebase-{ts}", spot_taken)
    parent = image.rsplit("/", 1)[0]
    _run_before(hooks, image, mountpoint)
    undo = swap.Undo()
    try:
        refuse_if_busy(image, mountpoint)
        budget = _budget(backend, parent)
        backend.clone(onto, tmp, props={"mountpoint": mountpoint + tmp[len(image) :]})
        undo.push(f"destroy {tmp}", lambda: swap.destroy_quietly(backend, tmp))
        tmp_mnt = backend.mountpoint(tmp)
        if tmp_mnt is None:
            raise RebaseError(f"the clone {tmp} of {onto} did not mount")
        src, dst = Path(mountpoint), Path(tmp_mnt)
        result = trees.SyncResult()
        conflicts: tuple[Conflict, ...] = ()
        counts: dict[str, int] = {}
        if keep_content or old_base is None:
            method = "keep-content" if keep_content else "tree"
            built = keep_content_build(src, dst, budget, result)
            counts, removed, verified, digest = (
                built.counts,
                built.removed,
                built.verified,
                built.digest,
            )
        else:
            views = _Views(backend, image, mountpoint, ts, undo=undo, taken=spot_taken)
            method, mine = _image_changes(backend, old_base, image, src, views.get)
            theirs = _base_changes(backend, old_base, onto, dst, views.get)
            views.close()  # the old base's files are not needed past planning
            plan = make_plan(
                image,
                mine,
                theirs,
                prefer=prefer,
                is_dir=lambda p: _is_dir(src, p) or _is_dir(dst, p),
                same_result=lambda p: trees.same_path(src, dst, p),
            )
            conflicts, counts = plan.conflicts, plan.counts
            removed, verified = apply_plan(plan, src, dst, budget, result)
            digest = None
        # the verified state, as a snapshot: replicas that hold the base receive the image as
        # an incremental from the base snapshot to this one
        backend.snapshot([f"{tmp}@rebase-{ts}"])
        props = swap.carried_props(backend, image)
        if props:
            backend.set(tmp, props)
        backup = swap.free_name(backend, f"{image}.pre-rebase-{ts}")
        swap.exchange(backend, image, tmp, backup, undo)
        backend.set(image, {swap.BACKUP_PROP: backup})
        backend.set(backup, {swap.BACKUP_OF_PROP: image})
    except BaseException as exc:
        failed = undo.unwind()
        if hooks.after is not None:
            _run_after(hooks, image, backend)
        if isinstance(exc, (ZfleetError, OSError)):
            if failed:
                raise RebaseError(f"{exc}; and the rollback failed: {'; '.join(failed)}") from exc
            if isinstance(exc, RebaseError):
                raise
            raise RebaseError(f"cannot rebase '{image}': {exc} (rolled back)") from exc
        raise
    undo.clear()
    warnings: list[str] = []
    dropped = False
    if drop_old:
        try:
            backend.destroy(backup, recursive=True)
            backend.inherit(image, swap.BACKUP_PROP)
            dropped = True
        except ZfsError as exc:
            warnings.append(f"the old image stays as {backup}: {exc}")
    if hooks.after is not None:
        warning = _run_after(hooks, image, backend)
        if warning:
            warnings.append(warning)
    report = RebaseReport(
        image=image,
        onto=onto,
        old_base=old_base,
        method=method,
        backup=None if dropped else backup,
        snapshot=f"{image}@rebase-{ts}",
        dropped=dropped,
        counts=counts,
        conflicts=conflicts,
        files_written=result.files_written,
        bytes_written=result.bytes_written,
        removed=removed,
        verified=verified,
        tree_hash=digest,
        used_before=used_before,
        used_after=_int_prop(backend, image, "used"),
        seconds=time.monotonic() - started,
        warnings=tuple(warnings),
    )
    log.info(
        "rebase.done",
        image=image,
        onto=onto,
        method=method,
        bytes_written=report.bytes_written,
        backup=report.backup,
    )
    return report


def _run_before(hooks: Hooks, image: str, mountpoint: str | None) -> None:
    if hooks.before is None:
        return
    try:
        hooks.before(image, mountpoint)
    except ZfleetError:
        raise
    except Exception as exc:  # a user's hook: whatever it raised means "not stopped"
        raise ImageInUse(f"the before hook for '{image}' failed: {exc}") from exc


def _run_after(hooks: Hooks, image: str, backend: ZfsBackend) -> str | None:
    assert hooks.after is not None
    try:
        hooks.after(image, backend.mountpoint(image))
    except Exception as exc:  # the rebase's outcome stands; say why the users did not start
        log.error("rebase.after_hook_failed", image=image, error=str(exc))
        return f"the after hook failed: {exc}"
    return None


def _is_dir(root: Path, rel: str) -> bool:
    full = root / rel if rel else root
    return full.is_dir() and not full.is_symlink()


def _diff(backend: ZfsBackend, earlier: str, later: str, root: str) -> list[Change]:
    return [
        Change(
            e.change.value,
            relative(e.path, root),
            relative(e.new_path, root) if e.new_path is not None else None,
        )
        for e in backend.diff(earlier, later)
    ]


def _image_changes(
    backend: ZfsBackend, old_base: str, image: str, src: Path, view: Callable[[str], Path]
) -> tuple[str, list[Change]]:
    """The image's changes since ``old_base``: ``zfs diff`` if it descends from it, else a tree
    compare against a view of the old base."""
    try:
        return "zfs-diff", _diff(backend, old_base, image, str(src))
    except ZfsError:
        old_root = view(old_base)
        return "tree", tree_changes(trees.fingerprint(old_root), trees.fingerprint(src))


def _base_changes(
    backend: ZfsBackend, old_base: str, onto: str, dst: Path, view: Callable[[str], Path]
) -> list[Change]:
    base_ds = onto.split("@", 1)[0]
    root = backend.mountpoint(base_ds) or f"/{base_ds}"
    try:
        return _diff(backend, old_base, onto, root)
    except ZfsError:
        old_root = view(old_base)
        return tree_changes(trees.fingerprint(old_root), trees.fingerprint(dst))


def undo(
    backend: ZfsBackend,
    image: str,
    *,
    drop_rebased: bool = False,
    hooks: Hooks | None = None,
    now: Callable[[], float] = time.time,
) -> dict[str, str | None]:
    """Swap a rebased ``image`` back for its backup. The rebased dataset stays aside as
    ``NAME.rebased-<time>`` unless ``drop_rebased``. Returns the names involved."""
    hooks = hooks or Hooks()
    try:
        value = backend.get(image, [swap.BACKUP_PROP]).get(swap.BACKUP_PROP)
    except DatasetNotFound as exc:
        raise RebaseError(f"image '{image}' does not exist") from exc
    if value is None or value.value in ("-", ""):
        raise RebaseError(f"'{image}' has no rebase backup to go back to")
    backup = value.value
    if not backend.exists(backup):
        raise RebaseError(f"the backup {backup} of '{image}' no longer exists")
    of = backend.get(backup, [swap.BACKUP_OF_PROP]).get(swap.BACKUP_OF_PROP)
    if of is None or of.value != image:
        raise RebaseError(f"{backup} is not marked as the backup of '{image}'")
    mountpoint = backend.mountpoint(image)
    _run_before(hooks, image, mountpoint)
    aside = swap.free_name(backend, f"{image}.rebased-{swap.stamp(now())}")
    steps = swap.Undo()
    try:
        refuse_if_busy(image, mountpoint)
        swap.exchange(backend, image, backup, aside, steps)
        backend.inherit(image, swap.BACKUP_OF_PROP)
        backend.inherit(aside, swap.BACKUP_PROP)
    except (ZfleetError, OSError) as exc:
        failed = steps.unwind()
        if hooks.after is not None:
            _run_after(hooks, image, backend)
        detail = f"; and the rollback failed: {'; '.join(failed)}" if failed else " (rolled back)"
        raise RebaseError(f"cannot undo the rebase of '{image}': {exc}{detail}") from exc
    if drop_rebased:
        backend.destroy(aside, recursive=True)
    if hooks.after is not None:
        _run_after(hooks, image, backend)
    return {"image": image, "restored_from": backup, "rebased": None if drop_rebased else aside}


def report_lines(report: RebaseReport, human: Callable[[int], str]) -> list[str]:
    """A few lines for a terminal."""
    counts: Mapping[str, int] = report.counts
    lines = [
        f"{report.image}: rebased onto {report.onto} ({report.method})"
        if report.method != "none"
        else f"{report.image}: already a clone of {report.onto}, nothing to do",
    ]
    if report.method != "none":
        lines.append(
            "  changes: "
            + ", ".join(f"{v} {k}" for k, v in counts.items())
            + f"; wrote {report.files_written} files ({human(report.bytes_written)}),"
            f" removed {report.removed}, verified {report.verified} paths"
        )
        lines.append(f"  used: {human(report.used_before)} -> {human(report.used_after)}")
        lines.append(f"  old image: {'destroyed' if report.dropped else report.backup}")
    for c in report.conflicts:
        lines.append(f"  conflict {c.path}: image {c.image}, base {c.base} -> {c.resolution}")
    lines += [f"  warning: {w}" for w in report.warnings]
    return lines


__all__ = ["RebaseReport", "RebaseVerifyError", "rebase", "report_lines", "undo"]
