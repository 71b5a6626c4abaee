"""The batch hand-over of the source topics' records: when a batch closes, what goes in
it, what is dropped around a rebalance, and that offsets are acknowledged as faust's own
``Consumer.ack`` acknowledges them, only after the handler is done."""

from __future__ import annotations

import asyncio
import weakref
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport import consumer as faust_consumer
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from slipstream.streams.batch_drain import (
    BatchDrain,
    PendingRecords,
    SourceBatch,
    ack_offsets,
)

REQUESTS = TP("ns.slo.requests", 0)
REQUESTS_1 = TP("ns.slo.requests", 1)
DEPLOYS = TP("ns.slo.deploys", 0)
CHANGELOG = TP("app-state-changelog", 0)


def records(tp: TP, first: int, n: int) -> list[Any]:
    return [SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=o, key=None,
                            value=b"v", headers=()) for o in range(first, first + n)]  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def offsets(batch: SourceBatch) -> dict[TP, list[int]]:
    return {tp: [r.offset for r in rs] for tp, rs in batch.records.items()}


# -- when a batch closes and what it holds ---------------------------------------------


def test_the_first_records_after_a_quiet_spell_go_at_once() -> None:
    pending = PendingRecords(max_messages=10, max_bytes=1000, min_interval_s=0.2, clock=Clock())
    assert not pending.due()
    pending.add(REQUESTS, records(REQUESTS, 0, 3), generation_id=1)
    assert pending.due()


def test_under_load_one_batch_per_interval_or_when_full() -> None:
    clock = Clock()
    pending = PendingRecords(max_messages=10, max_bytes=1000, min_interval_s=0.2, clock=clock)
    pending.add(REQUESTS, records(REQUESTS, 0, 3), generation_id=1)
    pending.take()
    pending.add(REQUESTS, records(REQUESTS, 3, 4), generation_id=1)
    assert not pending.due()  # the previous batch closed just now
    assert pending.close_at() == pytest.approx(100.2)
    clock.now += 0.2
    assert pending.due()
    clock.now -= 0.1
    pending.add(REQUESTS, records(REQUESTS, 7, 6), generation_id=1)
    assert pending.due()  # 10 records: full


def test_a_full_batch_leaves_the_rest_for_the_next_in_offset_order() -> None:
    pending = PendingRecords(max_messages=5, max_bytes=1000, min_interval_s=0.2, clock=Clock())
    pending.add(REQUESTS, records(REQUESTS, 0, 4), generation_id=1)
    pending.add(REQUESTS_1, records(REQUESTS_1, 10, 4), generation_id=1)
    first = pending.take()
    assert offsets(first) == {REQUESTS: [0, 1, 2, 3], REQUESTS_1: [10]}
    assert len(first) == 5 and pending.count == 3
    assert offsets(pending.take()) == {REQUESTS_1: [11, 12, 13]}
    assert pending.count == 0 and not pending.due()


def test_a_batch_holds_at_most_max_bytes_of_values_but_one_record_at_least() -> None:
    pending = PendingRecords(max_messages=100, max_bytes=10, min_interval_s=0.2, clock=Clock())
    big = [SimpleNamespace(offset=o, value=b"x" * 4) for o in range(5)]  # 20 bytes
    pending.add(REQUESTS, big, generation_id=1)
    assert pending.due() and pending.full()
    assert offsets(pending.take()) == {REQUESTS: [0, 1]}
    huge = [SimpleNamespace(offset=9, value=b"x" * 50)]
    pending.drop()
    pending.add(REQUESTS_1, huge, generation_id=1)
    assert offsets(pending.take()) == {REQUESTS_1: [9]}
    assert pending.count == pending.bytes == 0


def test_the_topics_named_first_come_first() -> None:
    pending = PendingRecords(max_messages=100, max_bytes=1000, min_interval_s=0.2, clock=Clock())
    pending.add(REQUESTS, records(REQUESTS, 0, 2), generation_id=1)
    pending.add(DEPLOYS, records(DEPLOYS, 0, 1), generation_id=1)
    batch = pending.take(order=[DEPLOYS.topic, REQUESTS.topic])
    assert list(batch.records) == [DEPLOYS, REQUESTS]


def test_records_of_an_older_generation_are_dropped() -> None:
    pending = PendingRecords(max_messages=100, max_bytes=1000, min_interval_s=0.2, clock=Clock())
    pending.add(REQUESTS, records(REQUESTS, 0, 5), generation_id=1)
    pending.add(REQUESTS_1, records(REQUESTS_1, 0, 2), generation_id=2)
    batch = pending.take()
    assert offsets(batch) == {REQUESTS_1: [0, 1]} and batch.generation_id == 2


