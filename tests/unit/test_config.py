"""Fleet config: a good file loads into typed objects; a bad one names its line and key."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from coordinator.config import DatasetRef, JobTarget, load_config, parse_config
from coordinator.schedule import parse_schedule
from protocol.errors import ConfigError

GOOD = """\
[hosts.alpha]
backend = "sim"
sim_root = "/tmp/alpha"
stream_address = "127.0.0.1:7001"

[hosts.beta]
backend = "real"
exec_prefix = "ssh -o BatchMode=yes root@beta"

[stores.bucket]
kind = "s3"
endpoint = "http://127.0.0.1:8333"
bucket = "zfleet"

[jobs.images]
source = "alpha:tank/images"
targets = ["beta:backup/images", "store:bucket"]
exclude = ["*/scratch"]
schedule = "15m"
snapshot = "zfleet-%Y%m%dT%H%M%SZ"
incremental = "i"
force_rollback = true

[jobs.images.retention]
"zfleet-*" = 24
"""


def test_good_config_loads_typed(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(GOOD)
    cfg = load_config(path)
    assert cfg.hosts["alpha"].sim_root == Path("/tmp/alpha")
    assert cfg.hosts["beta"].exec_prefix == ("ssh", "-o", "BatchMode=yes", "root@beta")
    job = cfg.job("images")
    assert job.sources == (DatasetRef("alpha", "tank/images"),)
    assert job.targets == (JobTarget(host="beta", dataset="backup/images"),
                           JobTarget(store="bucket"))
    assert job.schedule is not None and job.schedule.interval == 900
    assert job.retention[0].pattern == "zfleet-*" and job.retention[0].keep == 24
    assert job.incremental == "i" and job.force_rollback
    assert job.target_dataset(job.sources[0], job.targets[0], "tank/images/a/b") == (
        "backup/images/a/b"
    )


def test_several_sources_land_under_the_target_by_last_component() -> None:
    cfg = parse_config(
        '[hosts.a]\nbackend="real"\n[jobs.j]\nsources=["a:p/x","a:p/y"]\ntargets=["a:q"]\n'
    )
    job = cfg.job("j")
    assert job.target_dataset(job.sources[1], job.targets[0], "p/y/c") == "q/y/c"


@pytest.mark.parametrize(
    ("edit", "line", "words"),
    [
        (("backend = \"sim\"", "backend = \"zfs\""), 2, "hosts.alpha.backend"),
        (("incremental = \"i\"", "incremental = \"R\""), 21, "jobs.images.incremental"),
        (("schedule = \"15m\"", "schedule = \"every day\""), 19, "jobs.images.schedule"),
        (("\"zfleet-*\" = 24", "\"zfleet-*\" = 0"), 25, "jobs.images.retention.zfleet-*"),
        (("store:bucket", "store:nope"), 17, "unknown store 'nope'"),
        (("alpha:tank/images", "omega:tank/images"), 16, "unknown host 'omega'"),
        (("exclude = ", "exclud = "), 18, "jobs.images.exclud"),
        (("snapshot = \"zfleet-%Y%m%dT%H%M%SZ\"", "snapshot = \"fixed\""), 20, "time field"),
        (("force_rollback = true", "force_rollback = \"yes\""), 22, "true or false"),
    ],
)
def test_bad_config_names_line_and_key(edit: tuple[str, str], line: int, words: str) -> None:
    text = GOOD.replace(*edit)
    assert text != GOOD
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="fleet.toml")
    msg = str(info.value)
    assert f"fleet.toml:{line}:" in msg
    assert words in msg


def test_toml_syntax_error_is_a_config_error_with_position() -> None:
    with pytest.raises(ConfigError, match=r"fleet.toml: not valid TOML: .*line 2"):
        parse_config("[hosts]\nalpha = = 1\n", source="fleet.toml")


def test_missing_file_and_unknown_job_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")
    cfg = parse_config(GOOD)
    with pytest.raises(ConfigError, match=r"no job named 'x' \(jobs: images\)"):
        cfg.job("x")


def test_target_inside_source_is_refused() -> None:
    with pytest.raises(ConfigError, match="lies inside source"):
        parse_config('[hosts.a]\n[jobs.j]\nsource="a:p/x"\ntargets=["a:p/x/copy"]\n')


def test_interval_and_cron_schedules() -> None:
    assert parse_schedule("1h30m").interval == 5400
    now = datetime(2026, 11, 28, 7, 53, 10, tzinfo=UTC)
    every15 = parse_schedule("*/15 * * * *")
    assert every15.next_after(None, now) == datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
    weekly = parse_schedule("30 2 * * 1")  # Mondays 02:30
    assert weekly.next_after(now, now) == datetime(2026, 11, 30, 2, 30, tzinfo=UTC)
    iv = parse_schedule("10m")
    assert iv.next_after(None, now) == now
    assert iv.next_after(now, now) == datetime(2026, 11, 28, 8, 3, 10, tzinfo=UTC)
    with pytest.raises(ConfigError, match="outside 0-59"):
        parse_schedule("61 * * * *")
    with pytest.raises(ConfigError, match="never fires"):
        parse_schedule("0 0 30 2 *").next_after(None, now)
