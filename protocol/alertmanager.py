"""Alertmanager's webhook notifications: parse them strictly, map alerts to hosts, check auth.

The body is what Alertmanager's webhook notifier posts (``notify/webhook``, version "4"): the
template data (receiver, status, alerts, groupLabels, commonLabels, commonAnnotations,
externalURL) plus version, groupKey and truncatedAlerts. Each alert has status, labels,
annotations, startsAt, endsAt (Go's zero time ``0001-01-01T00:00:00Z`` while firing),
generatorURL and fingerprint (16 hex digits). Anything else about the body, or a body that is
too big, nested too deep, not UTF-8 or not JSON, is a :class:`WebhookError` naming the field, so
the endpoint answers 400 and changes nothing. Unknown keys are ignored: a newer Alertmanager may
add some.

Alertmanager repeats notifications (``repeat_interval``, retries, several replicas in a cluster),
so each alert has an idempotency key: its fingerprint and its start. A host that goes down twice
gives two keys; the same outage notified ten times gives one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from protocol.errors import ConfigError, Unauthorized, WebhookError

VERSION: Final = "4"
MAX_BODY: Final = 1 << 20  # Alertmanager's groups are small; a megabyte is generous
MAX_ALERTS: Final = 1000
MAX_LABELS: Final = 128  # per label set
MAX_STRING: Final = 8192  # characters, any label value, annotation or URL
STATUSES: Final = ("firing", "resolved")
_LABEL_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_FINGERPRINT: Final = re.compile(r"[0-9a-f]{16}\Z")
_TIME: Final = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)\Z"
)
_GO_ZERO_YEAR: Final = 1


@dataclass(frozen=True)
class Alert:
    """One alert of a notification. ``ends_at`` is None while it fires with no known end."""

    status: Literal["firing", "resolved"]
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime
    ends_at: datetime | None
    fingerprint: str
    generator_url: str = ""

    @property
    def idempotency_key(self) -> str:
        """The same for every notification of one outage: fingerprint and start, in whole UTC
        seconds. Whole seconds because the start's precision changes along the way: Alertmanager
        keeps nanoseconds, its v2 API gives milliseconds, and an alert re-posted from there
        (a resolve, another client) makes the millisecond start the stored one."""
        start = self.starts_at.astimezone(UTC).replace(microsecond=0)
        return f"{self.fingerprint}@{start.strftime('%Y-%m-%dT%H:%M:%SZ')}"


@dataclass(frozen=True)
class Notification:
    """One webhook POST: a group of alerts routed to ``receiver``."""

    receiver: str
    status: Literal["firing", "resolved"]
    alerts: tuple[Alert, ...]
    group_key: str
    group_labels: Mapping[str, str] = field(default_factory=dict)
    common_labels: Mapping[str, str] = field(default_factory=dict)
    common_annotations: Mapping[str, str] = field(default_factory=dict)
    external_url: str = ""
    truncated_alerts: int = 0
    version: str = VERSION

    def firing(self) -> tuple[Alert, ...]:
        return tuple(a for a in self.alerts if a.status == "firing")


# -- parsing ---------------------------------------------------------------------------------


def parse_webhook(body: bytes, *, max_bytes: int = MAX_BODY) -> Notification:
    """Parse and validate one webhook body; every defect is a :class:`WebhookError`."""
    if not isinstance(body, bytes | bytearray):
        raise WebhookError(f"body must be bytes, not {type(body).__name__}")
    if len(body) > max_bytes:
        raise WebhookError(f"body is {len(body)} bytes; the limit is {max_bytes}")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WebhookError(f"body is not UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise WebhookError(
            f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise WebhookError("body is nested too deeply") from None
    except _Refused as exc:
        raise WebhookError(str(exc)) from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise WebhookError(f"body is not usable JSON: {exc}") from None
    return _notification(data)


class _Refused(ValueError):
    """Raised from inside json.loads' hooks; turned into a WebhookError."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _notification(data: Any) -> Notification:
    if not isinstance(data, dict):
        raise WebhookError(f"body must be a JSON object, not {_kind(data)}")
    version = _string(data, "version", "")
    if version != VERSION:
        raise WebhookError(
            f"version: only webhook version {VERSION!r} is understood, not {version!r}"
        )
    raw_alerts = data.get("alerts")
    if not isinstance(raw_alerts, list):
        raise WebhookError(f"alerts: must be a list, not {_kind(raw_alerts)}")
    if not raw_alerts:
        raise WebhookError("alerts: the list is empty")
    if len(raw_alerts) > MAX_ALERTS:
        raise WebhookError(f"alerts: {len(raw_alerts)} alerts; the limit is {MAX_ALERTS}")
    truncated = data.get("truncatedAlerts", 0)
    if isinstance(truncated, bool) or not isinstance(truncated, int) or truncated < 0:
        raise WebhookError(f"truncatedAlerts: must be an integer >= 0, not {truncated!r:.40}")
    return Notification(
        receiver=_string(data, "receiver", ""),
        status=_status(data, "status", ""),
        alerts=tuple(_alert(a, f"alerts[{i}]") for i, a in enumerate(raw_alerts)),
        group_key=_string(data, "groupKey", ""),
        group_labels=_labels(data, "groupLabels", "", optional=True),
        common_labels=_labels(data, "commonLabels", "", optional=True),
        common_annotations=_labels(data, "commonAnnotations", "", optional=True, names=False),
        external_url=_string(data, "externalURL", "", optional=True),
        truncated_alerts=truncated,
    )


