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

from app.cli.common import cli_errors, config_option, redis_client, settings_for
from coordinator.config import HostConfig, load_config
from protocol.errors import ConfigError
from protocol.log import configure_from_settings
from protocol.settings import Settings
from workers.tls import TlsConfig, client_context
from workers.zfs.base import ZfsBackend

REMOTE_CONTAINERS = "/var/lib/zfleet/containers"  # podman's store on a host behind ssh


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


def tls_config(settings: Settings) -> TlsConfig | None:
    """The data plane's TLS files from the settings; None when TLS is not configured."""
    given = (settings.tls_ca, settings.tls_cert, settings.tls_key)
    if all(path is None for path in given):
        return None
    ca, cert, key = given
    if ca is None or cert is None or key is None:
        # half a TLS set-up would silently fall back to plain TCP on one side
        raise ConfigError("TLS needs all of tls_ca, tls_cert and tls_key (ZFLEET_TLS_*)")
    return TlsConfig(ca_file=ca, cert_file=cert, key_file=key)


def containers_under(data_dir: Path, exec_prefix: tuple[str, ...] = ()) -> None:
    """The host's containers keep their podman store under ``<data_dir>/containers/<host>``;
    on a host behind an exec prefix (``ssh root@host``), podman runs there, its store under
    /var/lib/zfleet/containers/<host>."""
    from workers import containersteps
    from workers.containers.podman import PodmanRuntime

    where = Path(REMOTE_CONTAINERS) if exec_prefix else data_dir / "containers"
    containersteps.configure(lambda host: PodmanRuntime(where / host, exec_prefix=exec_prefix))


def ledger_path(data_dir: Path, host: str) -> Path:
    """Where HOST's stream server remembers used grants (per host: a data dir may be shared)."""
    directory = data_dir / "grants"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {directory}: {exc}") from exc
    return directory / f"{host}.ledger"


@click.command("worker")
@click.option("--host", "host_name", required=True, help="This host's name in the fleet config.")
@config_option()
@click.option("--concurrency", default=4, show_default=True,
              help="Steps run at once (threads; each step's time limit is the "
                   "step_time_limit setting, enforced by zfleet's own watchdog).")  # fmt: skip
@click.option("--pool", type=click.Choice(["threads", "solo", "prefork"]), default="threads",
              show_default=True, help="Celery execution pool.")  # fmt: skip
@click.option("--stream-bind", default=None,
              help="host:port for the stream server (default: the host's stream_address, "
                   "else the stream_bind setting; port 0 picks a free one).")  # fmt: skip
@click.option("--metrics-bind", default="127.0.0.1", show_default=True,
              help="Address of the metrics endpoint (on the metrics_port setting; 0 turns it "
                   "off); 0.0.0.0 inside a container.")  # fmt: skip
def worker(  # keyword-only: click passes every option by name
    *, host_name: str, config_path: Path, concurrency: int, pool: str, stream_bind: str | None,
    metrics_bind: str,
) -> None:  # fmt: skip
    """Run HOST's worker: Celery on queue zfleet.host.HOST plus its stream server.

    With the tls_ca, tls_cert and tls_key settings (ZFLEET_TLS_*) the stream server and the
    sender speak mutual TLS. Grants used here are remembered in DATA_DIR/grants/HOST.ledger, so
    a restart does not open a window for replays. Before anything starts, the datasets of jobs
    whose primary role moved away from HOST (it was failed over from) are made read-only. The
    worker's own metrics (transfers, steps) are served on metrics_port, counted in this process
    (the threads and solo pools).
    """
    from app.celeryloop import run_celery
    from app.fencing import fence_on_start
    from bus.queues import queue_for
    from protocol.settings import parse_hostport
    from workers import metrics
    from workers.dataplane.sender import SendOptions, push_transfer
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
        tls = tls_config(settings)
        ledger = ledger_path(settings.data_dir, host_name)
        containers_under(settings.data_dir, host.exec_prefix)
        backend = backend_for(host)
        client = redis_client(settings)
        # before the stream server, the heartbeat and the queue: what moved away stops writing
        fence_on_start(host_name, fleet, backend, client)
        server = StreamServer(backend, host=host_name, bind=bind, tls=tls, ledger_path=ledger,
                              secret=settings.fleet_secret.get().encode())  # fmt: skip
        options = SendOptions(tls=client_context(tls) if tls is not None else None)
        push = functools.partial(push_transfer, compression_level=settings.compression_level,
                                 bwlimit=settings.bwlimit, options=options)  # fmt: skip
        s3 = {k: v for k, v in {
            "access_key": settings.store_access_key.get() if settings.store_access_key else None,
            "secret_key": settings.store_secret_key.get() if settings.store_secret_key else None,
            "region": settings.store_region,
        }.items() if v}  # fmt: skip
        opener = store_opener(os.environ.get("ZFLEET_PASSPHRASE"), s3)
        server.start()
        # peers dial the advertised address when one is set (a bind to 0.0.0.0 is not dialable)
        advertise = (
            settings.stream_advertise_addr
            if settings.stream_advertise != settings.stream_bind
            else server.address
        )
        rt = HostRuntime(host=host_name, backend=backend, client=client,
                         stream_address=advertise, push=push, open_store=opener,
                         step_time_limit=float(settings.step_time_limit))  # fmt: skip
        endpoint = None
        try:
            if settings.metrics_port:
                try:
                    endpoint, _port = metrics.serve(host_name, settings.metrics_port,
                                                    metrics_bind)  # fmt: skip
                except OSError as exc:
                    raise ConfigError(f"metrics cannot listen on {metrics_bind}:"
                                      f"{settings.metrics_port}: {exc}") from exc  # fmt: skip
            rt.start_heartbeat()
            argv = [  # --quiet: no banner on stdout, the log stays JSON
                "--quiet", "worker", "-Q", queue_for(host_name), "-P", pool, "-c", str(concurrency),
                "-n", f"{host_name}@zfleet", "--without-mingle", "--without-gossip", "-E",
                "-l", settings.log_level,
            ]  # fmt: skip
            # a Celery that dies on its own (a Redis restart mid-step) is started again
            code = run_celery(lambda: make_worker_app(rt, settings.redis_url), argv)
        finally:
            rt.stop()
            server.stop()
            if endpoint is not None:
                endpoint.shutdown()
                endpoint.server_close()
    raise SystemExit(code)
