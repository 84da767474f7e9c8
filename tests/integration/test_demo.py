"""`zfleet demo` as a newcomer runs it: a real subprocess that must pass every check and clean up.

The demo starts Redis, three worker processes, a coordinator (with the HTTP API, the live page and
Alertmanager's webhook) and a metrics endpoint; the test asserts what a user relies on: exit 0,
every check printed and passed (the syncs, the store, the restore, a `zfleet clone`, the failover
to beta through the webhook, the rejoin of alpha), the picture written, the live page's address
printed, and no process of the demo left running afterwards, also when the user presses Ctrl-C
half-way.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import need
from tests.services.redis import redis_binary

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ZFLEET = str(Path(sys.executable).parent / "zfleet")


def processes_under(directory: Path) -> list[str]:
    """Command lines of live processes that mention ``directory`` (the demo's children do)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next(line for line in (entry / "status").read_text().splitlines()
                         if line.startswith("State:"))  # fmt: skip
        except (OSError, StopIteration):
            continue
        if str(directory) in cmd and "zombie" not in state:
            found.append(f"{entry.name}: {cmd}")
    return found


def demo_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZFLEET_")}
    env["COLUMNS"] = "120"
    return env


@pytest.mark.timeout(300)  # the whole demo: ~30 s here, more on a loaded machine
def test_demo_passes_every_check_and_leaves_nothing_running(tmp_path: Path) -> None:
    need(redis_binary() is not None, "redis-server")
    work = tmp_path / "demo"
    svg = tmp_path / "fleet.svg"
    done = subprocess.run(
        [ZFLEET, "demo", "--dir", str(work), "--svg", str(svg)],
        capture_output=True, text=True, timeout=290, env=demo_env(), cwd=tmp_path, check=False,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    summary = re.search(r"(\d+)/(\d+) checks passed", out)
    assert summary, out[-2000:]
    passed, total = int(summary[1]), int(summary[2])
    assert passed == total >= 35, out[-3000:]
    assert "✘" not in out
    flat = " ".join(out.split())  # rich wraps long lines at COLUMNS
    for claim in ("clones are clones of the same origins", "snapshots present with equal guids",
                  "files of all", "restore from the store", "the incremental moved",
                  "0 transfers planned", "0 behind",
                  "zfleet clone: gamma:backup/try-v3 is a clone of backup/alpha/images/base@v3",
                  "webhook answered 200: failover of job demo started",
                  "the repeated notification started nothing new", "beta is the primary",
                  "datasets writable and mounted (readonly=off)", "fencing epoch of job demo is 1",
                  "alert to writable in", "data-loss window", "the job now runs from beta",
                  "no full send", "alpha's unreplicated write kept aside in tank/home.diverged-",
                  "rejoin sent alpha", "alpha is a replica again (readonly=on)",
                  "against beta: alpha: files of all", "against beta: gamma: files of all",
                  ):  # fmt: skip
        assert claim in flat, f"the demo never reported {claim!r}"
    assert out.count("✔") == total
    page = re.search(r"live fleet page: (http://127\.0\.0\.1:\d+)/", flat)
    assert page, "the demo never printed the live page's address"
    rejoined = re.search(r"rejoin sent alpha ([\d,]+) bytes, the full sync ([\d,]+)", flat)
    assert rejoined
    moved, full = (int(g.replace(",", "")) for g in rejoined.groups())
    assert 0 < moved * 5 < full, "the rejoin moved more than the increment"
    tree = ET.parse(svg).getroot()
    texts = {t.text for t in tree.iter("{http://www.w3.org/2000/svg}text")}
    assert {"alpha", "beta", "gamma", "store:bucket"} <= texts
    arrows = {str(title.text) for p in tree.iter("{http://www.w3.org/2000/svg}path")
              if p.get("marker-end")
              and (title := p.find("{http://www.w3.org/2000/svg}title")) is not None}  # fmt: skip
    for app, origin in (("web", "v1"), ("db", "v2"), ("ci", "v2")):
        assert f"tank/images/{app} is a clone of tank/images/base@{origin}" in arrows
        want = f"backup/alpha/images/{app} is a clone of backup/alpha/images/base@{origin}"
        assert want in arrows
    assert "backup/try-v3 is a clone of backup/alpha/images/base@v3" in arrows
    assert any(a.startswith("tank/home.diverged-") for a in arrows), "the aside clone"
    assert not processes_under(work), processes_under(work)
    assert (work / "logs" / "worker-alpha.log").stat().st_size > 0


@pytest.mark.timeout(180)
def test_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    need(redis_binary() is not None, "redis-server")
    work = tmp_path / "demo"
    proc = subprocess.Popen(
        [ZFLEET, "demo", "--dir", str(work), "--svg", str(tmp_path / "fleet.svg")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=demo_env(),
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.stdout is not None
    lines = []
    try:
        for line in proc.stdout:  # wait until the sync runs: every process is up by then
            lines.append(line)
            if "Full sync" in line:
                break
        started = processes_under(work)
        assert len(started) >= 6, "".join(lines)  # redis, 3 workers, coordinator, metrics
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, "".join(lines) + rest
    assert "interrupted" in rest
    deadline = time.monotonic() + 5
    while processes_under(work) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_under(work), processes_under(work)
