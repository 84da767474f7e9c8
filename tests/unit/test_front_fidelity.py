"""The front end's answers to common mistakes, word for word and code for code, as OpenZFS 2.3.2.

Each expected message is libzfs 2.3.2's (lib/libzfs/libzfs_sendrecv.c, libzfs_dataset.c,
libzfs_util.c, cmd/zfs/zfs_main.c) or recorded in tests/fixtures/zfs-streams/cli-errors.txt;
the comment on each test says which. Commands run in-process over a simulated pool.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conformance.recorded import recorded_failures
from workers.zfs.front import Front
from workers.zfs.sim import SimBackend


@dataclass(frozen=True)
class Ran:
    code: int
    out: bytes
    err: str


class Shell:
    """`zfs`/`zpool` commands against one simulated pool set, with byte streams for stdio."""

    def __init__(self, root: Path) -> None:
        self.backend = SimBackend(root)

    def __call__(self, *argv: str, stdin: bytes = b"") -> Ran:
        out, err = io.BytesIO(), io.StringIO()
        front = Front(self.backend, stdin=io.BytesIO(stdin), stdout=out, stderr=err)
        code = front.run(argv[0], argv[1:])
        return Ran(code, out.getvalue(), err.getvalue())

    def ok(self, *argv: str, stdin: bytes = b"") -> bytes:
        ran = self(*argv, stdin=stdin)
        assert ran.code == 0, ran.err
        return ran.out

    def names(self) -> list[str]:
        return self.ok("zfs", "list", "-H", "-t", "all", "-o", "name").decode().split("\n")[:-1]


@pytest.fixture
def sh(tmp_path: Path) -> Shell:
    shell = Shell(tmp_path / "pools")
    shell.ok("zpool", "create", "tank")
    shell.ok("zfs", "create", "tank/a")
    shell.ok("zfs", "snapshot", "tank/a@1")
    return shell


# -- receive onto an existing dataset ---------------------------------------------------------


def test_full_stream_onto_its_own_dataset_is_refused(sh: Shell) -> None:
    # zfs_receive_one refuses a new-filesystem stream onto an existing dataset before the kernel
    # sees it, so even the dataset's own snapshot sent back to it fails (the sim skipped it)
    stream = sh.ok("zfs", "send", "tank/a@1")
    ran = sh("zfs", "receive", "tank/a", stdin=stream)
    assert (ran.code, ran.err) == (
        1,
        "cannot receive new filesystem stream: destination 'tank/a' exists\n"
        "must specify -F to overwrite it\n",
    )


def test_full_stream_onto_existing_matches_the_recording(sh: Shell) -> None:
    recorded = recorded_failures()["receive full into existing dataset without -F"]
    sh.ok("zfs", "create", "tank/empty")
    before = sh.names()
    ran = sh("zfs", "receive", "tank/empty", stdin=sh.ok("zfs", "send", "tank/a@1"))
    assert (ran.err, ran.code) == (recorded.stderr.replace("fx/", "tank/"), recorded.exit_code)
    assert sh.names() == before


def test_the_message_names_the_dataset_when_a_snapshot_is_given(sh: Shell) -> None:
    # libzfs prints `name`, the destination with its @snapshot chopped off
    sh.ok("zfs", "create", "tank/b")
    ran = sh("zfs", "receive", "tank/b@x", stdin=sh.ok("zfs", "send", "tank/a@1"))
    assert ran.err.startswith("cannot receive new filesystem stream: destination 'tank/b' exists")


def test_forced_full_stream_onto_dataset_with_snapshots_is_refused(sh: Shell) -> None:
    # -F does not destroy snapshots for a full stream: "destination has snapshots (eg. %s)"
    sh.ok("zfs", "create", "tank/b")
    sh.ok("zfs", "snapshot", "tank/b@old")
    before = sh.names()
    ran = sh("zfs", "receive", "-F", "tank/b", stdin=sh.ok("zfs", "send", "tank/a@1"))
    assert (ran.code, ran.err) == (
        1,
        "cannot receive new filesystem stream: destination has snapshots (eg. tank/b@old)\n"
        "must destroy them to overwrite it\n",
    )
    assert sh.names() == before


def test_forced_full_stream_replaces_a_dataset_without_snapshots(sh: Shell) -> None:
    mountpoint = sh.backend.mountpoint("tank/a")
    assert mountpoint is not None
    (Path(mountpoint) / "kept.txt").write_bytes(b"from a\n")
    sh.ok("zfs", "snapshot", "tank/a@2")
    sh.ok("zfs", "create", "tank/b")
    target = sh.backend.mountpoint("tank/b")
    assert target is not None
    (Path(target) / "lost.txt").write_bytes(b"overwritten\n")
    sh.ok("zfs", "receive", "-F", "tank/b", stdin=sh.ok("zfs", "send", "tank/a@2"))
    assert sorted(p.name for p in Path(target).iterdir()) == ["kept.txt"]
    assert "tank/b@2" in sh.names()


def test_forced_full_stream_onto_a_clone_is_refused(sh: Shell) -> None:
    sh.ok("zfs", "clone", "tank/a@1", "tank/c")
    ran = sh("zfs", "receive", "-F", "tank/c", stdin=sh.ok("zfs", "send", "tank/a@1"))
    assert (ran.code, ran.err) == (
        1,
        "cannot receive new filesystem stream: destination 'tank/c' is a clone\n"
        "must destroy it to overwrite it\n",
    )


def test_incremental_already_received_is_consumed(sh: Shell) -> None:
    # recorded: "receive incremental s1->s2 onto fx/base which already has s2" exits 0
    sh.ok("zfs", "snapshot", "tank/a@2")
    ran = sh("zfs", "receive", "tank/a", stdin=sh.ok("zfs", "send", "-i", "@1", "tank/a@2"))
    assert (ran.code, ran.err) == (0, "")


# -- send -i ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "snapshot"),
    [("@1", "tank/a@1"), ("tank/a@1", "tank/a@1"), ("@2", "tank/a@1"), ("#m1", "tank/a@1")],
    ids=["same-short", "same-full", "later", "bookmark-of-it"],
)
def test_send_from_a_snapshot_not_earlier_is_refused(
    sh: Shell, source: str, snapshot: str
) -> None:
    # zfs_send_one_cb_impl: snapshot_is_before() (the kernel's EXDEV for a bookmark)
    sh.ok("zfs", "snapshot", "tank/a@2")
    sh.ok("zfs", "bookmark", "tank/a@1", "tank/a#m1")
    ran = sh("zfs", "send", "-i", source, snapshot)
    assert (ran.code, ran.out) == (1, b"")
    assert ran.err == f"warning: cannot send '{snapshot}': not an earlier snapshot from the same fs\n"


def test_send_from_another_filesystem_is_refused(sh: Shell) -> None:
    sh.ok("zfs", "create", "tank/b")
    sh.ok("zfs", "snapshot", "tank/b@0")
    sh.ok("zfs", "snapshot", "tank/a@2")
    ran = sh("zfs", "send", "-i", "tank/b@0", "tank/a@2")
    assert ran.code == 1
    assert ran.err == "warning: cannot send 'tank/a@2': not an earlier snapshot from the same fs\n"


def test_send_from_the_origin_of_a_clone_is_allowed(sh: Shell) -> None:
    sh.ok("zfs", "snapshot", "tank/a@2")  # newer than the origin: not in the clone's history
    sh.ok("zfs", "clone", "tank/a@1", "tank/c")
    sh.ok("zfs", "snapshot", "tank/c@c1")
    assert sh.ok("zfs", "send", "-i", "tank/a@1", "tank/c@c1")
    ran = sh("zfs", "send", "-i", "tank/a@2", "tank/c@c1")
    assert ran.err == "warning: cannot send 'tank/c@c1': not an earlier snapshot from the same fs\n"
