"""Prometheus metrics of one hub, read from its live counters when scraped."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fieldhub.hub.devices.presence import PresenceTracker
from fieldhub.hub.ingest.stats import IngestStats
from fieldhub.hub.notify.routing import DROP_REASONS, HOLD_REASONS, RoutingStats
from fieldhub.hub.retention import RetentionService


class HubCollector(Collector):
    """Turns ``IngestStats``, command counts and presence counts into metric families at
    scrape time."""

    def __init__(
        self,
        stats: IngestStats,
        presence: PresenceTracker,
        broker_connected: object,
        commands: Callable[[], Counter[str]] = Counter,
        violations: Callable[[], Mapping[str, int]] = dict,
        notifications: Callable[[], Mapping[str, int]] = dict,
        ack_refusals: Callable[[], Mapping[str, int]] = dict,
        routing: RoutingStats | None = None,
        bundle_refusals: Callable[[], Mapping[tuple[str, str], int]] = dict,
        media_refusals: Callable[[], Mapping[str, int]] = dict,
        media_bytes: Callable[[], int] = int,
        retention: Callable[[], RetentionService | None] = lambda: None,
    ) -> None:
        self._stats = stats
        self._presence = presence
        self._connected = broker_connected
        self._commands = commands  # read at scrape time: the hub starts after the app exists
        self._violations = violations
        self._notifications = notifications
        self._ack_refusals = ack_refusals
        self._routing = routing or RoutingStats()
        self._bundle_refusals = bundle_refusals
        self._media_refusals = media_refusals
        self._media_bytes = media_bytes
        self._retention = retention

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """Yield every metric family."""
        s = self._stats
        received = CounterMetricFamily(
            "fieldhub_messages_received", "MQTT messages received, by channel", labels=["channel"]
        )
        for channel, count in sorted(s.received.items()):
            received.add_metric([str(channel)], count)
        yield received
        rejected = CounterMetricFamily(
            "fieldhub_messages_rejected", "Messages refused, by reason", labels=["reason"]
        )
        for reason in (
            "bad_topic",
            "unknown_device",
            "invalid_payload",
            "unknown_command",
            "wrong_device",
        ):
            rejected.add_metric([reason], s.rejected.get(reason, 0))
        yield rejected
        commands = CounterMetricFamily(
            "fieldhub_commands",
            "Commands by how they ended, and requests refused before queueing (refused)",
            labels=["outcome"],
        )
        counts = self._commands()
        for outcome in (
            "succeeded",
            "failed",
            "timed_out",
            "expired",
            "late",
            "unsupported",
            "aborted",
            "refused",
        ):
            commands.add_metric([outcome], counts.get(outcome, 0))
        yield commands
        for name, doc, value in (
            ("duplicates", "Sequenced messages received again and not stored twice", s.duplicates),
            ("messages_stored", "Sequenced messages committed", s.messages_stored),
            ("points_stored", "Telemetry values committed", s.points_stored),
            ("events_stored", "Device events committed", s.events_stored),
            ("batches", "Ingest commits", s.batches),
            (
                "write_errors",
                "Ingest commits that failed (retried while the store is out; else resent)",
                s.write_errors,
            ),
            ("commit_seconds", "Time spent committing batches", s.commit_seconds),
            (
                "backpressure_pauses",
                "Times ingest asked the bus to slow down",
                s.backpressure_pauses,
            ),
        ):
            yield CounterMetricFamily(f"fieldhub_ingest_{name}", doc, value=value)
        devices = GaugeMetricFamily("fieldhub_devices", "Devices by presence", labels=["presence"])
        for state, count in self._presence.counts().items():
            devices.add_metric([state], count)
        yield devices
        violations = CounterMetricFamily(
            "fieldhub_broker_protocol_violations",
            "Connections the embedded broker closed for breaking MQTT 3.1.1, by rule",
            labels=["rule"],
        )
        for rule, count in sorted(self._violations().items()):
            violations.add_metric([rule], count)
        yield violations
        attempts = CounterMetricFamily(
            "fieldhub_notification_attempts",
            "Notification delivery attempts by outcome (retried: failed, tried again later; "
            "dead: failed for good)",
            labels=["outcome"],
        )
        tried = self._notifications()
        for outcome in ("delivered", "retried", "dead"):
            attempts.add_metric([outcome], tried.get(outcome, 0))
        yield attempts
        refused = CounterMetricFamily(
            "fieldhub_ack_link_refusals",
            "Acknowledge links refused, by reason (forged: someone guessing)",
            labels=["reason"],
        )
        refusals = self._ack_refusals()
        for reason in ("forged", "expired", "used"):
            refused.add_metric([reason], refusals.get(reason, 0))
        yield refused
        yield from self._routing_families()
        bundles = CounterMetricFamily(
            "fieldhub_bundle_refusals",
            "Bundle uploads refused by reason code, download tokens refused (forged, expired), "
            "rollout requests refused",
            labels=["what", "reason"],
        )
        for (what, reason), count in sorted(self._bundle_refusals().items()):
            bundles.add_metric([what, reason], count)
        yield bundles
        media_refused = CounterMetricFamily(
            "fieldhub_media_refusals",
            "Media refused, by code (docs/media.md): uploads and upload requests, and"
            " download links (download_forged, download_expired)",
            labels=["code"],
        )
        for code, count in sorted(self._media_refusals().items()):
            media_refused.add_metric([code], count)
        yield media_refused
        yield GaugeMetricFamily(
            "fieldhub_media_bytes",
            "Bytes of media stored: objects, thumbnails, partial uploads (what the quota counts)",
            value=float(self._media_bytes()),
        )
        yield from self._retention_families()
        yield GaugeMetricFamily(
            "fieldhub_broker_connected",
            "1 while the hub is connected to its broker",
            value=1.0 if bool(self._connected) else 0.0,
        )

    def _retention_families(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        retention = self._retention()
        if retention is None:
            return
        removed = CounterMetricFamily(
            "fieldhub_retention_removed",
            "Rows retention removed, by kind (budget: raw samples the disk budget guard trimmed "
            "before the policy would have)",
            labels=["kind"],
        )
        for kind in ("samples", "rollups", "events", "budget"):
            removed.add_metric([kind], retention.trimmer.removed.get(kind, 0))
        yield removed
        yield CounterMetricFamily(
            "fieldhub_retention_budget_trims",
            "Times the disk budget guard trimmed the oldest raw samples (past 80 % of the budget)",
            value=retention.guard.trims,
        )
        budget = retention.budget
        if budget is not None:
            yield GaugeMetricFamily(
                "fieldhub_disk_budget_used_ratio",
                "Share of the disk budget in use (health is degraded at 0.8)",
                value=budget.share,
            )

    def _routing_families(self) -> Iterator[CounterMetricFamily]:
        routing = self._routing
        yield CounterMetricFamily(
            "fieldhub_notification_routed_changes",
            "Alarm changes that reached at least one subscription",
            value=routing.routed,
        )
        recipients = CounterMetricFamily(
            "fieldhub_notification_recipients",
            "Subscriptions an alarm change reached, by delivery (now: a message; digest: gathered)",
            labels=["delivery"],
        )
        for delivery in ("now", "digest"):
            recipients.add_metric([delivery], routing.recipients.get(delivery, 0))
        yield recipients
        dropped = CounterMetricFamily(
            "fieldhub_notification_dropped_changes",
            "Alarm changes that reached nobody, by reason",
            labels=["reason"],
        )
        for reason in DROP_REASONS:
            dropped.add_metric([reason], routing.dropped.get(reason, 0))
        yield dropped
        held = CounterMetricFamily(
            "fieldhub_notification_held",
            "Messages enqueued to wait, by reason (quiet hours, a maintenance window)",
            labels=["reason"],
        )
        for hold in HOLD_REASONS:
            held.add_metric([hold], routing.held.get(hold, 0))
        yield held


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format of everything in ``registry``."""
    return generate_latest(registry)
