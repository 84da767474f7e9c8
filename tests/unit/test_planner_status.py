"""`zfleet status`'s model: where each snapshot is, and how far each target lags."""

from __future__ import annotations

from app.cli.status import fleet_status
from coordinator.config import parse_config
from tests.unit.fleetfakes import dataset, graph_of, job_config


def test_snapshots_located_by_guid_and_lag_counted() -> None:
    config = parse_config(job_config())
    g = graph_of(
        alpha=[dataset("tank/t", ["s1", "s2", "s3"]), dataset("tank/t/c", ["c1"])],
        beta=[dataset("bk/t", ["s1", "s2", "s3"], guid_from="tank/t")],
        gamma=[dataset("bk/t", ["s1"], guid_from="tank/t")],
    )
    rows = {r["dataset"]: r for r in fleet_status(g, config)}
    top = rows["tank/t"]
    assert [s["on"] for s in top["snapshots"]] == [
        ["alpha", "beta", "gamma"], ["alpha", "beta"], ["alpha", "beta"],
    ]
    lag = {t["target"]: t for t in top["targets"]}
    assert lag["beta:bk/t"]["snapshots_behind"] == 0
    assert lag["gamma:bk/t"]["snapshots_behind"] == 2
    assert lag["gamma:bk/t"]["newest_common"] == "s1"
    assert lag["gamma:bk/t"]["seconds_behind"] == 2
    child = {t["target"]: t for t in rows["tank/t/c"]["targets"]}
    assert not child["beta:bk/t/c"]["exists"]
