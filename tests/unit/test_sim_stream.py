"""Send and receive between simulated pools: OpenZFS streams, faithful data, receive rules."""

from __future__ import annotations

import io
import os
import subprocess
import threading
from pathlib import Path

import pytest

from protocol.errors import (
    DatasetExists,
    DestinationModified,
    InvalidOperation,
    NoCommonSnapshot,
    OriginMissing,
    ResumeTokenStale,
    StreamChecksumError,
    StreamFormatError,
    StreamIncomplete,
    TokenError,
    ZfsError,
)
from protocol.stream import DrrType, decode_resume_token, parse_begin, read_records
from tests.conftest import ZFS_STREAMS, need_binary
from tests.unit.sim_helpers import mnt, new_sim, send_bytes, snapshot_tree
from workers.zfs.base import ObjType, ReceiveSpec, SendSpec
from workers.zfs.sim import SimBackend


@pytest.fixture
def sim(tmp_path: Path) -> SimBackend:
    return new_sim(tmp_path, ["fx", "dst"], ["fx/base"])


def receive_bytes(sim: SimBackend, data: bytes, target: str, **kw: object) -> str | None:
    sink = sim.receive(ReceiveSpec(target, **kw))  # type: ignore[arg-type]
    for i in range(0, len(data), 50_000):
        sink.write(data[i : i + 50_000])
    return sink.finish().snapshot


def populate(root: Path) -> None:
    """A tree with every kind of thing a faithful replica must carry over."""
    (root / "hello.txt").write_text("hello zfleet\n")
    (root / "random.bin").write_bytes(os.urandom(300_000))
    (root / "etc").mkdir()
    for i in range(20):
        (root / "etc" / f"conf{i}").write_text(f"config line {i}\n")
    (root / "empty-dir").mkdir()
    (root / "deep" / "er" / "est").mkdir(parents=True)
    os.symlink("hello.txt", root / "link")
    os.symlink("/nowhere/at/all", root / "dangling")
    os.link(root / "hello.txt", root / "hard")
    with open(root / "sparse.img", "wb") as fp:
        fp.seek(5 << 20)
        fp.write(b"tail")
    (root / "secret").write_text("mode 600")
    os.chmod(root / "secret", 0o600)
    os.chmod(root / "etc", 0o750)
    (root / "script.sh").write_text("#!/bin/sh\n")
    os.chmod(root / "script.sh", 0o755)


def change(root: Path) -> None:
    with open(root / "hello.txt", "a") as fp:
        fp.write("changed\n")
    (root / "etc" / "conf3").unlink()
    with open(root / "random.bin", "r+b") as fp:
        fp.seek(40_960)
        fp.write(os.urandom(8192))
    os.rename(root / "etc" / "conf4", root / "etc" / "conf4-renamed")
    (root / "deep" / "er" / "est").rmdir()
    (root / "new-empty").mkdir()
    os.unlink(root / "link")
    os.symlink("random.bin", root / "link")
    with open(root / "sparse.img", "r+b") as fp:
        fp.truncate(3 << 20)  # shrink: the tail goes, the hole stays
    os.chmod(root / "script.sh", 0o700)


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def test_full_then_incremental_replica_is_faithful(sim: SimBackend) -> None:
    src = mnt(sim, "fx/base")
    populate(src)
    sim.snapshot(["fx/base@s1"])
    assert receive_bytes(sim, send_bytes(sim, SendSpec("fx/base@s1")), "dst/copy") == "dst/copy@s1"
    dst = mnt(sim, "dst/copy")
    assert snapshot_tree(dst) == snapshot_tree(src)
    full_size = sim.estimate(SendSpec("fx/base@s1"))
    change(src)
    sim.snapshot(["fx/base@s2"])
    incr = send_bytes(sim, SendSpec("fx/base@s2", from_snap="@s1"))
    receive_bytes(sim, incr, "dst/copy")
    assert snapshot_tree(dst) == snapshot_tree(src)
    assert not (dst / "etc" / "conf3").exists() and not (dst / "deep" / "er" / "est").exists()
    assert (dst / "new-empty").is_dir() and os.readlink(dst / "link") == "random.bin"
    # Holes stay holes: 3 MiB apparent, nearly nothing allocated.
    assert os.path.getsize(dst / "sparse.img") == 3 << 20
    assert allocated(dst / "sparse.img") < 64 * 1024
    assert os.stat(dst / "hard").st_ino == os.stat(dst / "hello.txt").st_ino
    # Guids carry over, createtxg is the target's own.
    src_snap, dst_snap = sim.list("fx/base@s2")[0], sim.list("dst/copy@s2")[0]
    assert src_snap.guid == dst_snap.guid
    # The incremental carries the change (whole 128 KiB records), not the dataset.
    assert len(incr) < full_size / 2


