"""`zfleet cloud`: the object store from the command line.

A repository is a local directory or an ``s3://bucket/prefix`` URL (``--repo`` or
``ZFLEET_REPO``). It is unlocked by a passphrase (``ZFLEET_PASSPHRASE``, or asked for) or a key
file (``--key-file``). Exit codes: 0 success, 1 error, 3 ``verify`` found damage.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final, TypeVar

import click

from protocol.errors import ConfigError, ZfleetError
from protocol.log import configure_logging
from workers.cloud import manifest as mf
from workers.cloud.blobstore import CHECKSUM_MODES, BlobStore, open_blob_store
from workers.cloud.prune import GRACE, prune
from workers.cloud.repair import rebuild_index
from workers.cloud.repo import RepoKey, Repository
from workers.cloud.verify import verify

EXIT_DAMAGED: Final = 3
READ_CHUNK: Final = 1024 * 1024
LOCAL_PACK_MIB: Final = 8

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Options:
    repo: str
    endpoint: str | None
    region: str
    access_key: str | None
    secret_key: str | None
    checksum: str
    key_file: Path | None

    def target(self) -> BlobStore:
        if self.repo.startswith("s3://"):
            return open_blob_store(
                self.repo,
                endpoint_url=self.endpoint,
                region=self.region,
                access_key=self.access_key,
                secret_key=self.secret_key,
                request_checksum=self.checksum,
                response_checksum=self.checksum,
            )
        return open_blob_store(self.repo)

    def secret(self, *, confirm: bool = False) -> RepoKey:
        if self.key_file is not None:
            try:
                return RepoKey(keyfile=self.key_file.read_bytes())
            except OSError as e:
                raise ConfigError(f"cannot read key file {self.key_file}: {e.strerror}") from e
        phrase = os.environ.get("ZFLEET_PASSPHRASE")
        if phrase is None:
            phrase = click.prompt(
                "Repository passphrase", hide_input=True, confirmation_prompt=confirm
            )
        return RepoKey(passphrase=phrase)

    def open(self) -> Repository:
        return Repository.open(self.target(), self.secret())


def _errors(fn: F) -> F:
    """Turn zfleet errors into a clean message and exit code 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ZfleetError as e:
            raise click.ClickException(f"{type(e).__name__}: {e}") from e

    return wrapper  # type: ignore[return-value]


pass_options = click.make_pass_decorator(Options)


@click.group()
@click.option(
    "--repo", envvar="ZFLEET_REPO", required=True, help="Directory or s3://bucket/prefix."
)
@click.option(
    "--endpoint",
    envvar="ZFLEET_STORE_ENDPOINT",
    show_envvar=True,
    help="S3 endpoint URL (non-AWS stores).",
)
@click.option(
    "--region",
    envvar=["ZFLEET_STORE_REGION", "AWS_DEFAULT_REGION"],
    default="us-east-1",
    show_default=True,
)
@click.option(
    "--access-key",
    envvar=["ZFLEET_STORE_ACCESS_KEY", "AWS_ACCESS_KEY_ID"],
    show_envvar=True,
    help="S3 access key id.",
)
@click.option(
    "--secret-key",
    envvar=["ZFLEET_STORE_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"],
    show_envvar=True,
    help="S3 secret access key (prefer the environment to the command line).",
)
@click.option(
    "--checksum",
    type=click.Choice(CHECKSUM_MODES),
    default="when_required",
    show_default=True,
    help="When the S3 client sends/validates CRC checksums (some stores reject them).",
)
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Unlock with a key file instead of a passphrase (ZFLEET_PASSPHRASE or prompt).",
)
@click.pass_context
def cloud(ctx: click.Context, /, **kw: Any) -> None:
    """Store ZFS send streams in object storage: deduplicated, encrypted, restorable.

    \b
    Example:
      zfleet cloud --repo /srv/zrepo init
      zfs send pool/fs@s1 | zfleet cloud --repo /srv/zrepo put
      zfleet cloud --repo /srv/zrepo restore pool/fs@s1 --out-dir /tmp/streams
    """
    # Logs go to stderr (stdout may carry a restored stream, or JSON for scripts); warnings only,
    # so that a command's own output is what a user reads.
    configure_logging(level="WARNING")
    ctx.obj = Options(**kw)