def test_held_records_are_not_acknowledged() -> None:
    batch = SourceBatch({REQUESTS: records(REQUESTS, 5, 4)}, generation_id=1)
    batch.hold(REQUESTS, 7)
    assert batch.acked_offsets() == {REQUESTS: [5, 6, 8]}


# -- acknowledgement, as faust's Consumer.ack records it -------------------------------


def bookkeeping(committed: int | None) -> Any:
    return SimpleNamespace(
        app=SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True)),
        _committed_offset=defaultdict(lambda: None, {REQUESTS: committed}),
        _acked=defaultdict(list),
        _acked_index=defaultdict(set),
        _unacked_messages=weakref.WeakSet(),
        _n_acked=0,
        _waiting_for_ack=None,
    )


@pytest.mark.parametrize("committed", [None, 0, 7])
def test_ack_offsets_records_what_consumer_ack_records(committed: int | None) -> None:
    acked = [5, 6, 7, 8, 8, 9, 12]  # 8 twice: a re-read copy
    by_message = bookkeeping(committed)
    for offset in acked:
        message = ConsumerMessage(REQUESTS.topic, 0, offset, 0.0, 0, None, None, b"", None,
                                  tp=REQUESTS)  # fmt: skip
        faust_consumer.Consumer.ack(by_message, message)
    by_offset = bookkeeping(committed)
    ack_offsets(by_offset, REQUESTS, acked)
    assert by_offset._acked == by_message._acked
    assert by_offset._acked_index == by_message._acked_index
    assert by_offset._n_acked == by_message._n_acked


def test_ack_offsets_wakes_a_wait_for_acks() -> None:
    async def scenario() -> None:
        consumer = bookkeeping(None)
        consumer._waiting_for_ack = asyncio.get_running_loop().create_future()
        ack_offsets(consumer, REQUESTS, [1])
        assert consumer._waiting_for_ack.done()

    asyncio.run(scenario())


# -- the drain: fetch rounds, hand-over, acks ------------------------------------------


class FakeConsumer:
    """What BatchDrain uses of faust's Consumer, with its bookkeeping."""

    def __init__(self, fetches: list[dict[TP, list[Any]]]) -> None:
        self.fetches = fetches
        self.active = {REQUESTS, REQUESTS_1, DEPLOYS, CHANGELOG}
        self.flow_active = True
        self.should_stop = False
        self._buffered_partitions: set[TP] = set()
        self._commit_every = None
        self.app = SimpleNamespace(
            consumer_generation_id=1,
            topics=SimpleNamespace(acks_enabled_for=lambda topic: True),
            monitor=SimpleNamespace(stream_inbound_time={}),
        )
        self._committed_offset: dict[TP, int | None] = defaultdict(lambda: None)
        self._acked: dict[TP, list[int]] = defaultdict(list)
        self._acked_index: dict[TP, set[int]] = defaultdict(set)
        self._unacked_messages: weakref.WeakSet[Any] = weakref.WeakSet()
        self._n_acked = 0
        self._waiting_for_ack = None

    def _get_active_partitions(self) -> set[TP]:
        return self.active

    def _to_message(self, tp: TP, record: Any) -> ConsumerMessage:
        return ConsumerMessage(tp.topic, tp.partition, record.offset, 0.0, 0, None, None,
                               b"", None, tp=tp)  # fmt: skip


async def fetch(consumer: FakeConsumer, timeout: float) -> Any:
    return (consumer.fetches.pop(0) if consumer.fetches else {}), consumer.active


def drain_for(handler: Any, max_messages: int = 100) -> BatchDrain:
    return BatchDrain([DEPLOYS.topic, REQUESTS.topic], handler, max_messages, 1000, 0.2)


def test_source_records_go_to_the_handler_and_the_rest_to_faust() -> None:
    seen: list[dict[TP, list[int]]] = []
    consumer = FakeConsumer(
        [{REQUESTS: records(REQUESTS, 0, 3), CHANGELOG: records(CHANGELOG, 0, 2)}]
    )

    async def handler(batch: SourceBatch) -> None:
        # In flight: a rebalance or a stop waits for the batch.
        assert len(consumer._unacked_messages) == 1
        assert not consumer._acked[REQUESTS]
        seen.append(offsets(batch))

    async def scenario() -> Any:
        return await drain_for(handler).next_records(consumer, fetch, 1.0)

    rest, _ = asyncio.run(scenario())
    assert list(rest) == [CHANGELOG]
    assert seen == [{REQUESTS: [0, 1, 2]}]
    assert consumer._acked[REQUESTS] == [0, 1, 2]
    assert not consumer._unacked_messages


