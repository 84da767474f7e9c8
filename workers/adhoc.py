"""The short verbs' steps on a host: ``zfs diff``, ``zfs clone`` and ``zfs destroy`` on request.

Each is idempotent like every step (workers/steps.py): a clone that already exists from the same
origin is left alone, a snapshot already destroyed is skipped, and a snapshot whose guid changed
since the coordinator planned (someone made a new one under the same name) is never destroyed.
A diff with more than :data:`INLINE_DIFF` entries is stored in a Redis record under the job and
step (``bus.records.put_step_record``) so that the step's event stays small.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Final

from protocol.errors import DatasetExists, DatasetNotFound, InvalidOperation
from protocol.steps import CloneArgs, DestroyArgs, DiffArgs
from protocol.zfs import DiffEntry
from workers.steps import Result, StepContext, _guid, handles

# Entries a diff's result carries inline (as JSON text); above that the record holds them.
INLINE_DIFF: Final = 50


def diff_rows(entries: Iterable[DiffEntry]) -> list[dict[str, str | None]]:
    """Diff entries as plain data: ``{"change": "+|-|M|R", "path", "new_path"}``."""
    return [{"change": e.change.value, "path": e.path, "new_path": e.new_path} for e in entries]


@handles(DiffArgs)
def diff(ctx: StepContext, args: DiffArgs) -> Result:
    """``zfs diff``: the changes, inline when few, else in the step's record."""
    other = args.other or args.snapshot.split("@", 1)[0]
    rows = diff_rows(ctx.backend.diff(args.snapshot, other))
    if len(rows) <= INLINE_DIFF:
        return {"entries": len(rows), "stored": False, "changes": json.dumps(rows)}
    ctx.save_record(rows)
    return {"entries": len(rows), "stored": True}


@handles(CloneArgs)
def clone(ctx: StepContext, args: CloneArgs) -> Result:
    """Clone the snapshot (checked by guid when the plan knew it); an existing clone of the same
    origin is the result of an earlier attempt and is kept."""
    found = _guid(ctx.backend, args.snapshot)
    if found is None:
        raise DatasetNotFound(f"cannot clone {args.snapshot}: it does not exist")
    if args.guid and found != args.guid:
        raise DatasetNotFound(f"cannot clone {args.snapshot}: it was replaced (guid {found:#x})")
    if ctx.backend.exists(args.target):
        origin = ctx.backend.get(args.target, ["origin"]).get("origin")
        if origin is not None and origin.value == args.snapshot:
            return {"cloned": False, "existed": True}
        raise DatasetExists(f"cannot clone to {args.target}: it exists and is not that clone")
    ctx.backend.clone(args.snapshot, args.target)
    return {"cloned": True, "existed": False}


@handles(DestroyArgs)
def destroy(ctx: StepContext, args: DestroyArgs) -> Result:
    """Destroy the snapshots, each only while it still has the guid the plan saw."""
    destroyed = gone = 0
    for name, guid in args.snapshots:
        found = _guid(ctx.backend, name)
        if found is None:
            gone += 1
            continue
        if found != guid:
            raise InvalidOperation(f"not destroying {name}: it was replaced since the plan "
                                   f"(guid {found:#x}, planned {guid:#x})")  # fmt: skip
        ctx.backend.destroy(name, recursive=args.recursive)
        destroyed += 1
    return {"destroyed": destroyed, "gone": gone}
