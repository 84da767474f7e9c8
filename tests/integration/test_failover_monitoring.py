"""Failover from monitoring, every part real: Debian's Prometheus 2.42 scrapes the three
workers' own metrics endpoints, its rule fires when alpha's worker stops answering, Debian's
Alertmanager 0.25 posts the alert to the coordinator's ``/v1/alerts/alertmanager`` (bearer
secret from a file), the coordinator confirms with its own evidence (alpha's heartbeat expired
in Redis) and beta becomes the writable primary. Then alpha's worker returns, ``zfleet rejoin``
runs, and the bytes it moved are compared with the bytes written on beta since the failover and
with the full size of the job's datasets.

Nothing is shortcut: the worker is SIGKILLed and its heartbeat is left to expire by itself (the
alert's first notifications are refused for lack of evidence, Alertmanager repeats, the repeat
acts). Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from bus import records
from coordinator import engine
from coordinator.engine import Job
from coordinator.jobstore import JobStore
from coordinator.runner import wait_job
from tests.integration.test_failover_fleet import HOSTS, JOB, moved, run, snaps, sync
from tests.integration.test_fleet_sync import CLONES, build_source, write
from tests.services.alertmanager import running_alertmanager
from tests.services.fleet import _kill, running_fleet
from tests.services.prometheus import running_prometheus
from tests.services.redis import RedisServer, free_port, redis_server  # noqa: F401  (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "alertmanager-secret-0123456789"
CHANGED = 48 * 1024  # bytes written on beta after the failover

# deploy/alerts.yml's idea (a worker that stops answering), without its minutes of patience
RULES = """
groups:
  - name: zfleet
    rules:
      - alert: ZfleetWorkerDown
        expr: up{job="zfleet-workers"} == 0
        for: 0s
        labels: { severity: critical }
        annotations: { summary: "the zfleet worker of {{ $labels.host }} does not answer" }
"""


def alertmanager_config(coordinator: str, secret_file: Path) -> str:
    return f"""
route:
  receiver: zfleet
  group_by: ['alertname', 'host']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1s
receivers:
  - name: zfleet
    webhook_configs:
      - url: http://{coordinator}/v1/alerts/alertmanager
        send_resolved: true
        http_config:
          authorization: {{ type: Bearer, credentials_file: {secret_file} }}
"""


def prometheus_config(alertmanager: str, ports: dict[str, int], api: str, token: Path) -> str:
    targets = "\n".join(
        f"      - {{ targets: ['127.0.0.1:{port}'], labels: {{ host: {host} }} }}"
        for host, port in sorted(ports.items())
    )
    return f"""
global: {{ scrape_interval: 250ms, scrape_timeout: 200ms, evaluation_interval: 250ms }}
alerting:
  alertmanagers:
    - static_configs: [{{ targets: ['{alertmanager}'] }}]
rule_files: [rules.yml]
scrape_configs:
  - job_name: zfleet-workers
    static_configs:
{targets}
  - job_name: zfleet-coordinator
    metrics_path: /v1/metrics
    authorization: {{ type: Bearer, credentials_file: {token} }}
    static_configs: [{{ targets: ['{api}'] }}]
