"""Both Python Kafka clients talk to the pinned broker: produce, consume, commit."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource

from slipstream import conventions
from slipstream.settings import Settings
from slipstream.streams.topics import admin_client, ensure_topics, topic_specs

N = 500


def _payloads() -> list[tuple[bytes, bytes]]:
    return [(f"svc-{i % 7}".encode(), f"event-{i}".encode() * 3) for i in range(N)]


def test_ensure_topics_creates_every_topic_once(settings: Settings) -> None:
    created = ensure_topics(settings)
    assert sorted(created) == sorted(s.name for s in topic_specs(settings))
    assert ensure_topics(settings) == []
    admin = admin_client(settings)
    try:
        described = admin.describe_topics(
            [conventions.topic_name(settings.namespace, "slo.requests")]
        )
        assert len(described[0]["partitions"]) == settings.partitions
        budget = conventions.topic_name(settings.namespace, conventions.BUDGET_TOPIC)
        configs = admin.describe_configs(config_resources=[ConfigResource("TOPIC", budget)])
        assert "compact" in repr(configs)
    finally:
        admin.close()


def test_kafka_python_produces_aiokafka_consumes(settings: Settings) -> None:
    ensure_topics(settings)
    topic = conventions.topic_name(settings.namespace, conventions.REQUESTS_TOPIC)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    for key, value in _payloads():
        producer.send(topic, key=key, value=value)
    producer.flush(timeout=30)
    producer.close()

    async def consume() -> tuple[list[tuple[bytes, bytes]], int]:
        group = conventions.consumer_group(settings.namespace)
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        got: list[tuple[bytes, bytes]] = []
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while len(got) < N and loop.time() < deadline:
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    got.extend((r.key, r.value) for r in records)
            await consumer.commit()
            committed = 0
            for p in consumer.partitions_for_topic(topic) or set():
                committed += await consumer.committed(TopicPartition(topic, p)) or 0
        finally:
            await consumer.stop()
        return got, committed

    got, committed = asyncio.run(consume())
    assert sorted(got) == sorted(_payloads())
    assert committed == N


def test_aiokafka_produces_kafka_python_consumes(settings: Settings) -> None:
    ensure_topics(settings)
    topic = conventions.topic_name(settings.namespace, conventions.DEPLOYS_TOPIC)

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            batch = [producer.send(topic, key=k, value=v) for k, v in _payloads()]
            for fut in await asyncio.gather(*batch):
                await fut
        finally:
            await producer.stop()

    asyncio.run(produce())
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=conventions.consumer_group(settings.namespace),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=10000,
    )
    got: list[tuple[bytes, bytes]] = []
    try:
        for record in consumer:
            got.append((record.key, record.value))
            if len(got) == N:
                break
        consumer.commit()
        assignment = consumer.assignment()
        committed = sum(consumer.committed(tp) or 0 for tp in assignment)
    finally:
        consumer.close()
    assert sorted(got) == sorted(_payloads())
    assert committed == N
