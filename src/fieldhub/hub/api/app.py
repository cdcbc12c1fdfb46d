"""The FastAPI application of a hub: routes, error shape, metrics."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Response
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from fieldhub import __version__
from fieldhub.hub.api import (
    account,
    ack,
    alarm_preview,
    alarms,
    apidocs,
    audit,
    bundles,
    claims,
    commands,
    devices,
    escalation,
    events,
    fleet,
    maintenance,
    media,
    notifications,
    retention,
    rollouts,
    subscriptions,
    tokens,
    users,
    web,
)
from fieldhub.hub.api.deps import hub_dependency
from fieldhub.hub.api.errors import http_error, hub_error, storage_error_handler, validation_error
from fieldhub.hub.api.headers import SecurityHeaders
from fieldhub.hub.api.limits import DEFAULT_MAX_BODY, BodySizeLimit
from fieldhub.hub.api.live import router as live_router
from fieldhub.hub.api.models import Health
from fieldhub.hub.api.security import annotate_permissions, require
from fieldhub.hub.app import Hub
from fieldhub.hub.auth import Permission, Principal
from fieldhub.hub.cluster.metrics import ClusterCollector
from fieldhub.hub.errors import HubError
from fieldhub.hub.metrics import HubCollector, render


class _BusState:
    """Truthy while the hub's bus is connected (read by the metrics collector)."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def __bool__(self) -> bool:
        return self._hub.bus.connected


class _HubApi(FastAPI):
    """FastAPI with the security headers outside even Starlette's error middleware.

    Starlette always puts ``ServerErrorMiddleware`` outermost, so an unexpected exception's
    500 would skip every middleware added with ``add_middleware``, the headers among them.
    """

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack())


def _health_reasons(hub: Hub) -> list[str]:
    """Why the hub is degraded: no broker, a store it cannot write, a disk budget past 80 %."""
    reasons = [] if hub.bus.connected else ["broker: not connected"]
    outage = hub.storage.outage
    if outage is not None:
        reasons.append(f"storage: {outage.describe()}")
    budget = hub.retention.budget
    if budget is not None and budget.over:
        reasons.append(f"disk: {budget.describe()}")
    return reasons


def create_app(hub: Hub, *, max_body: int = DEFAULT_MAX_BODY) -> FastAPI:
    """The API of ``hub`` (which must be started before the app serves requests).

    Every route declares its permission (``api/security.py``); request bodies over
    ``max_body`` bytes are refused with 413; every answer carries the security headers
    (``api/headers.py``).
    """
    app = _HubApi(
        title="fieldhub",
        version=__version__,
        description="Monitor and control devices in the field. Timestamps are epoch ms.",
        docs_url=None,  # the hub's own /docs and /redoc (api/apidocs.py)
        redoc_url=None,
    )
    app.state.hub = hub
    registry = CollectorRegistry()
    registry.register(
        HubCollector(
            hub.stats,
            hub.presence,
            _BusState(hub),
            lambda: hub.commands.counts,
            lambda: hub.broker.violations if hub.broker else {},
            # read at scrape time: the hub may start after the app exists
            notifications=lambda: hub.notifications.attempt_counts(),  # noqa: PLW0108
            ack_refusals=lambda: hub.ack_links.refusals if hub.ack_links is not None else {},
            routing=hub.routing.stats,
            bundle_refusals=lambda: hub.rollouts.refusals(),  # noqa: PLW0108
            media_refusals=lambda: hub.media.uploads.refusals + hub.media.link_refusals,
            media_bytes=lambda: hub.media.files.used,
            retention=lambda: hub.retention,
        )
    )
    registry.register(ClusterCollector(hub.singletons, lambda: hub.feed))
    bundles_limit = {"/api/bundles": hub.settings.bundle_max_bytes}  # a file, not JSON
    app.add_middleware(
        BodySizeLimit, max_bytes=max_body, larger=bundles_limit, unlimited=(media.UPLOAD_PREFIX,)
    )
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HubError, hub_error)
    app.add_exception_handler(StarletteHTTPException, http_error)  # a 422's shape, as above
    app.add_exception_handler(SQLAlchemyError, storage_error_handler(hub.storage.failed))  # 503
    app.include_router(devices.router)
    app.include_router(fleet.router)
    app.include_router(events.router)
    app.include_router(media.router)
    app.include_router(media.uploads)
    app.include_router(media.links)
    app.include_router(commands.router)
    app.include_router(alarm_preview.router)
    app.include_router(alarms.rules_router)
    app.include_router(alarms.alarms_router)
    app.include_router(maintenance.router)
    app.include_router(account.router)
    app.include_router(tokens.router)
    app.include_router(users.router)
    app.include_router(audit.router)
    app.include_router(notifications.channels)
    app.include_router(notifications.outbox)
    app.include_router(subscriptions.router)
    app.include_router(escalation.router)
    app.include_router(claims.device_router)
    app.include_router(claims.operator_router)
    bundles.install(app)  # /api/bundles, /api/bundle-keys; download tokens kept out of logs
    app.include_router(rollouts.router)
    app.include_router(retention.router)
    app.include_router(live_router)  # the /api/live WebSocket (docs/live.md)
    apidocs.install(app)  # /docs and /redoc
    ack.install(app)  # /ack/{token}: acknowledge from a notification's link
    media.install()  # upload signatures kept out of the access log
    web.install(app)  # the dashboard: pages at /, /devices/{id}, ...; files under /static

    @app.get("/api/health", tags=["hub"], summary="Health", response_model_exclude_none=True)
    async def health(
        hub: Annotated[Hub, Depends(hub_dependency)],
        who: Annotated[Principal, require(Permission.PUBLIC)],
    ) -> Health:
        """Whether the hub runs, reaches its broker and can write its store; to ``hub:read``
        (admins) also why not, version, broker, database and device counts by presence, which
        are nobody else's business. A degraded hub still answers 200: it is alive, and reads
        work (docs/health.md)."""
        connected = hub.bus.connected
        reasons = _health_reasons(hub)
        status: Literal["ok", "degraded"] = "degraded" if reasons else "ok"
        if not who.can(Permission.HUB_READ):
            return Health(status=status)
        return Health(
            status=status,
            reasons=reasons,
            version=hub.version,
            instance=hub.settings.instance,
            uptime_s=round(time.time() - hub.started_at, 3),
            broker=hub.bus.address,
            broker_connected=connected,
            embedded_broker=hub.broker is not None,
            broker_kind=hub.broker_kind,
            database=hub.engine.url.get_backend_name(),
            devices=hub.presence.counts(),
        )

    @app.get(
        "/metrics",
        tags=["hub"],
        summary="Prometheus metrics",
        include_in_schema=True,
        dependencies=[require(Permission.METRICS_READ)],
    )
    async def metrics() -> Response:
        """Counters and gauges in the Prometheus text format.

        Needs an admin's API token with the ``metrics`` scope (Prometheus:
        ``authorization: {credentials_file: ...}``): fleet size and rates are reconnaissance.
        """
        return Response(render(registry), media_type=CONTENT_TYPE_LATEST)

    annotate_permissions(app)
    return app
