"""`zfleet worker --host NAME`: one host's hands, in one process with one lifecycle.

A Celery worker consuming ``zfleet.host.NAME`` and the host's data-plane stream server start and
stop together; a heartbeat in Redis tells the coordinator this worker (instance) is alive and where
its stream server listens. SIGTERM finishes the running step (warm shutdown) and stops both.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import click

from coordinator.cli.common import cli_errors, config_option, redis_client, settings_for
from coordinator.config import HostConfig, load_config
from protocol.errors import ConfigError
from protocol.log import configure_from_settings
from workers.zfs.base import ZfsBackend


def backend_for(host: HostConfig) -> ZfsBackend:
    """The host's ZFS backend as the fleet config describes it."""
    if host.backend == "sim":
        from workers.zfs.sim import SimBackend

        assert host.sim_root is not None  # the config refuses a sim host without one
        # one instance shared by the task threads and the stream server: its lock keeps the
        # calls apart (several instances in one process would not exclude each other)
        return SimBackend(host.sim_root)
    from workers.zfs.real import RealBackend

    return RealBackend(host.exec_prefix)


@click.command("worker")
@click.option("--host", "host_name", required=True, help="This host's name in the fleet config.")
@config_option()
@click.option("--concurrency", default=4, show_default=True,
              help="Steps run at once (threads; time limits need --pool prefork).")  # fmt: skip
@click.option("--pool", type=click.Choice(["threads", "solo", "prefork"]), default="threads",
              show_default=True, help="Celery execution pool.")  # fmt: skip
@click.option("--stream-bind", default=None,
              help="host:port for the stream server (default: the host's stream_address, "
                   "else the stream_bind setting; port 0 picks a free one).")  # fmt: skip
def worker(
    host_name: str, config_path: Path, concurrency: int, pool: str, stream_bind: str | None
) -> None:
    """Run HOST's worker: Celery on queue zfleet.host.HOST plus its stream server."""
    from protocol.settings import parse_hostport
    from workers.celery_app import queue_for
    from workers.dataplane.sender import push_transfer
    from workers.dataplane.server import StreamServer
    from workers.tasks import HostRuntime, make_worker_app, store_opener

    with cli_errors():
        settings = settings_for(config_path)
        configure_from_settings(settings)
        fleet = load_config(config_path)
        host = fleet.hosts.get(host_name)
        if host is None:
            known = ", ".join(fleet.hosts)
            raise ConfigError(f"{config_path}: no host {host_name!r} (hosts: {known})")
        if settings.fleet_secret is None:
            raise ConfigError("the worker needs fleet_secret (ZFLEET_FLEET_SECRET) to check grants")
        bind = parse_hostport(stream_bind or host.stream_address or settings.stream_bind,
                              allow_port_zero=True)  # fmt: skip
        backend = backend_for(host)
        client = redis_client(settings)
        server = StreamServer(backend, host=host_name, bind=bind,
                              secret=settings.fleet_secret.get().encode())  # fmt: skip
        server.start()
        push = functools.partial(push_transfer, compression_level=settings.compression_level,
                                 bwlimit=settings.bwlimit)  # fmt: skip
        s3 = {k: v for k, v in {
            "access_key": settings.store_access_key.get() if settings.store_access_key else None,
            "secret_key": settings.store_secret_key.get() if settings.store_secret_key else None,
            "region": settings.store_region,
        }.items() if v}  # fmt: skip
        opener = store_opener(os.environ.get("ZFLEET_PASSPHRASE"), s3)
        rt = HostRuntime(host=host_name, backend=backend, client=client,
                         stream_address=server.address, push=push, open_store=opener)  # fmt: skip
        try:
            rt.start_heartbeat()
            app = make_worker_app(rt, settings.redis_url)
            app.worker_main([  # --quiet: no banner on stdout, the log stays JSON
                "--quiet", "worker", "-Q", queue_for(host_name), "-P", pool, "-c", str(concurrency),
                "-n", f"{host_name}@zfleet", "--without-mingle", "--without-gossip", "-E",
                "-l", settings.log_level,
            ])  # fmt: skip
        finally:
            rt.stop()
            server.stop()
