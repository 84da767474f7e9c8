"""Key-group jobs against a real Redis: what each command asks of whom, and what it refuses.

No workers: the jobs are built and checked, and ``commit`` (the coordinator-side step) is run
on results shaped as a keeper's worker returns them. Refusals leave Redis as it was.
"""

from __future__ import annotations

import json

import pytest

from bus import keyring
from coordinator import keyjob
from coordinator.engine import Step
from coordinator.jobstore import JobStore
from protocol.errors import ConfigError
from protocol.keysteps import GroupKeyLoadArgs, GroupKeyNewArgs, GroupKeyShareArgs
from protocol.sealed import KeyPair
from tests.services.redis import RedisServer, redis_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


def registered(r: object, *hosts: str) -> None:
    for h in hosts:
        keyring.put_host_key(r, h, KeyPair.generate().public)  # type: ignore[arg-type]


def finish(store: JobStore, job: keyjob.Job, step_id: str, boxes: dict[str, str]) -> None:
    job.steps[step_id].result = {"sealed": json.dumps(boxes)}
    commit: Step = job.steps["commit"]
    keyjob.commit(store, job, commit)


def test_jobs_and_refusals(redis_server: RedisServer) -> None:  # noqa: F811
    r = redis_server.client()
    store = JobStore(r)
    with pytest.raises(ConfigError, match="no key pair registered for alpha, beta"):
        keyjob.create_job(r, "team", members=["beta"], keeper="alpha", datasets=["tank/team"])
    registered(r, "alpha", "beta", "gamma")
    with pytest.raises(ConfigError, match="at least one dataset"):
        keyjob.create_job(r, "team", members=["beta"], keeper="alpha", datasets=[])
    job = keyjob.create_job(r, "team", members=["beta"], keeper="alpha", datasets=["tank/team"])
    new = job.steps["new-key"]
    assert new.host == "alpha" and isinstance(new.args, GroupKeyNewArgs)
    assert [h for h, _ in new.args.recipients] == ["alpha", "beta"]
    assert job.steps["commit"].host is None and job.steps["commit"].deps == ["new-key"]
    assert keyring.group(r, "team") is None  # nothing written before the keeper's step ran
    finish(store, job, "new-key", {"1:alpha": "boxA", "1:beta": "boxB"})
    g = keyring.group(r, "team")
    assert g is not None and (g.version, g.members, g.keeper) == (1, ("alpha", "beta"), "alpha")
    assert g.boxes_for("beta") == [(1, "boxB")]
    with pytest.raises(ConfigError, match="exists"):
        keyjob.create_job(r, "team", members=[], keeper="alpha", datasets=["tank/team"])

    share = keyjob.add_host_job(r, "team", ["gamma"])
    args = share.steps["share"].args
    assert isinstance(args, GroupKeyShareArgs) and args.sealed == ((1, "boxA"),)
    assert [h for h, _ in args.recipients] == ["gamma"]
    finish(store, share, "share", {"1:gamma": "boxC"})
    with pytest.raises(ConfigError, match="already in"):
        keyjob.add_host_job(r, "team", ["gamma"])

    load = keyjob.load_job(r, "team", "gamma", ["bk/team"])
    largs = load.steps["load"].args
    assert load.steps["load"].host == "gamma" and isinstance(largs, GroupKeyLoadArgs)
    assert largs.sealed == ((1, "boxC"),) and largs.datasets == ("bk/team",)
    with pytest.raises(ConfigError, match="not a member"):
        keyjob.load_job(r, "team", "delta", ["bk/team"])
    with pytest.raises(ConfigError, match="cannot be removed"):
        keyjob.rotate_job(r, "team", remove=["alpha"])

    rot = keyjob.rotate_job(r, "team", remove=["gamma"])
    rargs = rot.steps["new-key"].args
    assert isinstance(rargs, GroupKeyNewArgs) and rargs.version == 2
    assert [h for h, _ in rargs.recipients] == ["alpha", "beta"]
    finish(store, rot, "new-key", {"2:alpha": "boxA2", "2:beta": "boxB2"})
    g = keyring.group(r, "team")
    assert g is not None and g.version == 2 and g.members == ("alpha", "beta")
    assert g.boxes_for("gamma") == []  # the removed member's copies are gone from Redis
    assert g.boxes_for("beta") == [(2, "boxB2"), (1, "boxB")]  # newest first, one older kept
    for _ in range(2):
        again = keyjob.rotate_job(r, "team")
        version = again.steps["new-key"].args.version  # type: ignore[attr-defined]
        finish(store, again, "new-key", {f"{version}:alpha": "a", f"{version}:beta": "b"})
    g = keyring.group(r, "team")
    assert g is not None and sorted({v for v, _ in g.sealed}) == [3, 4]
    with pytest.raises(ConfigError, match="no key group"):
        keyjob.rotate_job(r, "nope")
