"""The source topics' records to the worker in batches, past faust's per-message path.

faust hands a stream one message at a time: per message its drain loop awaits
``wait_first(callback(message), suspend_flow.wait())`` (four tasks and an
``asyncio.wait``), its conductor decodes an event and puts it on a channel queue, the
stream takes it off in another task, ``take_events`` buffers it and acknowledges it
alone. An agent that does nothing gets ~10-15 k messages/s that way (``bench/faust_floor``);
the worker's own work per single-event message is a fraction of that.

Here the records of the source topics are taken out of each fetch before faust's
``getmany`` turns them into messages; the rest (changelog records during recovery) go
on through faust as before. The same consumer fetches them, in the same consumer group,
with faust's rebalance handling, pausing and commit path:

- a fetch is taken only from partitions faust has active (not paused for recovery, not
  revoked), and only while its flow runs: records fetched while a rebalance stopped the
  flow, or under an older generation, are dropped unacknowledged, as faust drops such
  messages (faust then seeks back to the committed offsets, which reads them again);
- a batch closes at ``max_messages`` records or ``max_bytes`` of values (what a batch
  costs to handle goes with its bytes, whether they hold one event per message or a
  hundred), or once ``min_interval_s`` has passed since the previous one closed (under
  load one batch per interval; a message after a quiet spell goes at once);
- the handler runs in a task of its own, one batch at a time; while it runs, the batch
  counts as an unacknowledged message (a placeholder in ``Consumer._unacked_messages``),
  so a rebalance or a stop waits for it, as they wait for an agent's events;
- offsets are acknowledged after the handler returns, in faust's bookkeeping
  (``ack_offsets``: what ``Consumer.ack`` records per message), except those the
  handler held; faust's commit timer commits them (after flushing the producer, so
  table and output writes go first). A handler that raises or is cancelled leaves the
  whole batch unacknowledged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from faust.transport import consumer as faust_consumer
from faust.types import TP
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

Record = Any  # aiokafka's ConsumerRecord: topic, partition, offset, key, value, headers
Handler = Callable[["SourceBatch"], Awaitable[None]]


@dataclass
class SourceBatch:
    """Records of the source topics, per partition in offset order; the handler holds
    those it leaves unprocessed (they are not acknowledged: a re-read copy will be)."""

    records: dict[TP, list[Record]]
    generation_id: int
    held: set[tuple[TP, int]] = field(default_factory=set)

    def __len__(self) -> int:
        return sum(len(records) for records in self.records.values())

    def hold(self, tp: TP, offset: int) -> None:
        self.held.add((tp, offset))

    def acked_offsets(self) -> dict[TP, list[int]]:
        held = self.held
        return {
            tp: [r.offset for r in records if (tp, r.offset) not in held]
            for tp, records in self.records.items()
        }


class PendingRecords:
    """The batch being gathered: what closes it and what goes into it (no faust here)."""

    def __init__(
        self,
        max_messages: int,
        max_bytes: int,
        min_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.min_interval_s = min_interval_s
        self.clock = clock
        self.records: dict[TP, list[Record]] = {}
        self.count = 0
        self.bytes = 0
        self.generation_id: int | None = None
        self.closed_at = float("-inf")  # when the previous batch closed

    def add(self, tp: TP, records: Sequence[Record], generation_id: int) -> None:
        if self.generation_id != generation_id:
            self.drop()  # fetched before a rebalance: faust reads them again
            self.generation_id = generation_id
        self.records.setdefault(tp, []).extend(records)
        self.count += len(records)
        self.bytes += sum(map(_size, records))

    def drop(self) -> None:
        self.records = {}
        self.count = self.bytes = 0

    def close_at(self) -> float:
        """When the batch closes if nothing fills it first."""
        return self.closed_at + self.min_interval_s

    def full(self) -> bool:
        return self.count >= self.max_messages or self.bytes >= self.max_bytes

    def due(self) -> bool:
        return self.count > 0 and (self.full() or self.clock() >= self.close_at())

    def take(self, order: Sequence[str] = ()) -> SourceBatch:
        """Up to ``max_messages`` records and ``max_bytes`` of values (one record at least),
        the topics of ``order`` first, each partition's in offset order; the rest stays."""
        assert self.generation_id is not None
        rooms, room_bytes = self.max_messages, self.max_bytes
        taken: dict[TP, list[Record]] = {}
        rank = {topic: i for i, topic in enumerate(order)}
        for tp in sorted(self.records, key=lambda tp: (rank.get(tp.topic, len(rank)), tp)):
            records = self.records[tp]
            n = size = 0
            for record in records[:rooms]:
                if size + _size(record) > room_bytes and (n or taken):
                    break
                n, size = n + 1, size + _size(record)
            if n:
                taken[tp] = records[:n]
                if n == len(records):
                    del self.records[tp]
                else:
                    self.records[tp] = records[n:]
                rooms, room_bytes = rooms - n, room_bytes - size
                self.count, self.bytes = self.count - n, self.bytes - size
            if n < len(records):
                break  # full: what is left of this partition goes first next time
        self.closed_at = self.clock()
        return SourceBatch(taken, self.generation_id)


def _size(record: Record) -> int:
    return len(record.value) if record.value else 0


