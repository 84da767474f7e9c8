"""protocol.alertmanager against the real thing: Debian's Alertmanager 0.25 posts its webhook
to a local HTTP server, and the parser, the auth check and the host rule accept what it sends;
then the whole alert path: a worker's heartbeat leaves Redis, `zfleet metrics` reports it down,
Debian's Prometheus 2.42 fires the rule and the webhook names the host.

Alerts are added with ``amtool alert add`` (as an operator or a test would) and resolved through
Alertmanager's v2 API; a short repeat_interval makes it repeat the notification, which must give
the same idempotency key.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bus import keys
from protocol.alertmanager import (
    Notification,
    WebhookAuth,
    host_of,
    parse_host_rule,
    parse_webhook,
)
from tests.conftest import need_binary
from tests.services.alertmanager import WebhookSink, running_alertmanager
from tests.services.process import stop_process
from tests.services.prometheus import running_prometheus
from tests.services.redis import RedisServer, free_port, redis_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

SECRET = "an alertmanager webhook secret"
PATH = "/v1/alerts/alertmanager"


def config(sink: WebhookSink, secret_file: Path) -> str:
    return f"""
route:
  receiver: zfleet-bearer
  group_by: ['alertname', 'instance']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 2s
  routes:
    - receiver: zfleet-basic
      matchers: ['auth="basic"']
receivers:
  - name: zfleet-bearer
    webhook_configs:
      - url: {sink.url(PATH)}
        send_resolved: true
        http_config:
          authorization: {{ type: Bearer, credentials_file: {secret_file} }}
  - name: zfleet-basic
    webhook_configs:
      - url: {sink.url(PATH)}
        send_resolved: true
        http_config:
          basic_auth: {{ username: alertmanager, password_file: {secret_file} }}
"""


def receive(sink: WebhookSink, auth: WebhookAuth, *, status: str) -> Notification:
    """The next notification with ``status``, after checking path and credentials."""
    for _ in range(10):
        req = sink.next(timeout=20)
        assert req.path == PATH
        assert req.headers.get("Content-Type") == "application/json"
        auth.check(req.headers.get("Authorization"))
        note = parse_webhook(req.body)
        if note.status == status:
            return note
    raise AssertionError(f"no {status} notification")


def api_alerts(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as resp:
        data: list[dict[str, Any]] = json.load(resp)
    return data


def test_real_alertmanager_webhooks_parse_authenticate_and_map(tmp_path: Path) -> None:
    amtool = need_binary("amtool")
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_text(SECRET + "\n")
    bearer = WebhookAuth.from_file(secret_file)
    rule = parse_host_rule("instance", r"(?P<host>[^:]+):\d+")
    with WebhookSink() as sink, running_alertmanager(config(sink, secret_file)) as am:
        subprocess.run(
            [amtool, f"--alertmanager.url={am.url}", "alert", "add", "alertname=ZfleetWorkerDown",
             "instance=alpha:9478", "--annotation=summary=worker on alpha is down"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        first = receive(sink, bearer, status="firing")
        (alert,) = first.alerts
        assert first.version == "4" and first.receiver == "zfleet-bearer"
        assert alert.ends_at is None
        assert alert.annotations == {"summary": "worker on alpha is down"}
        assert host_of(alert, rule, {"alpha", "beta"}) == "alpha"
        (stored,) = api_alerts(am.url)
        assert stored["fingerprint"] == alert.fingerprint

        repeated = receive(sink, bearer, status="firing")
        assert repeated.alerts[0].idempotency_key == alert.idempotency_key

        # resolve it through the API: same labels, endsAt now
        body = json.dumps([{
            "labels": stored["labels"], "annotations": stored["annotations"],
            "startsAt": stored["startsAt"],
            "endsAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }]).encode()  # fmt: skip
        post = urllib.request.Request(
            f"{am.url}/api/v2/alerts", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(post, timeout=5) as resp:
            assert resp.status == 200
        resolved = receive(sink, bearer, status="resolved")
        (gone,) = resolved.alerts
        assert gone.status == "resolved" and gone.ends_at is not None
        assert gone.idempotency_key == alert.idempotency_key

        # the same secret as basic auth, routed by a label
        subprocess.run(
            [amtool, f"--alertmanager.url={am.url}", "alert", "add", "alertname=ZfleetWorkerDown",
             "instance=beta:9478", "auth=basic"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        basic = WebhookAuth.from_file(secret_file, username="alertmanager")
        while True:
            req = sink.next(timeout=20)
            note = parse_webhook(req.body)
            if note.receiver == "zfleet-basic":
                break
        assert req.headers["Authorization"].startswith("Basic ")
        basic.check(req.headers["Authorization"])
        assert host_of(note.alerts[0], rule, {"alpha", "beta"}) == "beta"


FLEET = """
[hosts.alpha]
backend = "sim"
sim_root = "{root}/alpha"
[hosts.beta]
backend = "sim"
sim_root = "{root}/beta"
"""

# deploy/alerts.yml's ZfleetWorkerDown, without its 5 minutes of patience
RULES = """
groups:
  - name: zfleet
    rules:
      - alert: ZfleetWorkerDown
        expr: zfleet_worker_up == 0
        for: 0s
        labels: { severity: critical }
        annotations: { summary: "the zfleet worker of {{ $labels.host }} has stopped reporting" }
