"""`zfleet keys`: host key pairs and key groups (docs/keys.md).

    zfleet keys host init --host alpha          on alpha: make its X25519 key pair, register
                                                the public half (the private half stays there)
    zfleet keys host list
    zfleet keys group create team alpha:tank/team --member beta --member gamma
    zfleet keys group add-host team delta
    zfleet keys group remove-host team gamma    (a new key for the others; see docs/keys.md
                                                for what gamma can still read)
    zfleet keys group rotate team
    zfleet keys group load team beta:bk/team    load-key on beta's replica
    zfleet keys group show [team]

Group commands run as jobs on the members' workers (a coordinator must be running); the group
key is made, changed and used on member hosts only, and travels sealed to their public keys.
Exit codes: 0 done, 1 failed, 2 bad arguments, 4 Redis unreachable, 5 timed out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from app.cli.common import (
    EXIT_OK,
    EXIT_TIMEOUT,
    cli_errors,
    config_option,
    json_option,
    print_json,
    redis_client,
    settings_for,
)
from app.cli.jobs import exit_code, job_detail, print_job
from bus import keyring
from coordinator import engine, keyjob
from coordinator.engine import Job
from coordinator.jobstore import JobStore
from coordinator.runner import wait_job
from protocol.addresses import parse_address
from protocol.errors import ConfigError
from protocol.sealed import fingerprint
from workers import hostkey


@click.group("keys")
def keys() -> None:
    """Host key pairs and key groups (group keys sealed to each member's key pair)."""


@keys.group("host")
def host() -> None:
    """This host's X25519 key pair."""


@host.command("init")
@click.option("--host", "name", required=True, help="This host's name in the fleet.")
@config_option(required=False)
@json_option
def host_init(name: str, config_path: Path | None, as_json: bool) -> None:
    """Make this host's key pair (kept if it exists) and register its public key in Redis."""
    with cli_errors():
        settings = settings_for(config_path)
        client = redis_client(settings)
        pair = hostkey.create(settings.data_dir, name)
        keyring.put_host_key(client, name, pair.public)
        out = {"host": name, "public": pair.public.hex(), "fingerprint": fingerprint(pair.public),
               "private_key_file": str(hostkey.key_path(settings.data_dir, name))}  # fmt: skip
        if as_json:
            print_json(out)
        else:
            click.echo(f"{name}: key {out['fingerprint']} registered; private key in "
                       f"{out['private_key_file']} (mode 0600, stays here)")  # fmt: skip


@host.command("list")
@click.argument("names", nargs=-1)
@config_option(required=False)
@json_option
def host_list(names: Sequence[str], config_path: Path | None, as_json: bool) -> None:
    """Registered public keys (fingerprints)."""
    with cli_errors():
        client = redis_client(settings_for(config_path))
        hosts = list(names) or sorted(k.decode().rsplit(":", 1)[-1]
                                      for k in client.scan_iter("zfleet:hostkey:*"))  # fmt: skip
        rows = []
        for h in hosts:
            k = keyring.host_key(client, h)
            rows.append({"host": h, "fingerprint": fingerprint(k.public) if k else None})
        if as_json:
            print_json(rows)
        for r in rows if not as_json else []:
            click.echo(f"{r['host']}\t{r['fingerprint'] or '(none)'}")


@keys.group("group")
def group() -> None:
    """Key groups: a wrapping key shared by member hosts, for the keeper's datasets."""


def _follow(job_of: Callable[[Any], Job], config_path: Path | None, timeout: float,
            as_json: bool) -> None:  # fmt: skip
    with cli_errors():
        client = redis_client(settings_for(config_path))
        store = JobStore(client)
        job = job_of(client)
        store.create(job)
        done = wait_job(store, job.id, timeout=timeout, poll=0.3)
        if as_json:
            print_json(job_detail(done))
        elif done.status == engine.JOB_SUCCEEDED:
            click.echo(f"{done.name}: done")
        else:
            print_job(Console(), done)
        if not done.done:
            raise SystemExit(EXIT_TIMEOUT)
        raise SystemExit(exit_code(done) if done.status != engine.JOB_SUCCEEDED else EXIT_OK)


def _one_host(addresses: Sequence[str]) -> tuple[str, list[str]]:
    parsed = [parse_address(a, snapshot=False) for a in addresses]
    hosts = {a.host for a in parsed}
    if len(hosts) != 1:
        raise ConfigError("give the datasets of one host (HOST:DATASET ...)")
    return hosts.pop(), [a.dataset for a in parsed]


def job_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for deco in reversed((
        config_option(required=False),
        click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait."),
        json_option,
    )):  # fmt: skip
        fn = deco(fn)
    return fn


@group.command("create")
@click.argument("name")
@click.argument("datasets", nargs=-1, required=True)
@click.option("--member", "members", multiple=True, help="Another member host (repeatable).")
@job_options
def group_create(name: str, datasets: Sequence[str], members: Sequence[str],  # noqa: PLR0917
                 config_path: Path | None, timeout: float, as_json: bool) -> None:  # fmt: skip
    """Make group NAME for KEEPER:DATASET...: each created encrypted with the new key, or (when
    it exists, encrypted) moved to it by `zfs change-key`.

    \b
    zfleet keys group create team alpha:tank/team --member beta
    """
    with cli_errors():
        keeper, names = _one_host(datasets)
    _follow(lambda c: keyjob.create_job(c, name, members=members, keeper=keeper,
                                        datasets=names), config_path, timeout, as_json)  # fmt: skip


@group.command("add-host")
@click.argument("name")
@click.argument("hosts", nargs=-1, required=True)
@job_options
def group_add(name: str, hosts: Sequence[str], config_path: Path | None, timeout: float,
              as_json: bool) -> None:  # fmt: skip
    """Seal the group's key to HOSTS too (the keeper reseals its copy)."""
    _follow(lambda c: keyjob.add_host_job(c, name, hosts), config_path, timeout, as_json)


@group.command("remove-host")
@click.argument("name")
@click.argument("hosts", nargs=-1, required=True)
@job_options
def group_remove(name: str, hosts: Sequence[str], config_path: Path | None, timeout: float,
                 as_json: bool) -> None:  # fmt: skip
    """Drop HOSTS and rotate: a new key for the others. What they kept, they can still read:
    snapshots taken before, and raw copies they hold (docs/keys.md)."""
    _follow(lambda c: keyjob.rotate_job(c, name, remove=hosts), config_path, timeout, as_json)


@group.command("rotate")
@click.argument("name")
@job_options
def group_rotate(name: str, config_path: Path | None, timeout: float, as_json: bool) -> None:
    """A new group key: the keeper's datasets `zfs change-key` to it; sealed to every member."""
    _follow(lambda c: keyjob.rotate_job(c, name), config_path, timeout, as_json)


@group.command("load")
@click.argument("name")
@click.argument("datasets", nargs=-1, required=True)
@job_options
def group_load(name: str, datasets: Sequence[str], config_path: Path | None, timeout: float,
               as_json: bool) -> None:  # fmt: skip
    """`zfs load-key` of HOST:DATASET... with the group key (HOST must be a member)."""
    with cli_errors():
        member, names = _one_host(datasets)
    _follow(lambda c: keyjob.load_job(c, name, member, names), config_path, timeout, as_json)


@group.command("show")
@click.argument("name", required=False)
@config_option(required=False)
@json_option
def group_show(name: str | None, config_path: Path | None, as_json: bool) -> None:
    """Groups: keeper, members, datasets, key version (no key: Redis holds sealed boxes only)."""
    with cli_errors():
        client = redis_client(settings_for(config_path))
        names = [name] if name else keyring.groups(client)
        found = [keyring.group(client, n) for n in names]
        if name and found[0] is None:
            raise ConfigError(f"no key group {name!r}")
        rows = [g.to_json() for g in found if g is not None]
        if as_json:
            print_json(rows)
            return
        for r in rows:
            members, datasets = ", ".join(r["members"]), ", ".join(r["datasets"])
            click.echo(f"{r['name']}: v{r['version']} keeper {r['keeper']}, members {members}; "
                       f"datasets {datasets}")  # fmt: skip
