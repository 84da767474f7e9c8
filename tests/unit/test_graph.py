"""The fleet graph over real OpenZFS inventory output: guids, clones, origins, bookmarks."""

from __future__ import annotations

from coordinator.graph import FleetGraph, objects_to_rows, rows_to_objects
from tests.conftest import ZFS_STREAMS
from tests.unit.fleetfakes import dataset, graph_of, guid_of
from workers.zfs.base import ObjType, ZfsObject


def real_inventory() -> list[ZfsObject]:
    """``zfs list -t all -Hp -o name,guid,createtxg,origin,type`` from OpenZFS 2.3.2."""
    rows = []
    for line in (ZFS_STREAMS / "inventory.tsv").read_text().splitlines():
        name, guid, txg, origin, kind = line.split("\t")
        rows.append(
            ZfsObject(name, ObjType(kind), int(guid), int(txg), 0,
                      origin=None if origin == "-" else origin)
        )  # fmt: skip
    return rows


def test_real_inventory_snapshots_ordered_and_matched_by_guid() -> None:
    g = FleetGraph()
    g.add_inventory("lab1", real_inventory())
    base = g.dataset("lab1", "fx/base")
    assert base is not None
    assert [s.short for s in base.snapshots()] == ["s1", "s2", "s3"]
    app = g.dataset("lab1", "fx/app")
    assert app is not None and app.origin_dataset == "fx/base" and app.origin_short == "s2"
    # fx/dst/part@s1 was received from fx/base@s1: one snapshot, two places, same guid
    s1 = base.snap(0).guid
    assert sorted(g.locations(s1)) == [("lab1", "fx/base@s1"), ("lab1", "fx/dst/part@s1")]
    assert [d.name for d in g.subtree("lab1", "fx/dst")] == ["fx/dst", "fx/dst/part"]


def test_same_guid_across_hosts_and_bookmarks() -> None:
    g = graph_of(
        alpha=[dataset("tank/a", ["s2", "s3"], bookmarks=["s1"])],
        beta=[dataset("bk/a", ["s1", "s2"], guid_from="tank/a")],
    )
    where = g.locations(guid_of("tank/a@s2"))
    assert sorted(where) == [("alpha", "tank/a@s2"), ("beta", "bk/a@s2")]
    src = g.dataset("alpha", "tank/a")
    assert src is not None
    bm = src.bookmark_with_guid(guid_of("tank/a@s1"))
    assert bm is not None and bm.name == "tank/a#s1"
    assert src.index_of_guid(guid_of("tank/a@s1")) == -1


def test_out_of_order_rows_are_sorted_by_createtxg_and_rows_round_trip() -> None:
    rows = dataset("tank/a", ["s1", "s2", "s3"])
    shuffled = [rows[0], rows[3], rows[1], rows[2]]
    assert rows_to_objects(objects_to_rows(shuffled)) == shuffled
    g = FleetGraph()
    g.add_inventory("h", shuffled)
    ds = g.dataset("h", "tank/a")
    assert ds is not None and [s.short for s in ds.snapshots()] == ["s1", "s2", "s3"]
    assert [s.referenced for s in ds.snapshots()] == [1000, 2000, 3000]


def test_reinventory_replaces_the_hosts_view() -> None:
    g = graph_of(alpha=[dataset("tank/a", ["s1"])])
    g.add_inventory("alpha", dataset("tank/a", ["s1", "s2"]))
    ds = g.dataset("alpha", "tank/a")
    assert ds is not None and len(ds) == 2
    assert g.locations(guid_of("tank/a@s2")) == [("alpha", "tank/a@s2")]
