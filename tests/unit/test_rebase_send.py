"""After a rebase onto a base a replica holds, the replica needs only the image's own delta."""

from __future__ import annotations

import os
from pathlib import Path

from tests.unit.rebase_helpers import copy_tree, fill_base, listing, mount
from tests.unit.sim_helpers import send_bytes
from workers.rebase import rebase
from workers.zfs.base import ReceiveSpec, SendSpec
from workers.zfs.sim import SimBackend


def receive(sim: SimBackend, data: bytes, target: str) -> None:
    sink = sim.receive(ReceiveSpec(target))
    sink.write(data)
    sink.finish()


def test_a_rebased_image_is_an_incremental_from_the_base_snapshot(tmp_path: Path) -> None:
    alpha = SimBackend(tmp_path / "alpha")
    beta = SimBackend(tmp_path / "beta")
    alpha.create_pool("tank")
    beta.create_pool("rep")
    alpha.create("tank/base")
    fill_base(mount(alpha, "tank/base"))
    for i in range(8):  # a base of a few MiB, so the difference in bytes is plain
        (mount(alpha, "tank/base") / "usr" / "lib" / f"pkg{i}.so").write_bytes(os.urandom(400_000))
    alpha.snapshot(["tank/base@v1"])
    receive(beta, send_bytes(alpha, SendSpec("tank/base@v1")), "rep/base")  # beta holds the base

    alpha.create("tank/app")  # imported as a full copy, plus its own 200 kB
    app = mount(alpha, "tank/app")
    copy_tree(mount(alpha, "tank/base"), app)
    (app / "srv").mkdir()
    (app / "srv" / "data").write_bytes(os.urandom(200_000))
    alpha.snapshot(["tank/app@s1"])
    full = alpha.estimate(SendSpec("tank/app@s1"))

    report = rebase(alpha, "tank/app", "tank/base@v1", keep_content=True)
    assert report.snapshot is not None
    delta = alpha.estimate(SendSpec(report.snapshot, from_snap="tank/base@v1"))
    stream = send_bytes(alpha, SendSpec(report.snapshot, from_snap="tank/base@v1"))
    assert len(stream) == delta
    assert full > 3_000_000
    assert delta < 0.15 * full  # the image's own files and metadata, not the base again

    receive(beta, stream, "rep/app")  # a clone of the base beta already holds
    assert beta.get("rep/app", ["origin"])["origin"].value == "rep/base@v1"
    assert listing(mount(beta, "rep/app")) == listing(mount(alpha, "tank/app"))
