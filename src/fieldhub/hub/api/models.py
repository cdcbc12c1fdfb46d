"""Request and response bodies of the REST API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fieldhub.hub.api.fields import Count, JsonObject, StoredJson, StoredValue
from fieldhub.hub.devices import DeviceRecord
from fieldhub.hub.devices.twin import TwinView
from fieldhub.hub.rollouts import software_of
from fieldhub.protocol.topics import DEVICE_ID_PATTERN

LabelMap = dict[str, str]


PresenceState = Literal["online", "offline", "stale", "unknown", "unreachable"]


class Presence(BaseModel):
    """Whether a device is there, since when, and why the hub thinks so."""

    state: PresenceState
    since: int | None = Field(None, description="epoch ms of the last change")
    reason: str = ""
    connected: bool | None = Field(None, description="transport state from status / last will")
    last_seen: int | None = Field(None, description="epoch ms of the last committed message")


class Software(BaseModel):
    """What a device reports running (state key ``software``, docs/rollouts.md)."""

    agent_version: str
    bundles: dict[str, str] = Field(description="installed bundles: name → version")


class Device(BaseModel):
    """A registered device."""

    id: str
    name: str
    labels: LabelMap
    attributes: StoredJson
    created_at: int
    updated_at: int
    presence: Presence
    acked_seq: int = Field(description="highest contiguous seq the hub has stored")
    software: Software | None = Field(None, description="agent version, installed bundles")
    parent: str | None = Field(None, description="the gateway this device speaks through")

    @classmethod
    def from_record(cls, record: DeviceRecord) -> Device:
        """The API view of a stored device."""
        software = software_of(record.reported)
        return cls(
            software=Software(agent_version=software[0], bundles=software[1]) if software else None,
            id=record.id,
            name=record.name,
            labels=record.labels,
            attributes=record.attributes,
            created_at=record.created_at,
            updated_at=record.updated_at,
            acked_seq=record.acked_seq,
            parent=record.parent_id,
            presence=Presence(
                state=record.presence,  # type: ignore[arg-type]
                since=record.presence_since,
                reason=record.presence_reason,
                connected=record.connected,
                last_seen=record.last_seen,
            ),
        )


class DeviceCredentialsOut(BaseModel):
    """How the device logs in to the MQTT broker; the secret is shown this once only."""

    username: str
    secret: str
    client_id: str = Field(description="the MQTT client id the device must use: its id")


class CertificateRequest(BaseModel):
    """How long a new device certificate is valid."""

    days: int = Field(default=365, ge=1, le=3650)


class DeviceCertificateOut(BaseModel):
    """A device's client certificate with its private key (PEM), shown this once only; ``ca``
    is the hub's device CA (the broker trusts it; the device needs it only to show a chain)."""

    serial: str = Field(description="hex, as the revocation list and the audit log name it")
    not_after: str = Field(description="the end of its validity, ISO 8601 UTC")
    certificate: str
    key: str
    ca: str


class CertificatesRevoked(BaseModel):
    """The serials (hex) of the device's certificates just put on the revocation list."""

    revoked: list[str]


class CredentialRotation(BaseModel):
    """How long the device's old keys keep working after a rotation."""

    grace_s: int = Field(default=3600, ge=0, le=30 * 86_400)


class DeviceCreated(Device):
    """A device just registered, with its first credentials (never shown again); a child
    behind a gateway has none (``null``): its gateway speaks for it."""

    credentials: DeviceCredentialsOut | None


class DeviceCreate(BaseModel):
    """A device to register."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=DEVICE_ID_PATTERN, description="1-64 of A-Z a-z 0-9 . _ -")
    name: str = Field("", max_length=128)
    labels: LabelMap = Field(default_factory=dict, description='e.g. {"site": "berlin"}')
    attributes: JsonObject = Field(default_factory=dict)
    parent: str | None = Field(
        None,
        pattern=DEVICE_ID_PATTERN,
        description="a registered gateway: the device speaks through it, with no credentials "
        "of its own (docs/gateway.md); without labels it takes the gateway's",
    )


class DeviceUpdate(BaseModel):
    """Fields to change; omitted fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=128)
    labels: LabelMap | None = None
    attributes: JsonObject | None = None


