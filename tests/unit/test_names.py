"""OpenZFS's naming rules: each rule refuses with a message that says which rule it was."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import names
from protocol.errors import NameError_
from protocol.names import (
    MAX_NAME_LEN,
    NameKind,
    is_ancestor,
    parent,
    pool_of,
    rebase,
    split,
    validate_any,
    validate_bookmark,
    validate_component,
    validate_dataset,
    validate_pool,
    validate_snapshot,
)


@pytest.mark.parametrize(
    "name",
    [
        "tank",
        "tank/a",
        "tank/a-b_c.d:e",
        "tank/with space",
        "Tank9/x/y/z",
        "tank/." + "x",
        "t" + "/a" * 49,  # 49 levels: the deepest OpenZFS allows
    ],
)
def test_valid_datasets(name: str) -> None:
    assert validate_dataset(name) == name
    assert validate_any(name) is NameKind.DATASET


def test_snapshot_names_may_contain_spaces_as_on_openzfs_2_3_2() -> None:
    # `zfs snapshot 'fx/base@bad name'` succeeded on 2.3.2 (tests/fixtures cli-errors.txt).
    assert validate_snapshot("fx/base@bad name") == "fx/base@bad name"
    assert validate_any("fx/base@bad name") is NameKind.SNAPSHOT
    assert validate_any("fx/base#bm 1") is NameKind.BOOKMARK
    assert validate_bookmark("fx/base#bm 1") == "fx/base#bm 1"


def test_full_name_of_255_characters_is_the_limit() -> None:
    at_limit = "tank/" + "a" * (MAX_NAME_LEN - 5)
    assert validate_dataset(at_limit) == at_limit
    with pytest.raises(NameError_, match=r"name is too long \(256 > 255\)"):
        validate_dataset(at_limit + "b")
    with pytest.raises(NameError_, match=r"name is too long \(300 > 255\)"):
        validate_snapshot("tank@" + "s" * 295)


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("/tank/a", "leading slash"),
        ("tank/a/", "trailing slash"),
        ("tank//a", "empty component"),
        ("", "empty name"),
        ("tank/a!b", "component 'a!b' contains invalid character '!'"),
        ("tank/caf\u00e9", "contains invalid character '\u00e9'"),
        ("tank/a\nb", r"contains invalid character '\\n'"),
        ("tank/a\x00b", r"contains invalid character '\\x00'"),
        ("tank/./a", "component '.' is a self reference"),
        ("tank/..", "component '..' is a parent reference"),
        ("1tank/a", "pool name must begin with a letter"),
        ("mirror/a", "pool name is reserved"),
        ("tank/a%recv", "reserved for OpenZFS's temporary names"),
        ("t" + "/a" * 50, r"nested too deeply \(50 levels; the limit is 49\)"),
        ("tank/a@s", "snapshot delimiter '@' is not expected here"),
        ("tank/a#b", "bookmark delimiter '#' is not expected here"),
    ],
)
def test_dataset_rules(name: str, rule: str) -> None:
    with pytest.raises(NameError_, match=rule) as caught:
        validate_dataset(name)
    assert caught.value.name == name


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("tank/a", "missing '@' delimiter in snapshot name"),
        ("tank/a@s1@s2", "multiple '@' delimiters"),
        ("tank/a@@s", "multiple '@' delimiters"),
        ("tank/a@", r"empty component \(after '@'\)"),
        ("@s1", r"empty component \(before '@'\)"),
        ("tank/a@s/x", "'/' is not allowed after the '@' delimiter"),
        ("tank/a@s!", "component 's!' contains invalid character '!'"),
        ("tank/a@..", "component '..' is a parent reference"),
        ("tank/.@s", "component '.' is a self reference"),
        ("tank/a#b@c", "bookmark delimiter '#' is not expected here"),
    ],
)
def test_snapshot_rules(name: str, rule: str) -> None:
    with pytest.raises(NameError_, match=rule):
        validate_snapshot(name)


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("tank/a", "missing '#' delimiter in bookmark name"),
        ("tank/a#b#c", "multiple '#' delimiters"),
        ("tank/a@s", "missing '#' delimiter"),
    ],
)
def test_bookmark_rules(name: str, rule: str) -> None:
    with pytest.raises(NameError_, match=rule):
        validate_bookmark(name)


def test_any_refuses_both_delimiters() -> None:
    with pytest.raises(NameError_, match="both '@' and '#' delimiters"):
        validate_any("tank/a@s#b")


def test_percent_is_accepted_in_names_openzfs_made_itself() -> None:
    assert validate_any("tank/a/%recv", existing=True) is NameKind.DATASET
    with pytest.raises(NameError_, match="'%'"):
        validate_any("tank/a/%recv")
    with pytest.raises(NameError_, match="pool name contains invalid character '%'"):
        validate_any("ta%nk/a", existing=True)


@pytest.mark.parametrize(
    ("pool", "rule"),
    [
        ("", "empty"),
        ("1tank", "pool name must begin with a letter"),
        ("_tank", "pool name must begin with a letter"),
        ("mirror", "pool name is reserved"),
        ("raidz", "pool name is reserved"),
        ("draid", "pool name is reserved"),
        ("raidz2pool", "pool name is reserved"),
        ("spare1", "pool name is reserved"),
        ("log", "pool name is reserved"),
        ("ta/nk", "pool name contains invalid character '/'"),
        ("tank%", "pool name contains invalid character '%'"),
        ("p" * 240, r"pool name is too long \(240 > 239\)"),
    ],
)
def test_pool_rules(pool: str, rule: str) -> None:
    with pytest.raises(NameError_, match=rule):
        validate_pool(pool)


def test_existing_pools_keep_names_libzfs_reserved_later() -> None:
    assert validate_pool("spare1", existing=True) == "spare1"
    assert validate_pool("logs") == "logs"
    assert validate_pool("c0t0d0") == "c0t0d0"  # the disk-like rule is gone from OpenZFS
    with pytest.raises(NameError_, match="reserved"):
        validate_pool("mirror", existing=True)


def test_component_rules() -> None:
    assert validate_component("daily 2026-11-28") == "daily 2026-11-28"
    with pytest.raises(NameError_, match="invalid character '@'"):
        validate_component("a@b")
    with pytest.raises(NameError_, match="invalid character '%'"):
        validate_component("%recv")
    with pytest.raises(NameError_, match="empty bookmark name"):
        validate_component("", what="bookmark")


def test_non_strings_are_name_errors() -> None:
    with pytest.raises(NameError_, match="must be a string, not bytes"):
        validate_any(b"tank")  # type: ignore[arg-type]
    with pytest.raises(NameError_, match="must be a string, not NoneType"):
        validate_pool(None)  # type: ignore[arg-type]


def test_structure_helpers() -> None:
    assert split("tank/a@s 1") == ("tank/a", "@", "s 1")
    assert split("tank/a#b") == ("tank/a", "#", "b")
    assert split("tank/a") == ("tank/a", "", "")
    assert parent("tank/a/b") == "tank/a"
    assert parent("tank/a@s") == "tank/a"
    assert parent("tank") is None
    assert pool_of("tank/a/b@s") == "tank"
    assert names.depth("tank/a/b@x/y") == 2
    assert is_ancestor("tank/a", "tank/a/b")
    assert is_ancestor("tank/a", "tank/a@s1")
    assert is_ancestor("tank", "tank/a/b#m")
    assert not is_ancestor("tank/a", "tank/a")
    assert not is_ancestor("tank/a", "tank/ab")
    assert not is_ancestor("tank/a/b", "tank/a")
    assert rebase("tank/a/b@s1", "tank", "backup/alpha") == "backup/alpha/a/b@s1"
    assert rebase("tank", "tank", "backup/alpha") == "backup/alpha"
    with pytest.raises(NameError_, match="not under 'tank/a'"):
        rebase("tank/ab", "tank/a", "x")


name_alphabet = st.sampled_from(list("ab:.-_ %/@#!\x00\u00e9c0"))


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet=name_alphabet, max_size=40) | st.text(max_size=300))
def test_any_string_validates_or_raises_name_error(name: str) -> None:
    for check in (validate_dataset, validate_snapshot, validate_bookmark, validate_pool):
        try:
            assert check(name) == name
        except NameError_ as exc:
            assert exc.name == name
            assert exc.rule
    try:
        kind = validate_any(name, existing=True)
    except NameError_:
        return
    # A name that validates splits into parts that validate on their own.
    dataset, sep, short = split(name)
    validate_dataset(dataset, existing=True)
    assert kind is {"": NameKind.DATASET, "@": NameKind.SNAPSHOT, "#": NameKind.BOOKMARK}[sep]
    validate_pool(pool_of(name), existing=True)
    if sep:
        assert short
        assert parent(name) == dataset


def test_every_name_listed_by_openzfs_2_3_2_validates_as_its_type() -> None:
    from tests.conftest import ZFS_STREAMS

    kinds = {
        "filesystem": NameKind.DATASET,
        "volume": NameKind.DATASET,
        "snapshot": NameKind.SNAPSHOT,
        "bookmark": NameKind.BOOKMARK,
    }
    rows = (ZFS_STREAMS / "zfs-list.tsv").read_text().splitlines()
    assert len(rows) > 10
    for row in rows:
        cols = row.split("\t")
        name, origin, objtype = cols[0], cols[4], cols[5]
        assert validate_any(name, existing=True) is kinds[objtype]
        if origin != "-":
            assert validate_snapshot(origin, existing=True) == origin
            assert pool_of(origin) == pool_of(name)