def test_setuid_and_setgid_bits_survive_a_receive_with_other_owners(sim: SimBackend) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving files other owners needs root")
    src = mnt(sim, "fx/base")
    for name, mode, gid in (("passwd", 0o4755, 0), ("chage", 0o2755, 42), ("plain", 0o644, 7)):
        (src / name).write_bytes(b"\x7fELF" * 100)
        os.chown(src / name, 0, gid)
        os.chmod(src / name, mode)
    sim.snapshot(["fx/base@s1"])
    receive_bytes(sim, send_bytes(sim, SendSpec("fx/base@s1")), "dst/suid")
    dst = mnt(sim, "dst/suid")
    got = {n: (os.stat(dst / n).st_mode & 0o7777, os.stat(dst / n).st_gid) for n in
           ("passwd", "chage", "plain")}  # fmt: skip
    assert got == {"passwd": (0o4755, 0), "chage": (0o2755, 42), "plain": (0o644, 7)}


def test_streams_pass_zstream_dump(sim: SimBackend, tmp_path: Path) -> None:
    zstream = need_binary("zstream")
    populate(mnt(sim, "fx/base"))
    sim.snapshot(["fx/base@s1"])
    change(mnt(sim, "fx/base"))
    sim.snapshot(["fx/base@s2"])
    sim.create("fx/base/kid")
    sim.snapshot(["fx/base@s3"], recursive=True)
    specs = [
        SendSpec("fx/base@s1"),
        SendSpec("fx/base@s2", from_snap="@s1"),
        SendSpec("fx/base@s3", from_snap="@s1", intermediates=True),
        SendSpec("fx/base@s3", replicate=True),
        SendSpec("fx/base@s1", props=True, compressed=True, large_blocks=True, embedded=True),
    ]
    for i, spec in enumerate(specs):
        data = send_bytes(sim, spec)
        path = tmp_path / f"s{i}.zstream"
        path.write_bytes(data)
        done = subprocess.run(
            [zstream, "dump", str(path)], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, (spec, done.stderr)
        assert f"Total stream length = {len(data)}" in done.stdout
        assert sim.estimate(spec) == len(data)


def test_stream_records_follow_openzfs_layout(sim: SimBackend) -> None:
    populate(mnt(sim, "fx/base"))
    sim.snapshot(["fx/base@s1"])
    data = send_bytes(sim, SendSpec("fx/base@s1"))
    records = list(read_records(io.BytesIO(data)))
    begin = parse_begin(records[0])
    snap = sim.list("fx/base@s1")[0]
    assert (begin.toguid, begin.fromguid, begin.toname) == (snap.guid, 0, "fx/base@s1")
    assert records[-1].type == DrrType.END
    writes = [r for r in records if r.type == DrrType.WRITE]
    assert all(len(r.payload) <= 128 * 1024 for r in writes)
    assert sum(len(r.payload) for r in writes) >= 300_000


def test_intermediate_and_replication_streams_rebuild_history(sim: SimBackend) -> None:
    src = mnt(sim, "fx/base")
    sim.create("fx/base/kid")
    for i in range(1, 4):
        (src / f"f{i}").write_text(str(i))
        (mnt(sim, "fx/base/kid") / f"k{i}").write_text(str(i))
        sim.snapshot([f"fx/base@s{i}"], recursive=True)
    sim.set("fx/base", {"zfleet:role": "image", "compression": "lz4"})
    receive_bytes(sim, send_bytes(sim, SendSpec("fx/base@s3", replicate=True)), "dst/rep")
    names = [o.name for o in sim.list("dst/rep")]
    assert names == [
        "dst/rep",
        "dst/rep@s1",
        "dst/rep@s2",
        "dst/rep@s3",
        "dst/rep/kid",
        "dst/rep/kid@s1",
        "dst/rep/kid@s2",
        "dst/rep/kid@s3",
    ]
    assert (mnt(sim, "dst/rep/kid") / "k3").read_text() == "3"
    role = sim.get("dst/rep", ["zfleet:role"])["zfleet:role"]
    assert (role.value, role.source) == ("image", "received")
    # -I: the copy of s1 gets s2 and s3 in one compound stream.
    receive_bytes(sim, send_bytes(sim, SendSpec("fx/base@s1")), "dst/inc")
    data = send_bytes(sim, SendSpec("fx/base@s3", from_snap="@s1", intermediates=True))
    receive_bytes(sim, data, "dst/inc")
    assert [o.short for o in sim.list("dst/inc", types=[ObjType.SNAPSHOT])] == ["s1", "s2", "s3"]


def test_clone_stream_arrives_as_a_clone(sim: SimBackend) -> None:
    (mnt(sim, "fx/base") / "base.txt").write_text("base")
    sim.snapshot(["fx/base@s2"])
    sim.clone("fx/base@s2", "fx/app")
    (mnt(sim, "fx/app") / "app.txt").write_text("app data")
    sim.snapshot(["fx/app@a1"])
    clone_stream = send_bytes(sim, SendSpec("fx/app@a1", from_snap="fx/base@s2"))
    with pytest.raises(OriginMissing, match="local origin for clone dst/app@a1 does not exist"):
        receive_bytes(sim, clone_stream, "dst/app")
    assert not sim.exists("dst/app")
    receive_bytes(sim, send_bytes(sim, SendSpec("fx/base@s2")), "dst/base")
    receive_bytes(sim, clone_stream, "dst/app")
    app = sim.list("dst/app")[0]
    assert app.origin == "dst/base@s2"
    assert (mnt(sim, "dst/app") / "app.txt").read_text() == "app data"
    assert (mnt(sim, "dst/app") / "base.txt").read_text() == "base"


def test_bookmark_is_an_incremental_source(sim: SimBackend) -> None:
    src = mnt(sim, "fx/base")
    (src / "a").write_bytes(os.urandom(200_000))
    sim.snapshot(["fx/base@s1"])
    receive_bytes(sim, send_bytes(sim, SendSpec("fx/base@s1")), "dst/copy")
    sim.bookmark("fx/base@s1", "fx/base#b1")
    sim.destroy("fx/base@s1")
    (src / "b").write_text("after")
    sim.snapshot(["fx/base@s2"])
    data = send_bytes(sim, SendSpec("fx/base@s2", from_snap="fx/base#b1"))
    assert len(data) < 20_000
    receive_bytes(sim, data, "dst/copy")
    assert (mnt(sim, "dst/copy") / "b").read_text() == "after"


def test_receive_refusals_use_openzfs_messages(sim: SimBackend) -> None:
    src = mnt(sim, "fx/base")
    (src / "f").write_text("1")
    sim.snapshot(["fx/base@s1"])
    full = send_bytes(sim, SendSpec("fx/base@s1"))
    (src / "f").write_text("2")
    sim.snapshot(["fx/base@s2"])
    incr = send_bytes(sim, SendSpec("fx/base@s2", from_snap="@s1"))
    sim.create("dst/empty")
    with pytest.raises(NoCommonSnapshot) as err:
        receive_bytes(sim, incr, "dst/empty")
    assert str(err.value) == (
        "cannot receive incremental stream: most recent snapshot of dst/empty does not\n"
        "match incremental source"
    )
    with pytest.raises(DatasetExists) as err2:
        receive_bytes(sim, full, "dst/empty")
    assert str(err2.value) == (
        "cannot receive new filesystem stream: destination 'dst/empty' exists\n"
        "must specify -F to overwrite it"
    )
    receive_bytes(sim, full, "dst/copy")
    (mnt(sim, "dst/copy") / "local-change").write_text("x")
    with pytest.raises(DestinationModified) as err3:
        receive_bytes(sim, incr, "dst/copy")
    assert str(err3.value) == (
        "cannot receive incremental stream: destination dst/copy has been modified\n"
        "since most recent snapshot"
    )
    assert (mnt(sim, "dst/copy") / "local-change").exists(), "a refusal loses nothing"
    receive_bytes(sim, incr, "dst/copy", force=True)
    assert not (mnt(sim, "dst/copy") / "local-change").exists()
    assert (mnt(sim, "dst/copy") / "f").read_text() == "2"


def test_force_rolls_back_past_newer_snapshots(sim: SimBackend) -> None:
    src = mnt(sim, "fx/base")
    sim.snapshot(["fx/base@s1"])
    receive_bytes(sim, send_bytes(sim, SendSpec("fx/base@s1")), "dst/copy")
    sim.snapshot(["dst/copy@noop"])  # no change: does not block the next incremental
    (src / "f").write_text("new")
    sim.snapshot(["fx/base@s2"])
    receive_bytes(sim, send_bytes(sim, SendSpec("fx/base@s2", from_snap="@s1")), "dst/copy")
    assert [o.short for o in sim.list("dst/copy", types=[ObjType.SNAPSHOT])] == ["s1", "noop", "s2"]
    (mnt(sim, "dst/copy") / "local").write_text("diverged")
    sim.snapshot(["dst/copy@diverged"])  # a change kept in a snapshot of the target's own
    (src / "f").write_text("newer")
    sim.snapshot(["fx/base@s3"])
    incr = send_bytes(sim, SendSpec("fx/base@s3", from_snap="@s2"))
    with pytest.raises(DestinationModified):
        receive_bytes(sim, incr, "dst/copy")
    receive_bytes(sim, incr, "dst/copy", force=True)
    assert [o.short for o in sim.list("dst/copy", types=[ObjType.SNAPSHOT])] == [
        "s1",
        "noop",
        "s2",
        "s3",
    ]
    assert not (mnt(sim, "dst/copy") / "local").exists()
    assert (mnt(sim, "dst/copy") / "f").read_text() == "newer"


def test_cut_receive_resumes_from_its_token(sim: SimBackend) -> None:
    src = mnt(sim, "fx/base")
    populate(src)
    sim.snapshot(["fx/base@s1"])
    full = send_bytes(sim, SendSpec("fx/base@s1"))
    sink = sim.receive(ReceiveSpec("dst/part", resumable=True))
    sink.write(full[:150_000])
    with pytest.raises(StreamIncomplete) as err:
        sink.finish()
    token = err.value.token
    assert token is not None and f"zfs send -t {token}" in str(err.value)
    part = sim.list("dst/part")[0]
    assert part.receive_resume_token == token
    decoded = decode_resume_token(token)
    assert decoded.toname == "fx/base@s1" and 0 < decoded.bytes <= 150_000
    rest = send_bytes(sim, SendSpec("fx/base@s1", resume_token=token))
    assert len(rest) < len(full)
    assert parse_begin(next(read_records(io.BytesIO(rest)))).resuming
    receive_bytes(sim, rest, "dst/part")
    assert snapshot_tree(mnt(sim, "dst/part")) == snapshot_tree(src)
    assert sim.list("dst/part")[0].receive_resume_token is None


def test_cut_receive_without_s_leaves_nothing_and_abort_discards(sim: SimBackend) -> None:
    populate(mnt(sim, "fx/base"))
    sim.snapshot(["fx/base@s1"])
    full = send_bytes(sim, SendSpec("fx/base@s1"))
    sink = sim.receive(ReceiveSpec("dst/none", resumable=False))
    sink.write(full[:100_000])
    with pytest.raises(StreamIncomplete, match="incomplete stream"):
        sink.finish()
    assert not sim.exists("dst/none")
    sink = sim.receive(ReceiveSpec("dst/part"))
    sink.write(full[:100_000])
    sink.abort()
    assert sim.list("dst/part")[0].receive_resume_token
    sim.abort_receive("dst/part")
    assert not sim.exists("dst/part")


def test_stale_token_and_garbage_get_clear_errors(sim: SimBackend) -> None:
    sim.snapshot(["fx/base@s1"])
    with pytest.raises(TokenError, match="cannot resume send: resume token is corrupt"):
        sim.send(SendSpec("fx/base@s1", resume_token="1-abc-12-00"))
    sink = sim.receive(ReceiveSpec("dst/x"))
    with pytest.raises(StreamFormatError, match=r"invalid stream \(bad magic number\)"):
        sink.write(b"not a stream at all" * 40)
    full = send_bytes(sim, SendSpec("fx/base@s1"))
    sink = sim.receive(ReceiveSpec("dst/y"))
    sink.write(full[:200])
    sink.abort()
    token = sim.list("dst/y")[0].receive_resume_token if sim.exists("dst/y") else None
    if token:
        sim.destroy("fx/base@s1")
        with pytest.raises(ResumeTokenStale):
            sim.send(SendSpec("fx/base@s1", resume_token=token))


def test_corrupted_stream_is_refused_and_target_kept(sim: SimBackend) -> None:
    (mnt(sim, "fx/base") / "f").write_bytes(os.urandom(50_000))
    sim.snapshot(["fx/base@s1"])
    data = bytearray(send_bytes(sim, SendSpec("fx/base@s1")))
    data[20_000] ^= 0xFF
    with pytest.raises(StreamChecksumError, match="checksum mismatch"):
        receive_bytes(sim, bytes(data), "dst/bad", resumable=False)
    assert not sim.exists("dst/bad")


def test_unmounted_receive_keeps_data_for_later(sim: SimBackend) -> None:
    (mnt(sim, "fx/base") / "f").write_text("x")
    sim.snapshot(["fx/base@s1"])
    receive_bytes(
        sim,
        send_bytes(sim, SendSpec("fx/base@s1")),
        "dst/u",
        no_mount=True,
        set_props={"zfleet:role": "replica"},
    )
    got = sim.get("dst/u", ["mounted", "zfleet:role"])
    assert got["mounted"].value == "no"
    assert (got["zfleet:role"].value, got["zfleet:role"].source) == ("replica", "local")


def test_diff_lists_changes_like_zfs_diff(sim: SimBackend) -> None:
    src = mnt(sim, "fx/base")
    populate(src)
    sim.snapshot(["fx/base@s1"])
    change(src)
    sim.snapshot(["fx/base@s2"])
    entries = {
        (e.change.value, e.path[len(str(src)) :], e.new_path)
        for e in sim.diff("fx/base@s1", "fx/base@s2")
    }
    assert ("-", "/etc/conf3", None) in entries
    assert ("M", "/hello.txt", None) in entries
    assert ("R", "/etc/conf4", f"{src}/etc/conf4-renamed") in entries
    assert ("+", "/new-empty", None) in entries
    (src / "later").write_text("live")
    live = {e.path for e in sim.diff("fx/base@s2", "fx/base")}
    assert f"{src}/later" in live


def test_child_datasets_do_not_make_their_parent_look_modified(sim: SimBackend) -> None:
    sim.create("fx/base/kid")
    (mnt(sim, "fx/base") / "p").write_text("1")
    (mnt(sim, "fx/base/kid") / "k").write_text("1")
    sim.snapshot(["fx/base@s1"], recursive=True)
    receive_bytes(sim, send_bytes(sim, SendSpec("fx/base@s1")), "dst/rep")
    receive_bytes(sim, send_bytes(sim, SendSpec("fx/base/kid@s1")), "dst/rep/kid")
    (mnt(sim, "fx/base") / "p").write_text("2")
    (mnt(sim, "fx/base/kid") / "k").write_text("2")
    sim.snapshot(["fx/base@s2"], recursive=True)
    for name in ("fx/base", "fx/base/kid"):
        data = send_bytes(sim, SendSpec(f"{name}@s2", from_snap="@s1"))
        receive_bytes(sim, data, name.replace("fx/base", "dst/rep"))
    assert (mnt(sim, "dst/rep") / "p").read_text() == "2"
    assert (mnt(sim, "dst/rep/kid") / "k").read_text() == "2"
    # The kid's files live in its own dataset, not in the parent's snapshots.
    entries = {e.path for e in sim.diff("fx/base@s1", "fx/base@s2")}
    assert not any(p.endswith("/k") for p in entries)


def test_a_real_openzfs_stream_is_refused_cleanly(sim: SimBackend) -> None:
    data = (ZFS_STREAMS / "full-s1.zstream").read_bytes()
    with pytest.raises(InvalidOperation, match="not in the simulation's format"):
        receive_bytes(sim, data, "dst/real")
    assert not sim.exists("dst/real")


def test_a_send_can_be_read_on_another_thread(sim: SimBackend) -> None:
    populate(mnt(sim, "fx/base"))
    sim.snapshot(["fx/base@s1"])
    expected = send_bytes(sim, SendSpec("fx/base@s1"))
    stream = sim.send(SendSpec("fx/base@s1"))
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(stream.read()))
    reader.start()
    reader.join(timeout=60)
    stream.close()
    assert got == [expected]


