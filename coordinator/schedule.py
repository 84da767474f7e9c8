"""Job schedules: an interval (``15m``, ``1h30m``) or a five-field cron expression (UTC).

Pure: ``next_after`` answers "when does this run next" and the scheduler loop does the waiting.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from protocol.errors import ConfigError

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_INTERVAL: Final = re.compile(r"^(\d+[smhdw])+$")
_FIELDS: Final = (("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12),
                  ("weekday", 0, 6))  # fmt: skip
MAX_INTERVAL: Final = 3650 * 86400
# A cron expression that can never fire (e.g. 30 February) must not spin forever.
_SEARCH_DAYS: Final = 366 * 5


@dataclass(frozen=True)
class Schedule:
    """When a job runs: every ``interval`` seconds, or when the cron fields match."""

    text: str
    interval: int | None = None
    minutes: frozenset[int] = frozenset()
    hours: frozenset[int] = frozenset()
    days: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()  # 0 = Sunday, as cron counts
    any_day: bool = True
    any_weekday: bool = True

    def next_after(self, last: datetime | None, now: datetime) -> datetime:
        """The next run time strictly after ``last`` (or now, when it never ran)."""
        if self.interval is not None:
            if last is None:
                return now
            return last + timedelta(seconds=self.interval)
        # never run: the current minute counts, so a tick inside a matching minute fires it
        base = last if last is not None else now - timedelta(minutes=1)
        start = base.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = start.replace(hour=0, minute=0)
        for _ in range(_SEARCH_DAYS):
            if day.month in self.months and self._day_matches(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        at = day.replace(hour=hour, minute=minute)
                        if at >= start:
                            return at
            day += timedelta(days=1)
        raise ConfigError(f"schedule {self.text!r} never fires")

    def _day_matches(self, day: datetime) -> bool:
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        # cron's rule: when both day fields are restricted, either one matching is enough.
        if not self.any_day and not self.any_weekday:
            return dom or dow
        return dom and dow


def _shown(text: str) -> str:
    """``text`` quoted for a message, cut short: a config can hold a megabyte on one line."""
    return repr(text if len(text) <= 60 else text[:57] + "...")


def parse_schedule(text: str) -> Schedule:
    """Parse ``15m``/``1h30m`` intervals or ``*/15 * * * *`` cron expressions."""
    s = text.strip()
    if _INTERVAL.match(s):
        parts = re.findall(r"(\d+)([smhdw])", s)
        # a number of more than 12 digits is past the limit in any unit (and int() refuses
        # strings over 4300 digits with a ValueError of its own)
        if any(len(n.lstrip("0")) > 12 for n, _ in parts):
            raise ConfigError(f"interval {_shown(text)} is longer than ten years (3650d)")
        seconds = sum(int(n) * _UNITS[u] for n, u in parts)
        if seconds < 1:
            raise ConfigError(f"interval {_shown(text)} must be at least one second")
        if seconds > MAX_INTERVAL:
            # datetime arithmetic overflows long before such a number runs out (year 9999);
            # refuse it here, where the config is read, not when the scheduler adds it
            raise ConfigError(f"interval {_shown(text)} is longer than ten years (3650d)")
        return Schedule(text=s, interval=seconds)
    parts = s.split()
    if len(parts) != 5:
        raise ConfigError(
            f"{_shown(text)} is neither an interval (like 15m, 1h30m) nor a cron expression "
            "(five fields: minute hour day month weekday)"
        )
    sets = [_cron_field(p, name, lo, hi) for p, (name, lo, hi) in zip(parts, _FIELDS, strict=True)]
    return Schedule(
        text=s,
        minutes=sets[0],
        hours=sets[1],
        days=sets[2],
        months=sets[3],
        weekdays=sets[4],
        any_day=parts[2] == "*",
        any_weekday=parts[4] == "*",
    )


def _cron_field(part: str, name: str, lo: int, hi: int) -> frozenset[int]:
    top = 7 if name == "weekday" else hi
    out: set[int] = set()
    for item in part.split(","):
        m = re.fullmatch(r"(\*|\d{1,4})(?:-(\d{1,4}))?(?:/(\d{1,4}))?", item)
        if not m:
            raise ConfigError(f"cron {name} field {_shown(part)}: cannot read {_shown(item)}")
        first, last, step = m.group(1), m.group(2), m.group(3)
        if first == "*":
            a, b = lo, hi
        else:
            a = int(first)
            b = int(last) if last else (top if step else a)
        n = int(step) if step else 1
        if not (lo <= a <= top and lo <= b <= top and a <= b and n >= 1):
            raise ConfigError(
                f"cron {name} field {_shown(part)}: {_shown(item)} is outside {lo}-{top}"
            )
        out.update(range(a, b + 1, n))
    return frozenset(0 if (name == "weekday" and v == 7) else v for v in out)


def due(
    schedules: Mapping[str, Schedule | None],
    last_runs: Mapping[str, float | None],
    running: Collection[str],
    now: float,
) -> list[str]:
    """Names of scheduled jobs whose next run time has come and that are not running.

    ``schedules`` maps job names to their schedule (None: started by hand only); ``last_runs``
    when each last started (unix seconds; the coordinator keeps them in Redis, bus.records).
    """
    at = datetime.fromtimestamp(now, UTC)
    out = []
    for name, schedule in sorted(schedules.items()):
        if schedule is None or name in running:
            continue
        last = last_runs.get(name)
        last_at = datetime.fromtimestamp(last, UTC) if last is not None else None
        if schedule.next_after(last_at, at) <= at:
            out.append(name)
    return out
