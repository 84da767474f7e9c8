"""Where repository objects live: an S3-compatible bucket or a local directory, one interface.

Every write is conditional, so that two workers sharing a repository can never silently clobber
each other: ``put_if_absent`` (S3 ``If-None-Match: *``) creates, ``put_if_match`` (``If-Match``)
replaces only the version the writer read. Every botocore or OS exception is wrapped into a
:class:`protocol.errors.StoreError` subclass; nothing of boto3 leaks through this interface.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol
from urllib.parse import urlparse

import blake3
import structlog

from protocol.errors import ConfigError, StoreConflict, StoreCorrupt, StoreError, StoreUnavailable

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

log = structlog.get_logger(__name__)

ChecksumMode = Literal["when_required", "when_supported"]
EPHEMERAL_PREFIX: Final = "leases/"  # objects a local store writes without fsync
CHECKSUM_MODES: Final[tuple[str, ...]] = ("when_required", "when_supported")


@dataclass(frozen=True)
class ObjectInfo:
    """What a listing or a HEAD tells about one object."""

    key: str
    size: int
    etag: str
    modified: datetime


class BlobStore(Protocol):
    """The few operations the repository needs from a storage backend."""

    def put_if_absent(self, key: str, data: bytes) -> str:
        """Create ``key``; :class:`StoreConflict` if it exists. Returns the new etag."""
        ...

    def put_parts_if_absent(self, key: str, parts: Sequence[bytes]) -> str:
        """:meth:`put_if_absent` of the parts' concatenation, without making it where the
        store can take the parts one after another (a pack: its groups, never joined)."""
        ...

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        """Replace ``key`` only if its etag is still ``etag``; :class:`StoreConflict` if not."""
        ...

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        """The object's bytes (or a range); :class:`StoreCorrupt` if it is missing."""
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """The object's size/etag/mtime, or None when it does not exist."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``."""
        ...

    def delete(self, key: str) -> None:
        """Delete ``key``; deleting a missing key is not an error."""
        ...

    def describe(self) -> str:
        """A human-readable location (no credentials)."""
        ...


def _check_key(key: str) -> None:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"invalid object key {key!r}")


# -- local directory --------------------------------------------------------------------------


class LocalBlobStore:
    """A repository in a local directory (or a network mount): one file per object.

    ``put_if_absent`` relies on ``link(2)`` failing when the name exists, so creation is atomic
    even between processes; ``put_if_match`` serialises replacers with ``flock`` on a side file.
    Etags are BLAKE3 digests of the content.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create repository directory {root}: {e.strerror}") from e

    def describe(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        _check_key(key)
        return self.root / key

    def _write_temp(self, path: Path, data: bytes | Sequence[bytes]) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            for part in (data,) if isinstance(data, bytes) else data:
                f.write(part)
            f.flush()
            # A lease only matters while its upload runs (a crash ends the upload, and prune
            # treats an expired or missing lease alike): it need not survive a power cut, and
            # it is written at the start of every upload and at each renewal.
            if not path.relative_to(self.root).as_posix().startswith(EPHEMERAL_PREFIX):
                os.fsync(f.fileno())
        return Path(tmp)

    def put_if_absent(self, key: str, data: bytes) -> str:
        return self.put_parts_if_absent(key, (data,))

    def put_parts_if_absent(self, key: str, parts: Sequence[bytes]) -> str:
        path = self._path(key)
        try:
            tmp = self._write_temp(path, parts)
            try:
                os.link(tmp, path)
            finally:
                tmp.unlink()
        except FileExistsError as e:
            raise StoreConflict(f"object {key} already exists") from e
        except OSError as e:
            raise StoreError(f"cannot write {key}: {e.strerror}") from e
        etag = blake3.blake3()
        for part in parts:
            etag.update(part)
        return etag.hexdigest()

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path.parent / f".lock-{path.name}", "a") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                try:
                    current = blake3.blake3(path.read_bytes()).hexdigest()
                except FileNotFoundError as e:
                    raise StoreConflict(f"object {key} vanished before replace") from e
                if current != etag:
                    raise StoreConflict(f"object {key} changed since it was read")
                tmp = self._write_temp(path, data)
                os.replace(tmp, path)
        except OSError as e:
            raise StoreError(f"cannot write {key}: {e.strerror}") from e
        return blake3.blake3(data).hexdigest()

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                f.seek(start)
                return f.read() if length is None else f.read(length)
        except FileNotFoundError as e:
            raise StoreCorrupt(f"object {key} is missing") from e
        except OSError as e:
            raise StoreError(f"cannot read {key}: {e.strerror}") from e

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = path.stat()
            etag = blake3.blake3(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"cannot stat {key}: {e.strerror}") from e
        return ObjectInfo(key, st.st_size, etag, datetime.fromtimestamp(st.st_mtime, UTC))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base):
            for name in sorted(files):
                if name.startswith((".tmp-", ".lock-")):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    st = full.stat()
                except FileNotFoundError:
                    continue  # deleted while listing
                modified = datetime.fromtimestamp(st.st_mtime, UTC)
                # Listing does not hash content (S3 listings do not compute etags either).
                yield ObjectInfo(key, st.st_size, "", modified)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
            (path.parent / f".lock-{path.name}").unlink(missing_ok=True)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise StoreError(f"cannot delete {key}: {e.strerror}") from e


# -- S3 ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Settings:
    """How to reach a bucket. ``repr`` never shows the secret key."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    # Some S3-compatible stores reject the CRC checksums botocore sends by default since 1.36.
    request_checksum: ChecksumMode = "when_required"
    response_checksum: ChecksumMode = "when_required"
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_attempts: int = 3


