"""``zfs change-key``: the simulation's key states, the real backend's argv and error words."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from protocol.errors import ConfigError, InvalidOperation, KeyNotLoaded
from protocol.stream import DrrType, read_records
from tests.unit.sim_helpers import mnt, new_sim, send_bytes
from workers.zfs.base import ReceiveSpec, SendSpec
from workers.zfs.errormap import error_from_stderr
from workers.zfs.real import change_key_args
from workers.zfs.sim import SimBackend


def writes(stream: bytes) -> list[bytes]:
    return [r.payload for r in read_records(io.BytesIO(stream)) if r.type == DrrType.WRITE]


def hexkey() -> bytes:
    return os.urandom(32).hex().encode()


@pytest.fixture
def sim(tmp_path: Path) -> SimBackend:
    return new_sim(tmp_path, ["fx", "other"])


def status(sim: SimBackend, name: str) -> tuple[str, str]:
    got = sim.get(name, ["keystatus", "encryptionroot"])
    return got["keystatus"].value, got["encryptionroot"].value


def test_a_clone_elsewhere_follows_its_origins_key(sim: SimBackend) -> None:
    """A clone shares its origin's encryption root even outside its tree: unload, load and
    change-key of the root reach it, as OpenZFS's keystore walks clones."""
    key = hexkey()
    sim.create("fx/team", props={"encryption": "on", "keyformat": "hex"}, key=key)
    (mnt(sim, "fx/team") / "f").write_bytes(b"shared")
    sim.snapshot(["fx/team@s1"])
    sim.create("fx/work")
    sim.clone("fx/team@s1", "fx/work/mine")
    assert status(sim, "fx/work/mine") == ("available", "fx/team")
    sim.unload_key("fx/team")
    assert status(sim, "fx/work/mine") == ("unavailable", "fx/team")
    with pytest.raises(InvalidOperation, match=r"encryption root of 'fx/work/mine' \(fx/team\)"):
        sim.load_key("fx/work/mine", key=key)
    sim.load_key("fx/team", key=key)
    new = hexkey()
    sim.change_key("fx/team", key=new, props={"keyformat": "hex"})
    sim.unload_key("fx/team")
    with pytest.raises(InvalidOperation, match="Incorrect key"):
        sim.load_key("fx/team", key=key)
    sim.load_key("fx/team", key=new)
    assert status(sim, "fx/work/mine") == ("available", "fx/team")
    assert (mnt(sim, "fx/work/mine") / "f").read_bytes() == b"shared"


def test_change_key_keeps_the_master_key_so_old_raw_copies_read_as_before(
    sim: SimBackend,
) -> None:
    """What a removed group member keeps: change-key rewraps, it does not re-encrypt. A raw
    copy taken before the change still opens with the old key, and its records are the same
    ciphertext as the records sent after it."""
    old = hexkey()
    sim.create("fx/base", props={"encryption": "on", "keyformat": "hex"}, key=old)
    (mnt(sim, "fx/base") / "f").write_bytes(os.urandom(4096))
    sim.snapshot(["fx/base@s1"])
    before = send_bytes(sim, SendSpec("fx/base@s1", raw=True))
    sim.change_key("fx/base", key=hexkey(), props={"keyformat": "hex"})
    after = send_bytes(sim, SendSpec("fx/base@s1", raw=True))
    sink = sim.receive(ReceiveSpec("other/kept"))
    sink.write(before)
    sink.finish()
    sim.load_key("other/kept", key=old)
    assert (mnt(sim, "other/kept") / "f").read_bytes() == (mnt(sim, "fx/base") / "f").read_bytes()
    assert before != after  # the wrapped key in the BEGIN record differs...
    assert writes(before) == writes(after) and writes(before)  # ...the sealed records do not


def test_passphrase_change_needs_enough_iterations(sim: SimBackend) -> None:
    sim.create("fx/p", props={"encryption": "on", "keyformat": "hex"}, key=hexkey())
    with pytest.raises(InvalidOperation, match="Minimum pbkdf2iters"):
        sim.change_key(
            "fx/p", key=b"long enough phrase",
            props={"keyformat": "passphrase", "pbkdf2iters": "1000"},
        )  # fmt: skip
    sim.change_key(
        "fx/p", key=b"long enough phrase",
        props={"keyformat": "passphrase", "pbkdf2iters": "100000"},
    )  # fmt: skip
    got = sim.get("fx/p", ["keyformat", "pbkdf2iters"])
    assert (got["keyformat"].value, got["pbkdf2iters"].value) == ("passphrase", "100000")
    with pytest.raises(InvalidOperation, match="Only keyformat, keylocation and pbkdf2iters"):
        sim.change_key("fx/p", key=hexkey(), props={"compression": "lz4"})


def test_a_locked_replica_cannot_change_key(sim: SimBackend) -> None:
    sim.create("fx/s", props={"encryption": "on", "keyformat": "hex"}, key=hexkey())
    sim.snapshot(["fx/s@a"])
    sink = sim.receive(ReceiveSpec("other/s"))
    sink.write(send_bytes(sim, SendSpec("fx/s@a", raw=True)))
    sink.finish()
    with pytest.raises(KeyNotLoaded, match="Key must be loaded"):
        sim.change_key("other/s", key=hexkey(), props={"keyformat": "hex"})


def test_real_argv() -> None:
    assert change_key_args("p/a", key=b"k", props={"keyformat": "hex"}, inherit=False) == [
        "change-key", "-o", "keyformat=hex", "-o", "keylocation=prompt", "p/a",
    ]  # fmt: skip
    assert change_key_args("p/a", key=None, props=None, inherit=True) == ["change-key", "-i", "p/a"]
    props = {"keylocation": "file:///k", "pbkdf2iters": "350000"}
    assert change_key_args("p/a", key=None, props=props, inherit=False) == [
        "change-key", "-o", "keylocation=file:///k", "-o", "pbkdf2iters=350000", "p/a",
    ]  # fmt: skip
    for bad in (
        {"key": b"k", "props": {"keylocation": "file:///k"}, "inherit": False},
        {"key": None, "props": {"keyformat": "rot13"}, "inherit": False},
        {"key": None, "props": {"compression": "on"}, "inherit": False},
        {"key": None, "props": {"pbkdf2iters": "-1"}, "inherit": False},
        {"key": b"k", "props": None, "inherit": True},
        {"key": None, "props": {"keylocation": "-rf"}, "inherit": False},
    ):
        with pytest.raises(ConfigError):
            change_key_args("p/a", **bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("stderr", "kind"),
    [
        ("Key change error: Key must be loaded.\n", KeyNotLoaded),
        ("Key change error: Parent key must be loaded.\n", KeyNotLoaded),
        ("Key change error: Keys cannot be changed on clones.\n", InvalidOperation),
        ("Key load error: Keys must be loaded for encryption root of 'p/a/b' (p/a).\n",
         InvalidOperation),
        ("Key change error: Keyformat required for new encryption root.\n", InvalidOperation),
    ],
)  # fmt: skip
def test_real_error_words(stderr: str, kind: type[Exception]) -> None:
    err = error_from_stderr(stderr, 1)
    assert type(err) is kind
    assert stderr.strip() in str(err)