"""


def failover_job(store: JobStore) -> Job | None:
    jobs = [j for j in store.recent(50) if j.kind == "failover"]
    return jobs[0] if jobs else None


def test_prometheus_alertmanager_fail_over_and_rejoin_moves_only_the_change(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    ports = {host: free_port() for host in HOSTS}
    with running_fleet(tmp_path, redis_server, HOSTS, JOB) as fleet:
        build_source(fleet.backend("alpha"))
        for host in ("beta", "gamma"):
            fleet.backend(host).create_pool("bk")
        for host in HOSTS:
            fleet.start_worker(host, ZFLEET_METRICS_PORT=str(ports[host]))
        secret_file = tmp_path / "am.secret"
        secret_file.write_text(SECRET + "\n")
        token = tmp_path / "api.token"
        token.write_text("api-token-0123456789abcdef\n")
        api = f"127.0.0.1:{free_port()}"
        fleet.coordinator = fleet._spawn("coordinator", [
            "coordinator", "--config", str(fleet.config), "--lease-ttl", "2", "--http", api,
            "--api-token-file", str(token),
            "--alertmanager-secret-file", str(secret_file)], {})  # fmt: skip
        client = fleet.client()
        store = JobStore(client)
        first = sync(fleet, store)
        # what a full resend to one replica moves: the first sync's bytes per target
        full = sum(
            int(s.result.get("bytes") or 0) // max(1, int(s.result.get("targets") or 1))
            for s in first.steps.values()
            if s.kind == "transfer"
        )
        write(fleet.backend("alpha"), "tank/img/base", "unreplicated", os.urandom(32 * 1024))

        with (
            running_alertmanager(alertmanager_config(api, secret_file)) as am,
            running_prometheus(
                prometheus_config(am.url.removeprefix("http://"), ports, api, token), RULES
            ) as prom,
        ):
            deadline = time.monotonic() + 60
            while len(prom.query('up{job="zfleet-workers"} == 1')) < len(HOSTS):
                assert time.monotonic() < deadline, prom.log()[-2000:]
                time.sleep(0.2)

            killed, killed_wall = time.monotonic(), time.time()
            _kill(fleet.workers.pop("alpha"), signal.SIGKILL)  # the heartbeat expires by itself
            beat_gone = None
            job = None
            deadline = killed + 90
            while job is None or not job.done:
                assert time.monotonic() < deadline, (
                    f"no failover\n{am.log()[-3000:]}\n{prom.log()[-1500:]}\n{fleet.logs()}"
                )
                if beat_gone is None and records.get_beat(client, "alpha") is None:
                    beat_gone = time.monotonic() - killed
                job = failover_job(store)
                time.sleep(0.05)
            assert job.status == engine.JOB_SUCCEEDED, f"{job.error}\n{fleet.logs()}"
            job = wait_job(store, job.id, timeout=10)
            assert job.options["trigger"] == "alertmanager"
            assert job.report["primary"] == "beta"
            assert beat_gone is not None
            # the job's own clock: alert received -> writable
            ttw = float(job.report["time_to_writable"])
            assert ttw > 0
            killed_to_writable = float(job.options["received_at"]) + ttw - killed_wall
            beta = fleet.backend("beta")
            for name in ("bk/img", "bk/img/base", "bk/img/app1"):
                props = beta.get(name, ["readonly", "mounted"])
                assert (props["readonly"].value, props["mounted"].value) == ("off", "yes"), name
            assert records.current_epoch(client, "img") == 1
            # notified while the heartbeat still ran (refused: no evidence), repeated, then acted
            coordinator_log = (tmp_path / "logs" / "coordinator.log").read_text()
            assert coordinator_log.count('"event": "alerts.received"') >= 2
            # and the coordinator's metrics say so, as Prometheus scraped them
            want = 'zfleet_failovers{job_name="img", kind="failover", outcome="succeeded"}'
            deadline = time.monotonic() + 30
            while not prom.query(f"{want} == 1"):
                assert time.monotonic() < deadline, prom.query("zfleet_failovers")
                time.sleep(0.2)
            (got,) = prom.query("zfleet_failover_time_to_writable_seconds")
            assert float(got["value"][1]) == pytest.approx(ttw)

        print(
            f"\nworker killed -> heartbeat expired {beat_gone:.2f} s -> replica writable "
            f"{killed_to_writable:.2f} s (alert received -> writable {ttw:.2f} s, "
            f"data-loss window {float(job.report['data_loss_window']):.1f} s)"
        )

        # beta takes writes; alpha returns and rejoins with only what changed
        write(beta, "bk/img/base", "after-failover", os.urandom(CHANGED))
        time.sleep(1.1)  # one-second snapshot names
        sync(fleet, store)
        fleet.start_worker("alpha", ZFLEET_METRICS_PORT=str(ports["alpha"]))
        out = run(fleet, "rejoin", "alpha", "--wait")
        (rejoin,) = out["details"]  # type: ignore[misc]
        assert rejoin["status"] == "succeeded", rejoin
        rejoined = int(rejoin["report"]["bytes"])
        alpha = fleet.backend("alpha")
        assert snaps(fleet, "alpha", "tank/img/base") == snaps(fleet, "beta", "bk/img/base")
        (aside,) = rejoin["report"]["aside"]
        assert f"zfleet-diverged-{rejoin['id']}" in snaps(fleet, "alpha", aside)  # kept, not lost
        # `zfleet status` lists what was kept aside, for people and for scripts
        listed = run(fleet, "status")["aside"]
        assert isinstance(listed, list)
        assert [(a["host"], a["dataset"], a["kind"]) for a in listed] == [
            ("alpha", aside, "diverged")
        ]
        human = fleet.cli("status", "--config", str(fleet.config))
        assert human.returncode == 0 and aside in human.stdout, human.stdout + human.stderr
        for clone, origin in CLONES.items():
            assert alpha.get(clone, ["origin"])["origin"].value == f"tank/img/base@{origin}"
        # the increment plus the stream's own records, never a resend
        assert CHANGED <= rejoined < CHANGED * 2, rejoined
        assert rejoined * 10 < full, (rejoined, full)
        assert moved(first) >= full
        print(
            f"rejoin moved {rejoined:,} B for {CHANGED:,} B changed since the failover "
            f"(full size {full:,} B per replica; {rejoined / full:.1%})"
        )
