"""Commands to devices: checked, stored, delivered, answered.

``CommandRecord`` and ``BatchRecord`` are the values this wing hands to its callers (the API
and the live fan-out build their answers from them); the store keeps them.
"""

from fieldhub.hub.store.commands import BatchRecord, CommandRecord

__all__ = ["BatchRecord", "CommandRecord"]
