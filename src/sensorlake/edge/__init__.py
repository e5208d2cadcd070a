"""The edge agent: readings buffered durably on the device (`Outbox`) and uploaded until
sensorlake's own watermark confirms them (`Uploader`), over HTTP or MQTT.

    from sensorlake.edge import Outbox
    with Outbox("outbox.db") as outbox:
        outbox.append("meter-7", {"energy": 1234.5, "power": 410.0})
"""

from sensorlake.edge.outbox import Outbox, OutboxFull, Sealed
from sensorlake.edge.transport import HttpTransport, MqttTransport, open_transport
from sensorlake.edge.uploader import Uploader

__all__ = ["HttpTransport", "MqttTransport", "Outbox", "OutboxFull", "Sealed", "Uploader",
           "open_transport"]
