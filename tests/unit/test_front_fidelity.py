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
def test_send_from_a_snapshot_not_earlier_is_refused(sh: Shell, source: str, snapshot: str) -> None:
    # zfs_send_one_cb_impl: snapshot_is_before() (the kernel's EXDEV for a bookmark)
    sh.ok("zfs", "snapshot", "tank/a@2")
    sh.ok("zfs", "bookmark", "tank/a@1", "tank/a#m1")
    ran = sh("zfs", "send", "-i", source, snapshot)
    assert (ran.code, ran.out) == (1, b"")
    assert (
        ran.err == f"warning: cannot send '{snapshot}': not an earlier snapshot from the same fs\n"
    )


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


# -- mount and unmount -------------------------------------------------------------------------


def test_unmount_keeps_the_files_and_mount_brings_them_back(sh: Shell) -> None:
    where = sh.backend.mountpoint("tank/a")
    assert where is not None
    (Path(where) / "f.txt").write_bytes(b"kept\n")
    sh.ok("zfs", "create", "tank/a/child")
    listed = sh.ok("zfs", "mount").decode()
    assert f"{'tank/a/child':<30}  {where}/child\n" in listed
    sh.ok("zfs", "unmount", "tank/a")  # the child goes with it, as zfs_unmountall does
    assert "tank/a" not in sh.ok("zfs", "mount").decode()
    assert not (Path(where) / "f.txt").exists()
    ran = sh("zfs", "unmount", "tank/a")
    assert (ran.code, ran.err) == (1, "cannot unmount 'tank/a': not currently mounted\n")
    sh.ok("zfs", "mount", "tank/a")
    assert (Path(where) / "f.txt").read_bytes() == b"kept\n"
    ran = sh("zfs", "mount", "tank/a")
    assert (ran.code, ran.err) == (1, "cannot mount 'tank/a': filesystem already mounted\n")
    sh.ok("zfs", "mount", "-a")
    assert f"{'tank/a/child':<30}  {where}/child\n" in sh.ok("zfs", "mount").decode()
    sh.ok("zfs", "umount", where)  # by its mountpoint, under its other name
    assert sh.backend.get("tank/a", ["mounted"])["mounted"].value == "no"


@pytest.mark.parametrize(
    ("argv", "err"),
    [
        (("mount", "tank/nope"), "cannot open 'tank/nope': dataset does not exist\n"),
        (("unmount", "tank/nope"), "cannot open 'tank/nope': dataset does not exist\n"),
        (("mount", "tank/none"), "cannot mount 'tank/none': no mountpoint set\n"),
        (("mount", "tank/off"), "cannot mount 'tank/off': 'canmount' property is set to 'off'\n"),
        (
            ("mount", "tank/vol"),
            "cannot open 'tank/vol': operation not applicable to datasets of this type\n",
        ),
    ],
)
def test_mount_refusals(sh: Shell, argv: tuple[str, ...], err: str) -> None:
    sh.ok("zfs", "create", "-o", "mountpoint=none", "tank/none")
    sh.ok("zfs", "create", "-o", "canmount=off", "tank/off")
    sh.ok("zfs", "create", "-V", "1M", "tank/vol")
    ran = sh("zfs", *argv)
    assert (ran.code, ran.err) == (1, err)


# -- common mistakes ---------------------------------------------------------------------------

TRAILER = (
    "\nFor the property list, run: zfs set|get\n"
    "\nFor the delegated permission list, run: zfs allow|unallow\n"
    "\nFor further help on a command or topic, run: zfs help [<topic>]\n"
)


