"""protocol.alertmanager against the real thing: Debian's Alertmanager 0.25 posts its webhook
to a local HTTP server, and the parser, the auth check and the host rule accept what it sends.

Alerts are added with ``amtool alert add`` (as an operator or a test would) and resolved through
Alertmanager's v2 API; a short repeat_interval makes it repeat the notification, which must give
the same idempotency key.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from protocol.alertmanager import (
    Notification,
    WebhookAuth,
    host_of,
    parse_host_rule,
    parse_webhook,
)
from tests.conftest import need_binary
from tests.services.alertmanager import WebhookSink, running_alertmanager

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
