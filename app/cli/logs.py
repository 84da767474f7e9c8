"""`zfleet logs`: sealed log datasets, one encryption root per period (docs/keys.md).

    zfleet logs archive-key ~/archive.key           make the archive key pair (keep it offline);
                                                    prints the public key for `init`
    zfleet logs init alpha:tank/logs/app --archive-pub ~/archive.key.pub
    zfleet logs roll alpha:tank/logs/app            close the period: snapshot, unload its key
    zfleet logs list alpha:tank/logs/app
    zfleet logs open beta:bk/logs/app 20261203T120000Z --archive-key ~/archive.key

`init`, `roll` and `list` run on the host that writes the log; `open` on any host that holds the
period and its keys dataset (a replica, or a copy restored from the store with `zfleet send`).
Exit codes: 0 done, 1 failed, 2 bad arguments.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from app.cli.common import cli_errors, config_option, json_option, print_json
from protocol.addresses import parse_address
from protocol.errors import ConfigError
from protocol.sealed import KEY_LEN, KeyPair, fingerprint
from workers.zfs.base import ZfsBackend


def _target(config_path: Path, address: str) -> tuple[ZfsBackend, str, tuple[str, ...]]:
    """The host's backend, the dataset, and the exec prefix that reaches a real host."""
    from app.cli.worker import backend_for
    from coordinator.config import load_config

    addr = parse_address(address, snapshot=False)
    config = load_config(config_path)
    if addr.host not in config.hosts:
        raise ConfigError(f"no host {addr.host!r} in {config_path}")
    entry = config.hosts[addr.host]
    prefix = tuple(entry.exec_prefix) if entry.backend != "sim" else ()
    return backend_for(entry), addr.dataset, prefix


def _read_key(path: Path, what: str) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    text = raw.strip()
    if len(text) == 2 * KEY_LEN:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    if len(raw) == KEY_LEN:
        return raw
    raise ConfigError(f"{path}: an X25519 {what} is 32 bytes or 64 hex digits")


@click.group("logs")
def logs() -> None:
    """Sealed logs: closed periods read with an archive private key only."""


@logs.command("archive-key")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def archive_key(path: Path) -> None:
    """Make an archive key pair: PATH (private, mode 0600) and PATH.pub (public, hex)."""
    with cli_errors():
        if path.exists():
            raise ConfigError(f"{path} exists: an archive key is never overwritten")
        pair = KeyPair.generate()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, pair.private.hex().encode() + b"\n")
        finally:
            os.close(fd)
        Path(f"{path}.pub").write_text(pair.public.hex() + "\n")
        click.echo(f"archive key {fingerprint(pair.public)}: private {path}, public {path}.pub")


@logs.command("init")
@click.argument("address")
@click.option("--archive-pub", required=True, type=click.Path(dir_okay=False, path_type=Path))
@config_option()
def init(address: str, archive_pub: Path, config_path: Path) -> None:
    """Make the log HOST:DATASET and open its first period."""
    from workers import sealedlogs

    with cli_errors():
        public = _read_key(archive_pub, "public key")
        be, root, prefix = _target(config_path, address)
        period = sealedlogs.init(be, root, public, exec_prefix=prefix)
        click.echo(f"{root}: period {period} open, sealed to archive key {fingerprint(public)}")


@logs.command("roll")
@click.argument("address")
@config_option()
@json_option
def roll(address: str, config_path: Path, as_json: bool) -> None:
    """Close the current period (snapshot @closed, key unloaded) and open the next."""
    from workers import sealedlogs

    with cli_errors():
        be, root, prefix = _target(config_path, address)
        closed, opened = sealedlogs.roll(be, root, exec_prefix=prefix)
        if as_json:
            print_json({"closed": closed, "opened": opened})
        else:
            click.echo(f"{root}: period {closed} closed and locked; {opened} open")


@logs.command("list")
@click.argument("address")
@config_option()
@json_option
def list_periods(address: str, config_path: Path, as_json: bool) -> None:
    """Periods and their key status (unavailable: closed, or not opened here)."""
    from workers import sealedlogs

    with cli_errors():
        be, root, _ = _target(config_path, address)
        rows = [{"period": p, "keystatus": k} for p, k in sealedlogs.periods(be, root)]
        if as_json:
            print_json(rows)
        for r in rows if not as_json else []:
            click.echo(f"{r['period']}\t{r['keystatus']}")


@logs.command("open")
@click.argument("address")
@click.argument("period")
@click.option("--archive-key", required=True, type=click.Path(dir_okay=False, path_type=Path))
@config_option()
def open_(address: str, period: str, archive_key: Path, config_path: Path) -> None:
    """Unlock PERIOD of HOST:DATASET with the archive private key and mount it."""
    from workers import sealedlogs

    with cli_errors():
        pair = KeyPair.from_private(_read_key(archive_key, "private key"))
        be, root, prefix = _target(config_path, address)
        where = sealedlogs.open_period(be, root, period, pair, prefix)
        click.echo(f"{root}: period {period} open for reading at {where}")
