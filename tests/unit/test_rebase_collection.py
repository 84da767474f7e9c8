"""A collection rebased around its cluster bases, bases first; and `zfleet rebase` itself."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import cli
from protocol.errors import ConfigError
from tests.unit.rebase_helpers import copy_tree, fill_base, listing, mount
from workers.rebase.collection import Cluster, Proposal, order, rebase_collection
from workers.zfs.sim import SimBackend


def look_alikes(sim: SimBackend, names: list[str]) -> dict[str, dict[str, tuple[object, ...]]]:
    """Independent full copies of one tree, each with its own 100 kB; their listings."""
    sim.create("tank/seed")
    fill_base(mount(sim, "tank/seed"))
    out = {}
    for name in names:
        sim.create(name)
        root = mount(sim, name)
        copy_tree(mount(sim, "tank/seed"), root)
        (root / "own.bin").write_bytes(os.urandom(100_000))
        sim.snapshot([f"{name}@import"])
        out[name] = listing(root)
    sim.destroy("tank/seed")
    return out


def test_order_puts_bases_first_and_refuses_cycles() -> None:
    p = Proposal((Cluster("tank/a", ("tank/b", "tank/c")), Cluster("tank/root@s", ("tank/a",))))
    pairs = order(p)
    assert pairs.index(("tank/a", "tank/root@s")) < pairs.index(("tank/b", "tank/a"))
    with pytest.raises(ConfigError, match="cycle"):
        order(Proposal((Cluster("tank/a", ("tank/b",)), Cluster("tank/b", ("tank/a",)))))
    with pytest.raises(ConfigError, match="two clusters"):
        order(Proposal((Cluster("tank/a", ("tank/c",)), Cluster("tank/b", ("tank/c",)))))
    with pytest.raises(ConfigError, match="members"):
        Proposal.load('{"clusters": [{"base": "tank/a"}]}')


def test_a_collection_is_rebased_onto_its_medoid(tmp_path: Path) -> None:
    sim = SimBackend(tmp_path / "pools")
    sim.create_pool("tank")
    images = [f"tank/img{i}" for i in range(4)]
    before = look_alikes(sim, images)
    report = rebase_collection(
        sim, Proposal((Cluster("tank/img0", tuple(images[1:])),)), drop_old=True
    )
    assert report.failed == {}
    assert [r.image for r in report.rebased] == images[1:]
    for name in images:
        assert listing(mount(sim, name)) == before[name]
    origins = {sim.get(n, ["origin"])["origin"].value for n in images[1:]}
    assert len(origins) == 1 and origins.pop().startswith("tank/img0@zfleet-base-")
    # three copies of the shared tree are gone: each was about 1.4 MB
    assert report.allocated_after < report.allocated_before - 3 * 1_000_000
    assert report.used_after < report.used_before


def test_the_cli_rebases_and_reports_json(tmp_path: Path) -> None:
    root = tmp_path / "pools"
    sim = SimBackend(root)
    sim.create_pool("tank")
    before = look_alikes(sim, ["tank/base", "tank/app"])
    env = {"ZFLEET_SIM_ROOT": str(root)}
    runner = CliRunner()
    bad = runner.invoke(cli, ["rebase", "tank/app", "--onto", "tank/base"], env=env)
    assert bad.exit_code == 1 and "is not a snapshot" in bad.output
    done = runner.invoke(
        cli,
        ["rebase", "tank/app", "--onto", "tank/base@import", "--keep-content", "--json"],
        env=env,
    )
    assert done.exit_code == 0, done.output
    [entry] = json.loads(done.output)
    assert entry["method"] == "keep-content" and entry["backup"].startswith("tank/app.pre-rebase-")
    sim2 = SimBackend(root)  # a fresh view of what the command left
    assert sim2.get("tank/app", ["origin"])["origin"].value == "tank/base@import"
    assert listing(mount(sim2, "tank/app")) == before["tank/app"]
    back = runner.invoke(cli, ["rebase", "--undo", "tank/app"], env=env)
    assert back.exit_code == 0 and "back to tank/app.pre-rebase-" in back.output
    usage = runner.invoke(cli, ["rebase", "tank/app"], env=env)
    assert usage.exit_code == 2 and "--onto" in usage.output