@cloud.command()
@click.option(
    "--pack-size-mib",
    type=click.IntRange(1, 64),
    help=f"Pack target size [default: {LOCAL_PACK_MIB} for a directory, 16 for S3].",
)
@pass_options
@_errors
def init(opts: Options, pack_size_mib: int | None) -> None:
    """Create a repository; its key is stored wrapped by your passphrase or key file."""
    if pack_size_mib is None:
        # A directory has no cost per object, and an upload holds its open pack in memory:
        # smaller packs keep a `put` near borg's peak memory. S3 requests are what costs there.
        pack_size_mib = 16 if opts.repo.startswith("s3://") else LOCAL_PACK_MIB
    repo = Repository.init(opts.target(), opts.secret(confirm=True), pack_size=pack_size_mib << 20)
    click.echo(f"created repository {repo.config.id} at {repo.target.describe()}")


@cloud.command()
@click.argument("streams", metavar="[STREAM]...", type=click.File("rb"), nargs=-1)
@click.option("--host", default="", help="Host name recorded with the stream.")
@click.option("--json", "as_json", is_flag=True, help="Print each result as a JSON line.")
@pass_options
@_errors
def put(opts: Options, streams: tuple[BinaryIO, ...], host: str, as_json: bool) -> None:
    """Store send streams read from each STREAM file in turn (default: standard input).

    Several files in one call open the repository (and derive its key) once.
    """
    # The key first: scrypt's 32 MiB come and go before numpy and the codec are imported (made
    # side by side on a thread they were the command's peak memory). Imported here: the stream
    # codec pulls in numpy, which ls/verify/prune do not need.
    repo = opts.open()
    from workers.cloud.blobstore import LocalBlobStore
    from workers.cloud.heap import bound_heap
    from workers.cloud.ingest import StreamIngest

    bound_heap()
    # A local pack is written inline (a file write): one pack in memory, not one per upload.
    inflight = {"max_inflight": 0} if isinstance(repo.target, LocalBlobStore) else {}
    for stream in streams or (sys.stdin.buffer,):
        sink = StreamIngest(repo, host=host, **inflight)
        try:
            while chunk := stream.read(READ_CHUNK):
                sink.write(chunk)
        except BaseException:
            sink.abort()
            raise
        ref = sink.finish()
        if as_json:
            click.echo(json.dumps(ref.__dict__))
        else:
            ratio = ref.new_bytes / ref.size if ref.size else 0.0
            click.echo(
                f"stored {ref.snapshot}: {ref.size:,} stream bytes, {ref.new_bytes:,} new "
                f"({ratio:.1%}), manifest {ref.manifest[:16]}"
            )


@cloud.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Print the streams as JSON.")
@pass_options
@_errors
def ls(opts: Options, as_json: bool) -> None:
    """List the stored streams, oldest first."""
    repo = opts.open()
    manifests, broken = mf.load_all(repo.target, repo.crypto)
    rows: list[dict[str, Any]] = [
        {
            "manifest": m.id,
            "snapshot": m.snapshot,
            "kind": "full" if m.full else "incremental",
            "toguid": f"{m.toguid:#x}",
            "fromguid": f"{m.fromguid:#x}",
            "bytes": m.size,
            "snapshots": [s.toname for s in m.substreams],
            "resumed": m.resuming,
            "host": m.host,
        }
        for m in manifests
    ]
    if as_json:
        click.echo(json.dumps({"streams": rows, "unreadable": sorted(broken)}))
        return
    for r in rows:
        click.echo(f"{r['manifest'][:16]}  {r['kind']:<11} {r['bytes']:>14,}  {r['snapshot']}")
    for mid in sorted(broken):
        click.echo(f"{mid[:16]}  UNREADABLE", err=True)


