"""Alert intake: which alerts ask for a failover, and why the others do not."""

from __future__ import annotations

import json

from coordinator.alerts import HostDown, triage
from protocol.alertmanager import parse_host_rule, parse_webhook
from tests.unit.test_alertmanager import sample

RULE = parse_host_rule("instance", r"(?P<host>[^:]+):\d+")


def note(*alerts: tuple[str, str]) -> bytes:
    """A notification with one alert per (status, instance)."""
    data = sample()
    template = data["alerts"][0]
    data["alerts"] = [
        {**template, "status": status, "labels": {"alertname": "Down", "instance": instance},
         "fingerprint": f"{i:016x}"}
        for i, (status, instance) in enumerate(alerts)
    ]  # fmt: skip
    return json.dumps(data).encode()


def test_firing_alerts_on_primaries_ask_for_their_jobs() -> None:
    parsed = parse_webhook(
        note(
            ("firing", "alpha:9478"),
            ("resolved", "beta:9478"),
            ("firing", "omega:1"),
            ("firing", "gamma:9478"),
            ("firing", "no-port"),
        )
    )
    result = triage(
        parsed,
        rule=RULE,
        hosts={"alpha", "beta", "gamma"},
        primaries={"images": "alpha", "homes": "alpha", "logs": "beta"},
    )
    (down,) = result.down
    assert down == HostDown("alpha", ("homes", "images"), parsed.alerts[0].idempotency_key,
                            parsed.alerts[0].starts_at)  # fmt: skip
    assert [(i.host, i.reason) for i in result.ignored] == [
        ("beta", "resolved: a returning host never fails back by itself"),
        (None, "label 'instance' names no fleet host"),
        ("gamma", "the host is the primary of no job"),
        (None, "label 'instance' names no fleet host"),
    ]
    assert [i.key for i in result.ignored] == [a.idempotency_key for a in parsed.alerts[1:]]