def _alert(raw: Any, where: str) -> Alert:
    if not isinstance(raw, dict):
        raise WebhookError(f"{where}: must be an object, not {_kind(raw)}")
    fingerprint = _string(raw, "fingerprint", where)
    if not _FINGERPRINT.match(fingerprint):
        raise WebhookError(
            f"{where}.fingerprint: must be 16 lowercase hex digits, not {fingerprint!r:.40}"
        )
    starts = _time(raw, "startsAt", where)
    if starts is None:
        raise WebhookError(f"{where}.startsAt: the zero time is not a start")
    labels = _labels(raw, "labels", where)
    if not labels:
        raise WebhookError(f"{where}.labels: an alert has at least one label (alertname)")
    return Alert(
        status=_status(raw, "status", where),
        labels=labels,
        annotations=_labels(raw, "annotations", where, optional=True, names=False),
        starts_at=starts,
        ends_at=_time(raw, "endsAt", where, optional=True),
        fingerprint=fingerprint,
        generator_url=_string(raw, "generatorURL", where, optional=True),
    )


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def _string(obj: dict[str, Any], key: str, where: str, *, optional: bool = False) -> str:
    if key not in obj:
        if optional:
            return ""
        raise WebhookError(f"{_at(where, key)}: missing")
    value = obj[key]
    if not isinstance(value, str):
        raise WebhookError(f"{_at(where, key)}: must be a string, not {_kind(value)}")
    if len(value) > MAX_STRING:
        raise WebhookError(f"{_at(where, key)}: {len(value)} characters; the limit is {MAX_STRING}")
    return value


def _status(obj: dict[str, Any], key: str, where: str) -> Literal["firing", "resolved"]:
    value = _string(obj, key, where)
    if value == "firing":
        return "firing"
    if value == "resolved":
        return "resolved"
    raise WebhookError(f'{_at(where, key)}: must be "firing" or "resolved", not {value!r:.40}')


def _labels(
    obj: dict[str, Any], key: str, where: str, *, optional: bool = False, names: bool = True
) -> dict[str, str]:
    path = _at(where, key)
    if key not in obj:
        if optional:
            return {}
        raise WebhookError(f"{path}: missing")
    value = obj[key]
    if not isinstance(value, dict):
        raise WebhookError(f"{path}: must be an object of strings, not {_kind(value)}")
    if len(value) > MAX_LABELS:
        raise WebhookError(f"{path}: {len(value)} entries; the limit is {MAX_LABELS}")
    for name, text in value.items():
        if names and not _LABEL_NAME.match(name):
            raise WebhookError(f"{path}: {name!r:.40} is not a label name")
        if not isinstance(text, str):
            raise WebhookError(f"{path}.{name:.40}: must be a string, not {_kind(text)}")
        if len(text) > MAX_STRING or len(name) > MAX_STRING:
            raise WebhookError(f"{path}.{name:.40}: longer than {MAX_STRING} characters")
    return dict(value)


