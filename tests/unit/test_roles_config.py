"""The ``[jobs.NAME.failover]`` table: what it accepts, and the error each mistake gets."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest

from coordinator.config import _Where
from coordinator.roles import DEFAULT_MIN_INTERVAL, FailoverRoles, parse_failover
from protocol.errors import ConfigError

HOSTS = ("alpha", "beta", "gamma", "delta")


def parse(text: str) -> FailoverRoles:
    table = tomllib.loads(text)["jobs"]["images"]["failover"]
    return parse_failover(
        "images", table, hosts=HOSTS, source_host="alpha", replica_hosts=("beta", "gamma"),
        where="fleet.toml",
    )  # fmt: skip


def test_a_full_table() -> None:
    roles = parse(
        """
        [jobs.images.failover]
        primary = "alpha"
        candidates = ["gamma", "auto"]
        policy = "auto"
        min_interval = "1h30m"
        hooks = { promote = "systemctl start 'my app'", demote = ["podman", "stop", "app"] }
        """
    )
    assert roles == FailoverRoles(
        job="images", primary="alpha", candidates=("gamma", "auto"), policy="auto",
        min_interval=5400, promote_hook=("systemctl", "start", "my app"),
        demote_hook=("podman", "stop", "app"),
    )  # fmt: skip


def test_defaults_are_the_safe_ones() -> None:
    roles = parse("[jobs.images.failover]\n")
    assert (roles.primary, roles.candidates, roles.policy) == ("alpha", ("auto",), "manual")
    assert roles.min_interval == DEFAULT_MIN_INTERVAL
    assert (roles.promote_hook, roles.demote_hook) == ((), ())
    assert parse("[jobs.images.failover]\nmin_interval = 0\n").min_interval == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("colour = 1", r"failover\.colour: unknown key"),
        ("primary = 3", r"failover\.primary: must be a host name, not int"),
        ('primary = "omega"', r"failover\.primary: unknown host 'omega'"),
        ("candidates = []", r"failover\.candidates: must be a non-empty list"),
        ('candidates = "beta"', r"failover\.candidates: must be a non-empty list"),
        ('candidates = ["beta", "beta"]', r"'beta' is listed twice"),
        ('candidates = ["alpha"]', r"'alpha' is the primary"),
        ('candidates = ["omega"]', r"unknown host 'omega'"),
        ('candidates = ["delta"]', r"'delta' is not a target of the job"),
        ('policy = "sometimes"', r"failover\.policy: must be \"auto\""),
        ("min_interval = -5", r"min_interval: must be >= 0 seconds"),
        ("min_interval = true", r"min_interval: must be seconds or a duration"),
        ('min_interval = "soon"', r"min_interval: 'soon' is neither an interval"),
        ('min_interval = "*/5 * * * *"', r"min_interval: must be a duration like \"30m\""),
        ('hooks = "x"', r"failover\.hooks: must be a table"),
        ('hooks = { before = "x" }', r"hooks\.before: unknown hook"),
        ('hooks = { promote = "" }', r"hooks\.promote: is empty"),
        ('hooks = { promote = "echo \'unclosed" }', r"hooks\.promote: cannot split"),
        ("hooks = { demote = [1, 2] }", r"hooks\.demote: must be a command"),
    ],
)
def test_each_mistake_is_named_with_file_and_key(body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^fleet\.toml: jobs\.images\.failover") as err:
        parse(f"[jobs.images.failover]\n{body}\n")
    assert re.search(message, str(err.value)), str(err.value)


@pytest.mark.parametrize("raw", [None, 3, "auto", ["auto"]])
def test_a_failover_that_is_not_a_table(raw: Any) -> None:
    with pytest.raises(ConfigError, match="failover: must be a table"):
        parse_failover("images", raw, hosts=HOSTS, source_host="alpha", replica_hosts=())


def test_config_py_error_builder_adds_the_line() -> None:
    text = '[hosts.alpha]\n\n[jobs.images.failover]\npolicy = "auto"\nhooks = { x = "y" }\n'
    table = tomllib.loads(text)["jobs"]["images"]["failover"]
    where = _Where(text, "fleet.toml")
    with pytest.raises(ConfigError, match=r"^fleet\.toml:5: jobs\.images\.failover\.hooks\.x: "):
        parse_failover(
            "images", table, hosts=HOSTS, source_host="alpha", replica_hosts=(), error=where.error
        )
