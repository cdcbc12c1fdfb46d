"""A command as every answer shows it: REST (``api.command_models.CommandOut``) and the live
WebSocket's ``command`` frames build it here, so the two cannot drift apart."""

from __future__ import annotations

from typing import Any

from fieldhub.hub.store.commands import CommandRecord


def command_view(record: CommandRecord) -> dict[str, Any]:
    """The fields of ``GET /api/commands/{id}``, from a command's record."""
    return {
        "id": record.id,
        "device_id": record.device_id,
        "batch_id": record.batch_id,
        "action": record.action,
        "args": record.args,
        "status": record.status,
        "finished": record.finished,
        "late": record.late,
        "result": record.result,
        "error": record.error,
        "created_by": record.created_by,
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "timeout_s": record.timeout_ms / 1000,
        "sent_at": record.sent_at,
        "acknowledged_at": record.acknowledged_at,
        "finished_at": record.finished_at,
        "deliveries": record.deliveries,
    }