def _time(obj: dict[str, Any], key: str, where: str, *, optional: bool = False) -> datetime | None:
    """An RFC 3339 time as Go writes it (up to nanoseconds, kept to microseconds); the Go zero
    time (year 1) means "not set"."""
    path = _at(where, key)
    text = _string(obj, key, where, optional=optional)
    if not text and optional:
        return None
    m = _TIME.match(text)
    if m is None:
        raise WebhookError(f"{path}: {text!r:.60} is not an RFC 3339 time")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if year == _GO_ZERO_YEAR:
        return None
    micro = int((m.group(7) or "0").ljust(6, "0")[:6])
    zone = m.group(8)
    try:
        tz = UTC if zone == "Z" else datetime.strptime(zone.replace(":", ""), "%z").tzinfo
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    except ValueError as exc:
        raise WebhookError(f"{path}: {text!r:.60} is not a valid time ({exc})") from None


# -- alerts to hosts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HostRule:
    """Which label names the host, and how: the whole value, or the regex's ``host`` group
    (else its first group) when ``pattern`` is set. The regex must match the whole value."""

    label: str = "instance"
    pattern: re.Pattern[str] | None = None


def parse_host_rule(label: str, regex: str | None = None) -> HostRule:
    """A rule from the config's words; bad ones are a :class:`ConfigError`."""
    if not isinstance(label, str) or not _LABEL_NAME.match(label):
        raise ConfigError(f"host rule: {label!r} is not a label name")
    if regex is None:
        return HostRule(label)
    if not isinstance(regex, str):
        raise ConfigError(f"host rule: the regex must be a string, not {type(regex).__name__}")
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise ConfigError(f"host rule: bad regex {regex!r}: {exc}") from None
    if "host" not in pattern.groupindex and pattern.groups < 1:
        raise ConfigError(f"host rule: regex {regex!r} needs a group: (?P<host>...) or (...)")
    return HostRule(label, pattern)


def host_of(alert: Alert, rule: HostRule, hosts: Collection[str]) -> str | None:
    """The fleet host ``alert`` is about, or None when its labels name no known host."""
    value = alert.labels.get(rule.label)
    if value is None:
        return None
    if rule.pattern is not None:
        m = rule.pattern.fullmatch(value)
        if m is None:
            return None
        value = m.group("host") if "host" in rule.pattern.groupindex else m.group(1)
        if value is None:
            return None
    return value if value in hosts else None


# -- authentication -----------------------------------------------------------------------------


class WebhookAuth:
    """The secret a webhook request must present: ``Authorization: Bearer SECRET``, or basic
    auth with ``SECRET`` as the password (and ``username`` when one is set). Never prints it."""

    __slots__ = ("_digest", "username")

    def __init__(self, secret: bytes, *, username: str | None = None) -> None:
        if len(secret) < 16:
            raise ConfigError("webhook secret: at least 16 bytes")
        # Comparing fixed-size digests in constant time hides the secret's length as well.
        self._digest = hashlib.sha256(secret).digest()
        self.username = username

    @classmethod
    def from_file(cls, path: Path | str, *, username: str | None = None) -> WebhookAuth:
        """The secret is the file's content, without its trailing newline."""
        try:
            secret = Path(path).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the webhook secret: {exc.strerror}") from None
        return cls(secret, username=username)

    def __repr__(self) -> str:
        return f"WebhookAuth(username={self.username!r}, secret='**********')"

    def _matches(self, candidate: bytes) -> bool:
        return hmac.compare_digest(hashlib.sha256(candidate).digest(), self._digest)

    def check(self, authorization: str | None) -> None:
        """Accept the request's ``Authorization`` header or raise :class:`Unauthorized`."""
        if not authorization:
            raise Unauthorized("no Authorization header")
        scheme, _, credentials = authorization.strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer":
            if not self._matches(credentials.encode("utf-8", "surrogateescape")):
                raise Unauthorized("wrong bearer token")
            return
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True)
            except (binascii.Error, ValueError):
                raise Unauthorized("basic credentials are not base64") from None
            user, sep, password = decoded.partition(b":")
            if not sep:
                raise Unauthorized("basic credentials lack the ':' between user and password")
            ok = self._matches(password)
            if self.username is not None:
                want = self.username.encode("utf-8")
                ok = hmac.compare_digest(user, want) and ok
            if not ok:
                raise Unauthorized("wrong basic credentials")
            return
        raise Unauthorized(f"unsupported authorization scheme {scheme[:20]!r}")
