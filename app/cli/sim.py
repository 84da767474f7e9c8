"""`zfleet sim zfs ...` and `zfleet sim zpool ...`: OpenZFS's commands over the simulation.

The arguments pass through untouched to workers.zfs.front, which parses them as `zfs` and
`zpool` do, so `zfleet sim zfs send tank/a@s1 | zfleet sim zfs receive tank/b` works like the
real thing. Pools live under $ZFLEET_SIM_ROOT (default: zfleet's data directory, /sim).
"""

from __future__ import annotations

import sys

import click

# zfs's own options (-h for send holds, -v, -n...) must reach it, not click
PASS_THROUGH = {
    "ignore_unknown_options": True,
    "allow_extra_args": True,
    "help_option_names": [],
}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def sim() -> None:
    """Try zfleet without ZFS: `zfs` and `zpool` over simulated pools.

    \b
    Examples:
      zfleet sim zpool create tank
      zfleet sim zfs create tank/data
      zfleet sim zfs snapshot tank/data@s1
      zfleet sim zfs send tank/data@s1 | zfleet sim zfs receive tank/copy
      zfleet sim zfs list -t all -o name,used,refer,origin

    Pools live under $ZFLEET_SIM_ROOT (default: zfleet's data directory, then /sim).
    """


def _run(program: str, args: tuple[str, ...]) -> None:
    from workers.zfs.front import main

    sys.exit(main([program, *args]))


@sim.command(context_settings=PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def zfs(args: tuple[str, ...]) -> None:
    """OpenZFS's `zfs` command over the simulated pools (same arguments, output, exit codes)."""
    _run("zfs", args)


@sim.command(context_settings=PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def zpool(args: tuple[str, ...]) -> None:
    """OpenZFS's `zpool` command over the simulated pools (create, destroy, list, get)."""
    _run("zpool", args)
