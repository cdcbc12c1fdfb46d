"""The bundle format: a good bundle verifies; every kind of tampering is refused with its code.

These run the library alone (no agent): what the hub relies on to read and show bundles, and
the first line of the agent's defence. The agent's tests (test_agent_bundles.py) offer the
same bad bundles to a running agent and check that nothing was written.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fieldhub.bundles import (
    BadKey,
    BuildError,
    BundleRefused,
    PublicKey,
    Reason,
    SigningKey,
    draft_manifest,
    make_bundle,
    open_verified,
    parse_version,
    read_manifest,
    read_payload,
    verify_bundle,
)
from tests.support.bundle_mutations import (
    ACTIONS,
    EXPIRED_AT_MS,
    PAYLOAD,
    Keys,
    Mutation,
    good_bundle,
    mutations,
)

KEYS = Keys()
EXPIRED = PublicKey(KEYS.expired.public.raw, until_ms=EXPIRED_AT_MS)
TRUSTED = [KEYS.trusted.public, KEYS.revoked.public, EXPIRED]
REVOKED = [KEYS.revoked.public.key_id]
FORMAT_FAULTS = mutations(KEYS, agent_level=False)


def test_a_good_bundle_verifies_and_yields_its_payload() -> None:
    bundle = open_verified(good_bundle(KEYS.trusted), TRUSTED, REVOKED)
    assert bundle.payload == PAYLOAD
    manifest = bundle.manifest
    assert (manifest.name, manifest.version, manifest.key_id) == (
        "hello",
        "1.1.0",
        KEYS.trusted.public.key_id,
    )
    assert [action.name for action in manifest.actions] == ["hello.say", "hello.check"]
    assert manifest.files["README.txt"].size == len(PAYLOAD["README.txt"])


def test_read_manifest_needs_no_key_and_proves_nothing() -> None:
    """The hub shows what a bundle claims before (or without) trusting it."""
    stranger = good_bundle(KEYS.stranger)
    assert read_manifest(stranger).key_id == KEYS.stranger.public.key_id
    with pytest.raises(BundleRefused) as refused:
        verify_bundle(stranger, TRUSTED, REVOKED)
    assert refused.value.reason is Reason.UNKNOWN_KEY


def test_the_same_inputs_make_the_same_bytes() -> None:
    """Reproducible: a bundle rebuilt from the same folder and time hashes the same."""
    fields = {"created_at": 1_700_000_000_000}
    first = make_bundle(PAYLOAD, KEYS.trusted, name="hello", version="1.0", **fields)
    assert first == make_bundle(PAYLOAD, KEYS.trusted, name="hello", version="1.0", **fields)


def test_the_faults_cover_every_class() -> None:
    assert len(FORMAT_FAULTS) >= 85
    assert {m.reason for m in FORMAT_FAULTS} >= {
        Reason.MALFORMED,
        Reason.BAD_SIGNATURE,
        Reason.UNKNOWN_KEY,
        Reason.REVOKED_KEY,
        Reason.KEY_EXPIRED,
        Reason.FILE_MISMATCH,
        Reason.MISSING_FILE,
        Reason.UNLISTED_FILE,
        Reason.UNSAFE_PATH,
        Reason.UNSAFE_MEMBER,
        Reason.DUPLICATE_MEMBER,
    }


@pytest.mark.parametrize("mutation", FORMAT_FAULTS, ids=[m.label for m in FORMAT_FAULTS])
def test_each_fault_is_refused_with_its_reason(mutation: Mutation) -> None:
    with pytest.raises(BundleRefused) as refused:
        verify_bundle(mutation.data, TRUSTED, REVOKED)
    assert refused.value.reason is mutation.reason, refused.value.message


def test_key_rotation_trusts_old_and_new_until_the_old_is_revoked() -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    by_old, by_new = good_bundle(old), good_bundle(new)
    both = [old.public, new.public]
    assert verify_bundle(by_old, both).key_id == old.public.key_id
    assert verify_bundle(by_new, both).key_id == new.public.key_id
    with pytest.raises(BundleRefused) as refused:
        verify_bundle(by_old, both, [old.public.key_id])
    assert refused.value.reason is Reason.REVOKED_KEY
    assert verify_bundle(by_new, both, [old.public.key_id]).version == "1.1.0"


def test_a_key_is_trusted_until_its_expiry_by_the_verifiers_clock() -> None:
    """Past its date a key vouches for nothing, even for what it signed before; until then,
    and with a later date, it verifies as any trusted key."""
    by_expired = good_bundle(KEYS.expired, created_at=EXPIRED_AT_MS - 60_000)
    with pytest.raises(BundleRefused) as refused:
        verify_bundle(by_expired, TRUSTED, REVOKED)
    assert refused.value.reason is Reason.KEY_EXPIRED
    assert "2024-01-01T00:00:00+00:00" in refused.value.message
    with pytest.raises(BundleRefused):
        verify_bundle(by_expired, TRUSTED, REVOKED, at_ms=EXPIRED_AT_MS)  # the expiry itself
    assert verify_bundle(by_expired, TRUSTED, REVOKED, at_ms=EXPIRED_AT_MS - 1).version == "1.1.0"
    later = PublicKey(KEYS.trusted.public.raw, until_ms=4_102_444_800_000)  # 2100
    assert verify_bundle(good_bundle(KEYS.trusted), [later]).key_id == later.key_id


def test_a_refusal_message_escapes_what_the_archive_says() -> None:
    """Member names come from the attacker: the message shows them escaped, one line."""
    evil = next(m for m in FORMAT_FAULTS if m.label == "path files/a\\..\\..\\evil.py")
    with pytest.raises(BundleRefused) as refused:
        verify_bundle(evil.data, TRUSTED, REVOKED)
    assert "'files/a\\\\..\\\\..\\\\evil.py'" in refused.value.message


@pytest.mark.parametrize(
    ("lower", "higher"),
    [("1.9", "1.10"), ("1.4", "1.4.1"), ("0.9.9", "1"), ("2", "10")],
)
def test_versions_compare_as_numbers(lower: str, higher: str) -> None:
    assert parse_version(lower) < parse_version(higher)


def test_trailing_zeros_do_not_make_a_new_version() -> None:
    assert parse_version("1.4") == parse_version("1.4.0") == parse_version("1.4.0.0")


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"name": "Hello World"}, "$.name"),
        ({"version": "1.0-beta"}, "$.version"),
        ({"config": "agent.yaml"}, "files"),
        ({"health": {"action": "nobody.here"}}, "health.action"),
        ({"health": {"action": "hello.say"}}, "must take no arguments"),
        ({"actions": [{"name": "x.y", "program": "missing.py"}]}, "files"),
        ({"target": {"device_types": "pi"}}, "$.target.device_types"),
    ],
)
def test_a_wrong_draft_names_its_field(fields: dict[str, object], named: str) -> None:
    args: dict[str, object] = {"name": "hello", "version": "1.0", "actions": ACTIONS, **fields}
    with pytest.raises(BuildError, match=named.replace("$", r"\$")):
        draft_manifest(PAYLOAD, **args)  # type: ignore[arg-type]


def test_public_keys_travel_as_one_line_and_private_keys_as_pem() -> None:
    key = SigningKey.generate()
    line = key.public.to_text()
    assert "\n" not in line
    assert PublicKey.from_text(line + "\n") == key.public
    assert SigningKey.from_pem(key.to_pem()).public == key.public
    for bad in ("not base64!", "AAAA", ""):
        with pytest.raises(BadKey):
            PublicKey.from_text(bad)
    with pytest.raises(BadKey):
        SigningKey.from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


def test_the_builder_refuses_links_in_the_payload_folder(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "ok.py").write_text("print(1)\n")
    assert read_payload(tmp_path) == {"ok.py": b"print(1)\n"}
    os.symlink("/etc/passwd", files / "passwd")
    with pytest.raises(BuildError, match="only regular files"):
        read_payload(tmp_path)