@pytest.mark.parametrize(
    ("argv", "code", "err"),
    [
        # libzfs_dataset.c check_parents
        (("create", "tank/nope/x"), 1, "cannot create 'tank/nope/x': parent does not exist\n"),
        (("create", "nopool/x"), 1, "cannot create 'nopool/x': no such pool 'nopool'\n"),
        # zfs_do_snapshot: zfs_open fails, then usage(B_FALSE)
        (
            ("snapshot", "tank/nope@s"),
            2,
            "cannot open 'tank/nope': dataset does not exist\nusage:\n"
            "\tsnapshot [-r] [-o property=value] ... <filesystem|volume>@<snap> ...\n" + TRAILER,
        ),
        # zfs_validate_name: NAME_ERR_INVALCHAR, and '%' on its own
        (
            ("create", "tank/bad name!"),
            1,
            "cannot create 'tank/bad name!': invalid character '!' in name\n",
        ),
        (("create", "tank/a%b"), 1, "cannot create 'tank/a%b': invalid character % in name\n"),
        (
            ("snapshot", "tank/a@x@y"),
            1,
            "cannot create snapshot 'tank/a@x@y': multiple '@' and/or '#' delimiters in name\n",
        ),
        # zfs_do_clone: zfs_open(snapshot)
        (
            ("clone", "tank/a@nope", "tank/c"),
            1,
            "cannot open 'tank/a@nope': dataset does not exist\n",
        ),
        # zfs_do_bookmark: lzc_bookmark EEXIST; a missing source is a usage error
        (
            ("bookmark", "tank/a@1", "tank/a#m"),
            1,
            "cannot create bookmark 'tank/a#m': bookmark exists\n",
        ),
        (
            ("bookmark", "tank/a@nope", "tank/a#n"),
            2,
            "cannot open 'tank/a@nope': dataset does not exist\nusage:\n"
            "\tbookmark <snapshot|bookmark> <newbookmark>\n" + TRAILER,
        ),
        # zfs_release: lzc_get_holds fails (ENOENT); EZFS_REFTAG_RELE; zfs_hold: EZFS_REFTAG_HOLD
        (
            ("release", "keep", "tank/a@nope"),
            1,
            "cannot release hold from snapshot 'tank/a@nope': dataset does not exist\n",
        ),
        (
            ("release", "keep", "tank/nope@1"),
            1,
            "cannot open 'tank/nope': dataset does not exist\n",
        ),
        (
            ("release", "other", "tank/a@1"),
            1,
            "cannot release hold from snapshot 'tank/a@1': no such tag on this dataset\n",
        ),
        (
            ("hold", "keep", "tank/a@1"),
            1,
            "cannot hold snapshot 'tank/a@1': tag already exists on this dataset\n",
        ),
        # zfs_valid_proplist
        (
            ("set", "bogus=1", "tank/a"),
            255,  # OpenZFS 2.3.2 in the lab: zfs set's callback returns -1
            "cannot set property for 'tank/a': invalid property 'bogus'\n",
        ),
        (
            ("create", "-o", "bogus=1", "tank/p"),
            1,
            "cannot create 'tank/p': invalid property 'bogus'\n",
        ),
        # zfs_do_create: zfs_nicestrtonum, then exit 1 without usage
        (
            ("create", "-V", "99999999999999999999999", "tank/vol2"),
            1,
            "bad volume size '99999999999999999999999': numeric value is too large\n",
        ),
        (
            ("create", "-V", "lots", "tank/v"),
            1,
            "bad volume size 'lots': bad numeric value 'lots'\n",
        ),
    ],
)
def test_common_mistakes_in_openzfs_words(
    sh: Shell, argv: tuple[str, ...], code: int, err: str
) -> None:
    sh.ok("zfs", "bookmark", "tank/a@1", "tank/a#m")
    sh.ok("zfs", "hold", "keep", "tank/a@1")
    before = sh.names()
    ran = sh("zfs", *argv)
    assert (ran.code, ran.err) == (code, err)
    assert sh.names() == before


@pytest.mark.parametrize(
    ("stdin", "err"),
    [
        (b"", "cannot receive: failed to read from stream\n"),
        (b"hello\n", "cannot receive: failed to read from stream\n"),  # shorter than a BEGIN
        (bytes(range(256)) * 4, "cannot receive: invalid stream (bad magic number)\n"),
    ],
    ids=["empty", "short", "garbage"],
)
def test_garbage_on_receive(sh: Shell, stdin: bytes, err: str) -> None:
    recorded = recorded_failures()["garbage"]
    ran = sh("zfs", "receive", "tank/g", stdin=stdin)
    assert (ran.code, ran.err) == (recorded.exit_code, err)
    assert "tank/g" not in sh.names()


