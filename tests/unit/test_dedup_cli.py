"""`zfleet dedup analyze` end to end over the simulation and over fixture streams."""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from app.cli import cli
from tests.conftest import FIXTURES
from tests.unit.sim_helpers import mnt, new_sim
from workers.dedup import RECORD, Proposal

STREAMS = FIXTURES / "zfs-streams"


@pytest.fixture
def sim_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rng = random.Random(4)
    sim = new_sim(tmp_path, ["tank"], ["tank/a", "tank/b", "tank/c"])
    base = rng.randbytes(4 * RECORD)
    for name in ("tank/a", "tank/b"):
        (mnt(sim, name) / "base").write_bytes(base)
        (mnt(sim, name) / "own").write_bytes(rng.randbytes(RECORD))
    (mnt(sim, "tank/c") / "c").write_bytes(rng.randbytes(2 * RECORD))
    monkeypatch.setenv("ZFLEET_SIM_ROOT", str(tmp_path / "pools"))
    return tmp_path / "pools"


def test_pool_analysis_prints_json_and_draws(sim_root: Path, tmp_path: Path) -> None:
    svg = tmp_path / "out.svg"
    result = CliRunner().invoke(cli, ["dedup", "analyze", "tank", "--json", "--svg", str(svg)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    proposal = Proposal.from_dict(data)
    assert proposal.bytes_now == 3 * 5 * RECORD - 3 * RECORD  # 5 + 5 + 2 records
    assert proposal.bytes_after == proposal.lower_bound == (5 + 1 + 2) * RECORD
    assert proposal.rebases() == [("tank/b", "tank/a")]
    assert [d["dataset"] for d in data["datasets"]] == ["tank/a", "tank/b", "tank/c"]
    cells = [e for e in ET.parse(svg).getroot().iter() if e.get("class") == "cell"]
    assert len(cells) == 9


def test_table_names_the_figures(sim_root: Path) -> None:
    result = CliRunner().invoke(cli, ["dedup", "analyze", "tank/a", "tank/b"])
    assert result.exit_code == 0, result.output
    assert "after the proposed rebase:  768.0 KiB" in result.output
    assert "record-level lower bound:   768.0 KiB" in result.output
    rows = [line.split()[:3] for line in result.output.splitlines()]
    assert ["1", "tank/a", "base"] in rows and ["1", "tank/b", "member"] in rows


def test_streams_from_fixture_files() -> None:
    files = [
        str(STREAMS / f"{n}.zstream") for n in ("full-s1", "incr-s1-s2", "clone-app-from-base-s2")
    ]
    result = CliRunner().invoke(cli, ["dedup", "analyze", "--from-streams", *files, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {d["dataset"] for d in data["datasets"]} == {"fx/base", "fx/app"}
    assert data["bytes_after"] == data["lower_bound"]


def test_errors_are_one_line_with_exit_codes(sim_root: Path) -> None:
    missing = CliRunner().invoke(cli, ["dedup", "analyze", "tank/zz"])
    assert missing.exit_code == 1 and "does not exist" in missing.output
    raw = CliRunner().invoke(
        cli, ["dedup", "analyze", "--from-streams", str(STREAMS / "raw-encrypted-e1.zstream")]
    )
    assert raw.exit_code == 1 and "raw (-w) send" in raw.output
    bad = CliRunner().invoke(cli, ["dedup", "analyze", "tank", "--threshold", "1.5"])
    assert bad.exit_code == 2 and "threshold" in bad.output
    host = CliRunner().invoke(cli, ["dedup", "analyze", "tank", "--host", "alpha"])
    assert host.exit_code == 2 and "fleet config" in host.output


def test_host_from_the_fleet_config(sim_root: Path, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(f'[hosts.alpha]\nbackend = "sim"\nsim_root = "{sim_root}"\n')
    args = ["dedup", "analyze", "tank", "--host", "alpha", "-c", str(fleet), "--json"]
    result = CliRunner().invoke(cli, args, env={"ZFLEET_SIM_ROOT": str(tmp_path / "elsewhere")})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["bytes_after"] == (5 + 1 + 2) * RECORD
    unknown = CliRunner().invoke(cli, [*args[:3], "--host", "gamma", "-c", str(fleet)])
    assert unknown.exit_code == 2 and "gamma" in unknown.output


def test_sketched_run_rereads_for_exact_figures(sim_root: Path) -> None:
    args = ["dedup", "analyze", "tank", "--method", "sketch", "--sketch-size", "3", "--json"]
    data = json.loads(CliRunner().invoke(cli, args).output)
    assert data["method"] == "sketch+reread"
    assert data["bytes_after"] == (5 + 1 + 2) * RECORD
    rough = json.loads(CliRunner().invoke(cli, [*args, "--no-reread"]).output)
    assert rough["method"] == "sketch"
    assert rough["bytes_now"] == data["bytes_now"]
