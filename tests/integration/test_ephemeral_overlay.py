"""Ephemeral datasets on the simulation with a real overlayfs mount (needs root).

The base is a plain, shared dataset; NAME's upper layer is a new encryption root under the
user's key. Writing through the merged view must change nothing in the base, and every new byte
must be in the upper layer: its raw stream holds no plaintext, arrives locked elsewhere and opens
with the user's key only (the base has none, and another key fails). Discard brings the base
back in one call.
"""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol.errors import DatasetExists, InvalidOperation
from protocol.stream import DrrType, read_records
from tests.conftest import need
from tests.unit.sim_helpers import mnt, new_sim, send_bytes
from workers import ephemeral
from workers.zfs.base import ReceiveSpec, SendSpec
from workers.zfs.sim import SimBackend

pytestmark = pytest.mark.integration

NEW = b"NEW-BYTES-" + os.urandom(16).hex().encode()


def overlay_works(tmp: Path) -> bool:
    if os.geteuid() != 0:
        return False
    for d in ("l", "u", "w", "m"):
        (tmp / d).mkdir(parents=True)
    opts = f"lowerdir={tmp / 'l'},upperdir={tmp / 'u'},workdir={tmp / 'w'}"
    done = subprocess.run(["mount", "-t", "overlay", "probe", "-o", opts, str(tmp / "m")],
                          capture_output=True, check=False)  # fmt: skip
    if done.returncode == 0:
        subprocess.run(["umount", str(tmp / "m")], check=False)
    return done.returncode == 0


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimBackend]:
    need(overlay_works(tmp_path / "probe"), "root and overlayfs mounts")
    be = new_sim(tmp_path, ["tank", "other"])
    be.create("tank/base")
    (mnt(be, "tank/base") / "README").write_bytes(b"the shared base\n")
    be.snapshot(["tank/base@v1"])
    yield be
    for line in Path("/proc/mounts").read_text().splitlines():
        where = line.split()[1]
        if where.startswith(str(tmp_path)):
            subprocess.run(["umount", "-l", where], check=False)


def test_reads_see_the_base_and_new_bytes_land_under_the_users_key(
    sim: SimBackend, tmp_path: Path
) -> None:
    key = os.urandom(32).hex().encode()
    view = tmp_path / "view"
    lay = ephemeral.create(sim, "tank/base@v1", "scratch", key=key, key_source="file:/k",
                           mount_at=view)  # fmt: skip
    assert (view / "README").read_bytes() == b"the shared base\n"
    (view / "new.bin").write_bytes(NEW * 100)
    (view / "README").write_bytes(b"changed " + NEW)  # copied up, the base keeps its own
    assert (mnt(sim, "tank/base") / "README").read_bytes() == b"the shared base\n"
    assert (mnt(sim, lay.lower) / "README").read_bytes() == b"the shared base\n"
    assert sim.get(lay.lower, ["readonly"])["readonly"].value == "on"
    got = sim.get(lay.upper, ["encryptionroot", "keystatus", "keyformat"])
    assert (got["encryptionroot"].value, got["keyformat"].value) == (lay.upper, "hex")
    assert sim.get(lay.lower, ["encryption"])["encryption"].value == "off"

    sim.snapshot([f"{lay.upper}@s1", f"{lay.lower}@s1"])
    assert sim.get(f"{lay.lower}@s1", ["written"])["written"].value == "0"
    raw = send_bytes(sim, SendSpec(f"{lay.upper}@s1", raw=True))
    assert NEW not in raw
    writes = [r for r in read_records(io.BytesIO(raw)) if r.type == DrrType.WRITE]
    assert sum(len(r.payload) for r in writes) >= len(NEW) * 100
    sink = sim.receive(ReceiveSpec("other/copy"))
    sink.write(raw)
    sink.finish()
    assert sim.get("other/copy", ["keystatus"])["keystatus"].value == "unavailable"
    with pytest.raises(InvalidOperation, match="Incorrect key"):
        sim.load_key("other/copy", key=os.urandom(32).hex().encode())
    sim.load_key("other/copy", key=key)
    assert (mnt(sim, "other/copy") / "data" / "new.bin").read_bytes() == NEW * 100

    with pytest.raises(DatasetExists):
        ephemeral.create(sim, "tank/base@v1", "scratch", key=key, key_source="file:/k",
                         mount_at=None)  # fmt: skip
    old_guid = sim.get(lay.upper, ["guid"])["guid"].value
    ephemeral.discard(sim, "tank", "scratch", key=key, mount_at=view)
    assert sorted(p.name for p in view.iterdir()) == ["README"]
    assert (view / "README").read_bytes() == b"the shared base\n"
    assert sim.get(lay.upper, ["guid"])["guid"].value != old_guid
    ephemeral.discard(sim, "tank", "scratch", key=None, mount_at=view, recreate=False)
    assert not sim.exists(lay.top) and not os.path.ismount(view)
