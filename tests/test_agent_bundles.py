"""The agent's installer, in process: real downloads over HTTP, real files, real programs.

A :class:`BundleHost` is driven the way the agent drives it (start: config, actions, attach;
an install; the restart it asks for; the trial), with a real action registry. What a user
checks: the events the device reports, the reported ``software``, the actions it can run, and
that a refused bundle leaves the device's disk exactly as it was.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from fieldhub.agent.actions import ActionRegistry
from fieldhub.agent.bundles import SOFTWARE_KEY
from fieldhub.agent.bundles.host import BundleHost
from fieldhub.agent.bundles.installed import Installed
from fieldhub.agent.config import (
    AgentConfig,
    BundlesSection,
    DeviceSection,
    HubSection,
    TrustedKey,
)
from fieldhub.agent.reporting import StateValue, Value
from fieldhub.bundles import BundleRefused, Reason, make_bundle, read_manifest
from fieldhub.protocol.messages import Severity
from tests.support.bundle_mutations import (
    EXPIRED_AT,
    EXPIRED_AT_MS,
    PAYLOAD,
    Keys,
    Mutation,
    good_bundle,
    mutations,
)
from tests.support.bundle_server import BundleServer, bundle_server
from tests.support.disk import small_disk

KEYS = Keys()


class Recorder:
    """The device's reports as the hub would receive them: events and reported state."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.reported: dict[str, StateValue] = {}

    def telemetry(self, values: Mapping[str, Value], ts: int | None = None) -> None:
        pass

    def event(
        self,
        type: str,
        severity: Severity = "info",
        message: str = "",
        data: Mapping[str, Any] | None = None,
    ) -> None:
        self.events.append((type, dict(data or {})))

    def state(self, changes: Mapping[str, StateValue]) -> None:
        self.reported.update(changes)

    def last(self, prefix: str = "bundle.") -> tuple[str, dict[str, Any]] | None:
        found = [e for e in self.events if e[0].startswith(prefix)]
        return found[-1] if found else None


class Device:
    """One agent's bundle host and what it runs, restarted the way the agent restarts."""

    def __init__(self, config: AgentConfig) -> None:
        self.host = BundleHost(config)
        self.host.recover()
        self.reports = Recorder()
        self.registry = ActionRegistry()
        self.tasks: list[asyncio.Task[None]] = []
        self.start()

    def start(self) -> None:
        self.host.config()
        self.registry = ActionRegistry()
        for spec in self.host.builtin_actions():
            self.registry.add_builtin(spec)
        for action in self.host.site_actions():
            self.registry.add_site(action)
        self.host.attach(self.reports, self.registry, lambda: True, self._spawn)

    def _spawn(self, work: Any, name: str) -> None:
        self.tasks.append(asyncio.create_task(work, name=name))

    async def install(self, server: BundleServer, data: bytes, force: str = "") -> None:
        """Offer ``data`` and run the install to its end (the trial too, if it got there)."""
        manifest = read_manifest(data)
        await self.offer(server, data, manifest.name, manifest.version, len(data), force=force)

    async def offer(
        self,
        server: BundleServer,
        data: bytes,
        name: str,
        version: str,
        size: int,
        sha256: str | None = None,
        force: str = "",
    ) -> None:
        sha256 = sha256 or hashlib.sha256(data).hexdigest()
        await self.host.install(server.offer(data), sha256, size, name, version, force)
        if self.host.trial is not None or await _restart_asked(self.host):
            self.host.detach()
            self.start()
            await asyncio.gather(*self.tasks)
            self.tasks.clear()
            if await _restart_asked(self.host):  # rolled back: start the old version again
                self.host.detach()
                self.start()

    async def run(self, action: str, **args: Any) -> Any:
        outcome = await self.registry.run(self.registry.bind(action, args))
        assert outcome.ok, outcome.error
        return outcome.result


