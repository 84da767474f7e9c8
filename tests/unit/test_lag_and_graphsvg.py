"""Replication lag from the fleet graph, and the SVG picture drawn from it.

Graphs are built from inventory rows as workers report them; the SVG is parsed back as XML and
read for what a person looking at it would see: hosts, clone arrows, lacking snapshots, lag.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from coordinator.config import parse_config
from coordinator.graph import FleetGraph
from coordinator.graphsvg import columns, render_svg
from coordinator.lag import BEHIND, MISSING, UP_TO_DATE, fleet_lag
from workers.zfs.base import ObjType, ZfsObject

SVG = "{http://www.w3.org/2000/svg}"
CONFIG = parse_config("""
[hosts.alpha]
backend = "real"
[hosts.beta]
backend = "real"
[hosts.gamma]
backend = "real"
[jobs.img]
source = "alpha:tank/img"
targets = ["beta:bk/img", "gamma:bk/img"]
""")


def fs(name: str, guid: int, origin: str | None = None) -> ZfsObject:
    return ZfsObject(name, ObjType.FILESYSTEM, guid, 1, 0, origin=origin)


def snap(name: str, guid: int, txg: int, creation: int) -> ZfsObject:
    return ZfsObject(name, ObjType.SNAPSHOT, guid, txg, creation)


def fleet(gamma_has: int = 3, with_gamma_clone: bool = True) -> FleetGraph:
    """alpha: base with s1..s3 (created at 100, 200, 300) and a clone of base@s1."""
    g = FleetGraph()
    src = [fs("tank/img", 1), fs("tank/img/base", 2), fs("tank/img/app", 3, "tank/img/base@s1")]
    src += [snap(f"tank/img/base@s{i}", 10 + i, i, i * 100) for i in (1, 2, 3)]
    src += [snap("tank/img@s1", 20, 1, 100), snap("tank/img/app@a1", 30, 5, 150)]
    g.add_inventory("alpha", src)
    for host, upto in (("beta", 3), ("gamma", gamma_has)):
        rows = [fs("bk/img", 101), fs("bk/img/base", 102)]
        if host == "beta" or with_gamma_clone:
            rows.append(fs("bk/img/app", 103, "bk/img/base@s1"))
            rows.append(snap("bk/img/app@a1", 30, 9, 150))
        rows += [snap(f"bk/img/base@s{i}", 10 + i, 3 + i, i * 100) for i in range(1, upto + 1)]
        rows.append(snap("bk/img@s1", 20, 2, 100))
        g.add_inventory(host, rows)
    return g


def by_target(lags: list) -> dict[tuple[str, str], object]:
    return {(lg.target_host, lg.dataset): lg for lg in lags}


def test_lag_states_and_seconds() -> None:
    lags = by_target(fleet_lag(fleet(gamma_has=1, with_gamma_clone=False), CONFIG, now=1000))
    assert lags["beta", "tank/img/base"].state == UP_TO_DATE
    assert lags["beta", "tank/img/base"].seconds == 0
    behind = lags["gamma", "tank/img/base"]
    assert behind.state == BEHIND
    assert behind.behind == 2
    assert behind.seconds == 200  # s3 was created 200 s after s1, the newest gamma holds
    assert behind.held is not None and behind.held.short == "s1"
    missing = lags["gamma", "tank/img/app"]
    assert missing.state == MISSING
    assert missing.seconds == 1000 - 150  # the age of the oldest snapshot gamma lacks


def test_lag_leaves_out_hosts_without_inventory() -> None:
    g = fleet()
    del g.hosts["gamma"]
    assert {lg.target_host for lg in fleet_lag(g, CONFIG, now=0)} == {"beta"}


def test_lag_matches_by_guid_not_by_name() -> None:
    g = fleet()
    rows = [fs("bk/img", 101), fs("bk/img/base", 102), snap("bk/img/base@s3", 999, 4, 300)]
    g.add_inventory("gamma", rows)  # same name, different snapshot
    lag = by_target(fleet_lag(g, CONFIG, now=0))["gamma", "tank/img/base"]
    assert lag.state == MISSING


def test_columns_follow_creation_order() -> None:
    assert columns(fleet()) == ["s1", "a1", "s2", "s3"]


def test_svg_shows_hosts_clones_lacking_snapshots_and_lag() -> None:
    g = fleet(gamma_has=2)
    root = ET.fromstring(render_svg(g, fleet_lag(g, CONFIG, now=1000), title="t <&>", now=1000))
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert {"alpha", "beta", "gamma", "t <&>"} <= set(texts)  # escaped, and read back intact
    arrows = [p for p in root.iter(f"{SVG}path") if p.find(f"{SVG}title") is not None]
    assert len(arrows) == 3  # app is a clone of base@s1 on each host
    assert all("clone of" in (p.findtext(f"{SVG}title") or "") for p in arrows)
    lacking = [c for c in root.iter(f"{SVG}circle")
               if (c.findtext(f"{SVG}title") or "").startswith("lacks")]  # fmt: skip
    assert [c.findtext(f"{SVG}title") for c in lacking] == ["lacks tank/img/base@s3 of alpha"]
    assert "1 behind, 1m" in texts
    # beta's three rows, gamma's img and app, and the legend
    assert texts.count("up to date") == 6


def test_svg_draws_a_missing_target_row() -> None:
    g = fleet(with_gamma_clone=False)
    svg = render_svg(g, fleet_lag(g, CONFIG, now=1000), now=1000)
    root = ET.fromstring(svg)
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert "app (missing)" in texts
    assert "missing (1 snapshots)" in texts


def test_columns_in_one_second_follow_each_datasets_own_order() -> None:
    g = FleetGraph()
    # v3 and job-2 share a creation second; within tank/base v3 came first
    g.add_inventory("alpha", [fs("tank/base", 1), snap("tank/base@job-1", 11, 2, 50),
                              snap("tank/base@v3", 12, 5, 100),
                              snap("tank/base@job-2", 13, 6, 100)])  # fmt: skip
    # a replica received job-2 of another dataset early, so its txgs alone would mislead
    g.add_inventory("beta", [fs("bk/other", 2), snap("bk/other@job-2", 21, 1, 100),
                             fs("bk/base", 3), snap("bk/base@job-1", 11, 2, 50),
                             snap("bk/base@v3", 12, 3, 100), snap("bk/base@job-2", 13, 4, 100),
                             snap("bk/base@extra", 14, 5, 100)])  # fmt: skip
    assert columns(g) == ["job-1", "v3", "job-2", "extra"]


def test_columns_of_unrelated_datasets_follow_the_txgs_of_one_host() -> None:
    g = FleetGraph()
    g.add_inventory("alpha", [fs("tank/base", 1), snap("tank/base@v1", 11, 2, 100),
                              snap("tank/base@v2", 12, 4, 100), fs("tank/app", 2),
                              snap("tank/app@release", 21, 5, 100)])  # fmt: skip
    assert columns(g) == ["v1", "v2", "release"]  # by name alone "release" would come first