# -- an interrupted send | receive -----------------------------------------------------------


class CutStdin(io.BytesIO):
    """A pipe whose reader is interrupted (Ctrl-C, SIGTERM) once ``cut`` bytes have come."""

    def __init__(self, data: bytes, cut: int) -> None:
        super().__init__(data)
        self.cut = cut

    def read(self, size: int | None = -1) -> bytes:
        if self.tell() >= self.cut:
            raise KeyboardInterrupt
        wanted = self.cut - self.tell() if size is None or size < 0 else size
        return super().read(min(wanted, self.cut - self.tell()))


class CutStdout(io.BytesIO):
    def write(self, data: bytes) -> int:  # type: ignore[override]
        raise KeyboardInterrupt


def _big_stream(sh: Shell) -> bytes:
    where = sh.backend.mountpoint("tank/a")
    assert where is not None
    (Path(where) / "big.bin").write_bytes(bytes(range(256)) * 4096)
    sh.ok("zfs", "snapshot", "tank/a@big")
    return sh.ok("zfs", "send", "tank/a@big")


def test_interrupted_resumable_receive_says_so_and_keeps_the_part(sh: Shell) -> None:
    stream = _big_stream(sh)
    err = io.StringIO()
    front = Front(
        sh.backend, stdin=CutStdin(stream, len(stream) // 2), stdout=io.BytesIO(), stderr=err
    )
    code = front.run("zfs", ["receive", "-s", "tank/b"])
    token = sh.backend.get("tank/b", ["receive_resume_token"])["receive_resume_token"].value
    assert (code, err.getvalue()) == (
        1,
        "cannot receive new filesystem stream: checksum mismatch or incomplete stream.\n"
        "Partially received snapshot is saved.\n"
        "A resuming stream can be generated on the sending system by running:\n"
        f"    zfs send -t {token}\n",
    )
    sh.ok("zfs", "receive", "-s", "tank/b", stdin=sh.ok("zfs", "send", "-t", token))
    assert "tank/b@big" in sh.names()


def test_interrupted_receive_without_s_leaves_nothing(sh: Shell) -> None:
    stream = _big_stream(sh)
    err = io.StringIO()
    front = Front(sh.backend, stdin=CutStdin(stream, 4096), stdout=io.BytesIO(), stderr=err)
    assert front.run("zfs", ["receive", "tank/b"]) == 1
    assert err.getvalue() == "cannot receive new filesystem stream: incomplete stream\n"
    assert "tank/b" not in sh.names()


def test_interrupted_send_is_silent(sh: Shell) -> None:
    _big_stream(sh)
    err = io.StringIO()
    front = Front(sh.backend, stdin=io.BytesIO(), stdout=CutStdout(), stderr=err)
    assert front.run("zfs", ["send", "tank/a@big"]) == 130
    assert err.getvalue() == ""


# -- bytes that are not UTF-8 ----------------------------------------------------------------


def test_a_byte_that_is_not_utf8_is_named_and_stored_as_the_byte(sh: Shell) -> None:
    # argv's \xff arrives as the lone surrogate \udcff (surrogateescape): zfs prints the byte
    ran = sh("zfs", "create", "tank/\udcff")
    assert (ran.code, ran.err) == (
        1,
        "cannot create 'tank/\udcff': invalid character '\udcff' in name\n",
    )
    ran = sh("zfs", "create", "tank/a\x01b")
    assert ran.err == "cannot create 'tank/a\x01b': invalid character '\x01' in name\n"
    sh.ok("zfs", "set", "user:x=\udcff", "tank/a")
    assert sh.ok("zfs", "get", "-H", "-o", "value", "user:x", "tank/a") == b"\xff\n"
