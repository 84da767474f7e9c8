"""Conformance scenarios about datasets themselves: clones, holds, rollback, properties, names."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from protocol.errors import (
    DatasetBusy,
    DestinationHasSnapshots,
    HasDependentClones,
    NameError_,
    ZfleetError,
)
from tests.conformance.target import Subject

PAYLOAD = 512 * 1024


def promote_moves_origins(t: Subject) -> None:
    """After promote the clone owns the shared snapshots and the old parent becomes its clone."""
    base, app = t.ds("base"), t.ds("app")
    t.backend.create(base)
    t.files.write(base, "f.txt", b"base\n")
    t.backend.snapshot([f"{base}@s1"])
    t.backend.snapshot([f"{base}@s2"])
    t.backend.clone(f"{base}@s2", app)
    s1_guid = t.obj(f"{base}@s1").guid
    t.backend.promote(app)
    assert t.obj(app).origin is None
    assert t.obj(base).origin == f"{app}@s2"
    # the snapshots up to the origin moved to the promoted clone, guids kept
    assert t.obj(f"{app}@s1").guid == s1_guid
    assert f"{base}@s1" not in t.names(base)
    assert t.files.read(app, "f.txt") == b"base\n"


def holds_block_destroy(t: Subject) -> None:
    """A held snapshot cannot be destroyed until every hold is released."""
    src = t.ds("src")
    t.backend.create(src)
    t.backend.snapshot([f"{src}@s1"])
    t.backend.hold("keep", [f"{src}@s1"])
    t.backend.hold("sync", [f"{src}@s1"])
    assert sorted(t.backend.holds(f"{src}@s1")) == ["keep", "sync"]
    with pytest.raises(DatasetBusy):
        t.backend.destroy(f"{src}@s1")
    t.backend.release("keep", [f"{src}@s1"])
    with pytest.raises(DatasetBusy):
        t.backend.destroy(f"{src}@s1")
    t.backend.release("sync", [f"{src}@s1"])
    assert t.backend.holds(f"{src}@s1") == []
    t.backend.destroy(f"{src}@s1")
    assert f"{src}@s1" not in t.names(src)


def dependent_clones_block_destroy(t: Subject) -> None:
    """A snapshot with a clone cannot be destroyed; the clone keeps working."""
    src, clone = t.ds("src"), t.ds("clone")
    t.backend.create(src)
    t.backend.snapshot([f"{src}@s1"])
    t.backend.clone(f"{src}@s1", clone)
    with pytest.raises(HasDependentClones):
        t.backend.destroy(f"{src}@s1")
    assert t.obj(clone).origin == f"{src}@s1"


def rollback_needs_destroy_newer(t: Subject) -> None:
    """Rolling back past newer snapshots is refused unless they may be destroyed (``-r``)."""
    src = t.ds("src")
    t.backend.create(src)
    t.files.write(src, "f.txt", b"one\n")
    t.backend.snapshot([f"{src}@s1"])
    t.files.write(src, "f.txt", b"two\n")
    t.backend.snapshot([f"{src}@s2"])
    with pytest.raises(DestinationHasSnapshots):
        t.backend.rollback(f"{src}@s1")
    assert f"{src}@s2" in t.names(src)
    t.backend.rollback(f"{src}@s1", destroy_newer=True)
    assert f"{src}@s2" not in t.names(src)
    assert t.files.read(src, "f.txt") == b"one\n"


def atomic_recursive_snapshot(t: Subject) -> None:
    """Several snapshots taken in one call share one txg; ``-r`` covers children."""
    a, b = t.ds("a"), t.ds("b")
    t.backend.create(a)
    t.backend.create(f"{a}/child")
    t.backend.create(b)
    t.backend.snapshot([f"{a}@x", f"{b}@x"])
    assert t.obj(f"{a}@x").createtxg == t.obj(f"{b}@x").createtxg
    t.backend.snapshot([f"{a}@y"], recursive=True)
    assert t.obj(f"{a}/child@y").createtxg == t.obj(f"{a}@y").createtxg


def properties_set_get_inherit(t: Subject) -> None:
    """User properties are set locally, inherited by children, listed, and inherited away."""
    parent, child = t.ds("p"), t.ds("p/c")
    t.backend.create(parent)
    t.backend.create(child)
    t.backend.set(parent, {"zfleet:role": "primary", "zfleet:note": "two words"})
    got = t.backend.get(parent, ["zfleet:role", "zfleet:note"])
    assert got["zfleet:role"].value == "primary"
    assert got["zfleet:role"].source == "local"
    assert got["zfleet:note"].value == "two words"
    inherited = t.backend.get(child, ["zfleet:role"])["zfleet:role"]
    assert inherited.value == "primary"
    assert inherited.source == f"inherited from {parent}"
    assert t.obj(parent).user_props.get("zfleet:role") == "primary"
    t.backend.inherit(parent, "zfleet:role")
    after = t.backend.get(parent, ["zfleet:role"]).get("zfleet:role")
    assert after is None or after.value == "-"
    assert "zfleet:role" not in t.obj(child).user_props
    assert "guid" in t.backend.get(parent)  # all properties when none are named


def space_shared_by_clones(t: Subject) -> None:
    """A fresh clone references its origin's data but uses almost no space of its own."""
    src, clone = t.ds("src"), t.ds("clone")
    t.backend.create(src)
    t.files.write(src, "big.bin", os.urandom(PAYLOAD))
    t.backend.snapshot([f"{src}@s1"])
    t.backend.clone(f"{src}@s1", clone)
    made = t.obj(clone)
    assert made.referenced >= PAYLOAD * 0.9
    assert made.referenced == t.obj(f"{src}@s1").referenced
    assert made.used < made.referenced / 4


def bad_names_refused(t: Subject) -> None:
    """Names that break OpenZFS's rules are refused with the rule, and nothing is created."""
    src = t.ds("src")
    t.backend.create(src)
    t.backend.snapshot([f"{src}@s1"])
    before = t.names(t.root)
    attempts: list[Callable[[], None]] = [
        lambda: t.backend.create(t.ds("bad name!")),
        lambda: t.backend.create(t.ds("a//b")),
        lambda: t.backend.snapshot([f"{src}@"]),
        lambda: t.backend.snapshot([f"{src}@bad@twice"]),
        lambda: t.backend.bookmark(f"{src}@s1", f"{src}#bad name!"),
        lambda: t.backend.create(t.ds("x" * 300)),
    ]
    for attempt in attempts:
        with pytest.raises(ZfleetError) as info:
            attempt()
        assert isinstance(info.value, NameError_), f"{type(info.value).__name__}: {info.value}"
        assert info.value.rule
    assert t.names(t.root) == before
