"""Request and response bodies of the bundle and rollout routes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fieldhub.hub.api.fields import EpochMs, StoredJson
from fieldhub.hub.rollouts import BundleKeyRecord, BundleRecord, Run
from fieldhub.hub.rollouts.plan import Plan
from fieldhub.protocol.topics import DEVICE_ID_PATTERN

MAX_TARGET = 10_000
VERSION = r"^[0-9]{1,9}(\.[0-9]{1,9}){0,3}$"


class KeyIn(BaseModel):
    """A public key bundles may be signed with, as ``fieldhub bundle keygen`` prints it."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=64, examples=["release-2026"])]
    public_key: Annotated[
        str, Field(min_length=1, max_length=64, description="base64 of the raw Ed25519 key")
    ]
    expires_at: Annotated[
        EpochMs | None,
        Field(description="epoch ms; from then on, bundles it signed are refused"),
    ] = None


class KeyOut(BaseModel):
    """A registered public key (no private key ever reaches the hub)."""

    key_id: str
    name: str
    public_key: str
    added_at: int
    added_by: str
    revoked_at: int | None
    expires_at: int | None

    @classmethod
    def of(cls, record: BundleKeyRecord) -> KeyOut:
        """The answer for ``record``."""
        return cls(**vars_of(record))


def vars_of(record: Any) -> dict[str, Any]:
    """A slotted dataclass's fields as a dict."""
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


class BundleOut(BaseModel):
    """A stored bundle: ``id`` is its SHA-256, what devices check the download against."""

    id: str
    name: str
    version: str
    size: int
    key_id: str
    manifest: StoredJson
    uploaded_at: int
    uploaded_by: str

    @classmethod
    def of(cls, record: BundleRecord) -> BundleOut:
        """The answer for ``record``."""
        return cls(**vars_of(record))


class TargetIn(BaseModel):
    """Which devices: exactly one of ``devices``, ``labels``, ``all``; ``below`` keeps only
    those whose installed version of the bundle is lower than it."""

    model_config = ConfigDict(extra="forbid")

    devices: Annotated[
        list[Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]] | None,
        Field(min_length=1, max_length=MAX_TARGET),
    ] = None
    labels: Annotated[dict[str, str] | None, Field(min_length=1)] = None
    all: bool = False
    below: Annotated[str | None, Field(pattern=VERSION, examples=["1.4.0"])] = None

    @model_validator(mode="after")
    def _one_choice(self) -> TargetIn:
        chosen = [self.devices is not None, self.labels is not None, self.all]
        if sum(chosen) != 1:
            raise ValueError("give exactly one of devices, labels or all")
        return self


class RolloutIn(BaseModel):
    """A rollout: which bundle, to which devices, in which waves (docs/rollouts.md)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "bundle": "3f1c…",
                    "target": {"labels": {"site": "berlin"}},
                    "canary": 2,
                    "waves": [25, 100],
                    "per_minute": 30,
                    "promote_at": 0.95,
                    "abort_below": 0.5,
                }
            ]
        },
    )

    bundle: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="the bundle's id")]
    target: TargetIn
    canary: Annotated[int, Field(ge=0, le=MAX_TARGET, description="devices in the first wave")] = 1
    waves: Annotated[
        list[Annotated[float, Field(gt=0, le=100)]],
        Field(min_length=1, max_length=20, description="cumulative % of the devices; last 100"),
    ] = [100.0]
    per_minute: Annotated[
        float | None, Field(gt=0, le=60_000, description="devices sent to per minute")
    ] = None
    promote_at: Annotated[float, Field(ge=0, le=1, description="success ratio to go on")] = 1.0
    abort_below: Annotated[float, Field(ge=0, le=1, description="success ratio to abort")] = 0.5
    approval: bool = Field(False, description="wait for an operator between waves")
    retries: Annotated[int, Field(ge=0, le=5, description="automatic retries per device")] = 1
    deadline_s: Annotated[
        int, Field(ge=10, le=7 * 86400, description="time for a device to confirm")
    ] = 900
    rollback_on_abort: bool = True

    def plan(self) -> Plan:
        """The plan; its rules (waves increasing and ending at 100, the thresholds' order)
        are ``rollouts/plan.py``'s and refused there.

        Raises:
            ValueError: the plan breaks one of them.
        """
        target = self.target.model_dump(exclude_none=True, exclude_defaults=True)
        fields = self.model_dump(exclude={"bundle", "target"})
        return Plan(target=target, **{**fields, "waves": tuple(self.waves)})


class AbortIn(BaseModel):
    """How to abort: ``rollback`` undoes the devices already updated (left out: as planned)."""

    model_config = ConfigDict(extra="forbid")

    rollback: bool | None = None


class RolloutDeviceOut(BaseModel):
    """One device's part in a rollout."""

    device_id: str
    wave: int
    state: str
    attempts: int
    reason: str
    previous: str
    deadline_at: int | None
    updated_at: int


class RolloutOut(BaseModel):
    """A rollout with its devices (the caller's only) and a count per state."""

    id: str
    bundle: BundleOut
    plan: StoredJson
    status: str
    wave: int
    waves: int
    reason: str
    created_by: str
    created_at: int
    updated_at: int
    counts: dict[str, int]
    devices: list[RolloutDeviceOut] | None = None

    @classmethod
    def of(cls, run: Run, sees: Callable[[str], bool], *, devices: bool) -> RolloutOut:
        """The answer for ``run`` as a caller who ``sees`` some devices reads it: every field
        that lists or counts devices leaves the others out."""
        mine = [device for device in run.devices.values() if sees(device.device_id)]
        record = run.record
        return cls(
            id=record.id,
            bundle=BundleOut.of(run.bundle),
            plan={**record.plan, "target": _shown_target(record.plan.get("target", {}), sees)},
            status=record.status,
            wave=record.wave,
            waves=run.last_wave + 1,
            reason=record.reason,
            created_by=record.created_by,
            created_at=record.created_at,
            updated_at=record.updated_at,
            counts=dict(Counter(device.state for device in mine)),
            devices=[
                RolloutDeviceOut(**{k: v for k, v in vars_of(d).items() if k in _DEVICE_FIELDS})
                for d in mine
            ]
            if devices
            else None,
        )


_DEVICE_FIELDS = frozenset(RolloutDeviceOut.model_fields)


def _shown_target(target: dict[str, Any], sees: Callable[[str], bool]) -> dict[str, Any]:
    if "devices" in target:
        return {**target, "devices": [d for d in target["devices"] if sees(d)]}
    return target
