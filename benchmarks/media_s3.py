"""S3 media store benchmark: what the hub's store adds to the raw S3 client.

It starts a SeaweedFS (as the tests do) and moves ``--count`` objects of ``--size`` bytes
(1 MB) through it two ways, alternated for ``--rounds`` rounds so that load on the machine
hits both alike (each side first in every other round):

- ``raw``: MinIO's client alone, ``fput_object`` then ``get_object`` read to the end: the
  reference;
- ``store``: the hub's ``S3Store`` (``hub/media/s3.py``) made from hub settings: ``put``
  (SHA-256 checked before the upload, a ``stat`` for the byte count) then ``chunks`` (a
  ``stat`` for the size, then the stream), as an upload's promotion and a download do.

Figures: MB/s of each (medians over the rounds) and ``put_ratio``/``get_ratio`` (store over
raw; 1.0 means the store costs nothing), ``lost`` (objects read back with other bytes).

    .venv/bin/python benchmarks/media_s3.py [--count 30] [--size 1000000] [--rounds 3]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))  # tests.support

from minio import Minio
from tests.support.s3_server import BUCKET, HOST, SeaweedS3

from fieldhub.hub.config import HubSettings
from fieldhub.hub.media.s3 import s3_store


def _files(folder: Path, count: int, size: int, tag: str) -> list[tuple[str, Path]]:
    """``count`` distinct files of ``size`` bytes, by their SHA-256."""
    made = []
    for _ in range(count):
        data = secrets.token_bytes(size)
        path = folder / f"{tag}-{secrets.token_hex(4)}"
        path.write_bytes(data)
        made.append((hashlib.sha256(data).hexdigest(), path))
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    megabytes = args.count * args.size / 1e6
    rates: dict[str, list[float]] = {"raw_put": [], "raw_get": [], "put": [], "get": []}
    lost = 0
    with tempfile.TemporaryDirectory() as tmp, SeaweedS3(Path(tmp) / "s3") as server:
        folder = Path(tmp)
        raw = Minio(
            f"{HOST}:{server.port}",
            access_key=server.access_key,
            secret_key=server.secret_key,
            secure=False,
        )
        store = s3_store(HubSettings(data=folder / "hub", **server.settings("store")))

        def raw_phase() -> int:
            files = _files(folder, args.count, args.size, "raw")
            began = time.perf_counter()
            for sha256, path in files:
                raw.fput_object(BUCKET, f"raw/{sha256}", str(path))
            rates["raw_put"].append(megabytes / (time.perf_counter() - began))
            wrong = 0
            began = time.perf_counter()
            for sha256, _path in files:
                response = raw.get_object(BUCKET, f"raw/{sha256}")
                wrong += hashlib.sha256(response.read()).hexdigest() != sha256
                response.close()
                response.release_conn()
            rates["raw_get"].append(megabytes / (time.perf_counter() - began))
            return wrong

        def store_phase() -> int:
            files = _files(folder, args.count, args.size, "store")
            began = time.perf_counter()
            for sha256, path in files:
                store.put(sha256, path, sha256=sha256)
            rates["put"].append(megabytes / (time.perf_counter() - began))
            wrong = 0
            began = time.perf_counter()
            for sha256, _path in files:
                digest = hashlib.sha256()
                for chunk in store.chunks(sha256):
                    digest.update(chunk)
                wrong += digest.hexdigest() != sha256
            rates["get"].append(megabytes / (time.perf_counter() - began))
            return wrong

        for round_ in range(args.rounds):  # alternated: neither side always goes first
            phases = (raw_phase, store_phase) if round_ % 2 == 0 else (store_phase, raw_phase)
            lost += sum(phase() for phase in phases)
    median = {name: statistics.median(values) for name, values in rates.items()}
    result = {
        "objects": args.count * args.rounds,
        "size": args.size,
        "raw_put_mb_s": round(median["raw_put"], 1),
        "put_mb_s": round(median["put"], 1),
        "put_ratio": round(median["put"] / median["raw_put"], 2),
        "raw_get_mb_s": round(median["raw_get"], 1),
        "get_mb_s": round(median["get"], 1),
        "get_ratio": round(median["get"] / median["raw_get"], 2),
        "lost": lost,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
