"""Both storage targets keep the same contract: conditional writes, ranges, wrapped errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from protocol.errors import ConfigError, StoreConflict, StoreCorrupt, StoreError
from workers.cloud.blobstore import (
    BlobStore,
    LocalBlobStore,
    S3BlobStore,
    S3Settings,
    open_blob_store,
)


@pytest.fixture(params=["local", "moto"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "repo")
        return
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="zrepo")
        yield S3BlobStore(
            S3Settings(bucket="zrepo", prefix="team/repo", access_key="a", secret_key="s")
        )


def test_create_only_once(target: BlobStore) -> None:
    target.put_if_absent("index/one", b"first")
    with pytest.raises(StoreConflict):
        target.put_if_absent("index/one", b"second")
    assert target.get("index/one") == b"first"


def test_replace_only_the_version_read(target: BlobStore) -> None:
    etag = target.put_if_absent("leases/x", b"v1")
    info = target.head("leases/x")
    assert info is not None and info.etag == etag and info.size == 2
    new = target.put_if_match("leases/x", b"v2", etag)
    with pytest.raises(StoreConflict):
        target.put_if_match("leases/x", b"v3", etag)  # a stale writer loses
    assert target.get("leases/x") == b"v2"
    target.put_if_match("leases/x", b"v3", new)
    assert target.get("leases/x") == b"v3"


def test_ranges_listing_and_delete(target: BlobStore) -> None:
    target.put_if_absent("data/ab/abc", bytes(range(100)))
    target.put_if_absent("data/cd/cde", b"x")
    target.put_if_absent("index/s", b"y")
    assert target.get("data/ab/abc", 10, 5) == bytes(range(10, 15))
    assert target.get("data/ab/abc", 95) == bytes(range(95, 100))
    assert sorted(i.key for i in target.list("data/")) == ["data/ab/abc", "data/cd/cde"]
    target.delete("data/ab/abc")
    target.delete("data/ab/abc")  # deleting twice is fine
    assert target.head("data/ab/abc") is None
    assert [i.key for i in target.list("data/")] == ["data/cd/cde"]


def test_missing_object_is_a_store_error_not_a_botocore_one(target: BlobStore) -> None:
    with pytest.raises(StoreCorrupt, match="missing"):
        target.get("manifests/nope")
    assert target.head("manifests/nope") is None
    assert list(target.list("nothing/")) == []


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b"])
def test_bad_keys_are_refused(target: BlobStore, key: str) -> None:
    with pytest.raises(StoreError, match="invalid object key"):
        target.put_if_absent(key, b"x")


def test_checksum_mode_is_configurable_and_validated() -> None:
    with mock_aws():
        t = S3BlobStore(S3Settings(bucket="zrepo", request_checksum="when_supported"))
        assert t.client.meta.config.request_checksum_calculation == "when_supported"
        assert t.client.meta.config.response_checksum_validation == "when_required"
    with pytest.raises(ConfigError, match="request_checksum"):
        S3BlobStore(S3Settings(bucket="zrepo", request_checksum="always"))  # type: ignore[arg-type]


def test_missing_bucket_and_bad_urls_are_clear() -> None:
    with mock_aws():
        t = S3BlobStore(S3Settings(bucket="nobucket"))
        with pytest.raises(StoreError, match="does not exist"):
            t.put_if_absent("config", b"x")
    with pytest.raises(ConfigError):
        open_blob_store("ftp://host/x")
    with pytest.raises(ConfigError):
        open_blob_store("s3:///path")


def test_settings_repr_hides_the_secret() -> None:
    assert "hunter2" not in repr(S3Settings(bucket="zrepo", secret_key="hunter2"))
