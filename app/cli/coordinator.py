"""`zfleet coordinator`: run the coordinator loop (leader lease, job engine, schedules)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import click

from app.cli.common import cli_errors, config_option, redis_client, settings_for
from protocol.errors import ConfigError
from protocol.log import configure_from_settings


@click.command("coordinator")
@config_option()
@click.option("--lease-ttl", default=10.0, show_default=True,
              help="Seconds a dead coordinator's lease lasts before another takes over.")
@click.option("--http", "http", metavar="ADDR:PORT",
              help="Also serve the HTTP API and the fleet page here (docs/api.md).")
@click.option("--api-token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding the API's bearer token (needed with --http).")
@click.option("--alertmanager-secret-file", type=click.Path(dir_okay=False, path_type=Path),
              help="With --http: serve POST /v1/alerts/alertmanager, whose bearer token or "
                   "basic-auth password is this file's content (16+ bytes).")
@click.option("--alert-host-label", default="host", show_default=True,
              help="The alert label that names the fleet host.")
@click.option("--alert-host-regex", default=None,
              help="Regex over that label's value; its (?P<host>...) group is the host.")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path),
              help="PEM certificate: serve the API over HTTPS (with --tls-key).")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path),
              help="PEM private key of --tls-cert.")
def coordinator(config_path: Path, lease_ttl: float, *, http: str | None,
                api_token_file: Path | None, alertmanager_secret_file: Path | None,
                alert_host_label: str, alert_host_regex: str | None, tls_cert: Path | None,
                tls_key: Path | None) -> None:  # fmt: skip
    """Drive every job: submit ready steps, apply their events, start scheduled jobs.

    Run one per fleet (more stand by: only the holder of the leader lease acts). SIGTERM or
    Ctrl-C stops it between ticks; a killed one is replaced once its lease expires, and the
    running jobs carry on where they were.
    """
    from coordinator.config import load_config
    from coordinator.runner import Coordinator, QueueSubmitter

    with cli_errors():
        settings = settings_for(config_path)
        configure_from_settings(settings)
        load_config(config_path)  # refuse a bad file before taking the lease
        client = redis_client(settings)
        secret = settings.fleet_secret.get().encode() if settings.fleet_secret else None
        # the broker is this Redis: submissions go out with the transaction that stores them
        loop = Coordinator(client, QueueSubmitter(client), config_path=str(config_path),
                           lease_ttl_ms=int(lease_ttl * 1000), grant_secret=secret,
                           job_retention=float(settings.job_retention))  # fmt: skip
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        api = None
        if http is not None:
            from coordinator.api import serve_api

            if api_token_file is None:
                raise ConfigError("--http needs --api-token-file (the API always wants a token)")
            from protocol.alertmanager import parse_host_rule

            rule = parse_host_rule(alert_host_label, alert_host_regex)
            api = serve_api(client, config_path=config_path, address=http,
                            token_file=api_token_file, tls_cert=tls_cert, tls_key=tls_key,
                            alert_secret_file=alertmanager_secret_file,
                            alert_host_rule=rule)  # fmt: skip
        elif alertmanager_secret_file is not None:
            raise ConfigError("--alertmanager-secret-file needs --http (the webhook is served "
                              "by the API server)")  # fmt: skip
        try:
            loop.run(stop)
        finally:
            if api is not None:
                api.stop()
