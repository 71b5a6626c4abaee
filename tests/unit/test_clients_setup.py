"""kafka-python checks CRCs with the crc32c C extension, not its 5x slower pure-Python fallback."""

from __future__ import annotations

import crc32c
from kafka.record import util


def test_kafka_python_uses_the_crc32c_extension() -> None:
    assert util.crc32c_c is crc32c.crc32c
    assert util._crc32c is crc32c.crc32c
    assert util.calc_crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
