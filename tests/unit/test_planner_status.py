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


def test_rejoin_asides_are_listed_per_host_and_job() -> None:
    from coordinator.fleetstatus import aside_datasets

    config = parse_config(job_config())
    g = graph_of(
        alpha=[dataset("tank/t", ["s1"]),
               dataset("tank/t.diverged-r1", ["zfleet-diverged-r1"], origin="tank/t@s1"),
               dataset("tank/t/c.replaced-r2", ["s2"], origin="tank/t/c@s1")],
        beta=[dataset("bk/t", ["s1"], guid_from="tank/t")],
        gamma=[dataset("bk/other.diverged-r9", ["x"])],  # outside the job's root: not listed
    )  # fmt: skip
    rows = aside_datasets(g, config)
    assert [(r["host"], r["dataset"], r["kind"], r["beside"], r["rejoin"]) for r in rows] == [
        ("alpha", "tank/t.diverged-r1", "diverged", "tank/t", "r1"),
        ("alpha", "tank/t/c.replaced-r2", "replaced", "tank/t/c", "r2"),
    ]
    assert rows[0]["snapshots"] == ["zfleet-diverged-r1"] and rows[0]["origin"] == "tank/t@s1"
