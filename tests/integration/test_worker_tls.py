"""`zfleet worker` wired to the data plane's TLS, grant ledger and metrics, with real processes.

A fleet of two real workers (alpha -> beta) and a coordinator speaks mutual TLS with certificates
from `zfleet ca`: a replication arrives with equal guids, while an alpha whose certificate comes
from another CA cannot deliver a byte. alpha serves its metrics, and the scrape shows the bytes it
moved. A grant a worker applied before a restart is refused after it (the ledger under its data
directory), so a captured grant cannot be replayed by waiting for a restart.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.cli.ca import init_ca, issue_host
from bus import keys
from coordinator import engine
from coordinator.jobstore import JobStore
from coordinator.runner import wait_job
from protocol.grants import new_grant, sign_grant
from tests.services.fleet import SECRET, Fleet, running_fleet
from tests.services.redis import RedisServer, free_port, redis_server  # noqa: F401  (fixture)
from workers.dataplane import PeerTarget, push_transfer
from workers.dataplane.targets import Outcome
from workers.tls import TlsConfig
from workers.zfs.base import ObjType, ReceiveSpec, SendSpec
from workers.zfs.sim import SimBackend

pytestmark = [pytest.mark.integration, pytest.mark.slow]

JOB = """
[jobs.small]
source = "alpha:tank/small"
targets = ["beta:bk/small"]
snapshot = "zfleet-%Y%m%dT%H%M%SZ"
"""


def tls_env(directory: Path, host: str) -> dict[str, str]:
    files = TlsConfig.for_host(directory, host)
    return {"ZFLEET_TLS_CA": str(files.ca_file), "ZFLEET_TLS_CERT": str(files.cert_file),
            "ZFLEET_TLS_KEY": str(files.key_file)}  # fmt: skip


def build_source(alpha: SimBackend) -> None:
    alpha.create_pool("tank")
    alpha.create("tank/small")
    mp = alpha.mountpoint("tank/small")
    assert mp is not None
    Path(mp, "data").write_bytes(os.urandom(96 * 1024))  # incompressible: bytes mean something


def guids(backend: SimBackend, root: str) -> dict[str, int]:
    return {o.short: o.guid for o in backend.list(root) if o.type is ObjType.SNAPSHOT}


def sync(fleet: Fleet, store: JobStore, timeout: float = 120) -> engine.Job:
    out = fleet.cli("sync", "small", "--config", str(fleet.config), "--json")
    assert out.returncode == 0, out.stderr
    job = wait_job(store, json.loads(out.stdout)["id"], timeout=timeout)
    assert job.done, f"job did not finish: {engine.counts(job)}\n{fleet.logs()}"
    return job


@pytest.fixture
def certs(tmp_path: Path) -> tuple[Path, Path]:
    """The fleet's CA with alpha and beta, and a stranger's CA that also issued an 'alpha'."""
    fleet_ca, other_ca = tmp_path / "ca", tmp_path / "other-ca"
    init_ca(fleet_ca)
    for host in ("alpha", "beta"):
        issue_host(fleet_ca, host)
    init_ca(other_ca)
    issue_host(other_ca, "alpha")
    return fleet_ca, other_ca


@pytest.fixture
def fleet(tmp_path: Path, redis_server: RedisServer) -> Iterator[Fleet]:  # noqa: F811
    with running_fleet(tmp_path / "fleet", redis_server, ("alpha", "beta"), JOB) as f:
        build_source(f.backend("alpha"))
        f.backend("beta").create_pool("bk")
        yield f


@pytest.mark.timeout(300)
def test_tls_fleet_replicates_refuses_a_foreign_ca_and_counts_bytes(
    fleet: Fleet, certs: tuple[Path, Path]
) -> None:
    fleet_ca, other_ca = certs
    store = JobStore(fleet.client())
    fleet.start_worker("beta", **tls_env(fleet_ca, "beta"))
    # alpha trusts the fleet CA (its certificate is public) but presents another CA's certificate
    stranger = {**tls_env(fleet_ca, "alpha"), "ZFLEET_TLS_CERT": str(other_ca / "alpha.crt"),
                "ZFLEET_TLS_KEY": str(other_ca / "alpha.key")}  # fmt: skip
    fleet.start_worker("alpha", **stranger)
    fleet.start_coordinator()

    refused = sync(fleet, store, timeout=150)
    assert refused.status == engine.JOB_FAILED, f"{engine.counts(refused)}\n{fleet.logs()}"
    (step,) = [s for s in refused.steps.values() if s.kind == "transfer"]
    assert step.status == engine.FAILED
    # beta's server refuses the certificate in the handshake (alert "unknown ca")
    assert step.error_type in {"TransferError", "TransferInterrupted"}, step.error
    assert step.error is not None and "unknown ca" in step.error.lower(), step.error
    assert not fleet.backend("beta").exists("bk/small")  # nothing applied

    fleet.kill_worker("alpha")
    port = free_port()
    fleet.start_worker("alpha", **tls_env(fleet_ca, "alpha"), ZFLEET_METRICS_PORT=str(port))
    job = sync(fleet, store)
    assert job.status == engine.JOB_SUCCEEDED, f"{job.error}: {engine.counts(job)}\n{fleet.logs()}"
    source = guids(fleet.backend("alpha"), "tank/small")
    assert source and guids(fleet.backend("beta"), "bk/small") == source
    # the refused job's snapshot goes first (full), this job's after it (incremental)
    transfers = [s for s in job.steps.values() if s.kind == "transfer"]
    sent = sum(int(s.result["bytes"]) for s in transfers)
    assert sent > 96 * 1024

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    label = re.escape('target="beta:bk/small"')
    found = re.search(rf"^zfleet_worker_transfer_stream_bytes_total\{{{label}\}} (\S+)$", text,
                      re.MULTILINE)  # fmt: skip
    assert found is not None, text
    assert float(found.group(1)) == sent
    steps = re.escape('zfleet_worker_steps_total{kind="transfer",state="succeeded"}')
    assert re.search(rf"^{steps} {len(transfers)}\.0$", text, re.MULTILINE), text


def test_a_grant_used_before_a_worker_restart_is_refused_after_it(fleet: Fleet) -> None:
    fleet.start_worker("beta")
    alpha = fleet.backend("alpha")
    alpha.snapshot(["tank/small@s1"])
    guid = guids(alpha, "tank/small")["s1"]
    grant = sign_grant(SECRET.encode(), new_grant(
        transfer_id="job/step/1/beta", host="beta", dataset="bk/small", fromguid=0, toguid=guid,
        ttl=3600,
    ))  # fmt: skip

    def push() -> tuple[Outcome, str | None, str]:
        with fleet.client() as c:
            addr, _, port = (c.hget(keys.worker("beta"), "stream") or b"").decode().rpartition(":")
        target = PeerTarget(host="beta", address=(addr, int(port)),
                            receive=ReceiveSpec(target="bk/small"), grant=grant)  # fmt: skip
        report = push_transfer(alpha, SendSpec(snapshot="tank/small@s1"), [target])
        (result,) = report.targets
        return result.outcome, result.error_type, result.error or ""

    assert push()[:2] == (Outcome.OK, None)
    assert guids(fleet.backend("beta"), "bk/small") == {"s1": guid}
    fleet.backend("beta").destroy("bk/small", recursive=True)  # a replay would be applied again

    fleet.kill_worker("beta")
    fleet.start_worker("beta")
    outcome, error_type, error = push()
    assert (outcome, error_type) == (Outcome.FAILED, "GrantError") and "replayed" in error, error
    assert not fleet.backend("beta").exists("bk/small")


def test_half_a_tls_setup_is_refused_at_start(fleet: Fleet, certs: tuple[Path, Path]) -> None:
    fleet_ca, _ = certs
    env = {k: v for k, v in tls_env(fleet_ca, "beta").items() if k != "ZFLEET_TLS_CA"}
    with pytest.raises(RuntimeError, match="exited"):
        fleet.start_worker("beta", **env)
    assert "tls_ca" in Path(fleet.root, "logs", "worker-beta.log").read_text()
