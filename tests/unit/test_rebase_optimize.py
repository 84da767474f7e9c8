"""`zfleet rebase --optimize POOL`: the analysis clusters the images, the members are rebased
onto their medoid, every tree stays as it was, and the space drops as the analysis said."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner

from app.cli import cli
from tests.unit.rebase_helpers import listing, mount
from tests.unit.test_rebase_collection import look_alikes
from workers.zfs.sim import SimBackend


def test_optimize_rebases_look_alikes_onto_their_medoid(tmp_path: Path) -> None:
    root = tmp_path / "pools"
    sim = SimBackend(root)
    sim.create_pool("tank")
    images = ["tank/a", "tank/b", "tank/c"]
    before = look_alikes(sim, images)
    sim.create("tank/other")  # nothing in common with the others: left alone
    (mount(sim, "tank/other") / "noise.bin").write_bytes(os.urandom(600_000))
    before["tank/other"] = listing(mount(sim, "tank/other"))
    env = {"ZFLEET_SIM_ROOT": str(root)}
    done = CliRunner().invoke(cli, ["rebase", "--optimize", "tank", "--drop-old", "--json"],
                              env=env)  # fmt: skip
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    (cluster,) = [c for c in report["analysis"]["clusters"] if c["members"]]
    base = cluster["base"]
    members = sorted(m["dataset"] for m in cluster["members"])
    assert base in images and members == sorted(set(images) - {base})
    assert sorted(r["image"] for r in report["rebased"]) == members
    fresh = SimBackend(root)
    for name, tree in before.items():
        assert listing(mount(fresh, name)) == tree
    for m in members:
        origin = fresh.get(m, ["origin"])["origin"].value
        assert origin.startswith(f"{base}@zfleet-base-") or origin.startswith(f"{base}@import")
    assert fresh.get("tank/other", ["origin"])["origin"].value in ("-", "")
    # two of the three copies of the shared tree (about 1.4 MB each) are gone
    assert report["allocated_after"] < report["allocated_before"] - 2 * 1_000_000
    # at least the saving the analysis promised (the pool's figures also count the old images'
    # snapshots, dropped with them)
    saved = report["analysis"]["bytes_now"] - report["analysis"]["bytes_after"]
    measured = report["allocated_before"] - report["allocated_after"]
    assert measured >= 0.9 * saved, (saved, measured)
    bad = CliRunner().invoke(cli, ["rebase", "--optimize", "tank", "--onto", "tank/a@import"],
                             env=env)  # fmt: skip
    assert bad.exit_code == 2 and "--optimize takes a collection" in bad.output


def test_a_collection_that_cannot_be_read_is_a_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "pools"
    SimBackend(root).create_pool("tank")
    env = {"ZFLEET_SIM_ROOT": str(root)}
    done = CliRunner().invoke(cli, ["rebase", "--optimize", "tank/nope"], env=env)
    assert done.exit_code == 2, done.output
    assert "zfleet: dataset tank/nope does not exist" in done.output
    assert "Traceback" not in done.output
    assert isinstance(done.exception, SystemExit)  # the CLI's own exit, not an escaped error
