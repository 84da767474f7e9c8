"""`zfleet logs` end to end on a simulated host: archive key, init, roll, list, open."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner

from app.cli import cli
from workers.zfs.sim import SimBackend


def js(output: str) -> object:
    """The JSON a command printed (log lines of the in-process run come before it)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(("{", "[")))
    return json.loads("\n".join(lines[start:]))


def test_roll_locks_the_period_and_only_the_archive_key_opens_it(tmp_path: Path) -> None:
    sim_root = tmp_path / "alpha"
    SimBackend(sim_root).create_pool("tank")
    config = tmp_path / "fleet.toml"
    config.write_text(f'[hosts.alpha]\nbackend = "sim"\nsim_root = "{sim_root}"\n')
    run = CliRunner().invoke
    key = tmp_path / "archive.key"
    assert run(cli, ["logs", "archive-key", str(key)]).exit_code == 0
    assert key.stat().st_mode & 0o777 == 0o600
    again = run(cli, ["logs", "archive-key", str(key)])
    assert again.exit_code == 2 and "never overwritten" in again.output
    addr, c = "alpha:tank/logs/web", ["--config", str(config)]
    done = run(cli, ["logs", "init", addr, "--archive-pub", f"{key}.pub", *c])
    assert done.exit_code == 0, done.output
    be = SimBackend(sim_root)
    (period,) = [n for n in (o.name for o in be.list("tank/logs/web")) if "/p-" in n]
    line = b"GET /secret " + os.urandom(8).hex().encode()
    mp = be.mountpoint(period)
    assert mp is not None
    Path(mp, "access.log").write_bytes(line)
    rolled = run(cli, ["logs", "roll", addr, "--json", *c])
    assert rolled.exit_code == 0, rolled.output
    closed = js(rolled.stdout)["closed"]  # type: ignore[index]
    listed = js(run(cli, ["logs", "list", addr, "--json", *c]).stdout)
    assert isinstance(listed, list)
    assert {r["period"]: r["keystatus"] for r in listed}[closed] == "unavailable"

    other = tmp_path / "other.key"
    run(cli, ["logs", "archive-key", str(other)])
    wrong = run(cli, ["logs", "open", addr, closed, "--archive-key", str(other), *c])
    assert wrong.exit_code == 2 and "does not open" in wrong.output
    opened = run(cli, ["logs", "open", addr, closed, "--archive-key", str(key), *c])
    assert opened.exit_code == 0, opened.output
    mp = be.mountpoint(f"tank/logs/web/p-{closed}")
    assert mp is not None and Path(mp, "access.log").read_bytes() == line
