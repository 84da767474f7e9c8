"""The zfs/zpool front end over the simulated backend: arguments, formats, failures, codes.

Commands run in-process through workers.zfs.front.Front with byte streams standing in for the
terminal; test_front_pipe.py runs the real command line in processes joined by a pipe.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from protocol import names
from protocol.errors import DatasetBusy, HasDependentClones, NameError_
from workers.zfs.base import SendSpec
from workers.zfs.errormap import error_from_stderr
from workers.zfs.front import Front
from workers.zfs.front_table import nicenum
from workers.zfs.parse import (
    parse_diff,
    parse_get,
    parse_holds,
    parse_list,
    parse_pools,
    parse_receive_verbose,
)
from workers.zfs.sim import SimBackend


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


class Shell:
    """Runs front-end commands against one simulated pool set."""

    def __init__(self, root: Path) -> None:
        self.backend = SimBackend(root)

    def __call__(self, *argv: str, stdin: bytes = b"") -> Ran:
        out, err = io.BytesIO(), io.StringIO()
        front = Front(self.backend, stdin=io.BytesIO(stdin), stdout=out, stderr=err)
        code = front.run(argv[0], argv[1:])
        return Ran(code, out.getvalue().decode(), err.getvalue())

    def ok(self, *argv: str) -> str:
        ran = self(*argv)
        assert ran.code == 0, ran.err
        return ran.out


@pytest.fixture
def sh(tmp_path: Path) -> Shell:
    shell = Shell(tmp_path / "pools")
    shell.ok("zpool", "create", "tank")
    shell.ok("zfs", "create", "tank/a")
    shell.ok("zfs", "snapshot", "tank/a@s1")
    return shell


def test_list_scripted_parsable_matches_the_inventory(sh: Shell) -> None:
    out = sh.ok("zfs", "list", "-Hp", "-t", "all", "-o", "name,type,guid,createtxg")
    listed = parse_list(out, ("name", "type", "guid", "createtxg"))
    expected = sorted(sh.backend.list(None), key=lambda o: o.name)
    assert sorted((o.name, o.guid, o.createtxg) for o in listed) == [
        (o.name, o.guid, o.createtxg) for o in expected
    ]


def test_list_hides_snapshots_unless_asked(sh: Shell) -> None:
    names_shown = sh.ok("zfs", "list", "-H", "-o", "name").split()
    assert names_shown == ["tank", "tank/a"]
    snaps = sh.ok("zfs", "list", "-H", "-o", "name", "-t", "snapshot").split()
    assert snaps == ["tank/a@s1"]
    named = sh.ok("zfs", "list", "-H", "-o", "name", "tank/a@s1").split()
    assert named == ["tank/a@s1"]


def test_list_depth_and_recursion(sh: Shell) -> None:
    sh.ok("zfs", "create", "tank/a/b")
    sh.ok("zfs", "create", "tank/a/b/c")
    assert sh.ok("zfs", "list", "-H", "-o", "name", "tank/a").split() == ["tank/a"]
    assert sh.ok("zfs", "list", "-H", "-o", "name", "-d", "1", "tank/a").split() == [
        "tank/a", "tank/a/b",
    ]  # fmt: skip
    assert sh.ok("zfs", "list", "-H", "-o", "name", "-r", "tank/a").split() == [
        "tank/a", "tank/a/b", "tank/a/b/c",
    ]  # fmt: skip


def test_list_human_table_aligns_columns_and_uses_units(sh: Shell) -> None:
    out = sh.ok("zfs", "list", "-o", "name,used,referenced")
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "USED", "REFER"]
    # every row as wide as the header: numbers right-aligned under their titles
    assert len({len(line) for line in lines}) == 1
    used = {o.name: o.used for o in sh.backend.list(None)}
    for line in lines[1:]:
        name, shown_used, _ = line.split()
        assert shown_used == nicenum(used[name])


def test_list_sorts_by_a_property(sh: Shell) -> None:
    sh.ok("zfs", "snapshot", "tank/a@s2")
    sh.ok("zfs", "snapshot", "tank/a@s3")
    args = ("zfs", "list", "-H", "-o", "name", "-t", "snapshot")
    assert sh.ok(*args, "-S", "createtxg").split() == ["tank/a@s3", "tank/a@s2", "tank/a@s1"]
    assert sh.ok(*args, "-s", "createtxg").split() == ["tank/a@s1", "tank/a@s2", "tank/a@s3"]


def test_set_get_inherit_user_properties(sh: Shell) -> None:
    sh.ok("zfs", "create", "tank/a/child")
    sh.ok("zfs", "set", "zfleet:role=primary", "tank/a")
    got = parse_get(sh.ok("zfs", "get", "-Hp", "-r", "zfleet:role", "tank/a"))
    assert got["tank/a"]["zfleet:role"].source == "local"
    assert got["tank/a/child"]["zfleet:role"].source == "inherited from tank/a"
    sh.ok("zfs", "inherit", "zfleet:role", "tank/a")
    after = parse_get(sh.ok("zfs", "get", "-Hp", "zfleet:role", "tank/a"))
    assert after["tank/a"]["zfleet:role"].value == "-"


def test_get_default_columns(sh: Shell) -> None:
    lines = sh.ok("zfs", "get", "guid", "tank/a").splitlines()
    assert lines[0].split() == ["NAME", "PROPERTY", "VALUE", "SOURCE"]
    assert lines[1].split()[:3] == ["tank/a", "guid", str(sh.backend.list("tank/a")[0].guid)]


def test_holds_block_destroy_with_openzfs_words(sh: Shell) -> None:
    sh.ok("zfs", "hold", "keep", "tank/a@s1")
    assert parse_holds(sh.ok("zfs", "holds", "-H", "tank/a@s1")) == ["keep"]
    ran = sh("zfs", "destroy", "tank/a@s1")
    assert ran.code == 1
    assert isinstance(error_from_stderr(ran.err, ran.code), DatasetBusy)
    sh.ok("zfs", "release", "keep", "tank/a@s1")
    sh.ok("zfs", "destroy", "tank/a@s1")
    assert "tank/a@s1" not in sh.ok("zfs", "list", "-H", "-o", "name", "-t", "all")


def test_destroy_with_clones_refused_then_R_destroys_them(sh: Shell) -> None:
    sh.ok("zfs", "clone", "tank/a@s1", "tank/c")
    ran = sh("zfs", "destroy", "tank/a@s1")
    assert ran.code == 1
    assert isinstance(error_from_stderr(ran.err, ran.code), HasDependentClones)
    assert "tank/c" in ran.err.splitlines()
    sh.ok("zfs", "destroy", "-R", "tank/a@s1")
    assert sh.ok("zfs", "list", "-H", "-o", "name", "-t", "all").split() == ["tank", "tank/a"]


def test_rollback_needs_r(sh: Shell) -> None:
    sh.ok("zfs", "snapshot", "tank/a@s2")
    ran = sh("zfs", "rollback", "tank/a@s1")
    assert ran.code == 1
    assert ran.err.splitlines()[-1] == "tank/a@s2"
    sh.ok("zfs", "rollback", "-r", "tank/a@s1")
    assert "tank/a@s2" not in sh.ok("zfs", "list", "-H", "-o", "name", "-t", "snapshot")


@pytest.mark.parametrize(
    "argv",
    [
        ("zfs", "create", "tank/bad!"),
        ("zfs", "create", "tank//a"),
        ("zfs", "snapshot", "tank/a@"),
        ("zfs", "snapshot", "tank/a@x@y"),
        ("zfs", "bookmark", "tank/a@s1", "tank/a#bad!"),
        ("zfs", "clone", "tank/a@s1", "tank/" + "x" * 300),
        ("zpool", "create", "1tank"),
    ],
)
def test_bad_names_refused_with_the_rule_and_nothing_changes(
    sh: Shell, argv: tuple[str, ...]
) -> None:
    before = sh.ok("zfs", "list", "-H", "-o", "name", "-t", "all")
    ran = sh(*argv)
    assert ran.code == 1
    error = error_from_stderr(ran.err, ran.code)
    assert isinstance(error, NameError_), ran.err
    bad = next(a for a in argv[2:] if not names.is_valid(a) or a == "1tank")
    assert f"'{bad}'" in ran.err
    assert sh.ok("zfs", "list", "-H", "-o", "name", "-t", "all") == before


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("zfs", "list", "-q"), "invalid option 'q'"),
        (("zfs", "list", "-o"), "missing argument for 'o' option"),
        (("zfs", "create"), "missing filesystem argument"),
        (("zfs", "set", "tank/a"), "missing property=value"),
        (("zfs", "frobnicate"), "unrecognized command 'frobnicate'"),
        (("zfs", "send", "-i", "@s1", "-I", "@s1", "tank/a@s1"), "mutually exclusive"),
        (("zpool", "get"), "missing property argument"),
        (("zfs", "list", "-o", "name,frobness"), "bad property list: invalid property 'frobness'"),
        (("zfs", "get", "frobness", "tank/a"), "bad property list: invalid property 'frobness'"),
        (("zfs", "list", "-s", "frobness"), "invalid property 'frobness'"),
        (("zfs", "inherit", "frobness", "tank/a"), "invalid property 'frobness'"),
    ],
)
def test_bad_arguments_are_usage_errors(sh: Shell, argv: tuple[str, ...], says: str) -> None:
    before = sh.ok("zfs", "list", "-H", "-o", "name", "-t", "all")
    ran = sh(*argv)
    assert ran.code == 2
    assert says in ran.err
    assert "usage:" in ran.err
    assert sh.ok("zfs", "list", "-H", "-o", "name", "-t", "all") == before


def test_missing_dataset(sh: Shell) -> None:
    ran = sh("zfs", "list", "tank/nope")
    assert (ran.code, ran.err) == (1, "cannot open 'tank/nope': dataset does not exist\n")


def test_zpool_list_and_get(sh: Shell) -> None:
    (pool,) = parse_pools(sh.ok("zpool", "list", "-Hp", "-o", "name,size,allocated,free,health"))
    (info,) = sh.backend.pools()
    assert pool == info
    got = parse_get(sh.ok("zpool", "get", "-Hp", "size,health", "tank"))
    assert got["tank"]["size"].value == str(info.size)
    assert sh.ok("zpool", "list").splitlines()[0].split()[:4] == ["NAME", "SIZE", "ALLOC", "FREE"]
    ran = sh("zpool", "list", "nopool")
    assert (ran.code, ran.err) == (1, "cannot open 'nopool': no such pool\n")


def test_send_refuses_a_terminal(sh: Shell) -> None:
    out, err = io.BytesIO(), io.StringIO()
    front = Front(sh.backend, stdin=io.BytesIO(), stdout=out, stderr=err, stdout_is_tty=True)
    assert front.run("zfs", ["send", "tank/a@s1"]) == 1
    assert "can not be written to a terminal" in err.getvalue()
    assert out.getvalue() == b""


def test_receive_refuses_garbage_before_touching_the_target(sh: Shell) -> None:
    ran = sh("zfs", "receive", "tank/new", stdin=b"this is not a zfs stream" * 20)
    assert (ran.code, ran.err) == (1, "cannot receive: invalid stream (bad magic number)\n")
    assert "tank/new" not in sh.ok("zfs", "list", "-H", "-o", "name")


def stream_of(sh: Shell, snapshot: str) -> bytes:
    sender = sh.backend.send(SendSpec(snapshot))
    data = b"".join(iter(lambda: sender.read(1 << 16), b""))
    sender.close()
    return data


def test_receive_d_and_e_place_the_dataset_below_the_target(sh: Shell) -> None:
    stream = stream_of(sh, "tank/a@s1")
    sh.ok("zfs", "create", "tank/x")
    sh.ok("zfs", "create", "tank/y")
    assert sh("zfs", "receive", "-d", "tank/x", stdin=stream).code == 0
    assert sh("zfs", "receive", "-e", "tank/y", stdin=stream).code == 0
    listed = sh.ok("zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-r", "tank/x", "tank/y")
    assert listed.split() == ["tank/x/a@s1", "tank/y/a@s1"]


def test_receive_verbose_names_what_arrived(sh: Shell) -> None:
    ran = sh("zfs", "receive", "-v", "tank/copy", stdin=stream_of(sh, "tank/a@s1"))
    assert ran.code == 0
    assert parse_receive_verbose(ran.out) == "tank/copy@s1"


def test_abort_discards_a_partial_receive(sh: Shell) -> None:
    mountpoint = sh.backend.mountpoint("tank/a")
    assert mountpoint is not None
    (Path(mountpoint) / "blob").write_bytes(os.urandom(500_000))
    sh.ok("zfs", "snapshot", "tank/a@big")
    stream = stream_of(sh, "tank/a@big")
    ran = sh("zfs", "receive", "-s", "tank/p", stdin=stream[: len(stream) // 2])
    assert ran.code == 1 and "zfs send -t " in ran.err
    assert "tank/p" in sh.ok("zfs", "list", "-H", "-o", "name")
    sh.ok("zfs", "receive", "-A", "tank/p")
    # a partial new filesystem goes away entirely, as in OpenZFS
    assert sh("zfs", "list", "tank/p").err == "cannot open 'tank/p': dataset does not exist\n"


def test_diff_lists_changes_between_snapshots(sh: Shell) -> None:
    mountpoint = sh.backend.mountpoint("tank/a")
    assert mountpoint is not None
    (Path(mountpoint) / "new file.txt").write_text("hi\n")
    sh.ok("zfs", "snapshot", "tank/a@s2")
    out = sh.ok("zfs", "diff", "-H", "tank/a@s1", "tank/a@s2")
    entries = parse_diff(out)
    assert entries == sh.backend.diff("tank/a@s1", "tank/a@s2")
    assert any(e.path.endswith("/new file.txt") for e in entries)
    assert "new\\0040file.txt" in out  # spaces escaped as zfs diff does


def test_volumes_bookmarks_and_renames(sh: Shell) -> None:
    sh.ok("zfs", "create", "-V", "8M", "tank/vol")
    got = parse_get(sh.ok("zfs", "get", "-Hp", "volsize,type", "tank/vol"))
    assert got["tank/vol"]["volsize"].value == str(8 << 20)
    assert got["tank/vol"]["type"].value == "volume"
    sh.ok("zfs", "bookmark", "tank/a@s1", "#b1")
    marks = sh.ok("zfs", "list", "-H", "-o", "name,guid", "-t", "bookmark", "tank/a")
    snap_guid = sh.backend.list("tank/a@s1")[0].guid
    assert marks.split() == ["tank/a#b1", str(snap_guid)]
    sh.ok("zfs", "rename", "tank/a@s1", "@first")
    assert sh.ok("zfs", "list", "-H", "-o", "name", "-t", "snapshot").split() == ["tank/a@first"]


def test_zpool_create_with_fs_properties_and_destroy(sh: Shell) -> None:
    sh.ok("zpool", "create", "-O", "zfleet:role=spare", "pool2", "/dev/fake-disk")
    got = parse_get(sh.ok("zfs", "get", "-Hp", "zfleet:role", "pool2"))
    assert got["pool2"]["zfleet:role"].value == "spare"
    assert sh.ok("zpool", "list", "-H", "-o", "name").split() == ["pool2", "tank"]
    sh.ok("zpool", "destroy", "pool2")
    assert sh.ok("zpool", "list", "-H", "-o", "name").split() == ["tank"]
    ran = sh("zpool", "destroy", "pool2")
    assert (ran.code, ran.err) == (1, "cannot open 'pool2': no such pool\n")


def test_inherit_r_clears_the_whole_subtree(sh: Shell) -> None:
    sh.ok("zfs", "create", "tank/a/b")
    sh.ok("zfs", "set", "zfleet:x=1", "tank/a")
    sh.ok("zfs", "set", "zfleet:x=2", "tank/a/b")
    sh.ok("zfs", "inherit", "-r", "zfleet:x", "tank/a")
    got = parse_get(sh.ok("zfs", "get", "-Hp", "-r", "-t", "filesystem", "zfleet:x", "tank/a"))
    assert {name: props["zfleet:x"].value for name, props in got.items()} == {
        "tank/a": "-", "tank/a/b": "-",
    }  # fmt: skip


def test_help_lists_every_command(sh: Shell) -> None:
    out = sh.ok("zfs", "--help")
    for command in ("list", "get", "send", "receive", "load-key", "diff"):
        assert f"\t{command} " in out
    assert "create" in sh.ok("zpool", "-?")