@pytest.mark.parametrize("cuts", [(313,), (0.3, 0.7), (0.5, 0.5001), (0.999,)])
def test_receive_resumes_after_any_number_of_cuts(sim: SimBackend, cuts: tuple[float, ...]) -> None:
    src = mnt(sim, "fx/base")
    populate(src)
    sim.snapshot(["fx/base@s1"])
    receive_bytes(sim, send_bytes(sim, SendSpec("fx/base@s1")), "dst/copy")
    change(src)
    sim.snapshot(["fx/base@s2"])
    data = send_bytes(sim, SendSpec("fx/base@s2", from_snap="@s1"))
    for cut in cuts:
        size = int(cut * len(data)) if cut < 1 else int(cut)
        sink = sim.receive(ReceiveSpec("dst/copy"))
        sink.write(data[:size])
        with pytest.raises(StreamIncomplete) as err:
            sink.finish()
        assert err.value.token is not None
        # The token's stream is the rest: the one -t produces, sent with a blank snapshot name.
        data = send_bytes(sim, SendSpec("", resume_token=err.value.token))
    receive_bytes(sim, data, "dst/copy")
    assert snapshot_tree(mnt(sim, "dst/copy")) == snapshot_tree(src)
    assert sim.list("dst/copy@s2")[0].guid == sim.list("fx/base@s2")[0].guid


