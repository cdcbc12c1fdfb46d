"""Ingest: from an MQTT message to a committed row and a storage acknowledgement."""
