"""A simulated fleet for the demo: devices that speak the wire contract over real MQTT."""