def ack_offsets(consumer: Any, tp: TP, offsets: Iterable[int]) -> int:
    """Record ``offsets`` of ``tp`` as acknowledged in faust's consumer, as
    ``Consumer.ack`` does for each message (faust-streaming 0.15.3): below the committed
    offset or already acknowledged, not again. Returns how many were recorded."""
    if not consumer.app.topics.acks_enabled_for(tp.topic):
        return 0
    with ack_lock:
        committed = consumer._committed_offset[tp]
        index = consumer._acked_index[tp]
        acked = consumer._acked[tp]
        added = 0
        for offset in offsets:
            if (committed is None or offset >= committed) and offset not in index:
                index.add(offset)
                acked.append(offset)
                added += 1
        consumer._n_acked += added
        notify(consumer._waiting_for_ack)
    return added


class BatchDrain:
    """Gathers the source topics' records out of the consumer's fetches and runs the
    handler on them batch by batch (see the module docstring)."""

    def __init__(
        self,
        topics: Sequence[str],
        handler: Handler,
        max_messages: int,
        max_bytes: int,
        min_interval_s: float,
    ) -> None:
        self.topics = list(topics)  # in the order a batch hands them over
        self.topic_set = frozenset(topics)
        self.handler = handler
        self.pending = PendingRecords(max_messages, max_bytes, min_interval_s)
        self.running: asyncio.Future[None] | None = None

    async def next_records(
        self, consumer: Any, fetch: Callable[[Any, float], Awaitable[Any]], timeout: float
    ) -> Any:
        """One round in place of ``Consumer._wait_next_records``: the source records of a
        fetch into the pending batch, the rest returned to faust's ``getmany``. A full
        batch goes without fetching more (a fetch may bring several batches' worth)."""
        pending = self.pending
        rest: dict[TP, list[Record]] = {}
        if pending.full() and consumer.flow_active:
            active = consumer._get_active_partitions()
        else:
            if pending.count:
                timeout = max(0.0, pending.close_at() - time.monotonic())
            records, active = await fetch(consumer, timeout)
            if records is None:
                return records, active
            generation_id = consumer.app.consumer_generation_id
            for tp, fetched in records.items():
                if tp.topic not in self.topic_set:
                    rest[tp] = fetched
                elif _is_active(consumer, active, tp):
                    pending.add(tp, fetched, generation_id)
        if not consumer.flow_active or consumer.should_stop:
            pending.drop()  # faust's getmany seeks back to the committed offsets
        elif pending.due():
            await self.hand_over(consumer, pending.take(self.topics))
        return rest, active

    async def hand_over(self, consumer: Any, batch: SourceBatch) -> None:
        if self.running is not None and not self.running.done():
            await asyncio.shield(self.running)  # one batch at a time, as concurrency=1
        if consumer.app.consumer_generation_id != batch.generation_id:
            return  # a rebalance came in between: faust reads them again
        active = consumer._get_active_partitions()
        for tp in [tp for tp in batch.records if not _is_active(consumer, active, tp)]:
            del batch.records[tp]
        if not batch.records:
            return
        # Its own task, shielded: a stop that cancels faust's fetcher lets the batch
        # finish, and the consumer's wait for unacknowledged messages waits for it.
        self.running = task = asyncio.ensure_future(self._run(consumer, batch))
        await asyncio.shield(task)
        commit_every = consumer._commit_every
        if commit_every is not None and consumer._n_acked >= commit_every:
            consumer._n_acked = 0
            await consumer.commit()

    async def _run(self, consumer: Any, batch: SourceBatch) -> None:
        tp, records = next(iter(batch.records.items()))
        in_flight = consumer._to_message(tp, records[0])
        unacked = consumer._unacked_messages
        unacked.add(in_flight)
        # faust's livelock check reads when a stream last took a message of a partition.
        inbound, now = consumer.app.monitor.stream_inbound_time, time.monotonic()
        for tp in batch.records:
            inbound[tp] = now
        try:
            await self.handler(batch)
            for tp, offsets in batch.acked_offsets().items():
                ack_offsets(consumer, tp, offsets)
        finally:
            in_flight.acked = True
            unacked.discard(in_flight)
            notify(consumer._waiting_for_ack)


def _is_active(consumer: Any, active: set[TP] | None, tp: TP) -> bool:
    return active is None or tp in active or tp in consumer._buffered_partitions


def install(app: Any, drain: BatchDrain) -> None:
    """Route ``app``'s consumer's source-topic records through ``drain`` (idempotent patch
    of faust's ``Consumer``; other apps' consumers are left as they are)."""
    app._slipstream_batch_drain = drain
    if getattr(faust_consumer.Consumer, "_slipstream_batch_drain", False):
        return
    original = faust_consumer.Consumer._wait_next_records

    async def _wait_next_records(self: Any, timeout: float) -> Any:
        drain: BatchDrain | None = getattr(self.app, "_slipstream_batch_drain", None)
        if drain is None:
            return await original(self, timeout)
        return await drain.next_records(self, original, timeout)

    faust_consumer.Consumer._wait_next_records = _wait_next_records  # type: ignore[method-assign]
    faust_consumer.Consumer._slipstream_batch_drain = True  # type: ignore[attr-defined]
