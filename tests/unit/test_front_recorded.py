"""The front end fails with real OpenZFS's exact words, case by recorded case.

Each test rebuilds, on a simulated pool named ``fx``, the situation that produced one recorded
failure (tests/fixtures/zfs-streams/cli-errors.txt and cli-samples.txt, from OpenZFS 2.3.2), runs
the same command through the front end, and compares what it printed with what zfs printed.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tests.conformance.recorded import recorded_failures, recorded_samples
from tests.conftest import ZFS_STREAMS
from workers.zfs.base import SendSpec
from workers.zfs.front import Front
from workers.zfs.sim import SimBackend


class Fx:
    """A simulated pool ``fx`` shaped like the one the fixtures were recorded on."""

    def __init__(self, root: Path) -> None:
        self.backend = SimBackend(root)
        self.backend.create_pool("fx")
        self.backend.create("fx/base")
        self.write("fx/base", "hello.txt", b"hello zfleet\n")
        self.write("fx/base", "numbers.txt", "".join(f"{i}\n" for i in range(20000)).encode())
        self.backend.snapshot(["fx/base@s1"])
        self.write("fx/base", "hello.txt", b"hello zfleet\nchanged\n")
        self.backend.snapshot(["fx/base@s2"])

    def write(self, dataset: str, path: str, data: bytes) -> None:
        mountpoint = self.backend.mountpoint(dataset)
        assert mountpoint is not None
        (Path(mountpoint) / path).write_bytes(data)

    def stream(self, spec: SendSpec) -> bytes:
        sender = self.backend.send(spec)
        data = b"".join(iter(lambda: sender.read(1 << 16), b""))
        sender.close()
        return data

    def zfs(self, *argv: str, stdin: bytes = b"") -> tuple[int, str]:
        err = io.StringIO()
        front = Front(self.backend, stdin=io.BytesIO(stdin), stdout=io.BytesIO(), stderr=err)
        return front.run("zfs", argv), err.getvalue()


@pytest.fixture
def fx(tmp_path: Path) -> Fx:
    return Fx(tmp_path / "pools")


def expect(title: str) -> tuple[int, str]:
    case = recorded_failures()[title]
    return case.exit_code, case.stderr


def test_incremental_onto_a_dataset_lacking_the_source(fx: Fx) -> None:
    fx.backend.create("fx/empty")
    incr = fx.stream(SendSpec("fx/base@s2", from_snap="fx/base@s1"))
    got = fx.zfs("receive", "fx/empty", stdin=incr)
    assert got == expect("receive incremental onto dataset lacking the from-snapshot")


def test_full_stream_into_an_existing_dataset(fx: Fx) -> None:
    fx.backend.create("fx/empty")
    got = fx.zfs("receive", "fx/empty", stdin=fx.stream(SendSpec("fx/base@s1")))
    assert got == expect("receive full into existing dataset without -F")


def test_incremental_onto_a_modified_target(fx: Fx) -> None:
    assert fx.zfs("receive", "fx/copy", stdin=fx.stream(SendSpec("fx/base@s1")))[0] == 0
    fx.write("fx/copy", "local.txt", b"changed on the target\n")
    incr = fx.stream(SendSpec("fx/base@s2", from_snap="fx/base@s1"))
    got = fx.zfs("receive", "fx/copy", stdin=incr)
    assert got == expect("modify target then receive incremental")
    assert fx.zfs("receive", "-F", "fx/copy", stdin=incr) == (0, "")


def test_truncated_stream_without_resume(fx: Fx) -> None:
    stream = fx.stream(SendSpec("fx/base@s1"))
    cut = stream[: len(stream) // 2]
    assert fx.zfs("receive", "fx/part", stdin=cut) == expect("truncated stream without -s")


def test_corrupted_byte(fx: Fx) -> None:
    stream = bytearray(fx.stream(SendSpec("fx/base@s1")))
    stream[len(stream) // 2] ^= 0xFF
    got = fx.zfs("receive", "fx/bad", stdin=bytes(stream))
    assert got == expect("corrupted byte")


def test_garbage(fx: Fx) -> None:
    got = fx.zfs("receive", "fx/junk", stdin=b"this is no zfs stream\n" * 100)
    assert got == expect("garbage")


def test_corrupt_resume_token(fx: Fx) -> None:
    # the token is "1-<checksum>-<length>-<payload>": a wrong checksum is what zfs reported
    version, checksum, length, payload = (
        (ZFS_STREAMS / "resume-token.txt").read_text().strip().split("-")
    )
    wrong = format(int(checksum, 16) ^ 1, "x")
    damaged = "-".join((version, wrong, length, payload))
    assert fx.zfs("send", "-t", damaged) == expect("resume with stale token")


def test_partial_receive_saved_with_its_token(fx: Fx) -> None:
    fx.backend.create("fx/dst")
    stream = fx.stream(SendSpec("fx/base@s1"))
    cut = stream[: len(stream) // 2]
    code, err = fx.zfs("receive", "-s", "fx/dst/part", stdin=cut)
    token = fx.backend.get("fx/dst/part", ["receive_resume_token"])["receive_resume_token"].value
    _, recorded = expect("abort partial")
    recorded_token = recorded.split("zfs send -t ")[1].split()[0]
    # the recording ran the receive under `|| true`, so its exit=0 is the script's: zfs exits 1
    assert code == 1
    assert err.replace(token, "TOKEN") == recorded.replace(recorded_token, "TOKEN")


def test_rollback_needing_r(fx: Fx) -> None:
    fx.backend.snapshot(["fx/base@s3"])
    fx.backend.snapshot(["fx/base@bad name"])
    assert fx.zfs("rollback", "fx/base@s1") == expect("rollback needing -r")


def test_destroy_refusals(fx: Fx) -> None:
    samples = recorded_samples()
    fx.backend.clone("fx/base@s2", "fx/app")
    fx.backend.snapshot(["fx/app@a1"])
    assert fx.zfs("destroy", "fx/base@s2") == (1, samples["dependent clones"])
    fx.backend.hold("keep", ["fx/base@s1"])
    assert fx.zfs("destroy", "fx/base@s1") == (1, samples["held"])
