"""The alert ledger on a real redis-server: the first claim of an outage wins, repeats get it."""

from __future__ import annotations

import pytest
import redis

from coordinator.alerts import AlertLedger
from protocol.errors import RedisUnavailable
from tests.services.redis import RedisServer, free_port, redis_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


def test_repeats_of_an_alert_get_the_first_job(redis_server: RedisServer) -> None:  # noqa: F811
    ledger = AlertLedger(redis_server.client(), ttl=60)
    key = "0a1b2c3d4e5f6789@2026-12-02T16:30:00Z"
    assert ledger.job_for(key) is None
    assert ledger.claim(key, "job-1") == "job-1"
    assert ledger.claim(key, "job-2") == "job-1"
    assert AlertLedger(redis_server.client()).claim(key, "job-3") == "job-1"
    assert ledger.job_for(key) == "job-1"
    assert ledger.claim("ffffffffffffffff@2026-12-02T16:30:00Z", "job-4") == "job-4"
    assert 0 < int(redis_server.client().ttl(f"zfleet:alert:{key}")) <= 60


def test_redis_down_is_a_retryable_error() -> None:
    ledger = AlertLedger(redis.Redis(host="127.0.0.1", port=free_port(), socket_timeout=1))
    with pytest.raises(RedisUnavailable, match="cannot record alert"):
        ledger.claim("k", "job")
    with pytest.raises(RedisUnavailable, match="cannot read alert"):
        ledger.job_for("k")