"""


@contextlib.contextmanager
def zfleet_metrics(redis_url: str, config: Path) -> Iterator[int]:
    """`zfleet metrics` as a real process; its port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZFLEET_")}
    env |= {"ZFLEET_REDIS_URL": redis_url, "ZFLEET_LOG_FORMAT": "json"}
    zfleet = str(Path(sys.executable).parent / "zfleet")
    argv = [zfleet, "metrics", "--port", str(port), "--config", str(config)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield port
    finally:
        stop_process(proc, 10)


def test_worker_heartbeat_gone_fires_prometheus_and_reaches_the_webhook(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_text(SECRET + "\n")
    bearer = WebhookAuth.from_file(secret_file)
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(FLEET.format(root=tmp_path))
    r = redis_server.client()
    for host in ("alpha", "beta"):
        r.hset(keys.worker(host), mapping={"instance": "test", "started": "1"})
    with (
        WebhookSink() as sink,
        running_alertmanager(config(sink, secret_file)) as am,
        zfleet_metrics(redis_server.url, fleet) as port,
    ):
        prom_config = f"""
global: {{ scrape_interval: 1s, evaluation_interval: 1s }}
alerting:
  alertmanagers:
    - static_configs: [{{ targets: ['{am.url.removeprefix("http://")}'] }}]
rule_files: [rules.yml]
scrape_configs:
  - job_name: zfleet-coordinator
    static_configs: [{{ targets: ['127.0.0.1:{port}'] }}]
"""
        with running_prometheus(prom_config, RULES) as prom:
            deadline = time.monotonic() + 60
            while len([x for x in prom.query("zfleet_worker_up == 1")]) < 2:
                assert time.monotonic() < deadline, prom.log()[-2000:]
                time.sleep(0.2)
            died = time.monotonic()
            r.delete(keys.worker("alpha"))  # what an expired heartbeat leaves
            note = receive(sink, bearer, status="firing")
            latency = time.monotonic() - died
            (alert,) = note.alerts
            assert alert.labels["alertname"] == "ZfleetWorkerDown"
            assert host_of(alert, parse_host_rule("host"), {"alpha", "beta"}) == "alpha"
            assert alert.annotations["summary"] == (
                "the zfleet worker of alpha has stopped reporting"
            )
            # Prometheus names itself by the machine's host name, so compare the port only
            link = urllib.parse.urlsplit(alert.generator_url)
            assert link.port == urllib.parse.urlsplit(prom.url).port
            print(f"heartbeat gone -> webhook received: {latency:.2f} s; endsAt {alert.ends_at}")