async def _restart_asked(host: BundleHost) -> bool:
    try:
        await asyncio.wait_for(host.restart_requested(), 0.01)
    except TimeoutError:
        return False
    return True


def device_config(data: Path, **bundles: Any) -> AgentConfig:
    """Trusts KEYS.trusted until 2100 (so every good install shows that a key expiring later
    works), KEYS.revoked in the plain form, KEYS.expired until EXPIRED_AT (past)."""
    trusted = [
        TrustedKey(key=KEYS.trusted.public.to_text(), until=datetime(2100, 1, 1, tzinfo=UTC)),
        KEYS.revoked.public.to_text(),
        TrustedKey(key=KEYS.expired.public.to_text(), until=datetime.fromisoformat(EXPIRED_AT)),
    ]
    return AgentConfig(
        device=DeviceSection(id="pi-1", type="pi", labels={"site": "north"}),
        hub=HubSection(broker="mqtt://127.0.0.1:1", username="pi-1"),
        data_folder=str(data),
        bundles=BundlesSection(
            trusted_keys=trusted, revoked_keys=[KEYS.revoked.public.key_id], **bundles
        ),
    )


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root``: a file's SHA-256, a link's target, or ``dir``."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")) if root.exists() else []:
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[key] = "dir"
        else:
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture(scope="module")
def server() -> Iterator[BundleServer]:
    with bundle_server() as running:
        yield running


async def test_a_good_bundle_is_confirmed_and_its_action_runs(
    tmp_path: Path, server: BundleServer
) -> None:
    device = Device(device_config(tmp_path))
    assert device.reports.reported[SOFTWARE_KEY] == {"agent_version": "0.1.0", "bundles": {}}
    await device.install(server, good_bundle(KEYS.trusted, "1.0.5"))
    assert [e[0] for e in device.reports.events] == ["bundle.installing", "bundle.confirmed"]
    assert device.reports.reported[SOFTWARE_KEY] == {
        "agent_version": "0.1.0",
        "bundles": {"hello": "1.0.5"},
    }
    result = await device.run("hello.say", who="technician")
    assert msgspec.json.decode(result["stdout"]) == {"hello": "technician"}
    # The token in the URL is a secret: the events never carry it.
    assert "secret-token" not in repr(device.reports.events)


async def test_a_hundred_bad_bundles_are_refused_and_write_nothing(
    tmp_path: Path, server: BundleServer
) -> None:
    device = Device(device_config(tmp_path))
    await device.install(server, good_bundle(KEYS.trusted, "1.0.5"))
    bundles_dir = tmp_path / "bundles"
    before = tree(bundles_dir)
    assert any(path.endswith("current") for path in before)
    bad = mutations(KEYS)
    assert len(bad) >= 100
    wrong: list[str] = []
    for mutation in bad:
        device.reports.events.clear()
        await _offer(device, server, mutation)
        event = device.reports.last()
        got = event[1].get("reason") if event and event[0] == "bundle.refused" else event
        if got != mutation.reason.value:
            wrong.append(f"{mutation.label}: {got} instead of {mutation.reason.value}")
        if tree(bundles_dir) != before:
            wrong.append(f"{mutation.label}: the active area changed")
    assert not wrong, "\n".join(wrong)
    refused = {k: n for k, n in device.host.stats.items() if k.startswith("bundle.refused")}
    assert sum(refused.values()) == len(bad)  # counted, by reason
    assert refused["bundle.refused:unsafe_path"] == 10
    assert refused["bundle.refused:key_expired"] == 2
    assert device.reports.reported[SOFTWARE_KEY]["bundles"] == {"hello": "1.0.5"}  # type: ignore[index]
    assert await device.run("hello.check")


async def _offer(device: Device, server: BundleServer, mutation: Mutation) -> None:
    try:
        manifest = read_manifest(mutation.data)
        name, version = manifest.name, manifest.version
    except BundleRefused:
        name, version = "hello", "1.1.0"
    await device.offer(
        server,
        mutation.data,
        name,
        version,
        mutation.announced_size,
        mutation.announced_sha256,
    )


