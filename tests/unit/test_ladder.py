"""B3's aggregation without a broker: reading with P's compiled reader (B3c) counts what
the codec's reading (B3) counts, message for message."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from test_tally import OLDER_REQUEST

from slipstream.bench.hotpath import workload
from slipstream.bench.ladder import aggregator
from slipstream.schemas.codec import AvroCodec

CODEC = AvroCodec()


def test_b3_counts_the_same_whichever_reader_reads() -> None:
    w = workload(3_000, 5)
    values = [m.value for m in w.messages]
    first = CODEC.decode(values[0]).record["events"][0]
    values.append(CODEC.encode("RequestEvent", first))  # a single-event message
    old = {k: v for k, v in first.items() if k not in ("region", "callee")}
    values.append(CODEC.encode("RequestEvent", old, schema=OLDER_REQUEST))  # left to the codec
    records: list[Any] = [SimpleNamespace(value=v) for v in values]
    b3, b3_counts = aggregator(w.catalogue)
    b3c, b3c_counts = aggregator(w.catalogue, compiled=True)
    assert b3(records) == b3c(records) == 3_002
    assert b3_counts == b3c_counts
    assert sum(total for _, total in b3_counts.values()) == 3_002 * 2  # two SLOs a service
    assert any(bad for bad, _ in b3_counts.values())
