"""The baseline ladder of PERFORMANCE.md, each step draining the same pre-loaded topic.

B0: Kafka's own ``ConsumerPerformance`` (the kafka-tools jar the broker runs from).
B1: the Python client's raw poll loop, values discarded: aiokafka ``getmany`` (what
    faust uses) and kafka-python ``poll``.
B2: B1 (aiokafka) + our Avro decode of every message.
F:  faust-streaming with an agent that does nothing (the ceiling of a faust app).
B3: B2 + classification and dict aggregation into (service, SLO, 10 s bucket) counts:
    the physical limit for Python business logic on this input.
B3c: B3 reading request messages with P's compiled reader instead of fastavro: not a
    rung of PERFORMANCE.md, but P / B3c shows what P's own work costs beyond the decode.
Each returns events per second (messages per second times events per message for the
steps that do not decode).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition

from slipstream.bench.load import Load
from slipstream.schemas.codec import AvroCodec
from slipstream.schemas.request_rows import RowReader
from slipstream.slo.catalogue import Catalogue
from slipstream.slo.windows import FINE_MS

Handler = Callable[[list[Any]], int]  # a fetched batch of records -> events in it


def b0_consumer_perf(jars: Path, bootstrap: str, load: Load, timeout_s: float = 300) -> float:
    """Kafka's ConsumerPerformance; its fetch rate (rebalance time excluded), in events/s."""
    cmd = [
        "java", "-Xmx512m", "-cp", f"{jars}/*", "org.apache.kafka.tools.ConsumerPerformance",
        "--bootstrap-server", bootstrap, "--topic", load.topic,
        "--messages", str(load.messages), "--group", f"bench-b0-{uuid.uuid4().hex[:8]}",
        "--timeout", "60000", "--hide-header",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    lines = [line for line in out.stdout.splitlines() if line.count(",") >= 9]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"ConsumerPerformance failed ({out.returncode}): {out.stderr[-800:]}")
    fields = [f.strip() for f in lines[-1].split(",")]
    # start, end, MB, MB/s, messages, messages/s, rebalance ms, fetch ms, fetch MB/s, fetch msg/s
    consumed, fetch_ms = int(fields[4]), float(fields[7])
    if consumed < load.messages:
        raise RuntimeError(f"ConsumerPerformance read {consumed} of {load.messages} messages")
    return consumed / (fetch_ms / 1000) * load.events / load.messages


async def _drain_aiokafka(bootstrap: str, load: Load, handle: Handler | None) -> float:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = [TopicPartition(load.topic, p) for p in range(load.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = events = 0
        started = time.perf_counter()
        while seen < load.messages:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                seen += len(records)
                events += handle(records) if handle else len(records)
        elapsed = time.perf_counter() - started
    finally:
        await consumer.stop()
    if handle is None:
        events = load.events
    return events / elapsed


def b1_aiokafka(bootstrap: str, load: Load) -> float:
    return asyncio.run(_drain_aiokafka(bootstrap, load, None))


def b1_kafka_python(bootstrap: str, load: Load) -> float:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        tps = [KafkaTopicPartition(load.topic, p) for p in range(load.partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        seen = 0
        started = time.perf_counter()
        while seen < load.messages:
            for records in consumer.poll(timeout_ms=1000).values():
                seen += len(records)
        elapsed = time.perf_counter() - started
    finally:
        consumer.close()
    return load.events / elapsed


def f_faust(bootstrap: str, load: Load, timeout_s: float = 300) -> float:
    """faust-streaming's own ceiling: an empty agent in its own process (``faust_floor``)."""
    cmd = [sys.executable, "-m", "slipstream.bench.faust_floor", load.topic, str(load.messages)]
    env = os.environ | {"SLIPSTREAM_KAFKA_BOOTSTRAP": bootstrap}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env,
                         check=False)  # fmt: skip
    found = re.findall(r"\{.*\}", out.stdout)
    if not found:
        raise RuntimeError(f"the faust floor run failed ({out.returncode}): {out.stderr[-800:]}")
    rate = float(json.loads(found[-1])["messages_per_s"])
    return rate * load.events / load.messages


def decoder() -> Handler:
    codec = AvroCodec()

    def handle(records: list[Any]) -> int:
        events = 0
        for r in records:
            decoded = codec.decode(r.value)
            events += len(decoded.record["events"]) if decoded.schema == "RequestBatch" else 1
        return events

    return handle


def aggregator(
    catalogue: Catalogue, compiled: bool = False
) -> tuple[Handler, dict[tuple[str, str, int], list[int]]]:
    """Decode, classify per SLO, count per (service, SLO, 10 s bucket) in a dict.

    ``compiled``: read request messages as P does, with the compiled reader
    (``schemas/request_rows.py``) into rows, the codec only for what it leaves."""
    codec = AvroCodec()
    # Per service: (SLO name, latency threshold or None, bad status ranges).
    slos: dict[str, list[tuple[str, float | None, tuple[tuple[int, int], ...]]]] = {}
    for slo in catalogue.all_slos():
        threshold = slo.sli.threshold_ms if slo.sli.kind == "latency" else None
        slos.setdefault(slo.service, []).append((slo.name, threshold, slo.sli.bad_status))
    counts: dict[tuple[str, str, int], list[int]] = {}

    def count(service: str, code: int, latency_ms: float, timestamp: int) -> None:
        bucket = timestamp // FINE_MS
        for name, threshold, bad_status in slos.get(service, ()):
            if threshold is None:
                bad = any(lo <= code <= hi for lo, hi in bad_status)
            else:
                bad = latency_ms > threshold
            key = (service, name, bucket)
            c = counts.get(key)
            if c is None:
                counts[key] = [int(bad), 1]
            else:
                c[0] += bad
                c[1] += 1

    read = RowReader(codec.registry).read if compiled else None

    def handle(records: list[Any]) -> int:
        events = 0
        for r in records:
            if read is not None:
                got = read(r.value)
                if got is not None:
                    for _, service, _, code, latency_ms, timestamp, *_ in got[1]:
                        count(service, code, latency_ms, timestamp)
                    events += len(got[1])
                    continue
            decoded = codec.decode(r.value)
            if decoded.schema == "RequestBatch":
                for e in decoded.record["events"]:
                    count(e["service"], e["status_code"], e["latency_ms"], e["timestamp"])
                events += len(decoded.record["events"])
            else:
                e = decoded.record
                count(e["service"], e["status_code"], e["latency_ms"], e["timestamp"])
                events += 1
        return events

    return handle, counts


def b2_decode(bootstrap: str, load: Load) -> float:
    return asyncio.run(_drain_aiokafka(bootstrap, load, decoder()))


def b3_aggregate(bootstrap: str, load: Load, catalogue: Catalogue, compiled: bool = False) -> float:
    handle, _ = aggregator(catalogue, compiled)
    return asyncio.run(_drain_aiokafka(bootstrap, load, handle))
