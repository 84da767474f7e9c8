"""Smoke test of the lab: two real OpenZFS 2.3 hosts that replicate to each other."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.lab.remote import on_host
from workers.lab.lab import LabHost

pytestmark = pytest.mark.lab


@pytest.fixture
def dataset(lab_hosts: list[LabHost]) -> Iterator[str]:
    """A fresh dataset name under the pools, destroyed on both hosts afterwards."""
    name = f"smoke{secrets.token_hex(3)}"
    yield name
    for host in lab_hosts:
        on_host(host, f"zfs destroy -r {host.pool}/{name} 2>/dev/null || true")


def test_hosts_run_openzfs_2_3_with_a_healthy_pool(lab_hosts: list[LabHost]) -> None:
    assert len(lab_hosts) == 2
    assert len({h.ssh_port for h in lab_hosts}) == 2
    for host in lab_hosts:
        versions = on_host(host, "zfs version").split()
        # Userland and kernel module both 2.3.x: the module DKMS built for the image's kernel.
        assert versions[0].startswith("zfs-2.3."), versions
        assert versions[1].startswith("zfs-kmod-2.3."), versions
        assert on_host(host, "hostname").strip() == host.name
        assert on_host(host, f"zpool list -H -o health {host.pool}").strip() == "ONLINE"
        assert on_host(host, f"zpool status -x {host.pool}").strip().endswith("is healthy")


def _guid(host: LabHost, snapshot: str) -> str:
    return on_host(host, f"zfs get -Hp -o value guid {snapshot}").strip()


def test_send_between_hosts_keeps_guids_and_data(lab_hosts: list[LabHost], dataset: str) -> None:
    alpha, beta = lab_hosts
    src, dst = f"{alpha.pool}/{dataset}", f"{beta.pool}/{dataset}"
    # alpha pipes straight to beta over ssh through the host's loopback (10.0.2.2).
    to_beta = f"ssh -p {beta.ssh_port} root@10.0.2.2"
    on_host(
        alpha, f"zfs create {src} && head -c 8M /dev/urandom > /{src}/blob && zfs snapshot {src}@s1"
    )
    on_host(alpha, f"zfs send {src}@s1 | {to_beta} zfs receive {dst}", timeout=300)
    assert _guid(beta, f"{dst}@s1") == _guid(alpha, f"{src}@s1")

    # An incremental on top: the replica follows, same guid, same bytes.
    on_host(alpha, f"echo second >> /{src}/blob && zfs snapshot {src}@s2")
    on_host(alpha, f"zfs send -i @s1 {src}@s2 | {to_beta} zfs receive {dst}", timeout=300)
    assert _guid(beta, f"{dst}@s2") == _guid(alpha, f"{src}@s2")
    digest = "sha256sum /{}/blob | cut -d' ' -f1"
    assert on_host(beta, digest.format(dst)) == on_host(alpha, digest.format(src))
    snaps = on_host(beta, f"zfs list -H -t snapshot -o name -s createtxg {dst}").split()
    assert snaps == [f"{dst}@s1", f"{dst}@s2"]
