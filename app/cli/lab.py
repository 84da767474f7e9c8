"""`zfleet lab`: real OpenZFS hosts in QEMU VMs on this machine, for trying zfleet on real ZFS.

`zfleet lab build` builds (or finds cached) the VM image, `zfleet lab up N` boots N hosts and
prints how to reach them, `zfleet lab status` shows them, `zfleet lab down` stops them. The VMs
keep running after `up` returns; only `down` stops them.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import click

from protocol.errors import LabError
from workers.lab import ssh
from workers.lab.lab import DEFAULT_POOL, MAX_HOSTS, Lab, LabHost
from workers.lab.paths import cache_root, state_root
from workers.lab.recipe import Image, build_image, find_image, recipe_hash

# A lab started from the command line belongs to no process: only `zfleet lab down` ends it.
DETACHED_OWNER = 0


def _lab_dir(name: str) -> Path:
    return state_root() / name


def _image_or_build() -> Image:
    image = find_image()
    if image is not None:
        return image
    click.echo(f"building the lab image {recipe_hash()} (several minutes, once per recipe)...")
    return build_image()


def _host_record(host: LabHost) -> dict[str, object]:
    return {
        "name": host.name,
        "ssh_port": host.ssh_port,
        "exec_prefix": list(host.exec_prefix),
        "pool": host.pool,
        "zfs_version": host.zfs_version,
        "serial_log": str(host.serial_log),
    }


def _print_hosts(hosts: list[LabHost]) -> None:
    for host in hosts:
        click.echo(f"{host.name}  ({host.zfs_version or 'zfs version unknown'}, pool {host.pool})")
        click.echo(f"  shell:        {ssh.shell_line(host.exec_prefix)}")
        click.echo(f"  exec prefix:  {fleet_prefix(host)}")
        click.echo(f"  serial log:   {host.serial_log}")
    if not hosts:
        return
    first = hosts[0]
    click.echo("\nRun a command on a host:")
    click.echo(f"  {ssh.shell_line(first.exec_prefix)} zfs list -r {first.pool}")
    click.echo("Use them as real-ZFS hosts in a fleet config (TOML; workers run on this machine):")
    for line in fleet_config(hosts).splitlines():
        click.echo(f"  {line}")
    click.echo("or in Python: RealBackend(exec_prefix) from workers.zfs.real.")
    if len(hosts) > 1:
        other = hosts[1]
        click.echo("Hosts reach each other through this machine's loopback at 10.0.2.2:")
        click.echo(
            f"  (on {first.name}) zfs send {first.pool}/x@s | "
            f"ssh -p {other.ssh_port} root@10.0.2.2 zfs receive {other.pool}/x"
        )


def fleet_prefix(host: LabHost) -> str:
    """The host's exec prefix as a TOML array (JSON strings are valid TOML basic strings)."""
    return json.dumps(list(host.exec_prefix))


def fleet_config(hosts: list[LabHost]) -> str:
    """The ``[hosts.*]`` tables of a fleet config that make the lab's hosts real-ZFS hosts."""
    return "".join(
        f'[hosts.{h.name}]\nbackend = "real"\nexec_prefix = {fleet_prefix(h)}\n' for h in hosts
    )


@click.group()
def lab() -> None:
    """Real OpenZFS in local QEMU VMs: build the image, bring hosts up, tear them down."""


@lab.command()
@click.option("--force", is_flag=True, help="Rebuild even if the image for this recipe is cached.")
def build(force: bool) -> None:
    """Build the VM image (Debian bookworm + OpenZFS 2.3), cached by a hash of its recipe."""
    started = time.monotonic()
    try:
        image = build_image(force=force)
    except LabError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"image {image.hash}: kernel {image.kernel}, zfs {image.zfs_version}, in {image.directory}"
        f" ({time.monotonic() - started:.0f} s)"
    )


@lab.command()
@click.argument("count", type=click.IntRange(1, MAX_HOSTS), default=2)
@click.option("--name", default="default", show_default=True, help="Name of this lab.")
@click.option("--pool", default=DEFAULT_POOL, show_default=True, help="Pool made on each host.")
@click.option("--memory", default=1024, show_default=True, help="MiB of memory per VM.")
@click.option("--json", "as_json", is_flag=True, help="Print the hosts as JSON.")
def up(count: int, name: str, pool: str, memory: int, as_json: bool) -> None:
    """Boot COUNT hosts with real OpenZFS and print how to reach each one."""
    started = time.monotonic()
    try:
        image = _image_or_build()
        running = Lab.up(image, count, _lab_dir(name), pool=pool, memory_mb=memory)
        running.owner_pid = DETACHED_OWNER
        running.save()
    except LabError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps([_host_record(h) for h in running.hosts], indent=1))
        return
    click.echo(f"lab {name!r}: {count} host(s) up in {time.monotonic() - started:.0f} s\n")
    _print_hosts(running.hosts)
    click.echo(f"\nStop them with: zfleet lab down --name {name}")


@lab.command()
@click.option("--name", default="default", show_default=True, help="Name of the lab.")
def down(name: str) -> None:
    """Power off and remove every host of the lab."""
    try:
        found = Lab.load(_lab_dir(name))
    except LabError as exc:
        raise click.ClickException(str(exc)) from exc
    if found is None:
        click.echo(f"no lab {name!r} is up")
        return
    found.down(keep_logs=False)
    with contextlib.suppress(OSError):  # left only if someone keeps files of their own there
        found.directory.rmdir()
    click.echo(f"lab {name!r}: {len(found.vms)} host(s) stopped")


@lab.command()
@click.option("--name", default="default", show_default=True, help="Name of the lab.")
@click.option("--json", "as_json", is_flag=True, help="Print the hosts as JSON.")
def status(name: str, as_json: bool) -> None:
    """Show the lab's hosts and whether each is running; exit 1 if any is not."""
    try:
        found = Lab.load(_lab_dir(name))
    except LabError as exc:
        raise click.ClickException(str(exc)) from exc
    image = find_image()
    if found is None:
        click.echo(
            f"no lab {name!r} is up (image cache: {cache_root()}, "
            f"{'image ready' if image else 'image not built'})"
        )
        raise SystemExit(1)
    alive = found.running()
    if as_json:
        records = [
            {**_host_record(h), "running": up_now}
            for h, up_now in zip(found.hosts, alive, strict=True)
        ]
        click.echo(json.dumps(records, indent=1))
    else:
        for host, up_now in zip(found.hosts, alive, strict=True):
            state = "running" if up_now else "STOPPED"
            click.echo(f"{host.name}  {state}  port {host.ssh_port}  pool {host.pool}")
            click.echo(f"  {ssh.shell_line(host.exec_prefix)}")
    if not all(alive):
        raise SystemExit(1)
