"""Media objects in an S3-compatible store (AWS S3, MinIO, SeaweedFS, Ceph, Garage…).

The client is MinIO's Python SDK (``minio``): small, written for S3-compatible servers rather
than for AWS alone, and it signs requests (SigV4) itself. Objects are named
``<prefix><key>`` in one bucket (made on first start when missing); the key of an object is
its SHA-256, checked *before* the upload, so a wrong object never appears under a hash. The
secret key comes from the settings (``FIELDHUB_MEDIA_S3_SECRET_KEY``) and goes to the client
only: no message of this module names it. TLS certificates are checked unless the operator
turns that off for a test store.

Every method blocks (HTTP to the store): call them off the event loop, like the data folder's.
Any failure of the store (unreachable, refused, a server error) is a :class:`StoreUnavailable`,
an ``OSError``, which the media code answers as ``unavailable`` and retries later.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from fieldhub.hub.config import HubSettings
from fieldhub.hub.media.files import backup_elsewhere
from fieldhub.hub.media.stores import READ_BYTES, HashMismatch, file_sha256

__all__ = ["S3Store", "StoreUnavailable", "s3_store"]

_ABSENT: Final = frozenset({"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"})


class StoreUnavailable(OSError):
    """The S3 store cannot be used now (the text says why, without credentials)."""


@contextmanager
def _store_trouble(what: str) -> Iterator[None]:
    try:
        yield
    except (MinioException, urllib3.exceptions.HTTPError) as exc:
        raise StoreUnavailable(f"S3 store: cannot {what}: {type(exc).__name__}: {exc}") from exc


class S3Store:
    """Complete media objects and thumbnails in ``bucket`` under ``prefix`` (see the module's
    text); implements ``hub/media/stores.py``'s ``ObjectStore``."""

    def __init__(self, client: Minio, bucket: str, prefix: str, where: str) -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix
        self.where = where
        self._lock = threading.Lock()
        with _store_trouble(f"reach bucket {bucket!r}"):
            if not client.bucket_exists(bucket):
                client.make_bucket(bucket)
            listed = client.list_objects(bucket, prefix=prefix, recursive=True)
            self._total = sum(int(item.size or 0) for item in listed)

    def put(self, key: str, source: Path, *, sha256: str | None) -> int:
        if sha256 is not None:
            with open(source, "rb") as file:
                if file_sha256(file) != sha256:
                    source.unlink()
                    raise HashMismatch(f"the content does not hash to {sha256}")
        size = source.stat().st_size
        replaced = self.size(key) or 0
        with _store_trouble(f"store {key[:12]}"):
            self._client.fput_object(
                self._bucket, self._prefix + key, str(source), content_type="binary/octet-stream"
            )
        source.unlink()
        with self._lock:
            self._total += size - replaced
        return size

    def size(self, key: str) -> int | None:
        with _store_trouble(f"look up {key[:12]}"):
            try:
                stat = self._client.stat_object(self._bucket, self._prefix + key)
            except S3Error as exc:
                if exc.code in _ABSENT:
                    return None
                raise
        return int(stat.size or 0)

    def chunks(self, key: str) -> Iterator[bytes]:
        with _store_trouble(f"read {key[:12]}"):
            try:
                response = self._client.get_object(self._bucket, self._prefix + key)
            except S3Error as exc:
                if exc.code in _ABSENT:
                    raise FileNotFoundError(f"no media object {key[:12]} in the store") from None
                raise
        return self._stream(key, response)

    def _stream(self, key: str, response: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
        try:
            with _store_trouble(f"read {key[:12]}"):
                yield from response.stream(READ_BYTES)
        finally:
            response.close()
            response.release_conn()

    def delete(self, key: str) -> None:
        size = self.size(key)
        if size is None:
            return
        with _store_trouble(f"delete {key[:12]}"):
            self._client.remove_object(self._bucket, self._prefix + key)
        with self._lock:
            self._total -= size

    def names(self) -> list[str]:
        with _store_trouble("list the media"):
            listed = self._client.list_objects(self._bucket, prefix=self._prefix, recursive=True)
            names = [str(item.object_name) for item in listed]
        return [name[len(self._prefix) :] for name in names]

    def total_bytes(self) -> int:
        return self._total


def s3_store(settings: HubSettings) -> S3Store:
    """The S3 store the settings name (``FIELDHUB_MEDIA_S3_*``; the URL must be set).

    Raises:
        StoreUnavailable: the store cannot be reached or refuses the credentials.
    """
    url = urlsplit(settings.media_s3_url or "")
    secret = settings.media_s3_secret_key
    verify = settings.media_s3_verify_tls
    http = urllib3.PoolManager(
        cert_reqs="CERT_REQUIRED" if verify else "CERT_NONE",
        ca_certs=str(settings.media_s3_ca_file) if settings.media_s3_ca_file else None,
        timeout=urllib3.Timeout(connect=10, read=60),
        retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )
    client = Minio(
        url.netloc,
        access_key=settings.media_s3_access_key,
        secret_key=secret.get_secret_value() if secret is not None else None,
        secure=url.scheme == "https",
        region=settings.media_s3_region,
        http_client=http,
        cert_check=verify,
    )
    [where] = backup_elsewhere(settings).values()
    return S3Store(client, settings.media_s3_bucket, settings.media_s3_prefix, where)
