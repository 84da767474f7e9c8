"""The host-side role changes through the real backend (zfs as child processes), with the sim's
front end standing in for OpenZFS: argv, -Hp parsing and error mapping on the way."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from protocol.errors import InvalidOperation
from tests.unit.test_conformance_real_via_sim import make_shims
from workers.roles import demote_readonly, preserve_divergence, promote_writable
from workers.zfs.base import ObjType
from workers.zfs.real import RealBackend

pytestmark = pytest.mark.slow


@pytest.fixture
def zfs(tmp_path: Path) -> RealBackend:
    """tank/a with file f ("one") in snapshot s1, through zfs and zpool child processes."""
    env = make_shims(tmp_path / "bin", tmp_path / "pools")
    subprocess.run(["zpool", "create", "tank"], env=env, check=True, timeout=60)
    backend = RealBackend(env=env, timeout=60, user_props=("zfleet:role",))
    backend.create("tank/a")
    (mountpoint(backend) / "f").write_text("one")
    backend.snapshot(["tank/a@s1"])
    return backend


def mountpoint(zfs: RealBackend) -> Path:
    path = zfs.mountpoint("tank/a")
    assert path is not None
    return Path(path)


def test_demote_then_promote(zfs: RealBackend) -> None:
    (down,) = demote_readonly(zfs, ["tank/a"], unmount=True)
    assert (down.made_readonly, down.unmounted) == (True, True)
    with pytest.raises(InvalidOperation, match="cannot unmount 'tank/a': not currently mounted"):
        zfs.unmount("tank/a")

    (up,) = promote_writable(zfs, ["tank/a"])
    assert (up.made_writable, up.mounted, up.rolled_back_to) == (True, True, None)
    got = zfs.get("tank/a", ["readonly", "canmount", "mounted", "zfleet:role"])
    assert {k: v.value for k, v in got.items()} == {
        "readonly": "off", "canmount": "on", "mounted": "yes", "zfleet:role": "primary",
    }  # fmt: skip
    assert (mountpoint(zfs) / "f").read_text() == "one"


def test_divergence_kept_aside(zfs: RealBackend) -> None:
    (mountpoint(zfs) / "g").write_text("diverged")
    report = preserve_divergence(zfs, "tank/a", "s1", "t1")
    assert report.aside == "tank/a.diverged-t1"
    assert [o.short for o in zfs.list("tank/a", recursive=False, types=[ObjType.SNAPSHOT])] == [
        "s1"
    ]
    assert zfs.list("tank/a.diverged-t1", recursive=False)[0].origin == "tank/a@s1"
