"""A signed permission to downgrade: anti-rollback's one way around, itself signed.

An agent refuses a bundle older than the one it runs (an attacker replaying an old, signed but
vulnerable version is the classic attack on updates). When an operator truly needs the old
version back, they sign a *force* with a bundle key (``fieldhub bundle force``): it names the
bundle, the exact version and, optionally, the devices it is good for. The hub only carries
it (the ``force`` argument of ``bundle.install``); it cannot make one.

Text form: ``base64url(JSON statement) "." base64url(Ed25519 signature over that JSON)``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection, Iterable
from typing import Annotated, Literal

import msgspec

from fieldhub.bundles.keys import PublicKey, SigningKey
from fieldhub.bundles.manifest import BUNDLE_NAME_PATTERN, KEY_ID_PATTERN, VERSION_PATTERN
from fieldhub.bundles.refusal import BundleRefused, Reason
from fieldhub.clock import now_ms

__all__ = ["Downgrade", "check_force", "sign_force"]

_MAX_FORCE_CHARS = 4096


class Downgrade(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What a force allows: installing ``name`` at ``version`` over a newer one, on
    ``devices`` (every device when empty)."""

    kind: Literal["downgrade"] = "downgrade"
    name: Annotated[str, msgspec.Meta(pattern=BUNDLE_NAME_PATTERN)]
    version: Annotated[str, msgspec.Meta(pattern=VERSION_PATTERN)]
    devices: list[str] = []
    key_id: Annotated[str, msgspec.Meta(pattern=KEY_ID_PATTERN)]


def sign_force(key: SigningKey, name: str, version: str, devices: Iterable[str] = ()) -> str:
    """A force in its text form, signed by ``key``."""
    statement = Downgrade(name=name, version=version, devices=list(devices), key_id="0" * 16)
    statement = msgspec.structs.replace(statement, key_id=key.public.key_id)
    body = msgspec.json.encode(statement)
    return f"{_b64(body)}.{_b64(key.sign(body))}"


def check_force(
    text: str,
    trusted_keys: Iterable[PublicKey],
    revoked_key_ids: Collection[str],
    *,
    device_id: str,
    name: str,
    version: str,
) -> Downgrade:
    """The force, if it is signed by a trusted, unrevoked, unexpired key and covers this
    device, bundle and version.

    Raises:
        BundleRefused: ``bad_force``, saying what does not fit.
    """
    if len(text) > _MAX_FORCE_CHARS or text.count(".") != 1:
        raise BundleRefused(Reason.BAD_FORCE, "a force is two base64url parts joined by '.'")
    body_text, signature_text = text.split(".")
    try:
        body, signature = _unb64(body_text), _unb64(signature_text)
    except (binascii.Error, ValueError):
        raise BundleRefused(Reason.BAD_FORCE, "a force is base64url") from None
    signer = next((k for k in trusted_keys if k.verifies(signature, body)), None)
    if signer is None or signer.key_id in revoked_key_ids or signer.expired(now_ms()):
        raise BundleRefused(Reason.BAD_FORCE, "the force is not signed by a trusted key")
    try:
        statement = msgspec.json.decode(body, type=Downgrade)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BundleRefused(Reason.BAD_FORCE, f"not a force: {exc}") from None
    if (statement.name, statement.version) != (name, version):
        raise BundleRefused(
            Reason.BAD_FORCE,
            f"the force is for {statement.name} {statement.version}, not {name} {version}",
        )
    if statement.devices and device_id not in statement.devices:
        raise BundleRefused(Reason.BAD_FORCE, "the force does not name this device")
    return statement


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