async def test_a_failing_health_check_rolls_back_by_itself(
    tmp_path: Path, server: BundleServer
) -> None:
    device = Device(device_config(tmp_path))
    await device.install(server, good_bundle(KEYS.trusted, "1.0.5"))
    payload = {**PAYLOAD, "actions/check.py": b"import sys; sys.exit('sensor missing')\n"}
    broken = make_bundle(
        payload,
        KEYS.trusted,
        name="hello",
        version="1.2.0",
        target={"device_types": ["pi"]},
        actions=[{"name": "hello.check", "program": "actions/check.py", "timeout_s": 5}],
        health={"action": "hello.check", "timeout_s": 20},
    )
    device.reports.events.clear()
    await device.install(server, broken)
    kind, data = device.reports.events[-1]
    assert kind == "bundle.rolled_back"
    assert data["reason"] == Reason.HEALTH_FAILED.value
    assert data["previous"] == "1.0.5"
    assert "sensor missing" in data["detail"]
    assert device.reports.reported[SOFTWARE_KEY]["bundles"] == {"hello": "1.0.5"}  # type: ignore[index]
    assert "hello.say" in {a.name for a in device.registry.describe()}  # the old one's


async def test_a_signed_force_allows_exactly_one_downgrade(
    tmp_path: Path, server: BundleServer
) -> None:
    from fieldhub.bundles.force import sign_force

    device = Device(device_config(tmp_path))
    await device.install(server, good_bundle(KEYS.trusted, "2.0"))
    old = good_bundle(KEYS.trusted, "1.0")
    other_device = sign_force(KEYS.trusted, "hello", "1.0", ["pi-2"])
    await device.install(server, old, force=other_device)
    assert device.reports.events[-1][1]["reason"] == Reason.BAD_FORCE.value
    by_stranger = sign_force(KEYS.stranger, "hello", "1.0", ["pi-1"])
    await device.install(server, old, force=by_stranger)
    assert device.reports.events[-1][1]["reason"] == Reason.BAD_FORCE.value
    by_expired = sign_force(KEYS.expired, "hello", "1.0", ["pi-1"])  # a trusted key, past its date
    await device.install(server, old, force=by_expired)
    assert device.reports.events[-1][1]["reason"] == Reason.BAD_FORCE.value
    await device.install(server, old, force=sign_force(KEYS.trusted, "hello", "1.0", ["pi-1"]))
    assert device.reports.events[-1][0] == "bundle.confirmed"
    assert device.reports.reported[SOFTWARE_KEY]["bundles"] == {"hello": "1.0"}  # type: ignore[index]


async def test_the_install_command_refuses_at_once_what_it_can(
    tmp_path: Path, server: BundleServer
) -> None:
    device = Device(device_config(tmp_path))
    await device.install(server, good_bundle(KEYS.trusted, "1.0.5"))
    args = {"url": server.offer(b"x"), "sha256": "0" * 64, "size": 1, "name": "hello"}
    outcome = await device.registry.run(
        device.registry.bind("bundle.install", {**args, "version": "1.0"})
    )
    assert not outcome.ok
    assert outcome.error.startswith("downgrade: ")
    same = await device.registry.run(
        device.registry.bind("bundle.install", {**args, "version": "1.0.5.0"})
    )
    assert same.ok, same.error
    assert same.result["installed"] is True  # already runs: confirmed without a download
    assert device.reports.events[-1][0] == "bundle.confirmed"


