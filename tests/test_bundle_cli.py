"""``fieldhub bundle`` as a signer uses it: keygen, build, sign, verify, inspect, force."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fieldhub.bundles import PublicKey, Reason, verify_bundle
from fieldhub.bundles.force import check_force

FIELDHUB = [sys.executable, "-m", "fieldhub", "bundle"]


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FIELDHUB, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a key pair and a signed bundle made by the CLI."""
    work = tmp_path_factory.mktemp("signer")
    assert run("keygen", "ops", cwd=work).returncode == 0
    source = work / "src"
    (source / "files" / "actions").mkdir(parents=True)
    (source / "files" / "actions" / "hello.py").write_text("print('hello')\n")
    (work / "actions.yaml").write_text(
        "- {name: hello.say, program: actions/hello.py, timeout_s: 5}\n"
    )
    built = run(
        "build", source, "--name", "hello", "--version", "1.2.0", "--device-type", "pi",
        "--label", "site=north", "--actions", work / "actions.yaml", "--health", "hello.say:15",
        cwd=work,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    signing = run("sign", source, "--key", "ops.key", cwd=work)
    assert signing.returncode == 0, signing.stderr
    return work


def test_keygen_keeps_the_private_key_private(signed: Path) -> None:
    private = signed / "ops.key"
    assert private.stat().st_mode & 0o777 == 0o600
    again = run("keygen", "ops", cwd=signed)
    assert again.returncode == 1
    assert "never overwritten" in again.stderr
    assert private.read_text() not in again.stdout + again.stderr


def test_a_signed_bundle_verifies_with_the_public_key(signed: Path) -> None:
    bundle = (signed / "hello-1.2.0.fhb").read_bytes()
    public = PublicKey.from_text((signed / "ops.pub").read_text())
    manifest = verify_bundle(bundle, [public])
    assert (manifest.name, manifest.target.device_types, manifest.target.labels) == (
        "hello",
        ["pi"],
        {"site": "north"},
    )
    assert manifest.health is not None
    assert manifest.health.timeout_s == 15
    checked = run("verify", "hello-1.2.0.fhb", "--key", "ops.pub", cwd=signed)
    assert checked.returncode == 0, checked.stderr
    assert f"ok: hello 1.2.0, signed by key {public.key_id}" in checked.stdout


def test_verify_refuses_another_key_and_a_revoked_one(signed: Path) -> None:
    assert run("keygen", "other", cwd=signed).returncode == 0
    other = run("verify", "hello-1.2.0.fhb", "--key", "other.pub", cwd=signed)
    assert other.returncode == 1
    assert f"refused ({Reason.UNKNOWN_KEY.value})" in other.stderr
    key_id = PublicKey.from_text((signed / "ops.pub").read_text()).key_id
    revoked = run("verify", "hello-1.2.0.fhb", "--key", "ops.pub", "--revoked", key_id, cwd=signed)
    assert revoked.returncode == 1
    assert f"refused ({Reason.REVOKED_KEY.value})" in revoked.stderr


def test_a_file_changed_after_build_is_not_signed(signed: Path) -> None:
    changed = signed / "changed"
    (changed / "files").mkdir(parents=True)
    (changed / "files" / "a.txt").write_text("one\n")
    assert run("build", changed, "--name", "c", "--version", "1", cwd=signed).returncode == 0
    (changed / "files" / "a.txt").write_text("two\n")
    refused = run("sign", changed, "--key", "ops.key", "-o", "c.fhb", cwd=signed)
    assert refused.returncode == 1
    assert "files changed since the manifest was built: ['a.txt']" in refused.stderr
    assert not (signed / "c.fhb").exists()


def test_build_names_a_wrong_option(signed: Path) -> None:
    wrong = run("build", signed / "src", "--name", "Hello!", "--version", "1", cwd=signed)
    assert wrong.returncode == 1
    assert "$.name" in wrong.stderr


def test_inspect_shows_the_manifest_without_trusting_it(signed: Path) -> None:
    shown = run("inspect", "hello-1.2.0.fhb", cwd=signed)
    assert shown.returncode == 0, shown.stderr
    manifest = json.loads(shown.stdout)
    assert manifest["version"] == "1.2.0"
    assert manifest["files"]["actions/hello.py"]["size"] == len("print('hello')\n")
    assert "(unverified)" in shown.stderr


def test_force_signs_a_downgrade_for_named_devices(signed: Path) -> None:
    made = run(
        "force", "--key", "ops.key", "--name", "hello", "--version", "1.0", "--device", "pi-7",
        cwd=signed,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    public = PublicKey.from_text((signed / "ops.pub").read_text())
    allowed = check_force(
        made.stdout.strip(), [public], [], device_id="pi-7", name="hello", version="1.0"
    )
    assert allowed.devices == ["pi-7"]


def test_verify_judges_the_keys_expiry_given_by_file_or_id(signed: Path) -> None:
    key_id = PublicKey.from_text((signed / "ops.pub").read_text()).key_id
    expiry = "ops.pub=2020-01-01T00:00:00Z"
    lapsed = run("verify", "hello-1.2.0.fhb", "--key", "ops.pub", "--expires", expiry, cwd=signed)
    assert lapsed.returncode == 1
    assert (
        f"refused (key_expired): signed by key {key_id}, which expired at "
        "2020-01-01T00:00:00+00:00; the bundle was made at 20"
    ) in lapsed.stderr
    assert "after its key had expired" in lapsed.stderr
    future = 4_102_444_800_000  # 2100-01-01, as the hub's expires_at gives it
    trusted = run(
        "verify", "hello-1.2.0.fhb", "--key", "ops.pub", "--expires", f"{key_id}={future}",
        cwd=signed,
    )  # fmt: skip
    assert trusted.returncode == 0, trusted.stderr
    assert f"ok: hello 1.2.0, signed by key {key_id}" in trusted.stdout


def test_a_bundle_made_before_the_expiry_is_refused_after_it_all_the_same(signed: Path) -> None:
    old = signed / "old"
    (old / "files").mkdir(parents=True)
    (old / "files" / "a.txt").write_text("one\n")
    assert run("build", old, "--name", "old", "--version", "1", cwd=signed).returncode == 0
    draft = json.loads((old / "manifest.json").read_text())
    draft["created_at"] = 1_546_300_800_000  # 2019-01-01: before the key's expiry
    (old / "manifest.json").write_text(json.dumps(draft))
    assert run("sign", old, "--key", "ops.key", "-o", "old.fhb", cwd=signed).returncode == 0
    refused = run(
        "verify", "old.fhb", "--key", "ops.pub", "--expires", "ops.pub=2020-01-01T00:00:00+00:00",
        cwd=signed,
    )  # fmt: skip
    assert refused.returncode == 1
    assert (
        "the bundle was made at 2019-01-01T00:00:00+00:00, before that, but a key past its "
        "date vouches for nothing: sign it again with a current key"
    ) in refused.stderr


@pytest.mark.parametrize(
    ("expires", "said"),
    [
        ("ops.pub=2027-06-30", "WHEN is a time with its zone"),
        ("ops.pub=soon", "WHEN is a time with its zone"),
        ("other.pub=2027-06-30T00:00:00Z", "KEY one of"),
        ("2027-06-30T00:00:00Z", "give KEY=WHEN"),
    ],
)
def test_a_wrong_expiry_is_named(signed: Path, expires: str, said: str) -> None:
    wrong = run("verify", "hello-1.2.0.fhb", "--key", "ops.pub", "--expires", expires, cwd=signed)
    assert wrong.returncode == 2
    assert f"--expires {expires!r}" in wrong.stderr
    assert said in wrong.stderr