def test_volume_replicates_as_a_volume(sim: SimBackend) -> None:
    sim.create("fx/vol", volsize=4 << 20)
    pool = sim.pool("fx")
    path = pool.volume_path(pool.dataset("fx/vol"))
    with open(path, "r+b") as fp:
        fp.seek(1 << 20)
        fp.write(os.urandom(300_000))
    sim.snapshot(["fx/vol@v1"])
    receive_bytes(sim, send_bytes(sim, SendSpec("fx/vol@v1")), "dst/vol")
    with open(path, "r+b") as fp:
        fp.seek(3 << 20)
        fp.write(b"tail")
    sim.snapshot(["fx/vol@v2"])
    receive_bytes(sim, send_bytes(sim, SendSpec("fx/vol@v2", from_snap="@v1")), "dst/vol")
    dpool = sim.pool("dst")
    copy = dpool.volume_path(dpool.dataset("dst/vol"))
    assert copy.read_bytes() == path.read_bytes()
    assert allocated(copy) < 1 << 20, "the volume's holes stay holes"
    assert sim.list("dst/vol")[0].type == ObjType.VOLUME
    assert sim.get("dst/vol", ["volsize"])["volsize"].value == str(4 << 20)


def test_replication_keeps_clones_as_clones(sim: SimBackend) -> None:
    (mnt(sim, "fx/base") / "os.img").write_bytes(os.urandom(400_000))
    sim.snapshot(["fx/base@gold"])
    sim.create("fx/base/apps")
    sim.clone("fx/base@gold", "fx/base/apps/web")
    (mnt(sim, "fx/base/apps/web") / "site").write_text("hello")
    sim.snapshot(["fx/base@r1"], recursive=True)
    data = send_bytes(sim, SendSpec("fx/base@r1", replicate=True))
    assert len(data) < 700_000, "the clone's shared blocks are not sent twice"
    receive_bytes(sim, data, "dst/rep")
    web = sim.list("dst/rep/apps/web")[0]
    assert web.origin == "dst/rep@gold"
    assert (mnt(sim, "dst/rep/apps/web") / "site").read_text() == "hello"
    assert (mnt(sim, "dst/rep/apps/web") / "os.img").read_bytes() == (
        mnt(sim, "fx/base") / "os.img"
    ).read_bytes()


