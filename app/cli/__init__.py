"""The `zfleet` command: one entry point, subcommands loaded only when used.

Each subcommand lives in its own module (its own room); this table is the only place that lists
them, so `zfleet --help` stays fast and a broken optional module cannot break the others.
"""

from __future__ import annotations

import importlib
import sys
from typing import Final

import click

# name -> "module:attribute" of a click.Command; kept sorted.
SUBCOMMANDS: Final[dict[str, str]] = {
    "ca": "app.cli.ca:ca",
    "clone": "app.cli.verbs:clone",
    "cloud": "app.cli.cloud:cloud",
    "completion": "app.cli.completion:completion",
    "container": "app.cli.container:container",
    "coordinator": "app.cli.coordinator:coordinator",
    "dedup": "app.cli.dedup:dedup",
    "demo": "app.cli.demo:demo",
    "destroy": "app.cli.verbs:destroy",
    "ephemeral": "app.cli.ephemeral:ephemeral",
    "diff": "app.cli.verbs:diff",
    "failover": "app.cli.failover:failover",
    "graph": "app.cli.graph:graph",
    "job": "app.cli.jobs:job",
    "keys": "app.cli.keys:keys",
    "kind": "app.cli.kind:kind",
    "jobs": "app.cli.jobs:jobs",
    "lab": "app.cli.lab:lab",
    "logs": "app.cli.logs:logs",
    "ls": "app.cli.ls:ls",
    "man": "app.cli.man:man",
    "metrics": "app.cli.metrics:metrics",
    "rebase": "app.cli.rebase:rebase",
    "rejoin": "app.cli.rejoin:rejoin",
    "send": "app.cli.verbs:send",
    "sim": "app.cli.sim:sim",
    "snapshot": "app.cli.verbs:snapshot",
    "status": "app.cli.status:status",
    "stream": "app.cli.stream:stream",
    "switchover": "app.cli.switchover:switchover",
    "sync": "app.cli.sync:sync",
    "worker": "app.cli.worker:worker",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *SUBCOMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="zfleet")
def cli() -> None:
    """zfleet keeps ZFS snapshot and clone hierarchies in sync across hosts and object storage.

    Start with `zfleet demo` to watch a simulated fleet replicate, or `zfleet --help` on any
    subcommand to learn it.
    """


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(prog_name="zfleet", standalone_mode=True))
