"""One good bundle and a hundred bad ones made from it, each with the refusal it must get.

The faults are the issue's list (tampered manifest, file or signature; wrong, revoked, expired key;
truncated archive; traversal, absolute paths, links, devices; unlisted, missing, duplicate
files; another device type; too-new agent; downgrade; oversized or mismatched download). Where
a fault must reach the member checks, the manifest is re-signed with the trusted key, so the
refusal cannot come from the signature instead: each mutation tests the check it names.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from fieldhub.bundles import Reason, SigningKey, make_bundle
from fieldhub.bundles.build import draft_manifest, sign_bundle

ACTION_PROGRAM = b"""import json, os
print(json.dumps({"hello": os.environ.get("FIELDHUB_ARG_WHO", "")}))
"""
PAYLOAD = {
    "actions/hello.py": ACTION_PROGRAM,
    "actions/check.py": b"print('ok')\n",
    "README.txt": b"A bundle used by the tests.\n" * 20,
}
EXPIRED_AT = "2024-01-01T00:00:00Z"  # when the tests' expired key stopped being trusted
EXPIRED_AT_MS = 1_704_067_200_000
ACTIONS = [
    {"name": "hello.say", "program": "actions/hello.py", "args": {"who": "str"}, "timeout_s": 10},
    {"name": "hello.check", "program": "actions/check.py", "timeout_s": 10},
]


@dataclass(frozen=True)
class Keys:
    """The keys of a test: one trusted, one revoked (trusted too, but its id revoked), one
    trusted until :data:`EXPIRED_AT` (past), one nobody trusts."""

    trusted: SigningKey = field(default_factory=SigningKey.generate)
    revoked: SigningKey = field(default_factory=SigningKey.generate)
    expired: SigningKey = field(default_factory=SigningKey.generate)
    stranger: SigningKey = field(default_factory=SigningKey.generate)


@dataclass(frozen=True)
class Mutation:
    """A bad bundle: what the agent is offered and the reason code it must answer with."""

    label: str
    data: bytes
    reason: Reason
    size: int | None = None  # announced size (the data's length when None)
    sha256: str | None = None  # announced digest (the data's when None)

    @property
    def announced_size(self) -> int:
        return self.size if self.size is not None else len(self.data)

    @property
    def announced_sha256(self) -> str:
        return self.sha256 or hashlib.sha256(self.data).hexdigest()


def good_bundle(key: SigningKey, version: str = "1.1.0", **fields: Any) -> bytes:
    """The good bundle: two actions (one the health check), for device type ``pi``."""
    fields.setdefault("target", {"device_types": ["pi"]})
    fields.setdefault("actions", ACTIONS)
    fields.setdefault("health", {"action": "hello.check", "timeout_s": 20})
    return make_bundle(PAYLOAD, key, name="hello", version=version, **fields)


def mutations(keys: Keys, *, agent_level: bool = True) -> list[Mutation]:
    """A hundred bad bundles (fewer without ``agent_level``: only those the format refuses)."""
    found = list(_format_faults(keys))
    if agent_level:
        found += list(_device_faults(keys))
    return found


def _format_faults(keys: Keys) -> Iterator[Mutation]:
    good = good_bundle(keys.trusted)
    members = _members(good)
    manifest_at, manifest_len = members["manifest.json"]
    manifest = good[manifest_at : manifest_at + manifest_len]
    key_id_at = manifest.index(b'"key_id"')
    spots = [i for i in range(5, manifest_len - 2) if not key_id_at <= i < key_id_at + 40]
    for n in range(15):  # tampered manifest: the signature no longer matches
        yield Mutation(
            f"manifest byte {n}", _flip(good, manifest_at + spots[n * 37]), Reason.BAD_SIGNATURE
        )
    readme_at, readme_len = members["files/README.txt"]
    hello_at, hello_len = members["files/actions/hello.py"]
    for n in range(10):  # tampered payload: its SHA-256 no longer matches
        yield Mutation(
            f"file byte {n}", _flip(good, readme_at + n * readme_len // 10), Reason.FILE_MISMATCH
        )
    for n in range(5):
        yield Mutation(
            f"action byte {n}", _flip(good, hello_at + n * hello_len // 5), Reason.FILE_MISMATCH
        )
    signature_at, _ = members["manifest.sig"]
    for n in range(10):  # tampered signature
        yield Mutation(
            f"signature byte {n}", _flip(good, signature_at + n * 6), Reason.BAD_SIGNATURE
        )
    for n in range(3):
        yield Mutation(
            f"stranger key {n}", good_bundle(keys.stranger, f"1.1.{n}"), Reason.UNKNOWN_KEY
        )
    for n in range(3):
        yield Mutation(
            f"revoked key {n}", good_bundle(keys.revoked, f"1.1.{n}"), Reason.REVOKED_KEY
        )
    for n in range(2):  # signed before the expiry, refused after it all the same
        before = good_bundle(keys.expired, f"1.1.{n}", created_at=EXPIRED_AT_MS - 1000)
        yield Mutation(f"expired key {n}", before, Reason.KEY_EXPIRED)
    data_end = max(at + length for at, length in members.values())
    for n in range(10):  # cut short, never on a 512-byte boundary (that would look like the end)
        cut = 700 + n * (data_end - 800) // 10
        cut += 1 if cut % 512 == 0 else 0
        yield Mutation(f"truncated at {cut}", good[:cut], Reason.MALFORMED)
    yield Mutation("empty file", b"", Reason.MALFORMED)
    yield Mutation("not a tar", b"#!/bin/sh\nrm -rf /\n" * 40, Reason.MALFORMED)
    yield Mutation("gzip", gzip.compress(good), Reason.MALFORMED)
    for label, change in _signed_but_wrong_manifests():
        yield Mutation(label, _resigned(keys.trusted, change), Reason.MALFORMED)
    for name in (
        "../evil.py",
        "files/../../etc/cron.d/evil",
        "/etc/cron.d/evil",
        "/files/actions/evil.py",
        "files/./evil.py",
        "files//evil.py",
        "files/.evil.py",
        "evil.py",
        "files/a\\..\\..\\evil.py",
        "files/actions/../../../evil.py",
    ):
        yield Mutation(f"path {name}", _with_extra(keys.trusted, _file(name)), Reason.UNSAFE_PATH)
    for label, info in _special_members():
        yield Mutation(label, _with_extra(keys.trusted, (info, b"")), Reason.UNSAFE_MEMBER)
    for name in ("files/extra.py", "files/actions/extra.py", "files/agent.yaml", "files/x/y/z"):
        yield Mutation(
            f"unlisted {name}", _with_extra(keys.trusted, _file(name)), Reason.UNLISTED_FILE
        )
    for path in ("README.txt", "actions/hello.py", "actions/check.py"):
        yield Mutation(f"missing {path}", _without(keys.trusted, path), Reason.MISSING_FILE)
    for path in ("README.txt", "actions/hello.py"):
        twice = _file(f"files/{path}", PAYLOAD[path])
        yield Mutation(f"twice {path}", _with_extra(keys.trusted, twice), Reason.DUPLICATE_MEMBER)


def _device_faults(keys: Keys) -> Iterator[Mutation]:
    """Faults only the device can see: whom the bundle is for, its version, the download."""
    for types in (["gateway"], ["atm", "lock"], ["pi-zero"]):
        bundle = good_bundle(keys.trusted, target={"device_types": types})
        yield Mutation(f"device types {types}", bundle, Reason.WRONG_TARGET)
    for labels in ({"site": "elsewhere"}, {"ring": "canary"}):
        bundle = good_bundle(keys.trusted, target={"device_types": [], "labels": labels})
        yield Mutation(f"labels {labels}", bundle, Reason.WRONG_TARGET)
    for version in ("99", "0.2", "1.0.0.1"):
        bundle = good_bundle(keys.trusted, min_agent_version=version)
        yield Mutation(f"agent >= {version}", bundle, Reason.AGENT_TOO_OLD)
    for version in ("0.9", "1.0", "0.0.1"):  # the tests install 1.0.5 first
        yield Mutation(
            f"downgrade to {version}", good_bundle(keys.trusted, version), Reason.DOWNGRADE
        )
    good = good_bundle(keys.trusted)
    yield Mutation("larger than announced", good, Reason.TOO_LARGE, size=len(good) - 1)
    yield Mutation("much larger", good + b"\0" * 100_000, Reason.TOO_LARGE, size=len(good))
    yield Mutation("announced digest differs", good, Reason.DIGEST_MISMATCH, sha256="0" * 64)
    yield Mutation("shorter than announced", good, Reason.DOWNLOAD_FAILED, size=len(good) + 10)


def _signed_but_wrong_manifests() -> Iterator[tuple[str, Callable[[dict[str, Any]], None]]]:
    yield "format 2", lambda m: m.update(format=2)
    yield "name with a slash", lambda m: m.update(name="../hello")
    yield "file path with ..", lambda m: m["files"].update({"../x": m["files"]["README.txt"]})


def _members(data: bytes) -> dict[str, tuple[int, int]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return {info.name: (info.offset_data, info.size) for info in tar}


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x5A]) + data[at + 1 :]


def _file(name: str, content: bytes = b"print('pwned')\n") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    return info, content


def _special_members() -> Iterator[tuple[str, tarfile.TarInfo]]:
    for name, target in (
        ("files/actions/hello.py", "/etc/passwd"),
        ("files/link", "../../../../etc/shadow"),
        ("files/dir-link", "/"),
    ):
        info = tarfile.TarInfo(name)
        info.type, info.linkname = tarfile.SYMTYPE, target
        yield f"symlink {name} -> {target}", info
    for name, target in (("files/hard", "files/README.txt"), ("files/passwd", "/etc/passwd")):
        info = tarfile.TarInfo(name)
        info.type, info.linkname = tarfile.LNKTYPE, target
        yield f"hard link {name} -> {target}", info
    for kind, label in (
        (tarfile.CHRTYPE, "character device"),
        (tarfile.BLKTYPE, "block device"),
        (tarfile.FIFOTYPE, "fifo"),
    ):
        info = tarfile.TarInfo(f"files/{label.replace(' ', '-')}")
        info.type, info.devmajor, info.devminor = kind, 1, 3
        yield label, info


def _resigned(key: SigningKey, change: Callable[[dict[str, Any]], None]) -> bytes:
    """A bundle whose manifest is signed by the trusted key after ``change``."""
    draft = draft_manifest(PAYLOAD, name="hello", version="1.1.0", actions=ACTIONS)
    draft["key_id"] = key.public.key_id
    change(draft)
    manifest = msgspec.json.encode(draft)
    return _archive(
        manifest, key.sign(manifest), [_file(f"files/{p}", d) for p, d in PAYLOAD.items()]
    )


def _with_extra(key: SigningKey, extra: tuple[tarfile.TarInfo, bytes]) -> bytes:
    """The good bundle, correctly signed, with one more member appended."""
    draft = draft_manifest(PAYLOAD, name="hello", version="1.1.0", actions=ACTIONS)
    manifest, signature, _ = sign_bundle(draft, PAYLOAD, key)
    files = [_file(f"files/{p}", d) for p, d in PAYLOAD.items()]
    return _archive(manifest, signature, [*files, extra])


def _without(key: SigningKey, path: str) -> bytes:
    draft = draft_manifest(PAYLOAD, name="hello", version="1.1.0", actions=ACTIONS)
    manifest, signature, _ = sign_bundle(draft, PAYLOAD, key)
    files = [_file(f"files/{p}", d) for p, d in PAYLOAD.items() if p != path]
    return _archive(manifest, signature, files)


def _archive(
    manifest: bytes, signature: bytes, members: list[tuple[tarfile.TarInfo, bytes]]
) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        for info, content in [
            _file("manifest.json", manifest),
            _file("manifest.sig", signature),
            *members,
        ]:
            tar.addfile(info, io.BytesIO(content) if info.isfile() else None)
    return out.getvalue()
