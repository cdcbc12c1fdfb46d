"""The hub's REST API (FastAPI; OpenAPI at ``/openapi.json``)."""

from fieldhub.hub.api.app import create_app

__all__ = ["create_app"]
