"""``fieldhub bundle``: make and check signed bundles on the signer's machine.

``keygen`` makes a key pair (the private key in a file only its owner may read, never
printed), ``build`` describes a folder's ``files/`` in a ``manifest.json``, ``sign`` signs it
and packs the ``.fhb``, ``verify`` checks a bundle as a device would, ``inspect`` shows what a
bundle claims, ``force`` signs a downgrade permission. docs/bundles.md walks through them.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from fieldhub.bundles import (
    BadKey,
    BuildError,
    BundleRefused,
    PublicKey,
    SigningKey,
    draft_manifest,
    read_manifest,
    read_payload,
    sign_bundle,
    verify_bundle,
)
from fieldhub.bundles.archive import MANIFEST_NAME, SIGNATURE_NAME, unpack
from fieldhub.bundles.force import sign_force
from fieldhub.cli.common import console
from fieldhub.private_files import write_private

bundle_app = typer.Typer(help="Make, sign and check bundles (actions and agent.yaml for devices).")

KeyOpt = Annotated[Path, typer.Option("--key", "-k", help="the private key file (from keygen)")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    return typer.Exit(code)


def _signing_key(path: Path) -> SigningKey:
    try:
        return SigningKey.from_pem(path.read_bytes())
    except (OSError, BadKey) as exc:
        raise _fail(f"{path}: {exc}") from None


@bundle_app.command()
def keygen(
    prefix: Annotated[Path, typer.Argument(help="writes PREFIX.key (private) and PREFIX.pub")],
) -> None:
    """Make a signing key pair; the private key stays on this machine."""
    private, public = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    for path in (private, public):
        if path.exists():
            raise _fail(f"{path} exists: a key is never overwritten")
    key = SigningKey.generate()
    write_private(private, key.to_pem())
    public.write_text(key.public.to_text() + "\n", encoding="utf-8")
    typer.echo(f"key id {key.public.key_id}: private key {private} (0600), public key {public}")


@bundle_app.command()
def build(
    folder: Annotated[Path, typer.Argument(help="a folder holding files/")],
    name: Annotated[str, typer.Option(help="bundle name: a-z, 0-9, '.', '_', '-'")],
    version: Annotated[str, typer.Option(help="dotted integers, e.g. 1.4.0")],
    min_agent_version: Annotated[str, typer.Option(help="oldest agent it runs on")] = "0",
    device_type: Annotated[
        list[str] | None, typer.Option(help="only for these device types (repeat)")
    ] = None,
    label: Annotated[list[str] | None, typer.Option(help="only where KEY=VALUE (repeat)")] = None,
    config: Annotated[
        str | None, typer.Option(help="path under files/ of a new agent.yaml")
    ] = None,
    actions: Annotated[
        Path | None, typer.Option(help="YAML list of the actions the bundle adds")
    ] = None,
    health: Annotated[
        str | None, typer.Option(help="ACTION[:TIMEOUT_S] that must pass after install")
    ] = None,
) -> None:
    """Write FOLDER/manifest.json describing FOLDER/files (then run `sign`)."""
    try:
        payload = read_payload(folder)
        draft = draft_manifest(
            payload,
            name=name,
            version=version,
            min_agent_version=min_agent_version,
            target={"device_types": device_type or [], "labels": _labels(label or [])},
            config=config,
            actions=_actions(actions),
            health=_health(health),
        )
    except BuildError as exc:
        raise _fail(str(exc)) from None
    (folder / MANIFEST_NAME).write_text(json.dumps(draft, indent=2) + "\n", encoding="utf-8")
    (folder / SIGNATURE_NAME).unlink(missing_ok=True)  # it signed another manifest
    typer.echo(f"{folder / MANIFEST_NAME}: {name} {version}, {len(payload)} files")


@bundle_app.command()
def sign(
    folder: Annotated[Path, typer.Argument(help="a folder built by `build`")],
    key: KeyOpt,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="the bundle file [NAME-VERSION.fhb]")
    ] = None,
) -> None:
    """Sign FOLDER/manifest.json (writes manifest.sig) and pack the bundle file."""
    signing_key = _signing_key(key)
    try:
        draft = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
        draft.pop("key_id", None)
        manifest, signature, bundle = sign_bundle(draft, read_payload(folder), signing_key)
    except (OSError, ValueError) as exc:  # BuildError and JSON errors are ValueErrors
        raise _fail(f"{folder}: {exc}") from None
    (folder / MANIFEST_NAME).write_bytes(manifest)
    (folder / SIGNATURE_NAME).write_bytes(signature)
    target = output or Path(f"{draft['name']}-{draft['version']}.fhb")
    target.write_bytes(bundle)
    typer.echo(f"{target}: signed by key {signing_key.public.key_id}, {len(bundle)} bytes")


@bundle_app.command()
def verify(
    bundle: Annotated[Path, typer.Argument(help="a .fhb file")],
    key: Annotated[
        list[Path], typer.Option("--key", "-k", help="a trusted public key file (repeat)")
    ],
    revoked: Annotated[list[str] | None, typer.Option(help="a revoked key id (repeat)")] = None,
    expires: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=WHEN: the key (its file as given to --key, or its id) is trusted until "
            "WHEN, a time with its zone (2027-06-30T00:00:00Z) or epoch ms as the hub's "
            "expires_at (repeat)"
        ),
    ] = None,
) -> None:
    """Check BUNDLE as a device would: signature, key expiry, then every file (exit 1 when
    refused)."""
    try:
        files = {path: PublicKey.from_text(path.read_text(encoding="utf-8")) for path in key}
    except (OSError, BadKey) as exc:
        raise _fail(str(exc), 2) from None
    until = _expiries(expires or [], files)
    keys = [PublicKey(k.raw, until.get(k.key_id)) for k in files.values()]
    try:
        manifest = verify_bundle(bundle.read_bytes(), keys, revoked or [])
    except OSError as exc:
        raise _fail(str(exc), 2) from None
    except BundleRefused as exc:
        raise _fail(f"refused ({exc.reason.value}): {exc.message}") from None
    typer.echo(f"ok: {manifest.name} {manifest.version}, signed by key {manifest.key_id}")


def _expiries(pairs: list[str], files: dict[Path, PublicKey]) -> dict[str, int]:
    """``--expires`` → key id → expiry (epoch ms), each naming a key given with ``--key``:
    an expiry for a key that is not trusted here would silently check nothing."""
    ids = {k.key_id: k.key_id for k in files.values()}
    ids.update({str(path): k.key_id for path, k in files.items()})
    until: dict[str, int] = {}
    for pair in pairs:
        name, sep, when = pair.partition("=")
        if not sep or name not in ids:
            known = ", ".join(sorted(ids))
            raise _fail(f"--expires {pair!r}: give KEY=WHEN, KEY one of {known}", 2)
        until[ids[name]] = _instant(when, pair)
    return until


def _instant(text: str, pair: str) -> int:
    """``WHEN`` of ``--expires`` in epoch ms: digits are epoch ms (the hub's ``expires_at``);
    otherwise ISO 8601 with its zone, the agent's rule (a zone-less time would move with the
    clock of whoever reads it)."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise _fail(
            f"--expires {pair!r}: WHEN is a time with its zone (2027-06-30T00:00:00Z) or epoch ms",
            2,
        )
    return int(moment.timestamp() * 1000)


