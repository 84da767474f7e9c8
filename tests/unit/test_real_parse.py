"""The -Hp parsers read real OpenZFS 2.3.2 output (tests/fixtures/zfs-streams) correctly.

Expectations come from cross-checking one recorded output against another (zfs list against
zfs get, the inventory against the full listing), never from values typed in here.
"""

from __future__ import annotations

import pytest

from protocol.errors import InvalidOperation
from tests.conftest import ZFS_STREAMS
from workers.zfs import parse
from workers.zfs.base import DiffChange, ObjType

# The columns make-fixtures.sh asked for in each recorded listing.
LISTING_COLUMNS = (
    "name", "guid", "createtxg", "creation", "origin", "type", "used", "referenced", "written",
    "receive_resume_token",
)  # fmt: skip
INVENTORY_COLUMNS = ("name", "guid", "createtxg", "origin", "type")


def recorded_get(fixture: str) -> str:
    """A recorded ``zfs get -Hp all``; the recorder appended ``zfs version``'s lines, dropped."""
    lines = (ZFS_STREAMS / fixture).read_text().splitlines()
    return "".join(f"{line}\n" for line in lines if "\t" in line)


def listing() -> list[parse.ZfsObject]:
    return parse.parse_list((ZFS_STREAMS / "zfs-list.tsv").read_text(), LISTING_COLUMNS)


def test_listing_has_one_object_per_line() -> None:
    lines = (ZFS_STREAMS / "zfs-list.tsv").read_text().splitlines()
    objects = listing()
    assert [o.name for o in objects] == [line.split("\t")[0] for line in lines]


def test_listing_agrees_with_the_separately_recorded_inventory() -> None:
    inventory = {
        o.name: o
        for o in parse.parse_list((ZFS_STREAMS / "inventory.tsv").read_text(), INVENTORY_COLUMNS)
    }
    for obj in listing():
        other = inventory[obj.name]
        assert (obj.guid, obj.createtxg, obj.origin, obj.type) == (
            other.guid, other.createtxg, other.origin, other.type,
        )  # fmt: skip


def test_clones_name_an_origin_snapshot_that_exists() -> None:
    objects = {o.name: o for o in listing()}
    clones = [o for o in objects.values() if o.origin is not None]
    assert clones, "the fixture has clones"
    for clone in clones:
        assert objects[clone.origin].type is ObjType.SNAPSHOT  # type: ignore[index]
        assert clone.type is ObjType.FILESYSTEM


def test_snapshot_names_split_into_dataset_and_short_name() -> None:
    for obj in listing():
        if obj.type is ObjType.SNAPSHOT:
            assert f"{obj.dataset}@{obj.short}" == obj.name
        else:
            assert obj.dataset == obj.name and "@" not in obj.name


def test_guids_survive_as_full_64_bit_numbers() -> None:
    # guids above 2**63 must not be truncated or turned negative
    for obj, line in zip(
        listing(), (ZFS_STREAMS / "zfs-list.tsv").read_text().splitlines(), strict=True
    ):
        assert str(obj.guid) == line.split("\t")[1]
    assert any(o.guid >= 2**63 for o in listing())


def test_unset_columns_read_as_none() -> None:
    objects = listing()
    assert all(o.receive_resume_token is None for o in objects)
    assert any(o.origin is None for o in objects)


def test_get_all_agrees_with_list() -> None:
    objects = {o.name: o for o in listing()}
    for fixture in ("zfs-get-all-clone.tsv", "zfs-get-all-snapshot.tsv"):
        props_by_name = parse.parse_get(recorded_get(fixture))
        assert len(props_by_name) == 1
        ((name, props),) = props_by_name.items()
        obj = objects[name]
        assert props["guid"].value == str(obj.guid)
        assert props["createtxg"].value == str(obj.createtxg)
        assert props["type"].value == obj.type.value
        assert props["used"].value == str(obj.used)
        assert props["referenced"].value == str(obj.referenced)
        expected_origin = obj.origin or "-"
        if "origin" in props:
            assert props["origin"].value == expected_origin


def test_get_keeps_sources_including_inheritance() -> None:
    text = recorded_get("zfs-get-all-clone.tsv")
    props = next(iter(parse.parse_get(text).values()))
    for line in text.splitlines():
        _, prop, value, source = line.split("\t")
        assert props[prop].value == value
        assert props[prop].source == source
    assert any(p.source.startswith("inherited from ") for p in props.values())


def test_get_keeps_tabs_inside_a_user_property_value() -> None:
    got = parse.parse_get("tank/a\tzfleet:note\tone\ttwo\tlocal\n")
    assert got["tank/a"]["zfleet:note"].value == "one\ttwo"
    assert got["tank/a"]["zfleet:note"].source == "local"


def test_user_props_come_from_their_own_columns() -> None:
    line = "tank/a\tfilesystem\t1\t2\t3\t-\t4\t5\t6\t-\toff\t-\tprimary\t-\n"
    (obj,) = parse.parse_list(line, parse.LIST_COLUMNS, ("zfleet:role", "zfleet:unset"))
    assert obj.user_props == {"zfleet:role": "primary"}
    assert obj.encryption == "off"


def test_estimates_read_the_size_line() -> None:
    text = (ZFS_STREAMS / "cli-samples.txt").read_text()
    blocks = [b for b in text.split("\n") if b.startswith(("full\t", "incremental\t"))]
    sizes = [int(line.split("\t")[1]) for line in text.splitlines() if line.startswith("size\t")]
    assert len(blocks) == len(sizes) == 2
    for block, size in zip(blocks, sizes, strict=True):
        assert parse.parse_estimate(f"{block}\nsize\t{size}\n") == int(block.split("\t")[-1])


@pytest.mark.parametrize(
    "text",
    [
        "tank/a\tfilesystem\tnot-a-number\t1\n",  # a non-number where -p promises one
        "tank/a\tfilesystem\n",  # too few columns
        "tank/a\tpool\t1\t2\n",  # a type OpenZFS does not have
    ],
)
def test_unreadable_listing_is_refused_with_the_line(text: str) -> None:
    with pytest.raises(InvalidOperation, match="unreadable zfs list"):
        parse.parse_list(text, ("name", "type", "guid", "createtxg"))


def test_estimate_without_size_is_refused() -> None:
    with pytest.raises(InvalidOperation, match="no size"):
        parse.parse_estimate("full\ttank/a@s1\n")


def test_diff_reads_changes_renames_and_escapes() -> None:
    text = "M\t/tank/a/\nR\t/tank/a/old\\0040name\t/tank/a/new\n+\t/tank/a/x\n-\t/tank/a/y\n"
    entries = parse.parse_diff(text)
    assert [e.change for e in entries] == [
        DiffChange.MODIFIED, DiffChange.RENAMED, DiffChange.ADDED, DiffChange.REMOVED,
    ]  # fmt: skip
    assert entries[1].path == "/tank/a/old name"
    assert entries[1].new_path == "/tank/a/new"


def test_holds_and_pools_and_receive_report() -> None:
    assert parse.parse_holds("tank/a@s1\tkeep\t1700000000\ntank/a@s1\tsync\t1700000001\n") == [
        "keep", "sync",
    ]  # fmt: skip
    (pool,) = parse.parse_pools("tank\t1000\t400\t600\tONLINE\n")
    assert (pool.name, pool.allocated + pool.free, pool.health) == ("tank", pool.size, "ONLINE")
    report = "receiving full stream of fx/base@s1 into fx/copy@s1\nreceived 400K stream in 1 s\n"
    assert parse.parse_receive_verbose(report) == "fx/copy@s1"
