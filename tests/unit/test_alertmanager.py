"""Alertmanager webhook bodies: the real shape parses, every defect is a clear WebhookError."""

from __future__ import annotations

import base64
import copy
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from protocol.alertmanager import (
    MAX_BODY,
    WebhookAuth,
    host_of,
    parse_host_rule,
    parse_webhook,
)
from protocol.errors import ConfigError, Unauthorized, WebhookError


def sample() -> dict[str, Any]:
    """A notification in the shape Alertmanager 0.25's webhook notifier posts."""
    return {
        "receiver": "zfleet",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {
                    "alertname": "ZfleetWorkerDown",
                    "instance": "alpha:9478",
                    "job": "zfleet-workers",
                },
                "annotations": {"summary": "worker on alpha is down"},
                "startsAt": "2026-12-02T16:30:00.123456789Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0",
                "fingerprint": "0a1b2c3d4e5f6789",
            },
            {
                "status": "resolved",
                "labels": {"alertname": "ZfleetWorkerDown", "instance": "beta:9478"},
                "annotations": {},
                "startsAt": "2026-12-02T15:00:00+01:00",
                "endsAt": "2026-12-02T15:10:00.5+01:00",
                "generatorURL": "",
                "fingerprint": "ffffffffffffffff",
            },
        ],
        "groupLabels": {"alertname": "ZfleetWorkerDown"},
        "commonLabels": {"alertname": "ZfleetWorkerDown"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": '{}:{alertname="ZfleetWorkerDown"}',
        "truncatedAlerts": 0,
    }


def body(data: Any) -> bytes:
    return json.dumps(data).encode()


def test_the_real_shape_parses() -> None:
    n = parse_webhook(body(sample()))
    assert (n.receiver, n.status, n.group_key, n.truncated_alerts) == (
        "zfleet", "firing", '{}:{alertname="ZfleetWorkerDown"}', 0,
    )  # fmt: skip
    first, second = n.alerts
    assert first.starts_at == datetime(2026, 12, 2, 16, 30, 0, 123456, tzinfo=UTC)
    assert first.ends_at is None  # Go's zero time: still firing
    assert second.ends_at is not None and second.ends_at.astimezone(UTC).hour == 14
    assert second.ends_at.microsecond == 500000
    assert n.firing() == (first,)
    assert first.labels["instance"] == "alpha:9478"


def test_idempotency_key_is_one_per_outage() -> None:
    a = parse_webhook(body(sample())).alerts[0]
    again = sample()
    again["alerts"][0]["annotations"] = {"summary": "repeated"}
    assert parse_webhook(body(again)).alerts[0].idempotency_key == a.idempotency_key
    later = sample()
    later["alerts"][0]["startsAt"] = "2026-12-02T18:00:00Z"
    assert parse_webhook(body(later)).alerts[0].idempotency_key != a.idempotency_key
    assert a.idempotency_key == "0a1b2c3d4e5f6789@2026-12-02T16:30:00Z"
    for same_second in ("2026-12-02T17:30:00.123+01:00", "2026-12-02T16:30:00Z"):
        again["alerts"][0]["startsAt"] = same_second
        assert parse_webhook(body(again)).alerts[0].idempotency_key == a.idempotency_key
    other = sample()
    other["alerts"][0]["fingerprint"] = "0a1b2c3d4e5f6780"
    assert parse_webhook(body(other)).alerts[0].idempotency_key != a.idempotency_key