def test_a_handler_that_raises_leaves_the_batch_unacknowledged() -> None:
    consumer = FakeConsumer([{REQUESTS: records(REQUESTS, 0, 3)}])

    async def handler(batch: SourceBatch) -> None:
        raise RuntimeError("boom")

    async def scenario() -> None:
        with pytest.raises(RuntimeError):
            await drain_for(handler).next_records(consumer, fetch, 1.0)

    asyncio.run(scenario())
    assert not consumer._acked[REQUESTS]
    assert not consumer._unacked_messages  # nothing left for a rebalance to wait on


def test_records_fetched_while_the_flow_is_stopped_are_dropped() -> None:
    seen: list[Any] = []
    consumer = FakeConsumer([{REQUESTS: records(REQUESTS, 0, 3)}, {}])

    async def handler(batch: SourceBatch) -> None:
        seen.append(batch)

    async def scenario() -> None:
        drain = drain_for(handler)
        consumer.flow_active = False  # a rebalance began during the fetch
        await drain.next_records(consumer, fetch, 1.0)
        consumer.flow_active = True
        await drain.next_records(consumer, fetch, 1.0)

    asyncio.run(scenario())
    assert seen == [] and not consumer._acked[REQUESTS]


def test_paused_partitions_records_are_not_taken() -> None:
    seen: list[dict[TP, list[int]]] = []
    consumer = FakeConsumer(
        [{REQUESTS: records(REQUESTS, 0, 2), REQUESTS_1: records(REQUESTS_1, 0, 2)}]
    )
    consumer.active = {REQUESTS_1}  # REQUESTS paused for its table's recovery

    async def handler(batch: SourceBatch) -> None:
        seen.append(offsets(batch))

    asyncio.run(drain_for(handler).next_records(consumer, fetch, 1.0))
    assert seen == [{REQUESTS_1: [0, 1]}]


def test_a_fetch_of_several_batches_goes_out_batch_by_batch_without_fetching_more() -> None:
    sizes: list[int] = []
    consumer = FakeConsumer(
        [{REQUESTS: records(REQUESTS, 0, 25)}, {REQUESTS: records(REQUESTS, 25, 5)}]
    )

    async def handler(batch: SourceBatch) -> None:
        sizes.append(len(batch))

    async def scenario() -> None:
        drain = drain_for(handler, max_messages=10)
        for _ in range(2):
            await drain.next_records(consumer, fetch, 1.0)

    asyncio.run(scenario())
    assert sizes == [10, 10]  # the second round handed over the second ten, fetched nothing
    assert len(consumer.fetches) == 1
    assert consumer._acked[REQUESTS] == list(range(20))


def test_a_stop_that_cancels_the_fetcher_lets_the_running_batch_finish() -> None:
    consumer = FakeConsumer([{REQUESTS: records(REQUESTS, 0, 3)}])
    release = asyncio.Event()

    async def handler(batch: SourceBatch) -> None:
        await release.wait()

    async def scenario() -> None:
        drain = drain_for(handler)
        fetcher = asyncio.ensure_future(drain.next_records(consumer, fetch, 1.0))
        await asyncio.sleep(0.01)
        fetcher.cancel()  # faust's Fetcher.stop, as the app stops
        with pytest.raises(asyncio.CancelledError):
            await fetcher
        assert len(consumer._unacked_messages) == 1  # the consumer's wait_empty waits
        release.set()
        assert drain.running is not None
        await drain.running
        assert consumer._acked[REQUESTS] == [0, 1, 2]
        assert not consumer._unacked_messages

    asyncio.run(scenario())


def test_a_batch_taken_before_a_rebalance_is_not_handed_over() -> None:
    seen: list[Any] = []
    consumer = FakeConsumer([])

    async def handler(batch: SourceBatch) -> None:
        seen.append(batch)

    async def scenario() -> None:
        drain = drain_for(handler)
        drain.pending.add(REQUESTS, records(REQUESTS, 0, 3), generation_id=1)
        batch = drain.pending.take()
        consumer.app.consumer_generation_id = 2
        await drain.hand_over(consumer, batch)

    asyncio.run(scenario())
    assert seen == [] and not consumer._acked[REQUESTS]
