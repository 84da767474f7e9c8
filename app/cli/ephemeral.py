"""`zfleet ephemeral create|discard|show`: a shared base below, the user's key above (docs/keys.md).

Run on the host that holds the base (its backend comes from the fleet config's [hosts.HOST]):

    zfleet ephemeral create scratch --host alpha --base tank/images/base@v3 \\
        --key-file ~/.zfleet/my.key --mount /run/zfleet/scratch
    zfleet ephemeral discard scratch --host alpha --pool tank --key-file ~/.zfleet/my.key \\
        --mount /run/zfleet/scratch          # everything written is gone, fresh from the base
    zfleet ephemeral discard scratch --host alpha --pool tank --destroy

`--key-group G` uses the key group's key instead (this host must be a member: its box is opened
with its own private key). Exit codes: 0 done, 1 failed, 2 bad arguments, 4 Redis unreachable.
"""

from __future__ import annotations

from pathlib import Path

import click

from app.cli.common import cli_errors, config_option, json_option, print_json, settings_for
from protocol.errors import ConfigError
from workers.zfs.base import ZfsBackend


def _backend(config_path: Path, host: str) -> tuple[ZfsBackend, tuple[str, ...]]:
    """The host's backend and, for a real host, the exec prefix that reaches it (mounts)."""
    from app.cli.worker import backend_for
    from coordinator.config import load_config

    config = load_config(config_path)
    if host not in config.hosts:
        raise ConfigError(f"no host {host!r} in {config_path}")
    entry = config.hosts[host]
    return backend_for(entry), tuple(entry.exec_prefix) if entry.backend != "sim" else ()


def _key(config_path: Path, host: str, key_file: Path | None, key_group: str | None) -> tuple[
        bytes, str]:  # fmt: skip
    """The key and how it is recorded (``file:PATH`` / ``group:NAME``; never the key)."""
    from workers import ephemeral

    if (key_file is None) == (key_group is None):
        raise ConfigError("give exactly one of --key-file and --key-group")
    if key_file is not None:
        return ephemeral.key_from_file(key_file), f"file:{key_file.resolve()}"
    assert key_group is not None
    from app.cli.common import redis_client
    from bus import keyring
    from protocol.keysteps import key_context
    from protocol.sealed import open_box, unb64
    from workers import hostkey

    settings = settings_for(config_path)
    g = keyring.group(redis_client(settings), key_group)
    if g is None:
        raise ConfigError(f"no key group {key_group!r}")
    boxes = g.boxes_for(host)
    if not boxes:
        raise ConfigError(f"{host} is not a member of key group {key_group!r}")
    version, box = boxes[0]
    pair = hostkey.load(settings.data_dir, host)
    return open_box(pair, unb64(box), key_context(key_group, version)), f"group:{key_group}"


@click.group("ephemeral")
def ephemeral() -> None:
    """Ephemeral datasets: reads see a shared base, new bytes land under your own key."""


@ephemeral.command("create")
@click.argument("name")
@click.option("--host", required=True, help="The host holding the base (runs here).")
@click.option("--base", required=True, help="The base snapshot, POOL/DATASET@SNAP.")
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Your key: 32 bytes or 64 hex digits.")  # fmt: skip
@click.option("--key-group", help="Use this key group's key (this host must be a member).")
@click.option("--mount", "mount_at", type=click.Path(file_okay=False, path_type=Path),
              help="Mount the merged view (overlayfs) here.")  # fmt: skip
@config_option()
@json_option
def create(name: str, host: str, base: str, key_file: Path | None, key_group: str | None,  # noqa: PLR0917
           mount_at: Path | None, config_path: Path, as_json: bool) -> None:  # fmt: skip
    """Make NAME: a read-only clone of BASE below, a new encryption root above."""
    from workers import ephemeral as eph

    with cli_errors():
        be, prefix = _backend(config_path, host)
        key, source = _key(config_path, host, key_file, key_group)
        lay = eph.create(be, base, name, key=key, key_source=source, mount_at=mount_at,
                         exec_prefix=prefix)  # fmt: skip
        out = {"name": name, "lower": lay.lower, "upper": lay.upper,
               "mounted": str(mount_at) if mount_at else None}  # fmt: skip
        if as_json:
            print_json(out)
        else:
            click.echo(f"ephemeral {name}: {lay.lower} (base, read-only) under {lay.upper} "
                       f"(your key){f', mounted at {mount_at}' if mount_at else ''}")  # fmt: skip


@ephemeral.command("discard")
@click.argument("name")
@click.option("--host", required=True)
@click.option("--pool", required=True, help="The pool NAME lives in (the base's).")
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key-group")
@click.option("--mount", "mount_at", type=click.Path(file_okay=False, path_type=Path))
@click.option("--destroy", is_flag=True, help="Remove NAME for good instead of re-creating it.")
@config_option()
def discard(name: str, host: str, pool: str, key_file: Path | None, key_group: str | None,  # noqa: PLR0917
            mount_at: Path | None, destroy: bool, config_path: Path) -> None:  # fmt: skip
    """Throw away everything written to NAME and start again from its base (one command)."""
    from workers import ephemeral as eph

    with cli_errors():
        be, prefix = _backend(config_path, host)
        key = None if destroy else _key(config_path, host, key_file, key_group)[0]
        eph.discard(be, pool, name, key=key, mount_at=mount_at, recreate=not destroy,
                    exec_prefix=prefix)  # fmt: skip
        click.echo(f"ephemeral {name}: {'destroyed' if destroy else 'discarded and re-created'}")
