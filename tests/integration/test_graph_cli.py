"""`zfleet graph -o fleet.svg` on a fleet known only through the inventories in Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from coordinator.jobstore import JobStore
from protocol.zfs import InventoryReport
from tests.services.redis import RedisServer, redis_server  # noqa: F401  (fixture)
from workers.zfs.base import ReceiveSpec, SendSpec
from workers.zfs.sim import SimBackend

pytestmark = pytest.mark.integration

SVG = "{http://www.w3.org/2000/svg}"
FLEET = """
[hosts.alpha]
backend = "sim"
sim_root = "{root}/alpha"
[hosts.beta]
backend = "sim"
sim_root = "{root}/beta"
[jobs.img]
source = "alpha:tank/img"
targets = ["beta:bk/img"]
"""


def test_graph_draws_hosts_clones_and_a_lagging_target(
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    alpha, beta = SimBackend(tmp_path / "alpha"), SimBackend(tmp_path / "beta")
    alpha.create_pool("tank")
    alpha.create("tank/img")
    alpha.snapshot(["tank/img@s1"])
    alpha.clone("tank/img@s1", "tank/app")
    alpha.snapshot(["tank/img@s2"])
    beta.create_pool("bk")
    stream = alpha.send(SendSpec(snapshot="tank/img@s1"))
    sink = beta.receive(ReceiveSpec(target="bk/img"))
    while chunk := stream.read(1 << 16):
        sink.write(chunk)
    stream.close()
    sink.finish()
    store = JobStore(redis_server.client())
    for host, backend in (("alpha", alpha), ("beta", beta)):
        rows = tuple(backend.list())
        store.put_inventory(InventoryReport(host=host, taken_at=time.time(), objects=rows))
    config = tmp_path / "fleet.toml"
    config.write_text(FLEET.format(root=tmp_path))
    out = tmp_path / "fleet.svg"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZFLEET_")}
    env["ZFLEET_REDIS_URL"] = redis_server.url
    done = subprocess.run(
        [str(Path(sys.executable).parent / "zfleet"), "graph", "-c", str(config), "-o", str(out)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout
    root = ET.parse(out).getroot()
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert {"alpha", "beta"} <= set(texts)
    assert any(t.startswith("1 behind") for t in texts)  # s1 and s2 may share a second
    lacking = [c.findtext(f"{SVG}title") for c in root.iter(f"{SVG}circle")
               if (c.findtext(f"{SVG}title") or "").startswith("lacks")]  # fmt: skip
    assert lacking == ["lacks tank/img@s2 of alpha"]
    clone_edges = [p.findtext(f"{SVG}title") for p in root.iter(f"{SVG}path")
                   if p.find(f"{SVG}title") is not None]  # fmt: skip
    assert clone_edges == ["tank/app is a clone of tank/img@s1"]


def test_graph_without_redis_says_so(tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(FLEET.format(root=tmp_path))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZFLEET_")}
    env["ZFLEET_REDIS_URL"] = "redis://127.0.0.1:1/0"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "zfleet"), "graph", "-c", str(config),
         "-o", str(tmp_path / "x.svg")],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 4
    assert "cannot reach Redis" in done.stderr
    assert not (tmp_path / "x.svg").exists()
