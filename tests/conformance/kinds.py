"""Conformance scenarios for dataset kinds: the property steps and a labelled replica.

The kind steps (workers/kindsteps.py) run over the backend as a worker runs them, so on real
OpenZFS (the lab) they show that ``zfs set``/``zfs inherit``/``zfs get`` of ``zfleet:kind`` behave
as the steps expect, and that a replica given its source's kind still takes increments.
"""

from __future__ import annotations

import pytest

from protocol.errors import InvalidOperation
from protocol.kinds import KIND_PROPERTY
from protocol.kindsteps import GetPropertyArgs, SetPropertyArgs
from tests.conformance.target import Subject, transfer
from workers.steps import StepContext, run_step
from workers.zfs.base import ReceiveSpec, SendSpec


def kind_steps_set_inherit_and_read(t: Subject) -> None:
    """A kind set once (a second run changes nothing), inherited below, read with its source,
    inherited away; a native property is refused by the step."""
    ctx = StepContext(host="h", backend=t.backend)
    homes, alice = t.ds("homes"), t.ds("homes/alice")
    t.backend.create(homes)
    t.backend.create(alice)
    set_home = SetPropertyArgs(dataset=homes, name=KIND_PROPERTY, value="home",
                               guid=t.obj(homes).guid)  # fmt: skip
    first = run_step(ctx, set_home)
    assert (first["changed"], first["value"], first["source"]) == (True, "home", "local")
    assert run_step(ctx, set_home)["changed"] is False
    read = run_step(ctx, GetPropertyArgs(dataset=alice, names=(KIND_PROPERTY,)))
    assert read == {KIND_PROPERTY: "home", f"{KIND_PROPERTY}.source": f"inherited from {homes}"}
    assert t.obj(alice).user_props.get(KIND_PROPERTY) == "home"  # what inventories list
    cleared = run_step(ctx, SetPropertyArgs(dataset=homes, name=KIND_PROPERTY, value=None))
    assert cleared["changed"] is True and cleared["value"] is None
    assert KIND_PROPERTY not in t.obj(alice).user_props
    with pytest.raises(InvalidOperation):
        run_step(ctx, SetPropertyArgs(dataset=homes, name="readonly", value="on"))


def labelled_replica_takes_increments(t: Subject) -> None:
    """A received replica given its source's kind (as a sync does after the transfer) is not
    modified by it: the next incremental is received, and the kind stays."""
    ctx = StepContext(host="h", backend=t.backend)
    src, dst = t.ds("src"), t.ds("dst")
    t.backend.create(src)
    t.files.write(src, "a.txt", b"first\n")
    t.backend.snapshot([f"{src}@s1"])
    transfer(t.backend, SendSpec(f"{src}@s1"), t.backend, ReceiveSpec(dst, no_mount=True))
    run_step(ctx, SetPropertyArgs(dataset=dst, name=KIND_PROPERTY, value="home"))
    t.files.write(src, "a.txt", b"second\n")
    t.backend.snapshot([f"{src}@s2"])
    transfer(t.backend, SendSpec(f"{src}@s2", from_snap=f"{src}@s1"), t.backend,
             ReceiveSpec(dst, no_mount=True))  # fmt: skip
    assert t.obj(f"{dst}@s2").guid == t.obj(f"{src}@s2").guid
    assert t.backend.get(dst, [KIND_PROPERTY])[KIND_PROPERTY].value == "home"
