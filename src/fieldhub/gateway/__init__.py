"""The gateway: LAN controllers bridged to the hub (docs/gateway.md)."""