class LatestValueOut(BaseModel):
    """The newest value of one key."""

    ts: int
    value: bool | int | float | str | None


class History(BaseModel):
    """Points per key: raw, or one per bucket (labelled by the bucket's start)."""

    device_id: str
    start: int
    end: int
    bucket_ms: int | None
    agg: str | None
    series: dict[str, list[tuple[int, bool | int | float | str | None]]]


class DeltaOut(BaseModel):
    """A desired key the device does not report as desired (``reported`` null: not at all)."""

    desired: StoredValue
    reported: StoredValue


class TwinOut(BaseModel):
    """The device twin: what is desired (with its version) and what the device reports."""

    desired: StoredJson
    version: int = Field(description="of the desired state; 0: nothing desired yet")
    reported: StoredJson = Field(description="merged key by key from the device's reports")
    reported_ts: int | None = Field(description="epoch ms of the newest report")
    delta: dict[str, DeltaOut] = Field(description="desired keys not reported as desired")
    in_sync: bool = Field(
        description="the device applied this version and reports every key as desired"
    )
    desired_at: int | None = Field(description="epoch ms of the last change")
    desired_by: str = Field(description="who made the last change")

    @classmethod
    def from_view(cls, view: TwinView) -> TwinOut:
        """The API view of a twin."""
        return cls(
            desired=view.desired,
            version=view.version,
            reported=view.reported,
            reported_ts=view.reported_ts,
            delta={
                key: DeltaOut(desired=d.desired, reported=d.reported)
                for key, d in view.delta.items()
            },
            in_sync=view.in_sync,
            desired_at=view.desired_at,
            desired_by=view.desired_by,
        )


class DesiredChange(BaseModel):
    """A change of the desired state, made from the version the client last read."""

    model_config = ConfigDict(extra="forbid")

    version: Count = Field(description="the version you read (GET); another one: 409")
    desired: JsonObject = Field(
        description='keys to set, e.g. {"socket": "off"}; null removes a key',
        examples=[{"socket": "off", "lock": "locked"}],
    )


class MediaOut(BaseModel):
    """An object an event announced: ``pending`` while it is still coming, then ``complete``
    with its download URL working (and a thumbnail URL for images)."""

    id: int
    sha256: str
    type: str
    size: int
    name: str
    state: Literal["pending", "complete"]
    url: str
    thumbnail: str | None


class EventOut(BaseModel):
    """One event, with the media it announced."""

    id: int
    device_id: str
    seq: int | None
    ts: int
    received_at: int
    type: str
    severity: str
    message: str
    data: StoredJson
    media: list[MediaOut] = []


class EventPageOut(BaseModel):
    """Events, newest first; pass ``next_cursor`` as ``cursor`` for the next page."""

    events: list[EventOut]
    next_cursor: str | None


class Health(BaseModel):
    """Is the hub alive and connected; the details only for ``hub:read`` (admins)."""

    status: Literal["ok", "degraded"]
    reasons: list[str] | None = Field(
        default=None,
        description="why the hub is degraded, e.g. 'storage: disk full (SQLITE_FULL) since …'",
    )
    version: str | None = None
    instance: str | None = None
    uptime_s: float | None = None
    broker: str | None = None
    broker_connected: bool | None = None
    embedded_broker: bool | None = None
    broker_kind: Literal["managed-mosquitto", "embedded", "external"] | None = Field(
        default=None,
        description="the hub's own Mosquitto child, its embedded amqtt broker, or --broker's",
    )
    database: str | None = None
    devices: dict[str, int] | None = None