async def test_rollback_goes_back_to_the_previous_version_then_removes(
    tmp_path: Path, server: BundleServer
) -> None:
    device = Device(device_config(tmp_path))
    await device.install(server, good_bundle(KEYS.trusted, "1.0.5"))
    await device.install(server, good_bundle(KEYS.trusted, "1.1.0"))
    result = await device.run("bundle.rollback", name="hello")
    assert result == {"name": "hello", "from": "1.1.0", "to": "1.0.5"}
    assert await _restart_asked(device.host)
    device.host.detach()
    device.start()
    assert device.reports.reported[SOFTWARE_KEY]["bundles"] == {"hello": "1.0.5"}  # type: ignore[index]
    await device.run("bundle.rollback", name="hello")  # no previous version: removed
    device.host.detach()
    device.start()
    assert device.reports.reported[SOFTWARE_KEY]["bundles"] == {}  # type: ignore[index]
    assert "hello.say" not in {a.name for a in device.registry.describe()}


async def test_a_full_disk_refuses_the_bundle_and_keeps_the_old_version(
    tmp_path: Path, server: BundleServer
) -> None:
    with small_disk(tmp_path, size_mb=4) as disk:
        device = Device(device_config(tmp_path / "data", dir=str(disk.path / "bundles")))
        await device.install(server, good_bundle(KEYS.trusted, "1.0.5"))
        before = tree(disk.path / "bundles")
        disk.fill()
        device.reports.events.clear()
        await device.install(server, good_bundle(KEYS.trusted, "1.1.0"))
        assert device.reports.events[-1][1]["reason"] == Reason.DISK_FULL.value
        assert tree(disk.path / "bundles") == before
        # Past the free-space check (the disk fills while writing): the same refusal, and
        # nothing of the new version is left behind.
        installed = Installed(disk.path / "bundles" / "installed")
        with pytest.raises(BundleRefused) as refused:
            installed.write("hello", "9-x", b"{}", {"big.bin": b"\0" * (1 << 20)})
        assert refused.value.reason is Reason.DISK_FULL
        disk.free()
        assert tree(disk.path / "bundles") == before
        assert await device.run("hello.say", who="still here")


async def test_a_bundle_config_is_checked_by_the_agents_schema(
    tmp_path: Path, server: BundleServer
) -> None:
    device = Device(device_config(tmp_path))
    wrong = b"device: {id: pi-1}\nhub: {broker: 'mqtt://h:1', username: u}\nunits: [{kind: x}]\n"
    bundle = make_bundle(
        {"agent.yaml": wrong}, KEYS.trusted, name="conf", version="1", config="agent.yaml"
    )
    await device.install(server, bundle)
    kind, data = device.reports.events[-1]
    assert (kind, data["reason"]) == ("bundle.refused", Reason.BAD_CONFIG.value)
    assert data["detail"].startswith("agent.yaml:3: units[0]")
    assert tree(tmp_path / "bundles") == {}


# A fixed key in the parameters below: a random one would make each pytest-xdist worker
# collect tests of other names. (The public key of the seed bytes 0..31.)
_KEY = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="


def test_trusted_keys_take_the_plain_form_and_one_with_an_expiry(tmp_path: Path) -> None:
    from fieldhub.agent.config import load_config

    path = tmp_path / "agent.yaml"
    path.write_text(
        "device: {id: pi-1}\nhub: {broker: 'mqtt://h:1', username: u, secret: s}\n"
        f"bundles:\n  trusted_keys:\n  - {_KEY}\n  - {{key: {_KEY}, until: {EXPIRED_AT}}}\n"
    )
    expiries = load_config(path).bundles.keys_with_expiry()
    assert expiries == [(_KEY, None), (_KEY, EXPIRED_AT_MS)]


