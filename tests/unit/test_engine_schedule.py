"""Which scheduled jobs are due: never twice at once, on their interval or cron time."""

from __future__ import annotations

from datetime import UTC, datetime

from coordinator.config import FleetConfig, parse_config
from coordinator.schedule import due as due_names

CONFIG = parse_config("""
[hosts.a]
[jobs.often]
source = "a:p/x"
targets = ["a:q/x"]
schedule = "15m"
[jobs.hourly]
source = "a:p/y"
targets = ["a:q/y"]
schedule = "0 * * * *"
[jobs.manual]
source = "a:p/z"
targets = ["a:q/z"]
""")


def due(config: FleetConfig, last: dict[str, float], running: set[str], now: float) -> list[str]:
    return due_names({n: j.schedule for n, j in config.jobs.items()}, last, running, now)


def ts(h: int, m: int) -> float:
    return datetime(2026, 11, 28, h, m, tzinfo=UTC).timestamp()


def test_never_run_interval_job_is_due_at_once_cron_waits_for_its_time() -> None:
    assert due(CONFIG, {}, set(), ts(8, 10)) == ["often"]
    assert due(CONFIG, {}, set(), ts(9, 0)) == ["hourly", "often"]


def test_interval_counts_from_the_last_start() -> None:
    last = {"often": ts(8, 0), "hourly": ts(8, 0)}
    assert due(CONFIG, last, set(), ts(8, 14)) == []
    assert due(CONFIG, last, set(), ts(8, 15)) == ["often"]
    assert due(CONFIG, last, set(), ts(9, 0)) == ["hourly", "often"]


def test_a_running_job_is_not_started_again() -> None:
    assert due(CONFIG, {"often": ts(7, 0)}, {"often"}, ts(9, 0)) == ["hourly"]
