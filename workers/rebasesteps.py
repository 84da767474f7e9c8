"""The rebase step kinds on a host: workers.rebase over the host's ZFS backend.

``rebase`` runs :func:`workers.rebase.rebase` (every check, the hooks, the rollback on failure
are its own). It is idempotent like every step: an image that is already a clone of the base it
is asked onto is reported as done, with the backup its earlier attempt left. ``rebase-replica``
sets a replica aside (or drops it) once, checked by guid, so a replica that was replaced since
the plan is left alone.
"""

from __future__ import annotations

from typing import Final

import structlog

from protocol.errors import DatasetNotFound, RebaseError, ZfsError
from protocol.rebasesteps import RebaseArgs, RebaseReplicaArgs
from workers.rebase import Hooks, command_hook, rebase
from workers.rebase.swap import BACKUP_PROP
from workers.steps import Result, StepContext, handles
from workers.zfs.base import ZfsBackend

log = structlog.get_logger(__name__)

UNSET: Final = ("", "-")


def _prop(backend: ZfsBackend, name: str, prop: str) -> str | None:
    try:
        value = backend.get(name, [prop]).get(prop)
    except DatasetNotFound:
        return None
    return None if value is None or value.value in UNSET else value.value


def _hooks(args: RebaseArgs) -> Hooks:
    return Hooks(
        before=command_hook(args.before, timeout=args.hook_timeout) if args.before else None,
        after=command_hook(args.after, timeout=args.hook_timeout) if args.after else None,
    )


@handles(RebaseArgs)
def rebase_step(ctx: StepContext, args: RebaseArgs) -> Result:
    """Rebase one image; the result is the report's figures (the step event carries no lists)."""
    be = ctx.backend
    if args.onto_guid:
        found = _prop(be, args.onto, "guid")
        if found is None:
            raise RebaseError(f"{ctx.host}:{args.onto} does not exist")
        if int(found) != args.onto_guid:
            raise RebaseError(f"{ctx.host}:{args.onto} was replaced since the plan "
                              f"(guid {int(found):#x})")  # fmt: skip
    if _prop(be, args.image, "origin") == args.onto:
        # an earlier attempt (or run) did it: report what it left
        backup = _prop(be, args.image, BACKUP_PROP)
        return {"image": args.image, "onto": args.onto, "method": "none", "backup": backup,
                "dropped": backup is None and args.drop_old, "snapshot": None,
                "existed": True}  # fmt: skip
    prefer = args.prefer if args.prefer in ("image", "base") else None
    report = rebase(be, args.image, args.onto, old_base=args.old_base,
                    prefer=prefer,  # type: ignore[arg-type]
                    keep_content=args.keep_content, drop_old=args.drop_old,
                    hooks=_hooks(args))  # fmt: skip
    log.info("rebase.step_done", image=args.image, onto=args.onto, method=report.method,
             bytes_written=report.bytes_written)  # fmt: skip
    result: Result = {
        "image": report.image, "onto": report.onto, "method": report.method,
        "backup": report.backup, "snapshot": report.snapshot, "dropped": report.dropped,
        "files_written": report.files_written, "bytes_written": report.bytes_written,
        "removed": report.removed, "verified": report.verified, "tree_hash": report.tree_hash,
        "used_before": report.used_before, "used_after": report.used_after,
        "conflicts": len(report.conflicts), "warnings": "; ".join(report.warnings),
        "existed": False,
    }  # fmt: skip
    for kind, n in sorted(report.counts.items()):
        result[f"changes.{kind}"] = n
    return result


@handles(RebaseReplicaArgs)
def replica_step(ctx: StepContext, args: RebaseReplicaArgs) -> Result:
    """Set the replica aside under ``aside`` (or destroy it with ``drop``)."""
    be = ctx.backend
    found = _prop(be, args.dataset, "guid")
    if found is None:
        aside = _prop(be, args.aside, "guid")
        if (aside is not None and int(aside) == args.guid) or args.drop:
            return {"dataset": args.dataset, "aside": args.aside if aside else None,
                    "existed": True}  # fmt: skip
        raise DatasetNotFound(f"{ctx.host}:{args.dataset} is gone")
    if int(found) != args.guid:
        raise RebaseError(f"{ctx.host}:{args.dataset} was replaced since the plan "
                          f"(guid {int(found):#x}); left alone")  # fmt: skip
    if args.drop:
        try:
            be.destroy(args.dataset, recursive=True)
            return {"dataset": args.dataset, "aside": None, "dropped": True, "existed": False}
        except ZfsError as exc:
            log.warning("rebase.replica_kept", dataset=args.dataset, error=str(exc))
    be.rename(args.dataset, args.aside)
    log.info("rebase.replica_aside", dataset=args.dataset, aside=args.aside)
    return {"dataset": args.dataset, "aside": args.aside, "dropped": False, "existed": False}
