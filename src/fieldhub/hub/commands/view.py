"""A command as every answer shows it: REST (``api.command_models.CommandOut``) and the live
WebSocket's ``command`` frames build it here, so the two cannot drift apart."""

from __future__ import annotations

from typing import Any

from fieldhub.hub.store.commands import CommandRecord
from fieldhub.protocol.actions import ADJUSTED_KEY


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
        "adjusted": adjusted_arguments(record.result),
        "error": record.error,
        "created_by": record.created_by,
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "timeout_s": record.timeout_ms / 1000,
        "not_before": record.not_before,
        "sent_at": record.sent_at,
        "acknowledged_at": record.acknowledged_at,
        "finished_at": record.finished_at,
        "deliveries": record.deliveries,
    }


def adjusted_arguments(result: Any) -> dict[str, Any]:
    """The arguments the device says it changed (its result's ``adjusted``), else none."""
    changed = result.get(ADJUSTED_KEY) if isinstance(result, dict) else None
    return changed if isinstance(changed, dict) else {}
