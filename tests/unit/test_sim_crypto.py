"""Native encryption in the simulation: keys, locked data, and raw sends that stay sealed."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from protocol.errors import InvalidOperation, KeyNotLoaded
from protocol.stream import DrrType, read_records
from tests.unit.sim_helpers import new_sim, send_bytes
from workers.zfs.base import ReceiveSpec, SendSpec
from workers.zfs.sim import SimBackend

PASSPHRASE = b"correct horse battery"
SECRET = b"top secret payload that must never travel in the clear " * 50


@pytest.fixture
def sim(tmp_path: Path) -> SimBackend:
    backend = new_sim(tmp_path, ["fx", "dst"])
    keyfile = tmp_path / "key"
    keyfile.write_bytes(PASSPHRASE + b"\n")
    backend.create(
        "fx/secret",
        props={
            "encryption": "on",
            "keyformat": "passphrase",
            "keylocation": f"file://{keyfile}",
            "pbkdf2iters": "100000",
        },
    )
    mnt = backend.mountpoint("fx/secret")
    assert mnt is not None
    (Path(mnt) / "s.txt").write_bytes(SECRET)
    (Path(mnt) / "dir").mkdir()
    (Path(mnt) / "dir" / "plain-name-visible-only-inside").write_text("x")
    backend.snapshot(["fx/secret@e1"])
    return backend


def writes(stream: bytes) -> list[bytes]:
    return [r.payload for r in read_records(io.BytesIO(stream)) if r.type == DrrType.WRITE]


def receive(sim: SimBackend, data: bytes, target: str) -> None:
    sink = sim.receive(ReceiveSpec(target))
    sink.write(data)
    sink.finish()


def test_encrypted_dataset_reports_its_key_state(sim: SimBackend) -> None:
    got = sim.get("fx/secret", ["encryption", "keystatus", "keyformat", "encryptionroot"])
    assert got["encryption"].value == "aes-256-gcm"
    assert got["keystatus"].value == "available"
    assert got["keyformat"].value == "passphrase"
    assert got["encryptionroot"].value == "fx/secret"
    row = sim.list("fx/secret")[0]
    assert (row.encryption, row.keystatus) == ("aes-256-gcm", "available")


def test_unload_key_makes_data_unavailable_until_the_right_key(sim: SimBackend) -> None:
    mnt = sim.mountpoint("fx/secret")
    sim.unload_key("fx/secret")
    assert sim.get("fx/secret", ["keystatus"])["keystatus"].value == "unavailable"
    assert sim.get("fx/secret", ["mounted"])["mounted"].value == "no"
    assert mnt is None or not (Path(mnt) / "s.txt").exists()
    with pytest.raises(InvalidOperation, match="Incorrect key provided for 'fx/secret'"):
        sim.load_key("fx/secret", key=b"wrong horse battery")
    with pytest.raises(KeyNotLoaded):
        sim.send(SendSpec("fx/secret@e1"))
    sim.load_key("fx/secret", key=PASSPHRASE)
    mnt = sim.mountpoint("fx/secret")
    assert mnt is not None and (Path(mnt) / "s.txt").read_bytes() == SECRET
    with pytest.raises(InvalidOperation, match="Key already loaded"):
        sim.load_key("fx/secret", key=PASSPHRASE)


def test_raw_send_carries_no_plaintext_and_arrives_locked(sim: SimBackend) -> None:
    raw = send_bytes(sim, SendSpec("fx/secret@e1", raw=True))
    assert b"top secret" not in raw
    assert b"plain-name-visible-only-inside" not in raw
    plain = send_bytes(sim, SendSpec("fx/secret@e1"))
    assert b"top secret" in plain
    receive(sim, raw, "dst/copy")
    got = sim.get("dst/copy", ["keystatus", "encryption", "mounted"])
    assert got["keystatus"].value == "unavailable"
    assert got["encryption"].value == "aes-256-gcm"
    assert got["mounted"].value == "no"
    assert sim.list("dst/copy@e1")[0].guid == sim.list("fx/secret@e1")[0].guid
    # A locked replica can pass the data on raw: the same sealed records as the original.
    again = send_bytes(sim, SendSpec("dst/copy@e1", raw=True))
    assert writes(again) == writes(raw) and len(writes(raw)) >= 3
    with pytest.raises(KeyNotLoaded):
        sim.send(SendSpec("dst/copy@e1"))
    with pytest.raises(InvalidOperation, match="Incorrect key"):
        sim.load_key("dst/copy", key=b"not the passphrase")
    sim.load_key("dst/copy", key=PASSPHRASE)
    mnt = sim.mountpoint("dst/copy")
    assert mnt is not None
    assert (Path(mnt) / "s.txt").read_bytes() == SECRET
    assert (Path(mnt) / "dir" / "plain-name-visible-only-inside").read_text() == "x"


def test_raw_incremental_onto_a_locked_replica(sim: SimBackend) -> None:
    receive(sim, send_bytes(sim, SendSpec("fx/secret@e1", raw=True)), "dst/copy")
    mnt = sim.mountpoint("fx/secret")
    assert mnt is not None
    (Path(mnt) / "more.bin").write_bytes(os.urandom(10_000))
    sim.snapshot(["fx/secret@e2"])
    incr = send_bytes(sim, SendSpec("fx/secret@e2", from_snap="@e1", raw=True))
    receive(sim, incr, "dst/copy")
    sim.load_key("dst/copy", key=PASSPHRASE)
    copy = sim.mountpoint("dst/copy")
    assert copy is not None
    assert (Path(copy) / "more.bin").read_bytes() == (Path(mnt) / "more.bin").read_bytes()


def test_raw_key_format_and_key_file(sim: SimBackend, tmp_path: Path) -> None:
    key = os.urandom(32)
    sim.create("fx/rawkey", props={"encryption": "on", "keyformat": "raw"}, key=key)
    sim.unload_key("fx/rawkey")
    with pytest.raises(InvalidOperation):
        sim.load_key("fx/rawkey", key=b"short")
    sim.load_key("fx/rawkey", key=key)
    assert sim.get("fx/rawkey", ["keystatus"])["keystatus"].value == "available"
    with pytest.raises(InvalidOperation, match="Keyformat required"):
        sim.create("fx/nokey", props={"encryption": "on"})
