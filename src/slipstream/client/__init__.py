"""The producer SDK: ``SlipstreamProducer.record_request`` and ``announce_deploy``.

Importable without faust; depends on kafka-python and fastavro only.
"""

from slipstream.client.producer import (
    BufferFullError,
    DeliveryError,
    DeployReceipt,
    SlipstreamProducer,
    producer_from_settings,
)
from slipstream.slo.events import InvalidEventError

__all__ = [
    "BufferFullError",
    "DeliveryError",
    "DeployReceipt",
    "InvalidEventError",
    "SlipstreamProducer",
    "producer_from_settings",
]
