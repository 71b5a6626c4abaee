"""The SDK: ``SlipstreamProducer.record_request`` and ``announce_deploy`` for services and
CI/CD, ``Subscriber`` for alert consumers (typed alerts, deploy verdicts, policy events).

Importable without faust; depends on kafka-python and fastavro only.
"""

from slipstream.client.producer import (
    BufferFullError,
    DeliveryError,
    DeployReceipt,
    SlipstreamProducer,
    producer_from_settings,
)
from slipstream.client.subscribe import (
    BurnRateAlert,
    DeployVerdict,
    PolicyEvent,
    Subscriber,
)
from slipstream.slo.events import InvalidEventError

__all__ = [
    "BufferFullError",
    "BurnRateAlert",
    "DeliveryError",
    "DeployReceipt",
    "DeployVerdict",
    "InvalidEventError",
    "PolicyEvent",
    "SlipstreamProducer",
    "Subscriber",
    "producer_from_settings",
]
