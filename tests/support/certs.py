"""Certificates for TLS tests, made with the ``openssl`` command (no Python crypto package).

A :class:`TestCa` is a private CA in a folder; it issues server certificates for chosen host
names and dates (an expired one is issued with dates in the past, as ``openssl ca`` allows),
and :func:`self_signed` makes one no CA vouches for. Keys are P-256: quick to make.

Example::

    ca = TestCa(tmp_path / "ca")
    good = ca.issue("broker", hosts=["127.0.0.1"])
    expired = ca.issue("old", hosts=["127.0.0.1"], not_before="20200101000000Z",
                       not_after="20200102000000Z")
    ca.revoke(expired); crl = ca.crl()
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["CertFiles", "TestCa", "public_key_pin", "self_signed"]

_KEY: Final = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]

_CA_CONFIG: Final = """\
[ca]
default_ca = test_ca
[test_ca]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/issued
certificate = $dir/ca.pem
private_key = $dir/ca.key
rand_serial = yes
default_md = sha256
default_days = 30
policy = any_name
copy_extensions = copy
unique_subject = no
[any_name]
commonName = supplied
"""


@dataclass(frozen=True)
class CertFiles:
    """A certificate and its private key, PEM files."""

    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path | None = None) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("the openssl command is missing (Debian package openssl)")
    result = subprocess.run(
        [binary, *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _san(hosts: list[str]) -> str:
    names = [f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}" for h in hosts]
    return "subjectAltName=" + ",".join(names)


class TestCa:
    """A private certificate authority in ``folder`` (created): ``ca.pem`` is what clients
    trust."""

    __test__ = False  # not a pytest test class

    def __init__(self, folder: Path, name: str = "fieldhub test CA") -> None:
        self.folder = folder
        (folder / "issued").mkdir(parents=True, exist_ok=True)
        (folder / "index.txt").write_text("", encoding="utf-8")
        self._config = folder / "ca.cnf"
        self._config.write_text(_CA_CONFIG.format(dir=folder), encoding="utf-8")
        self.cert = folder / "ca.pem"
        _openssl(
            "req", "-x509", *_KEY, "-keyout", str(folder / "ca.key"), "-out", str(self.cert),
            "-days", "30", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip

    def issue(
        self,
        name: str,
        *,
        hosts: list[str],
        not_before: str | None = None,
        not_after: str | None = None,
    ) -> CertFiles:
        """A certificate for ``hosts`` (DNS names or IP addresses), valid 30 days from now, or
        from ``not_before`` to ``not_after`` (``YYYYMMDDHHMMSSZ``)."""
        files = CertFiles(self.folder / f"{name}.pem", self.folder / f"{name}.key")
        request = self.folder / f"{name}.csr"
        _openssl(
            "req", "-new", *_KEY, "-keyout", str(files.key), "-out", str(request),
            "-subj", f"/CN={name}", "-addext", _san(hosts),
        )  # fmt: skip
        dates = []
        if not_before is not None:
            dates += ["-startdate", not_before]
        if not_after is not None:
            dates += ["-enddate", not_after]
        _openssl(
            "ca", "-batch", "-notext", "-config", str(self._config), "-in", str(request),
            "-out", str(files.cert), *dates,
        )  # fmt: skip
        return files

    def revoke(self, files: CertFiles) -> None:
        """Mark a certificate this CA issued as revoked (it shows in the next :meth:`crl`)."""
        _openssl("ca", "-config", str(self._config), "-revoke", str(files.cert))

    def crl(self) -> Path:
        """A current revocation list (PEM, valid 30 days) of what this CA revoked so far."""
        path = self.folder / "crl.pem"
        _openssl(
            "ca", "-gencrl", "-config", str(self._config), "-crldays", "30", "-out", str(path)
        )  # fmt: skip
        return path


def self_signed(folder: Path, name: str, *, hosts: list[str]) -> CertFiles:
    """A certificate for ``hosts`` that signs itself: valid in form, vouched for by no CA."""
    folder.mkdir(parents=True, exist_ok=True)
    files = CertFiles(folder / f"{name}.pem", folder / f"{name}.key")
    _openssl(
        "req", "-x509", *_KEY, "-keyout", str(files.key), "-out", str(files.cert),
        "-days", "30", "-subj", f"/CN={name}", "-addext", _san(hosts),
    )  # fmt: skip
    return files


def public_key_pin(cert: Path) -> str:
    """The SHA-256 pin of ``cert``'s public key, computed the way the docs tell operators to
    (openssl: the public key in DER, then its digest), not by fieldhub's own code."""
    binary = shutil.which("openssl") or "openssl"
    public_key = subprocess.run(
        [binary, "x509", "-in", str(cert), "-pubkey", "-noout"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    der = subprocess.run(
        [binary, "pkey", "-pubin", "-outform", "der"],
        input=public_key,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    digest = subprocess.run(
        [binary, "dgst", "-sha256", "-r"], input=der, capture_output=True, check=True, timeout=60
    ).stdout
    return digest.decode().split()[0]