def test_receive_props_exclude_and_explicit_origin(sim: SimBackend) -> None:
    sim.set("fx/base", {"zfleet:role": "image", "zfleet:owner": "ops"})
    (mnt(sim, "fx/base") / "f").write_text("base")
    sim.snapshot(["fx/base@s1"])
    data = send_bytes(sim, SendSpec("fx/base@s1", props=True))
    receive_bytes(sim, data, "dst/copy", exclude_props=("zfleet:owner",))
    got = sim.get("dst/copy", ["zfleet:role", "zfleet:owner"])
    assert got["zfleet:role"].source == "received" and "zfleet:owner" not in got
    sim.clone("fx/base@s1", "fx/app")
    (mnt(sim, "fx/app") / "g").write_text("app")
    sim.snapshot(["fx/app@a1"])
    clone_stream = send_bytes(sim, SendSpec("fx/app@a1", from_snap="fx/base@s1"))
    receive_bytes(sim, clone_stream, "dst/app", origin="dst/copy@s1")
    assert sim.list("dst/app")[0].origin == "dst/copy@s1"
    assert (mnt(sim, "dst/app") / "f").read_text() == "base"


def test_a_block_store_that_cannot_write_fails_the_receive_and_keeps_nothing(
    sim: SimBackend,
) -> None:
    """Blocks are written on a thread of the receive's own: a failure there still fails the
    receive before anything is committed, with the pool's own message."""
    (mnt(sim, "fx/base") / "data").write_bytes(os.urandom(2 << 20))
    sim.snapshot(["fx/base@s1"])
    full = send_bytes(sim, SendSpec("fx/base@s1"))
    blocks = Path(sim.pool("dst").blocks.root)
    blocks.mkdir(parents=True, exist_ok=True)
    assert not any(blocks.iterdir())
    for first in range(256):  # a file where each block directory would go: no block fits
        (blocks / f"{first:02x}").write_bytes(b"")
    with pytest.raises(ZfsError, match="cannot write block"):
        receive_bytes(sim, full, "dst/copy")
    assert not sim.exists("dst/copy")
    for entry in blocks.iterdir():
        entry.unlink()
    assert receive_bytes(sim, full, "dst/copy") == "dst/copy@s1"
    assert (mnt(sim, "dst/copy") / "data").read_bytes() == (
        mnt(sim, "fx/base") / "data"
    ).read_bytes()
