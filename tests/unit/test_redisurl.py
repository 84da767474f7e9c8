"""Sentinel URLs: parsed into sentinels, master, database and credentials, refused clearly when
malformed, never printed with a password; turned into Celery's own form for the broker."""

from __future__ import annotations

import pytest

from protocol.errors import ConfigError
from protocol.redisurl import SentinelUrl, parse_sentinel_url
from protocol.settings import MASK, load_settings, redact_url
from workers.celery_app import celery_url, make_app


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("sentinel://h1:1,h2:2,h3:3/0?master=zf",
         SentinelUrl((("h1", 1), ("h2", 2), ("h3", 3)), "zf")),
        ("sentinel://:pw@h1:1;h2:2/5?master=zf",
         SentinelUrl((("h1", 1), ("h2", 2)), "zf", 5, None, "pw")),
        ("sentinel://zfleet:p%40ss@h1:1;sentinel://h2:2/0?master=my-master",
         SentinelUrl((("h1", 1), ("h2", 2)), "my-master", 0, "zfleet", "p@ss")),
        ("sentinel://[::1]:26380,h2?master=zf", SentinelUrl((("::1", 26380), ("h2", 26379)), "zf")),
    ],
)  # fmt: skip
def test_sentinel_urls_parse(url: str, parsed: SentinelUrl) -> None:
    got = parse_sentinel_url(url)
    assert got == parsed and got.password == parsed.password
    assert "pw" not in repr(got) and "p@ss" not in repr(got)
    assert load_settings(None, env={"ZFLEET_REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sentinel://:pw-1@h1:1,h2:2/0", "names its master once"),
        ("sentinel://h1:1?master=a&master=b", "names its master once"),
        ("sentinel://h1:1?master=a/b", "names its master once"),
        ("sentinel://h1:x?master=a", "the port must be 1..65535"),
        ("sentinel://h1:70000?master=a", "the port must be 1..65535"),
        ("sentinel://:pw-1@h1:1;sentinel://:pw-2@h2:2?master=a", "credentials go once"),
        ("sentinel://?master=a", "at least one sentinel"),
        ("sentinel://h1:1,?master=a", "at least one sentinel"),
        ("sentinel://h1:1/x?master=a", "the database must be a number"),
        ("sentinel://h1:1?master=a&password=pw-1", "unknown Sentinel URL parameters"),
        ("sentinel://::1:5?master=a", "IPv6 as [addr]:port"),
    ],
)
def test_bad_sentinel_urls_are_refused_without_their_passwords(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match="ZFLEET_REDIS_URL: bad URL") as caught:
        load_settings(None, env={"ZFLEET_REDIS_URL": url})
    assert message in str(caught.value)
    assert "pw-1" not in str(caught.value) and "pw-2" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:1/0", f"redis://:{MASK}@h:1/0"),
        ("redis://user:pw@h:1/0", f"redis://user:{MASK}@h:1/0"),
        ("redis://user@h:1/0", "redis://user@h:1/0"),
        ("redis://h:1/0", "redis://h:1/0"),
        # unquoted characters that stop a URL from parsing must not unmask the password
        ("redis://:ab/cd+ef=@h:1/0", f"redis://:{MASK}@h:1/0"),
        ("redis://:p?w#x@h:1", f"redis://:{MASK}@h:1"),
        ("redis://h:1/0?password=pw&db=2", f"redis://h:1/0?password={MASK}&db=2"),
        ("sentinel://u:pw@h1:1;sentinel://:pw@h2:2/0?master=a", f"sentinel://u:{MASK}@h2:2/0?master=a"),
    ],
)  # fmt: skip
def test_redact_url_masks_every_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_the_broker_gets_celerys_sentinel_form() -> None:
    url, options = celery_url("sentinel://zfleet:p%40ss@h1:1,[::1]:2/3?master=zf")
    assert url == "sentinel://zfleet:p%40ss@h1:1/3;sentinel://zfleet:p%40ss@[::1]:2/3"
    assert options["master_name"] == "zf"
    assert celery_url("redis://h:1/0") == ("redis://h:1/0", {})
    app = make_app("sentinel://:pw@127.0.0.1:1,127.0.0.1:2/0?master=zf")
    assert app.conf.broker_transport_options["master_name"] == "zf"
    assert app.conf.result_backend_transport_options["master_name"] == "zf"
    assert app.conf.broker_transport_options["visibility_timeout"] > 12 * 3600
    assert "pw" not in app.connection_for_write().as_uri()