@cloud.command()
@click.argument("snapshot")
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write each stream of the chain to NN-<snapshot>.zstream here.",
)
@click.option("--only-last", is_flag=True, help="Write only the last stream of the chain.")
@pass_options
@_errors
def restore(opts: Options, snapshot: str, out_dir: Path | None, only_last: bool) -> None:
    """Rebuild SNAPSHOT's streams (full first), byte for byte, ready for `zfs receive`.

    Without --out-dir the chain must be a single stream (or --only-last) and goes to stdout.
    """
    repo = opts.open()  # the key first, as for put
    from workers.cloud.heap import bound_heap
    from workers.cloud.restore import restore_chain, restore_stream

    bound_heap()
    chain = restore_chain(repo, snapshot)
    if only_last:
        chain = chain[-1:]
    if out_dir is None:
        if len(chain) > 1:
            names = ", ".join(m.snapshot for m in chain)
            raise ConfigError(f"the chain has {len(chain)} streams ({names}): use --out-dir")
        out = sys.stdout.buffer
        for chunk in restore_stream(repo, chain[0]):
            out.write(chunk)
        out.flush()
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for n, m in enumerate(chain, 1):
        path = out_dir / f"{n:02d}-{m.snapshot.replace('/', '_')}.zstream"
        tmp = path.with_suffix(".partial")
        with open(tmp, "wb") as f:
            for chunk in restore_stream(repo, m):
                f.write(chunk)
        tmp.rename(path)
        click.echo(f"{path}  ({m.size:,} bytes)")


@cloud.command(name="verify")
@click.option("--no-read-data", is_flag=True, help="Only check that referenced packs exist.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_options
@_errors
def verify_cmd(opts: Options, no_read_data: bool, as_json: bool) -> None:
    """Read back every referenced pack; report missing or corrupt ones and the snapshots hit."""
    report = verify(opts.open(), read_data=not no_read_data)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": report.ok,
                    "manifests": report.manifests,
                    "packs_checked": report.packs_checked,
                    "missing": list(report.missing),
                    "corrupt": report.corrupt,
                    "unreadable_manifests": report.broken_manifests,
                    "unreadable_index_segments": report.broken_index,
                    "affected": {k: list(v) for k, v in report.affected.items()},
                }
            )
        )
    else:
        click.echo(
            f"checked {report.packs_checked} packs ({report.bytes_read:,} bytes) "
            f"for {report.manifests} streams"
        )
        for pack in report.missing:
            click.echo(f"MISSING pack {pack[:16]}: {', '.join(report.affected[pack])}")
        for pack, why in report.corrupt.items():
            click.echo(f"CORRUPT pack {pack[:16]} ({why}): {', '.join(report.affected[pack])}")
        for mid, why in report.broken_manifests.items():
            click.echo(f"UNREADABLE manifest {mid[:16]}: {why}")
        for seg, why in report.broken_index.items():
            click.echo(f"UNREADABLE index segment {seg[:16]}: {why} (run `zfleet cloud repair`)")
        click.echo("ok" if report.ok else f"damaged: {', '.join(report.damaged_snapshots())}")
    if not report.ok:
        sys.exit(EXIT_DAMAGED)


@cloud.command(name="prune")
@click.option("--keep-last", type=click.IntRange(min=1), required=True, help="Streams per dataset.")
@click.option("--grace", type=float, default=GRACE, show_default=True, help="Seconds.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@pass_options
@_errors
def prune_cmd(opts: Options, keep_last: int, grace: float, dry_run: bool) -> None:
    """Forget streams past retention and delete packs nothing refers to (leases honoured)."""
    r = prune(opts.open(), keep_last=keep_last, grace=grace, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"forgot {len(r.forgotten)} streams, kept {r.kept}; {verb} {r.packs_deleted} packs "
        f"({r.bytes_freed:,} bytes); {r.packs_protected_by_leases} packs held by live uploads"
    )


@cloud.command(name="repair")
@pass_options
@_errors
def repair_cmd(opts: Options) -> None:
    """Rebuild the index from the packs (after `verify` reports unreadable index segments)."""
    r = rebuild_index(opts.open())
    click.echo(f"indexed {r.packs_indexed} packs; removed {r.segments_removed} damaged segments")
    for pack, why in r.unreadable_packs.items():
        click.echo(f"UNREADABLE pack {pack[:16]}: {why}")
