"""The FastAPI application of a hub: routes, error shape, metrics."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from fieldhub import __version__
from fieldhub.hub.api import devices, events
from fieldhub.hub.api.deps import get_hub
from fieldhub.hub.api.models import Health
from fieldhub.hub.metrics import HubCollector, render
from fieldhub.hub.service import Hub


class _BusState:
    """Truthy while the hub's bus is connected (read by the metrics collector)."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def __bool__(self) -> bool:
        return self._hub.bus.connected


def create_app(hub: Hub) -> FastAPI:
    """The API of ``hub`` (which must be started before the app serves requests)."""
    app = FastAPI(
        title="fieldhub",
        version=__version__,
        description="Monitor and control devices in the field. Timestamps are epoch ms.",
    )
    app.state.hub = hub
    registry = CollectorRegistry()
    registry.register(HubCollector(hub.stats, hub.presence, _BusState(hub)))
    app.include_router(devices.router)
    app.include_router(events.router)

    @app.get("/api/health", tags=["hub"], summary="Health")
    async def health(hub: Annotated[Hub, Depends(get_hub)]) -> Health:
        """Whether the hub runs and reaches its broker; device counts by presence."""
        connected = hub.bus.connected
        return Health(
            status="ok" if connected else "degraded",
            version=hub.version,
            instance=hub.settings.instance,
            uptime_s=round(time.time() - hub.started_at, 3),
            broker=hub.bus.address,
            broker_connected=connected,
            embedded_broker=hub.broker is not None,
            database=hub.engine.url.get_backend_name(),
            devices=hub.presence.counts(),
        )

    @app.get("/metrics", tags=["hub"], summary="Prometheus metrics", include_in_schema=True)
    async def metrics() -> Response:
        """Counters and gauges in the Prometheus text format."""
        return Response(render(registry), media_type=CONTENT_TYPE_LATEST)

    return app
