"""fieldhub's own MQTT 3.1.1 client, made for the hub's hot path (see ``client.py`` for why).

``packets`` holds the wire format as pure functions; ``client`` the asyncio connection that
stays up, with its protocol (one per TCP connection) in ``_connection`` and its counters in
``_stats``. Import from here::

    from fieldhub.mqtt import MqttClient, MqttError, Will
"""

from fieldhub.mqtt.client import MessageCallback, MqttClient, MqttStats
from fieldhub.mqtt.packets import (
    ConnectRefused,
    MqttError,
    MqttProtocolError,
    SubscribeRefused,
    Will,
)

__all__ = [
    "ConnectRefused",
    "MessageCallback",
    "MqttClient",
    "MqttError",
    "MqttProtocolError",
    "MqttStats",
    "SubscribeRefused",
    "Will",
]