@pytest.mark.parametrize(
    ("bundles", "line", "field"),
    [
        ("  trusted_keys: [not-a-key]\n", 5, "bundles.trusted_keys[0]"),
        (
            f"  trusted_keys:\n  - {{key: {_KEY}, until: soon}}\n",
            6,
            "bundles.trusted_keys[0].until",
        ),
        (
            f"  trusted_keys:\n  - {{key: {_KEY}, until: 2027-06-30}}\n",
            6,
            "bundles.trusted_keys[0].until",
        ),
        (
            f"  trusted_keys:\n  - {{key: {_KEY}, until: 2027-06-30 10:00:00}}\n",
            6,
            "bundles.trusted_keys[0].until",
        ),
        (
            "  trusted_keys:\n  - {key: not-a-key, until: 2027-06-30T00:00:00Z}\n",
            6,
            "bundles.trusted_keys[0].key",
        ),
        ("  revoked_keys: [ABCDEF]\n", 5, "bundles.revoked_keys[0]"),
        ("  trial_timeout_s: 0\n", 5, "bundles.trial_timeout_s"),
        ("  trusted: []\n", 5, "bundles.trusted"),
    ],
)
def test_a_wrong_bundles_section_names_line_and_field(
    tmp_path: Path, bundles: str, line: int, field: str
) -> None:
    from fieldhub.agent.config import ConfigError, load_config

    path = tmp_path / "agent.yaml"
    path.write_text(
        "device: {id: pi-1}\nhub: {broker: 'mqtt://h:1', username: u, secret: s}\n"
        f"data_dir: {tmp_path}\nbundles:\n{bundles}"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert (caught.value.line, caught.value.field) == (line, field)


async def test_https_downloads_check_the_hubs_certificate_and_pin(tmp_path: Path) -> None:
    from tests.support.certs import TestCa, public_key_pin, self_signed

    ca = TestCa(tmp_path / "ca")
    hub_cert = ca.issue("hub", hosts=["127.0.0.1"])
    bundle = good_bundle(KEYS.trusted, "1.0.5")
    with bundle_server(tls=hub_cert) as https:
        pinned = public_key_pin(hub_cert.cert)
        wrong_pin = device_config(tmp_path / "a", ca_file=str(ca.cert), pin_sha256="ab" * 32)
        unknown_ca = device_config(tmp_path / "b")  # the system's store knows no test CA
        for config, why in ((wrong_pin, "not the pinned one"), (unknown_ca, "CERTIFICATE_VERIFY")):
            refused = Device(config)
            await refused.install(https, bundle)
            kind, data = refused.reports.events[-1]
            assert (kind, data["reason"]) == ("bundle.refused", Reason.DOWNLOAD_FAILED.value)
            assert why in data["detail"]
            assert "secret-token" not in data["detail"]
        trusted = Device(device_config(tmp_path / "c", ca_file=str(ca.cert), pin_sha256=pinned))
        await trusted.install(https, bundle)
        assert trusted.reports.events[-1][0] == "bundle.confirmed"
    with bundle_server(tls=self_signed(tmp_path / "self", "hub", hosts=["127.0.0.1"])) as fake:
        impostor = Device(device_config(tmp_path / "d", ca_file=str(ca.cert)))
        await impostor.install(fake, bundle)
        assert impostor.reports.events[-1][1]["reason"] == Reason.DOWNLOAD_FAILED.value


async def test_a_requested_rollback_cut_short_is_finished_at_the_next_start(
    tmp_path: Path, server: BundleServer
) -> None:
    from fieldhub.agent.bundles import journal as journals
    from fieldhub.agent.bundles.installed import CURRENT, PREVIOUS

    config = device_config(tmp_path)
    device = Device(config)
    await device.install(server, good_bundle(KEYS.trusted, "1.0.5"))
    await device.install(server, good_bundle(KEYS.trusted, "1.1.0"))
    installed = device.host.installed
    # What bundle.rollback records before it moves the links; then the power goes.
    journals.save(
        tmp_path / "bundles" / "journal.json",
        journals.Journal(
            step="rolling_back",
            name="hello",
            version="1.1.0",
            directory=installed.target("hello", CURRENT) or "",
            previous=installed.target("hello", PREVIOUS),
        ),
    )
    again = Device(config)
    assert again.reports.reported[SOFTWARE_KEY]["bundles"] == {"hello": "1.0.5"}  # type: ignore[index]
    kind, data = again.reports.events[-1]
    assert (kind, data["previous"], "reason" in data) == ("bundle.rolled_back", "1.0.5", False)
