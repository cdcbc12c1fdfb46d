"""One child of the gateway: its own outbox and sender on the gateway's shared connection.

A child (a paired LAN controller) is a device of the hub with its own seq, acks and rejects
(docs/protocol.md), so it gets what an agent has: an outbox that keeps every report until
the hub stored it, and a :class:`~fieldhub.agent.sender.Sender` that keeps the window and
resends. What differs is what it shares with the other children: the gateway's connection,
which may use a child's topics once the hub lists it as the gateway's child
(``fieldhub.protocol.acl``; until then the broker refuses the child's subscriptions, and its
reports wait in its outbox), and the one file all outboxes live in (``agent/_outbox_file.py``:
a file per child cost 160 KB of memory each).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from fieldhub.agent.outbox import Outbox, OutboxFile, OutboxReporter
from fieldhub.agent.sender import ClientLink, Sender
from fieldhub.agent.uplink import UplinkSettings
from fieldhub.gateway.ports import ReportChannel
from fieldhub.mqtt import MqttClient
from fieldhub.protocol import Channel, topic_for

__all__ = ["LINKED", "NOT_YET_LINKED", "Child"]

LINKED: Final = "linked"
NOT_YET_LINKED: Final = "not linked since the gateway started"


class Child:
    """A child's outbox, sender and link state. Open with :meth:`open`, end with :meth:`close`.

    Args:
        child_id: the controller's id: the child device's id in the hub.
        file: the file its outbox lives in, shared by all children.
        client: the gateway's MQTT connection.
        settings: the uplink's window and resend timing (the agent's).
        max_messages: reports kept at most while the hub is away.
    """

    def __init__(
        self,
        child_id: str,
        file: OutboxFile,
        client: MqttClient,
        settings: UplinkSettings,
        max_messages: int,
    ) -> None:
        self.child_id = child_id
        self.link = ClientLink(client)  # the gateway's connection, ready once the child's is
        self.state = NOT_YET_LINKED  # LINKED, or why the LAN link is down
        self.topics = {channel: topic_for(child_id, channel) for channel in Channel}
        # No linger: the shared file already puts the work of every child that comes while a
        # transaction runs into the next one; a wait per child would only add to its latency.
        self.outbox = Outbox(
            file.path, max_messages=max_messages, linger_s=0.0, shared=(file, child_id)
        )
        self.sender = Sender(self.outbox, child_id, self.link, settings)
        self._reporter: OutboxReporter | None = None

    async def open(self) -> None:
        """Open the outbox (a backlog from before a restart drains once subscribed)."""
        await self.outbox.open()
        self._reporter = OutboxReporter(self.outbox)
        self.sender.start()

    async def close(self) -> None:
        """Stop sending, commit what is pending."""
        await self.sender.stop()
        await self.outbox.close()

    @property
    def reporter(self) -> OutboxReporter:
        """Reports into this child's outbox (checked against the wire contract there)."""
        if self._reporter is None:
            raise RuntimeError(f"child {self.child_id} is not open")
        return self._reporter

    async def report(self, channel: ReportChannel, body: Mapping[str, Any]) -> None:
        """One report of the controller, durable on return (an invalid one is counted in
        the outbox's ``stats.invalid`` and dropped: it could never be stored)."""
        reporter = self.reporter
        if channel == "telemetry":
            samples = body.get("samples")
            if isinstance(samples, list):
                for sample in samples:
                    if isinstance(sample, dict):  # anything else: no values, counted invalid
                        reporter.telemetry(dict(sample.get("values") or {}), sample.get("ts"))
                    else:
                        reporter.telemetry({})
            else:
                values = body.get("values")
                reporter.telemetry(dict(values) if isinstance(values, dict) else {}, body.get("ts"))
        elif channel == "event":
            reporter.event(
                str(body.get("type", "")),
                body.get("severity", "info"),
                str(body.get("message", "")),
                body.get("data"),
            )
        else:
            state = body.get("state")
            reporter.state(dict(state) if isinstance(state, dict) else {})
        await self.outbox.sync()