def mutate(path: tuple[str | int, ...], value: Any) -> bytes:
    data = sample()
    node: Any = data
    for step in path[:-1]:
        node = node[step]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return body(data)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", r"not JSON: Expecting value"),
        (b"\xff\xfe{}", r"not UTF-8 \(byte 0\)"),
        (b"[1, 2]", r"must be a JSON object, not a list"),
        (b'{"a": 1, "a": 2}', r"key 'a' appears twice"),
        (b'{"version": NaN}', r"NaN is not a JSON number"),
        (b"[" * 100_000 + b"]" * 100_000, r"nested too deeply"),
        (b'{"version": "4", "alerts": [], "x": ' + b"9" * 5000 + b"}", r"not usable JSON"),
        (b" " * (MAX_BODY + 1), r"limit is 1048576"),
        (mutate(("version",), "3"), r"version: only webhook version '4'"),
        (mutate(("version",), KeyError), r"version: missing"),
        (mutate(("alerts",), {}), r"alerts: must be a list, not an object"),
        (mutate(("alerts",), []), r"alerts: the list is empty"),
        (mutate(("alerts",), [{}] * 1001), r"1001 alerts; the limit is 1000"),
        (mutate(("status",), "ok"), r"^status: must be \"firing\" or \"resolved\", not 'ok'"),
        (mutate(("receiver",), 7), r"receiver: must be a string, not a number"),
        (mutate(("groupKey",), KeyError), r"groupKey: missing"),
        (mutate(("truncatedAlerts",), -1), r"truncatedAlerts: must be an integer >= 0"),
        (mutate(("truncatedAlerts",), True), r"truncatedAlerts: must be an integer >= 0"),
        (mutate(("commonLabels",), {"a": 1}), r"commonLabels\.a: must be a string, not a number"),
        (mutate(("groupLabels",), {"bad-name": "x"}), r"'bad-name' is not a label name"),
        (mutate(("alerts", 0), "x"), r"alerts\[0\]: must be an object, not a string"),
        (mutate(("alerts", 1, "fingerprint"), "XYZ"), r"alerts\[1\]\.fingerprint: must be 16"),
        (mutate(("alerts", 0, "labels"), {}), r"alerts\[0\]\.labels: an alert has at least"),
        (mutate(("alerts", 0, "labels"), None), r"alerts\[0\]\.labels: must be an object"),
        (mutate(("alerts", 0, "startsAt"), "yesterday"), r"startsAt: 'yesterday' is not an RFC"),
        (mutate(("alerts", 0, "startsAt"), "0001-01-01T00:00:00Z"), r"zero time is not a start"),
        (mutate(("alerts", 0, "endsAt"), "2026-13-01T00:00:00Z"), r"not a valid time"),
        (mutate(("alerts", 0, "startsAt"), "2026-12-02T16:30:00+25:00"), r"not a valid time"),
        (mutate(("alerts", 0, "status"), None), r"alerts\[0\]\.status: must be a string, not null"),
        (mutate(("externalURL",), "x" * 9000), r"externalURL: 9000 characters"),
        (mutate(("alerts", 0, "labels"), {f"l{i}": "v" for i in range(200)}), r"200 entries"),
    ],
)
def test_each_defect_is_named(raw: bytes, message: str) -> None:
    with pytest.raises(WebhookError, match=message):
        parse_webhook(raw)


def test_unknown_keys_are_ignored_for_newer_alertmanagers() -> None:
    data = sample()
    data["somethingNew"] = {"nested": [1, 2]}
    data["alerts"][0]["silencedBy"] = []
    assert parse_webhook(body(data)).receiver == "zfleet"


# -- fuzzing -------------------------------------------------------------------------------------

_WEIRD: tuple[Any, ...] = (
    None, True, 0, -1, 2**70, 1.5, "", "x" * 10_000, "\u0000", "\ud800", [], {}, [None], {"": ""},
    "0001-01-01T00:00:00Z", "2026-02-30T00:00:00Z", "firing", "resolved", "4",
)  # fmt: skip


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _structural(rng: random.Random) -> bytes:
    data = sample()
    for _ in range(rng.randint(1, 3)):
        paths = _paths(data)
        if not paths:
            break
        path = rng.choice(paths)
        parent: Any = data
        for step in path[:-1]:
            parent = parent[step]
        action = rng.random()
        if action < 0.3 and isinstance(parent, dict):
            del parent[path[-1]]
        elif action < 0.4 and isinstance(parent, dict):
            parent[rng.choice(["", "alerts", "x y", "status"]) + str(rng.randint(0, 9))] = 1
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(_WEIRD))
    return json.dumps(data).encode()


