"""Fleet addresses: HOST:DATASET[@SNAP] and store:NAME[:...] parsed once, refused clearly."""

from __future__ import annotations

import pytest

from protocol.addresses import Address, parse_address, parse_pattern
from protocol.errors import AddressError, ConfigError

HOSTS = {"alpha", "beta"}


def test_a_dataset_and_a_snapshot_address() -> None:
    assert parse_address("alpha:tank/a", hosts=HOSTS) == Address("alpha", "tank/a")
    snap = parse_address("alpha:tank/a@s1", hosts=HOSTS, snapshot=True)
    assert (snap.host, snap.dataset, snap.snapshot, snap.full) == ("alpha", "tank/a", "s1",
                                                                   "tank/a@s1")
    assert str(snap) == "alpha:tank/a@s1" and not snap.is_store
    # colons are legal in dataset names: only the first one ends the host
    assert parse_address("alpha:tank/a:b@s").dataset == "tank/a:b"


def test_store_addresses_only_where_allowed() -> None:
    addr = parse_address("store:vault:tank/a", allow_store=True, stores={"vault"})
    assert addr.is_store and addr.store == "vault" and addr.dataset == "tank/a"
    assert parse_address("store:vault", allow_store=True).dataset == ""
    with pytest.raises(AddressError, match="object store cannot be used here"):
        parse_address("store:vault:tank/a")
    with pytest.raises(AddressError, match=r"unknown store 'cellar' \(stores: vault\)"):
        parse_address("store:cellar", allow_store=True, stores={"vault"})


@pytest.mark.parametrize(("text", "kw", "message"), [
    ("", {}, "empty"),
    ("tank/a", {}, "no ':' after the host"),
    ("alpha:", {}, "the dataset is missing"),
    ("gamma:tank/a", {"hosts": HOSTS}, r"unknown host 'gamma' \(hosts: alpha, beta\)"),
    ("al pha:tank/a", {}, "is not a host name"),
    ("alpha:tank//a", {}, "empty component"),
    ("alpha:tank/a@", {}, "empty component"),
    ("alpha:tank/a@x@y", {}, "multiple '@'"),
    ("alpha:tank/a#bm", {}, "bookmark cannot be used here"),
    ("alpha:tank/a", {"snapshot": True}, "a snapshot is needed here"),
    ("alpha:tank/a@s1", {"snapshot": False}, "a dataset is needed here"),
    ("alpha:1tank/a", {}, "pool name must begin with a letter"),
])  # fmt: skip
def test_bad_addresses_are_refused_with_the_reason(
    text: str, kw: dict[str, object], message: str
) -> None:
    with pytest.raises(AddressError, match=message) as info:
        parse_address(text, **kw)  # type: ignore[arg-type]
    assert isinstance(info.value, ConfigError)  # the CLI's exit code 2
    if text:
        assert repr(text) in str(info.value)  # the message quotes what was typed


def test_ls_patterns() -> None:
    assert parse_pattern("tank/*") == (None, "tank/*")
    assert parse_pattern("alpha:tank/*@d-*", hosts=HOSTS) == ("alpha", "tank/*@d-*")
    assert parse_pattern("beta:", hosts=HOSTS) == ("beta", "")
    assert parse_pattern("store:vault", stores={"vault"}) == ("store:vault", "")
    with pytest.raises(AddressError, match="unknown host"):
        parse_pattern("gamma:tank", hosts=HOSTS)
