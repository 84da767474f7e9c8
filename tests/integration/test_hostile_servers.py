"""bench/hostile_servers.py kept small in CI: real `zfleet coordinator --http` and `zfleet worker`
processes on loopback, one real redis-server.

A hundred seeded raw HTTP requests and Alertmanager webhooks each: never a traceback or a 500,
a refused one leaves Redis's jobs and epochs as they were, and no process dies. Then 200 held
connections (half silent, half trickling) against the worker's stream server and the API: a
legitimate transfer and a legitimate request still go through, during and after. And fleet
configs through the installed `zfleet` executable.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import hostile, hostile_servers
from tests.conftest import need
from tests.services.redis import redis_binary

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_hostile_http_webhooks_and_floods_against_real_processes(tmp_path: Path) -> None:
    binary = redis_binary()
    need(binary is not None and os.access(binary, os.X_OK), "redis-server")
    # the servers' deadlines are tested with short ones in tests/unit/test_hostile_inputs.py
    tallies, lines = hostile_servers.run(100, 20261204, tmp_path, 200, deadlines=False)
    by_family = {t.family: t for t in tallies}
    assert set(by_family) == {"http", "webhook", "events", "flood"}, [t.examples for t in tallies]
    for tally in tallies:
        assert (tally.tracebacks, tally.crashes, tally.partial) == (0, 0, 0), tally.examples
        assert tally.clear == tally.cases
    assert by_family["flood"].cases == 4
    assert any("200 connections held" in line for line in lines), lines


def test_mutated_fleet_configs_through_the_zfleet_executable(tmp_path: Path) -> None:
    # one process per case (a few seconds each on a loaded machine): the in-process family in
    # tests/unit covers the cases in number, this the console entry point itself
    tally = hostile.family_configs_cli(8, hostile.SEED + 6, tmp_path)
    assert (tally.tracebacks, tally.crashes, tally.partial) == (0, 0, 0), tally.examples
    assert tally.clear == tally.cases == 8
