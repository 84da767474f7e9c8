"""The kinds room's steps on a host: user properties set, inherited and read.

Idempotent like every step (workers/steps.py): a property that already has the value, locally,
is not set again, and one already inherited is not inherited again. Only user properties (with
a ``:`` in the name, as OpenZFS requires of them) are touched: a step asking for a native
property is refused before any command. The dataset's guid is checked when the plan knew it.
"""

from __future__ import annotations

from protocol.errors import DatasetNotFound, InvalidOperation
from protocol.kindsteps import GetPropertyArgs, SetPropertyArgs
from protocol.zfs import PropertyValue
from workers.steps import Result, StepContext, _guid, handles
from workers.zfs.base import ZfsBackend


def _user_prop(name: str) -> None:
    if ":" not in name:
        raise InvalidOperation(f"{name!r} is not a user property (they have a ':' in the name)")


def _read(backend: ZfsBackend, dataset: str, name: str) -> PropertyValue | None:
    found = backend.get(dataset, [name]).get(name)
    # OpenZFS lists an unset user property as "-" from "-"; the simulation leaves it out
    return None if found is None or found.source == "-" else found


@handles(SetPropertyArgs)
def set_property(ctx: StepContext, args: SetPropertyArgs) -> Result:
    """Set or inherit the property; the result says what it was and what it is now."""
    _user_prop(args.name)
    found = _guid(ctx.backend, args.dataset)
    if found is None:
        raise DatasetNotFound(f"cannot set {args.name} on {args.dataset}: it does not exist")
    if args.guid and found != args.guid:
        raise InvalidOperation(f"not setting {args.name} on {args.dataset}: it was replaced "
                               f"since the plan (guid {found:#x}, planned {args.guid:#x})")
    before = _read(ctx.backend, args.dataset, args.name)
    changed = False
    if args.value is None:
        if before is not None and before.source == "local":
            ctx.backend.inherit(args.dataset, args.name)
            changed = True
    elif before is None or before.source != "local" or before.value != args.value:
        ctx.backend.set(args.dataset, {args.name: args.value})
        changed = True
    after = _read(ctx.backend, args.dataset, args.name)
    return {
        "changed": changed,
        "before": before.value if before else None,
        "before_source": before.source if before else None,
        "value": after.value if after else None,
        "source": after.source if after else None,
    }


@handles(GetPropertyArgs)
def get_property(ctx: StepContext, args: GetPropertyArgs) -> Result:
    """Each property's value and source (``<name>`` and ``<name>.source``; None when unset)."""
    for name in args.names:
        _user_prop(name)
    out: Result = {}
    for name in args.names:
        found = _read(ctx.backend, args.dataset, name)
        out[name] = found.value if found else None
        out[f"{name}.source"] = found.source if found else None
    return out
