"""Fencing epochs on a real redis-server: compare-and-set, races, retries, refusals."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from coordinator.epochs import EpochStore, epoch_key
from protocol.errors import RedisUnavailable, StaleEpoch
from tests.services.redis import RedisServer, free_port, redis_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


@pytest.fixture
def store(redis_server: RedisServer) -> EpochStore:  # noqa: F811
    return EpochStore(redis_server.client())


def test_bump_only_from_the_epoch_the_caller_saw(store: EpochStore) -> None:
    fresh = store.read("images")
    assert (fresh.value, fresh.primary, fresh.at) == (0, None, None)

    before = time.time()
    won = store.bump("images", seen=0, primary="beta", request="job-1")
    assert (won.won, won.epoch) == (True, 1)
    got = store.read("images")
    assert (got.value, got.primary) == (1, "beta")
    assert got.at is not None and before - 1 <= got.at <= time.time() + 1

    late = store.bump("images", seen=0, primary="gamma", request="job-2")
    assert (late.won, late.epoch) == (False, 1)
    assert store.read("images").primary == "beta"
    assert store.read("other").value == 0  # epochs are per job


def test_a_retried_bump_is_reported_won_once_and_not_applied_twice(store: EpochStore) -> None:
    first = store.bump("images", seen=0, primary="beta", request="job-1")
    again = store.bump("images", seen=0, primary="beta", request="job-1")
    assert (first.won, first.epoch, again.won, again.epoch) == (True, 1, True, 1)
    assert int(store.r.get(epoch_key("images")) or 0) == 1


def test_racing_coordinators_exactly_one_wins_each_round(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    rounds, racers = 30, 6
    winners: list[list[str]] = [[] for _ in range(rounds)]
    barrier = threading.Barrier(racers)

    def race(name: str) -> None:
        store = EpochStore(redis.Redis.from_url(redis_server.url))
        for i in range(rounds):
            barrier.wait()
            seen = i  # every racer read the same epoch for this round
            if store.bump("images", seen=seen, primary=name, request=f"{name}-{i}").won:
                winners[i].append(name)
            barrier.wait()

    threads = [threading.Thread(target=race, args=(f"c{n}",)) for n in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [len(w) for w in winners] == [1] * rounds
    final = EpochStore(redis_server.client()).read("images")
    assert final.value == rounds
    assert final.primary == winners[-1][0]


def test_check_refuses_older_and_newer_epochs(store: EpochStore) -> None:
    store.bump("images", seen=0, primary="beta", request="a")
    store.bump("images", seen=1, primary="alpha", request="b")
    store.check("images", 2)
    with pytest.raises(StaleEpoch, match="step of epoch 1 refused, the current epoch is 2") as e:
        store.check("images", 1)
    assert (e.value.seen, e.value.current) == (1, 2)
    with pytest.raises(StaleEpoch, match="was its state lost"):
        store.check("images", 3)


def test_redis_down_is_a_retryable_error() -> None:
    store = EpochStore(redis.Redis(host="127.0.0.1", port=free_port(), socket_timeout=1))
    with pytest.raises(RedisUnavailable, match="cannot read the epoch of job images"):
        store.read("images")
    with pytest.raises(RedisUnavailable, match="cannot bump"):
        store.bump("images", seen=0, primary="beta", request="x")