@bundle_app.command()
def inspect(bundle: Annotated[Path, typer.Argument(help="a .fhb file")]) -> None:
    """Print what BUNDLE's manifest claims (unverified: use `verify` to trust it)."""
    try:
        data = bundle.read_bytes()
        manifest = read_manifest(data)
    except OSError as exc:
        raise _fail(str(exc), 2) from None
    except BundleRefused as exc:
        raise _fail(f"refused ({exc.reason.value}): {exc.message}") from None
    typer.echo(unpack(data).manifest.decode("utf-8"), nl=False)
    console.print(f"(unverified) {manifest.name} {manifest.version}, key {manifest.key_id}")


@bundle_app.command()
def force(
    key: KeyOpt,
    name: Annotated[str, typer.Option(help="the bundle to downgrade")],
    version: Annotated[str, typer.Option(help="the (lower) version to allow")],
    device: Annotated[
        list[str] | None, typer.Option(help="only for this device id (repeat; all if none)")
    ] = None,
) -> None:
    """Print a signed permission to install an older version (the `force` of bundle.install)."""
    typer.echo(sign_force(_signing_key(key), name, version, device or []))


def _labels(pairs: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise _fail(f"--label {pair!r}: give KEY=VALUE", 2)
        labels[key] = value
    return labels


def _actions(path: Path | None) -> list[dict[str, Any]]:
    if path is None:
        return []
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise _fail(f"{path}: {exc}", 2) from None
    if not isinstance(loaded, list) or not all(isinstance(item, dict) for item in loaded):
        raise _fail(f"{path}: a YAML list of actions (name, program, args, timeout_s)", 2)
    return loaded


def _health(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    action, _, timeout = text.partition(":")
    try:
        return {"action": action, **({"timeout_s": float(timeout)} if timeout else {})}
    except ValueError:
        raise _fail(f"--health {text!r}: ACTION[:TIMEOUT_S]", 2) from None
