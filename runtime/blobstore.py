"""The blob store for audio: content-addressed by SHA-256, on the local filesystem or S3.

Ingestion writes, transcription workers read; events carry only the :class:`schemas.BlobRef`.
``COACH_BLOB_URL`` selects the backend: ``file:///abs/dir`` (default ``<COACH_HOME>/blobs``) or
``s3://bucket/prefix`` (any S3-compatible store; endpoint from ``COACH_S3_ENDPOINT_URL``, credentials
from the usual AWS environment variables — boto3's credential chain).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime.settings import PlatformSettings

__all__ = [
    "BlobNotFound",
    "BlobSettings",
    "BlobStoreUnavailable",
    "BlobStore",
    "LocalBlobStore",
    "S3BlobStore",
    "open_blob_store",
    "sha256_file",
]


class BlobNotFound(LookupError):
    """No readable blob at the given URI, and retrying will not make one appear: a missing file or object, a path
    that is a directory, outside the store or not permitted, a URI of another scheme (a permanent error: the
    message goes to the DLQ)."""


class BlobStoreUnavailable(OSError):
    """The store could not be read now (I/O error, S3 unreachable or answering 5xx, throttling): a transient error,
    retried with backoff; the message is never dead-lettered for it."""


_PERMANENT_S3_CODES = frozenset(
    {"NoSuchKey", "NoSuchBucket", "404", "NotFound", "AccessDenied", "403", "InvalidObjectState", "InvalidBucketName"}
)
"""S3 error codes that retrying cannot cure (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html)."""


class BlobSettings(BaseSettings):
    """Where audio blobs live."""

    model_config = SettingsConfigDict(env_prefix="COACH_", frozen=True, extra="ignore", use_attribute_docstrings=True)

    blob_url: str = ""
    """file:///dir or s3://bucket/prefix; default <COACH_HOME>/blobs"""
    s3_endpoint_url: str = ""
    """S3-compatible endpoint (MinIO…); empty = AWS"""


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class BlobStore(Protocol):
    """Write-once store of immutable audio blobs keyed by their SHA-256."""

    def put_file(self, path: Path, sha256: str) -> str:
        """Store the file's bytes under its hash; returns the blob URI (idempotent)."""
        ...

    def get(self, uri: str) -> bytes:
        """Return the blob's bytes. Raises :class:`BlobNotFound`."""
        ...

    def check(self) -> None:
        """Raise when the store is unreachable or not writable (readiness probe)."""
        ...


class LocalBlobStore:
    """Blobs as files ``<root>/<sha[:2]>/<sha>``, written atomically (temp file + rename)."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def put_file(self, path: Path, sha256: str) -> str:
        target = self._path(sha256)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            os.close(fd)
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        return target.as_uri()

    def get(self, uri: str) -> bytes:
        parts = urlsplit(uri)
        if parts.scheme != "file":
            raise BlobNotFound(f"not a file:// blob URI: {uri}")
        path = Path(parts.path)
        if self.root not in path.resolve().parents:
            raise BlobNotFound(f"{uri} is outside the blob store {self.root}")
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise BlobNotFound(f"no blob at {uri}") from exc
        except (IsADirectoryError, NotADirectoryError, PermissionError) as exc:
            raise BlobNotFound(f"blob {uri} cannot be read: {exc.strerror or exc}") from exc
        except OSError as exc:
            raise BlobStoreUnavailable(f"reading {uri} failed: {exc}") from exc

    def check(self) -> None:
        probe = self.root / ".ready"
        probe.write_bytes(b"ok")
        probe.unlink()


class S3BlobStore:
    """Blobs as objects ``s3://<bucket>/<prefix>/<sha[:2]>/<sha>`` via boto3."""

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None = None):
        import boto3

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self._s3 = boto3.client("s3", endpoint_url=endpoint_url or None)

    def _key(self, sha256: str) -> str:
        return "/".join(p for p in (self.prefix, sha256[:2], sha256) if p)

    def put_file(self, path: Path, sha256: str) -> str:
        key = self._key(sha256)
        self._s3.upload_file(str(path), self.bucket, key)
        return f"s3://{self.bucket}/{key}"

    def get(self, uri: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        parts = urlsplit(uri)
        if parts.scheme != "s3" or not parts.netloc or not parts.path.strip("/"):
            raise BlobNotFound(f"not an s3://bucket/key blob URI: {uri}")
        try:
            obj = self._s3.get_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"))
            data: bytes = obj["Body"].read()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _PERMANENT_S3_CODES:
                raise BlobNotFound(f"no readable blob at {uri} ({code})") from exc
            raise BlobStoreUnavailable(f"reading {uri} failed ({code or 'ClientError'}): {exc}") from exc
        except BotoCoreError as exc:  # endpoint unreachable, timeouts, incomplete reads
            raise BlobStoreUnavailable(f"reading {uri} failed: {exc}") from exc
        return data

    def check(self) -> None:
        self._s3.head_bucket(Bucket=self.bucket)


def open_blob_store(platform: PlatformSettings | None = None, settings: BlobSettings | None = None) -> BlobStore:
    """The blob store selected by ``COACH_BLOB_URL``. Raises ``ValueError`` on an unknown scheme."""
    platform = platform or PlatformSettings()
    settings = settings or BlobSettings()
    url = settings.blob_url or (platform.home_dir / "blobs").as_uri()
    parts = urlsplit(url)
    if parts.scheme == "file":
        return LocalBlobStore(Path(parts.path))
    if parts.scheme == "s3":
        return S3BlobStore(parts.netloc, parts.path, settings.s3_endpoint_url)
    raise ValueError(f"COACH_BLOB_URL must be file:///dir or s3://bucket/prefix, got {url!r}")
