"""Prometheus metrics of the cluster parts of one hub process: which process does the singleton
work (an operator running several asks this first), and what the commit feed sent, received
and had to leave out."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fieldhub.hub.cluster.feed import ClusterFeed
from fieldhub.hub.cluster.singletons import Singletons


class ClusterCollector(Collector):
    """Read at scrape time (``feed`` is asked then: the hub makes it when it starts)."""

    def __init__(self, singletons: Singletons, feed: Callable[[], ClusterFeed | None]) -> None:
        self._singletons = singletons
        self._feed = feed

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        lease = self._singletons.lease
        yield GaugeMetricFamily(
            "fieldhub_singleton_lease_held",
            "1 while this process holds the lease and runs the singleton work (docs/scaling.md)",
            value=int(lease.held),
        )
        yield CounterMetricFamily(
            "fieldhub_singleton_lease_gained",
            "Times this process took the lease",
            value=lease.gained,
        )
        feed = self._feed()
        if feed is None:
            return
        notifications = CounterMetricFamily(
            "fieldhub_cluster_feed",
            "The commit feed between hub processes: notifications sent and received, batches "
            "dropped (queue full) and messages too large for a notification",
            labels=["outcome"],
        )
        for outcome, value in (
            ("sent", feed.sent),
            ("received", feed.received),
            ("dropped", feed.dropped),
            ("too_large", feed.too_large),
        ):
            notifications.add_metric([outcome], value)
        yield notifications