_CONFLICT_CODES: Final = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412"})
_MISSING_CODES: Final = frozenset({"NoSuchKey", "404", "NotFound"})


class S3BlobStore:
    """A repository under ``prefix`` in an S3-compatible bucket."""

    def __init__(self, settings: S3Settings, client: S3Client | None = None) -> None:
        for name in ("request_checksum", "response_checksum"):
            if getattr(settings, name) not in CHECKSUM_MODES:
                raise ConfigError(f"{name} must be one of {', '.join(CHECKSUM_MODES)}")
        self.settings = settings
        self._prefix = settings.prefix.strip("/") + "/" if settings.prefix.strip("/") else ""
        self.client: S3Client = client or self._make_client(settings)

    @staticmethod
    def _make_client(s: S3Settings) -> S3Client:
        # boto3 takes most of a second to import: only repositories on S3 pay for it.
        import boto3
        import botocore.config
        import botocore.exceptions

        config = botocore.config.Config(
            request_checksum_calculation=s.request_checksum,
            response_checksum_validation=s.response_checksum,
            connect_timeout=s.connect_timeout,
            read_timeout=s.read_timeout,
            retries={"max_attempts": s.max_attempts, "mode": "standard"},
            s3={"addressing_style": "path"},
        )
        try:
            return boto3.session.Session().client(
                "s3",
                endpoint_url=s.endpoint_url,
                region_name=s.region,
                aws_access_key_id=s.access_key,
                aws_secret_access_key=s.secret_key,
                config=config,
            )
        except (botocore.exceptions.BotoCoreError, ValueError) as e:
            raise ConfigError(f"cannot configure the S3 client: {e}") from e

    def describe(self) -> str:
        where = f" at {self.settings.endpoint_url}" if self.settings.endpoint_url else ""
        return f"s3://{self.settings.bucket}/{self._prefix}{where}"

    def _key(self, key: str) -> str:
        _check_key(key)
        return self._prefix + key

    def _wrap(self, e: Exception, key: str, action: str) -> StoreError:
        import botocore.exceptions

        if isinstance(e, botocore.exceptions.ClientError):
            err: dict[str, Any] = dict(e.response.get("Error", {}))
            code = str(err.get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if code in _CONFLICT_CODES or status in (409, 412):
                return StoreConflict(f"{action} {key}: lost a conditional write ({code})")
            if status == 403 or code in ("AccessDenied", "SignatureDoesNotMatch"):
                detail = code if code and code != "403" else "Forbidden"
                return StoreError(
                    f"{action} {key}: access denied ({detail}): check the credentials"
                )
            if code == "NoSuchBucket":
                return StoreError(f"bucket {self.settings.bucket!r} does not exist")
            if code in _MISSING_CODES or status == 404:
                return StoreCorrupt(f"object {key} is missing")
            if status >= 500 or code in ("SlowDown", "RequestTimeout"):
                return StoreUnavailable(f"{action} {key}: server error {code or status}")
            return StoreError(f"{action} {key}: {code or status} {err.get('Message', '')}".strip())
        if isinstance(e, botocore.exceptions.EndpointConnectionError | ConnectionError):
            return StoreUnavailable(f"{action} {key}: cannot reach {self.describe()}")
        if isinstance(e, botocore.exceptions.NoCredentialsError):
            return StoreError("no S3 credentials: pass an access key and secret key")
        return StoreUnavailable(f"{action} {key}: {type(e).__name__}: {e}")

    @contextlib.contextmanager
    def _errors(self, key: str, action: str) -> Iterator[None]:
        import botocore.exceptions

        try:
            yield
        except StoreError:
            raise
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as e:
            raise self._wrap(e, key, action) from e

    def put_if_absent(self, key: str, data: bytes) -> str:
        with self._errors(key, "create"):
            r = self.client.put_object(
                Bucket=self.settings.bucket, Key=self._key(key), Body=data, IfNoneMatch="*"
            )
            return r.get("ETag", "").strip('"')
        raise AssertionError("unreachable")  # pragma: no cover (keeps mypy's flow analysis happy)

    def put_parts_if_absent(self, key: str, parts: Sequence[bytes]) -> str:
        # One request needs one body: joined here (a worker's memory, not a CLI's).
        return self.put_if_absent(key, parts[0] if len(parts) == 1 else b"".join(parts))

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        with self._errors(key, "replace"):
            r = self.client.put_object(
                Bucket=self.settings.bucket, Key=self._key(key), Body=data, IfMatch=f'"{etag}"'
            )
            return r.get("ETag", "").strip('"')
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        with self._errors(key, "read"):
            bucket, k = self.settings.bucket, self._key(key)
            if start or length is not None:
                end = "" if length is None else str(start + length - 1)
                r = self.client.get_object(Bucket=bucket, Key=k, Range=f"bytes={start}-{end}")
            else:
                r = self.client.get_object(Bucket=bucket, Key=k)
            return r["Body"].read()
        raise AssertionError("unreachable")  # pragma: no cover

    def head(self, key: str) -> ObjectInfo | None:
        try:
            with self._errors(key, "stat"):
                r = self.client.head_object(Bucket=self.settings.bucket, Key=self._key(key))
                return ObjectInfo(
                    key, r["ContentLength"], r.get("ETag", "").strip('"'), r["LastModified"]
                )
        except StoreCorrupt:
            return None
        raise AssertionError("unreachable")  # pragma: no cover

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        with self._errors(prefix, "list"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.settings.bucket, Prefix=self._prefix + prefix
            )
            for page in pages:
                for o in page.get("Contents", []):
                    yield ObjectInfo(
                        o["Key"][len(self._prefix) :],
                        o["Size"],
                        o.get("ETag", "").strip('"'),
                        o["LastModified"],
                    )

    def delete(self, key: str) -> None:
        with self._errors(key, "delete"):
            self.client.delete_object(Bucket=self.settings.bucket, Key=self._key(key))


def open_blob_store(url: str, **s3: Any) -> BlobStore:
    """A target for a local path (or ``file://``) or an ``s3://bucket/prefix`` URL.

    ``s3`` keyword arguments are :class:`S3Settings` fields (endpoint_url, access_key...).
    """
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ConfigError(f"{url!r}: an s3:// URL needs a bucket name")
        return S3BlobStore(S3Settings(bucket=parsed.netloc, prefix=parsed.path.strip("/"), **s3))
    if parsed.scheme in ("", "file"):
        return LocalBlobStore(Path(parsed.path if parsed.scheme else url))
    raise ConfigError(f"{url!r}: use a local directory or an s3://bucket/prefix URL")
