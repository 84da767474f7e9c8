"""`zfleet metrics`: the fleet's Prometheus endpoint (jobs, steps, transfers, lag), fed by Redis."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import click

from app.cli.common import cli_errors, config_option, redis_client, settings_for


@click.command("metrics")
@config_option(required=False)
@click.option("--port", type=int, default=None,
              help="Port to listen on (default: the metrics_port setting, 9478).")
@click.option("--bind", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 inside a container).")
def metrics(config_path: Path | None, port: int | None, bind: str) -> None:
    """Serve /metrics for Prometheus until SIGTERM or Ctrl-C.

    Every scrape reads Redis, so this can run anywhere that reaches it, beside or apart from the
    coordinator. With --config it also reports worker liveness and replication lag per target.
    """
    from coordinator.metrics import serve
    from protocol.log import configure_from_settings

    with cli_errors():
        settings = settings_for(config_path)
        configure_from_settings(settings)
        client = redis_client(settings)
        chosen = settings.metrics_port if port is None else port
        if chosen == 0 and port is None:
            click.echo("zfleet: metrics_port is 0 (turned off); give --port", err=True)
            raise SystemExit(2)
        server, bound = serve(client, port=chosen, addr=bind, config=config_path)
        click.echo(f"serving metrics on http://{bind}:{bound}/metrics", err=True)
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        stop.wait()
        server.shutdown()