def _bytewise(rng: random.Random, raw: bytes) -> bytes:
    buf = bytearray(raw)
    for _ in range(rng.randint(1, 8)):
        choice = rng.random()
        at = rng.randrange(len(buf) + 1)
        if choice < 0.4 and buf:
            buf[min(at, len(buf) - 1)] = rng.randrange(256)
        elif choice < 0.6:
            buf[at:at] = rng.choice([b"{", b"}", b"[", b"]", b",", b'"', b"\\", b"\xc3", b"0"])
        elif choice < 0.8:
            del buf[at : at + rng.randint(1, 40)]
        else:
            buf = buf[:at]
    return bytes(buf)


def test_fuzzed_bodies_give_a_webhook_error_or_a_valid_notification() -> None:
    rng = random.Random(20261202)
    valid = body(sample())
    outcomes = {"parsed": 0, "refused": 0}
    for i in range(3000):
        raw = _structural(rng) if i % 2 else _bytewise(rng, valid)
        try:
            n = parse_webhook(raw)
        except WebhookError as exc:
            assert str(exc), raw
            outcomes["refused"] += 1
            continue
        # Whatever got through is well-formed all the way down.
        assert n.version == "4" and n.alerts
        assert all(isinstance(v, str) for a in n.alerts for v in a.labels.values())
        outcomes["parsed"] += 1
    assert outcomes["refused"] > 1000 and outcomes["parsed"] > 10, outcomes


# -- host mapping --------------------------------------------------------------------------------


def test_host_rule_maps_labels_to_fleet_hosts() -> None:
    first, second = parse_webhook(body(sample())).alerts
    hosts = {"alpha", "beta"}
    by_port = parse_host_rule("instance", r"(?P<host>[^:]+):\d+")
    assert (host_of(first, by_port, hosts), host_of(second, by_port, hosts)) == ("alpha", "beta")
    assert host_of(first, parse_host_rule("instance"), hosts) is None  # "alpha:9478" is no host
    assert host_of(first, by_port, {"beta"}) is None  # not in the fleet
    assert host_of(first, parse_host_rule("hostname"), hosts) is None  # label missing
    assert host_of(first, parse_host_rule("instance", r"(alp)ha"), hosts) is None  # not whole
    assert host_of(first, parse_host_rule("instance", r"([a-z]+):9478"), hosts) == "alpha"


@pytest.mark.parametrize(
    ("label", "regex", "message"),
    [
        ("in-stance", None, "is not a label name"),
        ("instance", "(", "bad regex"),
        ("instance", "[a-z]+", "needs a group"),
    ],
)
def test_bad_host_rules(label: str, regex: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_host_rule(label, regex)


# -- auth ----------------------------------------------------------------------------------------

SECRET = b"correct horse battery staple"


def basic(user: bytes, password: bytes) -> str:
    return "Basic " + base64.b64encode(user + b":" + password).decode()


def test_bearer_and_basic_auth_from_a_secret_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    auth = WebhookAuth.from_file(path, username="alertmanager")
    auth.check("Bearer " + SECRET.decode())
    auth.check("bearer  " + SECRET.decode() + " ")
    auth.check(basic(b"alertmanager", SECRET))
    assert SECRET.decode() not in repr(auth)
    for header, message in [
        (None, "no Authorization header"),
        ("Bearer nope", "wrong bearer token"),
        ("Bearer " + SECRET.decode() + "x", "wrong bearer token"),
        (basic(b"someone", SECRET), "wrong basic credentials"),
        (basic(b"alertmanager", b"nope"), "wrong basic credentials"),
        ("Basic !!!", "not base64"),
        ("Basic " + base64.b64encode(b"nocolon").decode(), "lack the ':'"),
        ("Digest abc", "unsupported authorization scheme 'Digest'"),
    ]:
        with pytest.raises(Unauthorized, match=message) as err:
            auth.check(header)
        assert SECRET.decode() not in str(err.value)
    WebhookAuth(SECRET).check(basic(b"anyone", SECRET))  # no username configured


def test_secret_file_problems_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the webhook secret"):
        WebhookAuth.from_file(tmp_path / "missing")
    (tmp_path / "short").write_text("tiny\n")
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        WebhookAuth.from_file(tmp_path / "short")
