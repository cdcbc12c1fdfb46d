"""Alarms: rules on committed data, one open alarm per (device, rule), their life, and the
hooks notifications hang on (``changes.py``). See ``docs/alarms.md``."""

from fieldhub.hub.alarms.changes import AlarmChange, AlarmHook, AlarmListener
from fieldhub.hub.alarms.engine import AlarmEngine
from fieldhub.hub.alarms.rules import Rule, parse_rule
from fieldhub.hub.alarms.service import AlarmService, StoredRule
from fieldhub.hub.store.alarms import AlarmChangeRecord, AlarmFilter, AlarmRecord

__all__ = [
    "AlarmChange",
    "AlarmChangeRecord",
    "AlarmEngine",
    "AlarmFilter",
    "AlarmHook",
    "AlarmListener",
    "AlarmRecord",
    "AlarmService",
    "Rule",
    "StoredRule",
    "parse_rule",
]
