"""Fixes to faust-streaming's consumer and commit path, found by the fault tests
(tests/faults) and the alert-latency benchmark.

**The producer buffer's flush returns early.** Before it commits source offsets, faust
flushes its producer so that the table's changelog holds every change the committed
messages made. But ``ProducerBuffer.flush`` gives up as soon as one message takes more
than 0.1 s to leave the buffer, with messages still in it; and it counts as sent a
message its sender has taken but not yet handed to the producer (which may wait for
room in its batches). Either way the commit can go ahead with changelog writes unsent.
Flushed here until the buffer is empty and nothing is in flight (read from the code: the
worker's recovery sets a commit beyond its restored state back, see
``SloWorker.reposition_after_recovery``).

**Offset gaps after a seek.** After a restart faust seeks the source partitions back to
their committed offsets and resets its "read offset" to them. A message of a fetch made
before the seek then arrives above that read offset, and faust records the offsets in
between as a *gap* (the bookkeeping meant for compacted topics): it counts them as
acknowledged, though they have not been processed yet. Two consequences:

- the same offsets are acknowledged again when they are processed, so faust's list of
  acknowledged offsets holds duplicates; it commits only up to the first break in a run
  of consecutive numbers, and a duplicate is such a break: commits then advance by one
  offset per commit interval, and the group's lag grows without end (robinhood/faust
  #625, #559; the kill -9 test's last worker never drained);
- a gap merged into the acknowledged offsets can commit past messages not yet
  processed, which a kill then loses.

Our source topics are never compacted and the SDK does not produce transactionally, so
a gap in their offsets is always this artefact: it is not recorded, and duplicates are
dropped before faust looks for the run to commit. A real gap of one offset (a
transaction marker) still commits, as faust allows one at the head of the run.

Since ``batch_drain``, the worker's source-topic records no longer pass faust's drain
loop, where this fix and the next (read offsets) act: the batch path records no gap and
drops no re-read copy by construction. Both stay for what does pass that loop.

**Re-read messages dropped after a seek.** faust drops every delivered message whose
offset is below the highest one it has handed over on that partition (its "read
offset"). When the worker seeks a source partition back after an offset jump, messages
of the fetch made before the seek still arrive and raise that mark again, so the re-read
copies below it, the missing message among them, were dropped: the full rebalance test
lost 28,772 SLO events on a partition after one jump. Source topics skip that filter; a
message delivered twice is harmless there (the worker's offset guard skips what its state
holds, and faust acknowledges an offset once).

**A fetch that waits 1.5 s.** faust creates its consumer with ``fetch_max_wait_ms=1500``.
The client sends one fetch per broker at a time, and leaves out partitions whose fetched
records are still being handed over; a fetch for the others (an idle deploys partition)
then sits at the broker for up to 1.5 s while the busy partitions wait behind it. In the
alert-latency benchmark at half load, messages reached the worker 1.5-2 s after they were
sent while the worker was busy less than half the time. ``FETCH_MAX_WAIT_MS`` instead.
While partitions are being assigned and recovered, ``RECOVERY_FETCH_MAX_WAIT_MS``: faust's
``pause_partitions`` is its own bookkeeping, the client itself is not paused and keeps
fetching, and the recovery's offset requests (end and start offsets, committed offsets,
seeks) took ~0.1 s each with 100 ms fetch waits, 0.03-0.04 s with 10 ms: ~0.17 s of a
2.4 s restart after kill -9 (worker log timestamps), read as each request waiting
behind a fetch on the same broker connection.

**A fixed second before the group is joined.** faust's ``TableManager`` sleeps 1.0 s as it
starts, so that tables defined late can still register; the conductor subscribes, and
the consumer joins its group, only after. The worker defines its one table before the
app starts (``SloWorker.__init__``), so the sleep is a second of every (re)start for
nothing: a restart after kill -9 took 1.0 s longer (recovery benchmark, worker log).

**A commit that never returns.** faust commits through its consumer thread. When the
broker was killed while the worker was busy, in 2 runs of 7 of the broker fault test, that
thread never came back: no coordinator found again after the broker returned, no
heartbeat, the commit awaited for ever, and nothing was counted or committed from then
on (worker log: faust's own "Task timed out" after 300 s, then silence). A commit that
has not returned in ``COMMIT_STUCK_S`` makes the worker exit, unacknowledged, like a
stall (``stall_guard``): its service manager restarts it, it recovers its state from the
changelog and reads again from the committed offsets, which its offset guard dedups.
A commit that returns after ``COMMIT_SLOW_S`` or more is logged with how long it took: the
measure of how low ``COMMIT_STUCK_S`` may go. In three runs of the broker fault test (nine
faults), no commit that returned took as long as 0.2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterable
from typing import Any, NoReturn

from faust.tables.manager import TableManager
from faust.transport import consumer as faust_consumer
from faust.transport import producer as faust_producer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

log = logging.getLogger(__name__)

# Longer than a commit that rides out a broker restart (the client's 40 s request timeout,
# a coordinator found again): past it, the consumer thread is wedged. See above.
COMMIT_STUCK_S = 180.0
COMMIT_SLOW_S = 5.0  # a commit slower than this is logged with how long it took
EXIT_COMMIT_STUCK = 75  # EX_TEMPFAIL, as stall_guard: restart me
FETCH_MAX_WAIT_MS = 100  # idle fetches cost the broker ~10 requests/s; nothing waits longer
RECOVERY_FETCH_MAX_WAIT_MS = 10  # from a rebalance until its recovery is done: see above

# Topics whose delivered messages faust must not drop for being behind its read offset.
UNFILTERED_TOPICS: set[str] = set()


class ReadOffsets(dict[Any, int | None]):
    """faust's per-partition read offsets (``Consumer._read_offset``), which answer None,
    "nothing read yet", for the partitions of ``UNFILTERED_TOPICS``: faust's drain loop
    then delivers every message of theirs, a re-read copy too."""

    def __getitem__(self, tp: Any) -> int | None:
        if tp.topic in UNFILTERED_TOPICS:
            return None
        return self.get(tp)


def apply(source_topics: Iterable[str] = ()) -> None:
    """Patch faust's ``Consumer`` and ``ProducerBuffer`` (idempotent; call before the app
    starts) and add ``source_topics`` to those delivered without the read-offset filter."""
    UNFILTERED_TOPICS.update(source_topics)
    if getattr(faust_consumer.Consumer, "_slipstream_fixed", False):
        return

    original_send_pending = faust_producer.ProducerBuffer._send_pending

    async def _send_pending(self: Any, fut: Any) -> None:
        # The buffer's size drops when its sender takes a message, before the producer has
        # it: counted as in flight until then, so a flush waits for it too.
        self.slipstream_in_flight = getattr(self, "slipstream_in_flight", 0) + 1
        try:
            await original_send_pending(self, fut)
        finally:
            self.slipstream_in_flight -= 1
            self.message_sent.set()

    async def flush(self: Any) -> None:
        while self.size or getattr(self, "slipstream_in_flight", 0):
            if self.size:
                await self.flush_atmost(None)  # returns after 0.1 s without a message sent
            else:
                self.message_sent.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.message_sent.wait(), timeout=0.1)

    faust_producer.ProducerBuffer._send_pending = _send_pending  # type: ignore[method-assign]
    faust_producer.ProducerBuffer.flush = flush  # type: ignore[method-assign]
    original_new_offset = faust_consumer.Consumer._new_offset

    def _new_offset(self: Any, tp: Any) -> int | None:
        acked = self._acked[tp]
        if len(acked) > 1:
            acked[:] = sorted(set(acked))
        result: int | None = original_new_offset(self, tp)
        return result

    async def _add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        return None

    original_init = faust_consumer.Consumer.__init__

    def init_with_read_offsets(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._read_offset = ReadOffsets()

    faust_consumer.Consumer.__init__ = init_with_read_offsets  # type: ignore[method-assign]

    original_create = AIOKafkaConsumerThread._create_worker_consumer

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original_create(self, transport)
        # Read when the consumer starts, which it does to join the group: a recovery follows.
        consumer._fetch_max_wait_ms = RECOVERY_FETCH_MAX_WAIT_MS
        return consumer

    async def on_start(self: Any) -> None:
        # TableManager.on_start without its ``await self.sleep(1.0)``.
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()

    _guard_commits()
    TableManager.on_start = on_start  # type: ignore[method-assign]
    thread = AIOKafkaConsumerThread
    thread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]
    faust_consumer.Consumer._new_offset = _new_offset  # type: ignore[method-assign]
    faust_consumer.Consumer._add_gap = _add_gap  # type: ignore[method-assign]
    faust_consumer.Consumer._slipstream_fixed = True  # type: ignore[attr-defined]


def _guard_commits() -> None:
    """A commit that has not returned in ``COMMIT_STUCK_S`` exits the worker (see above)."""
    original_commit = faust_consumer.ThreadDelegateConsumer._commit

    async def _commit(self: Any, offsets: Any) -> bool:
        started = time.monotonic()
        try:
            done: bool = await asyncio.wait_for(original_commit(self, offsets), COMMIT_STUCK_S)
        except TimeoutError:
            commit_stuck(COMMIT_STUCK_S)
        took = time.monotonic() - started
        if took >= COMMIT_SLOW_S:
            # How long a commit that returns can take is what COMMIT_STUCK_S must exceed.
            log.warning("a commit took %.1f s to return (a broker restart or a rebalance on "
                        "the way)", took)  # fmt: skip
        return done

    faust_consumer.ThreadDelegateConsumer._commit = _commit  # type: ignore[method-assign]


def commit_stuck(waited_s: float) -> NoReturn:
    log.critical("a commit has not returned in %.0f s: the consumer is wedged; exiting "
                 "unacknowledged (exit code %d: restart to recover and read again)",
                 waited_s, EXIT_COMMIT_STUCK)  # fmt: skip
    logging.shutdown()
    os._exit(EXIT_COMMIT_STUCK)


def set_fetch_max_wait(app: Any, ms: int) -> None:
    """How long the running consumer's next fetches may wait at the broker (the client
    reads it for each fetch request; an int written from this thread)."""
    client = getattr(getattr(app.consumer, "_thread", None), "_consumer", None)
    fetcher = getattr(client, "_fetcher", None)
    if fetcher is not None:
        fetcher._fetch_max_wait_ms = ms
