"""The hub: device registry, MQTT ingest into storage, presence, REST API."""
