"""`zfleet graph -o fleet.svg`: draw the fleet from the inventories its workers reported.

Per host: datasets, snapshots and clone edges; for every job target, which source snapshots it
holds and how far it lags (colour). The picture is as fresh as the newest inventory (each job's
inventory step refreshes a host's).
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from app.cli.common import cli_errors, config_option, redis_client, settings_for


@click.command("graph")
@config_option()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("fleet.svg"), show_default=True, help="Where to write the SVG.")
@click.option("--title", default="zfleet", show_default=True, help="The picture's title.")
def graph(config_path: Path, output: Path, title: str) -> None:
    """Write an SVG picture of the fleet: hosts, datasets, snapshots, clones and lag."""
    from coordinator.config import load_config
    from coordinator.graphsvg import render_svg
    from coordinator.jobstore import JobStore
    from coordinator.lag import fleet_lag
    from coordinator.metrics import fleet_graph

    with cli_errors():
        config = load_config(config_path)
        store = JobStore(redis_client(settings_for(config_path)))
        fleet = fleet_graph(store, config)
        now = time.time()
        missing = [h for h in config.hosts if h not in fleet.hosts]
        svg = render_svg(fleet, fleet_lag(fleet, config, now), title=title, now=now)
        output.write_text(svg, encoding="utf-8")
        click.echo(f"wrote {output} ({len(fleet.hosts)} hosts and stores)")
        if missing:
            click.echo(f"no inventory yet from {', '.join(missing)}: run a sync first", err=True)
