"""The live fan-out of committed data to WebSocket clients."""
