"""faust's commit path with our fixes: duplicates no longer stall commits, a seek never
records a gap that would count unprocessed offsets as done, and a flush waits for every
changelog write."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.transport import consumer as faust_consumer
from faust.transport import producer as faust_producer
from faust.types import TP
from intervaltree import IntervalTree  # type: ignore[import-untyped]

from slipstream.streams import faust_fixes

TOPIC = TP("ns.slo.requests", 0)


def _bookkeeping(acked: list[int], committed: int) -> Any:
    return SimpleNamespace(
        _acked=defaultdict(list, {TOPIC: list(acked)}),
        _acked_index=defaultdict(set, {TOPIC: set(acked)}),
        _gap=defaultdict(IntervalTree),
        _committed_offset=defaultdict(lambda: None, {TOPIC: committed}),
    )


def test_duplicate_acks_commit_the_whole_run() -> None:
    faust_fixes.apply()
    # Offsets 5..8, some acknowledged twice (a gap entry and the message itself).
    state = _bookkeeping([5, 6, 6, 7, 7, 8], committed=4)
    assert faust_consumer.Consumer._new_offset(state, TOPIC) == 9
    assert state._acked[TOPIC] == []


def test_a_missing_offset_still_stops_the_commit_before_it() -> None:
    faust_fixes.apply()
    state = _bookkeeping([5, 6, 8, 9], committed=4)
    assert faust_consumer.Consumer._new_offset(state, TOPIC) == 7  # 7 is not done yet
    assert state._acked[TOPIC] == [8, 9]


def test_a_seek_records_no_gap() -> None:
    faust_fixes.apply()
    state = _bookkeeping([], committed=4)
    asyncio.run(faust_consumer.Consumer._add_gap(state, TOPIC, 5, 40))
    assert not state._gap[TOPIC]
    state._acked[TOPIC] = [41]
    # Without a gap, 5..40 are not taken as done: nothing past them commits.
    assert faust_consumer.Consumer._new_offset(state, TOPIC) is None


def test_apply_twice_patches_once() -> None:
    faust_fixes.apply()
    patched = faust_consumer.Consumer._new_offset
    faust_fixes.apply()
    assert faust_consumer.Consumer._new_offset is patched


def test_flush_waits_for_a_message_taken_but_not_yet_with_the_producer() -> None:
    faust_fixes.apply()
    buffer_type: Any = faust_producer.ProducerBuffer  # called with stand-ins for self

    async def scenario() -> None:
        room = asyncio.Event()  # the producer's batches are full until set
        handed: list[Any] = []

        class Channel:
            async def publish_message(self, fut: Any, wait: bool) -> None:
                await room.wait()
                handed.append(fut)

        # The buffer's queue is empty: its sender has taken the only message.
        buffer = SimpleNamespace(size=0, message_sent=asyncio.Event())
        fut = SimpleNamespace(message=SimpleNamespace(channel=Channel()))
        sending = asyncio.create_task(buffer_type._send_pending(buffer, fut))
        await asyncio.sleep(0)
        flushing = asyncio.create_task(buffer_type.flush(buffer))
        await asyncio.sleep(0.3)
        assert not flushing.done()  # a commit would go ahead without the message
        room.set()
        await asyncio.wait_for(flushing, timeout=5)
        assert handed == [fut]
        await sending

    asyncio.run(scenario())


def test_a_jump_reads_again_from_the_commit_when_the_state_is_ahead_of_it() -> None:
    from slipstream.streams.worker import reread_start

    # State ends at 4502, the group committed 3094: faust would never commit past 3094
    # if 3094..4502 were not read (and acknowledged) again.
    assert reread_start(4502, 3094) == 3094
    assert reread_start(4502, 6000) == 4503  # committed beyond the state: from the state
    assert reread_start(4502, None) == 4503  # no commit yet


def _drain(deliveries: list[int], seek_at: int, seek_to: int) -> list[int]:
    """Run faust's own drain loop over ``deliveries`` (offsets in arrival order) and
    return the offsets it handed to the callback. Handling ``seek_at`` seeks back to
    ``seek_to`` the way ``seek_wait`` does (it sets the read offset)."""
    handed: list[int] = []
    stopped = asyncio.Event()

    async def getmany(timeout: float) -> Any:
        for offset in deliveries:
            yield TOPIC, SimpleNamespace(offset=offset, topic=TOPIC.topic, key=None, value=None)
        stopped.set()

    async def callback(message: Any) -> None:
        handed.append(message.offset)
        if message.offset == seek_at and handed.count(seek_at) == 1:
            consumer._read_offset[TOPIC] = seek_to

    async def wait_first(*coros: Any) -> None:
        await coros[0]
        coros[1].close()

    async def sleep(_: float) -> None:
        return None

    async def suspended() -> None:
        return None

    consumer = SimpleNamespace(
        callback=callback,
        getmany=getmany,
        _stopped=stopped,
        _read_offset=faust_fixes.ReadOffsets(),
        diag=SimpleNamespace(set_flag=lambda _: None, unset_flag=lambda _: None),
        _commit_every=None,
        app=SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda _: True)),
        sleep=sleep,
        should_stop=False,
        wait_first=wait_first,
        suspend_flow=SimpleNamespace(wait=suspended),
        log=SimpleNamespace(dev=lambda *_: None),
    )
    fetcher = SimpleNamespace(_stopped=stopped)
    asyncio.run(faust_consumer.Consumer._drain_messages(consumer, fetcher))  # type: ignore[arg-type]
    return handed


def test_a_source_partition_read_again_gets_every_message() -> None:
    # 10 arrives after a jump (5..9 skipped); the worker seeks back to 5, but 11 and 12
    # of the fetch made before the seek still arrive, then the re-read 5..12.
    faust_fixes.apply([TOPIC.topic])
    handed = _drain([10, 11, 12, 5, 6, 7, 8, 9, 10, 11, 12], seek_at=10, seek_to=5)
    assert handed == [10, 11, 12, 5, 6, 7, 8, 9, 10, 11, 12]


def test_other_topics_keep_faust_filter() -> None:
    faust_fixes.UNFILTERED_TOPICS.discard(TOPIC.topic)
    try:
        handed = _drain([10, 11, 12, 5, 6, 7, 8, 9, 10, 11, 12], seek_at=10, seek_to=5)
    finally:
        faust_fixes.apply([TOPIC.topic])
    # What faust does without the fix: 12 raised the mark, the re-read below it is dropped.
    assert handed == [10, 11, 12, 12]


def test_the_worker_consumer_fetches_without_the_long_wait() -> None:
    import faust

    faust_fixes.apply()
    app = faust.App("fetch-wait-test", broker="kafka://127.0.0.1:9", web_enabled=False)

    async def create() -> Any:  # aiokafka builds its consumer inside a running loop
        return app.consumer._thread._create_worker_consumer(app.transport)  # type: ignore[attr-defined]

    consumer = asyncio.run(create())
    # It starts to join the group, and a recovery follows: the short wait first.
    assert consumer._fetch_max_wait_ms == faust_fixes.RECOVERY_FETCH_MAX_WAIT_MS
    assert faust_fixes.RECOVERY_FETCH_MAX_WAIT_MS < faust_fixes.FETCH_MAX_WAIT_MS


def test_the_fetch_wait_is_set_on_the_running_client() -> None:
    fetcher = SimpleNamespace(_fetch_max_wait_ms=faust_fixes.RECOVERY_FETCH_MAX_WAIT_MS)
    app = SimpleNamespace(consumer=SimpleNamespace(_thread=SimpleNamespace(
        _consumer=SimpleNamespace(_fetcher=fetcher))))  # fmt: skip
    faust_fixes.set_fetch_max_wait(app, faust_fixes.FETCH_MAX_WAIT_MS)
    assert fetcher._fetch_max_wait_ms == faust_fixes.FETCH_MAX_WAIT_MS
    # Not started yet: nothing to set, and no error.
    faust_fixes.set_fetch_max_wait(SimpleNamespace(consumer=SimpleNamespace()), 10)


class ExitedError(Exception):
    pass


def _commit_with(thread_commit: Any, monkeypatch: Any) -> Any:
    """faust's commit through a consumer thread whose commit is ``thread_commit``."""
    faust_fixes.apply()
    monkeypatch.setattr(faust_fixes, "COMMIT_STUCK_S", 0.05)

    def exit_(code: int) -> None:
        raise ExitedError(code)

    monkeypatch.setattr(os, "_exit", exit_)
    consumer: Any = SimpleNamespace(_thread=SimpleNamespace(commit=thread_commit))
    return asyncio.run(faust_consumer.ThreadDelegateConsumer._commit(consumer, {TOPIC: 5}))


def test_a_commit_that_never_returns_makes_the_worker_exit_to_be_restarted(
    monkeypatch: Any,
) -> None:
    async def wedged(offsets: Any) -> bool:
        await asyncio.Event().wait()  # the consumer thread never answers
        return True

    try:
        _commit_with(wedged, monkeypatch)
    except ExitedError as exited:
        assert exited.args == (faust_fixes.EXIT_COMMIT_STUCK,)
    else:
        raise AssertionError("a wedged commit did not make the worker exit")


def test_a_commit_that_returns_goes_through(monkeypatch: Any) -> None:
    committed: list[Any] = []

    async def answers(offsets: Any) -> bool:
        committed.append(offsets)
        return True

    assert _commit_with(answers, monkeypatch) is True
    assert committed == [{TOPIC: 5}]


def test_a_slow_commit_that_returns_is_logged_with_how_long_it_took(
    monkeypatch: Any, caplog: Any
) -> None:
    async def slow(offsets: Any) -> bool:
        await asyncio.sleep(0.02)  # a commit riding out a broker restart, in miniature
        return True

    monkeypatch.setattr(faust_fixes, "COMMIT_SLOW_S", 0.01)
    with caplog.at_level(logging.WARNING, logger=faust_fixes.__name__):
        assert _commit_with(slow, monkeypatch) is True
    [record] = [r for r in caplog.records if "a commit took" in r.getMessage()]
    assert record.args and record.args[0] >= 0.02


def test_a_quick_commit_is_not_logged(monkeypatch: Any, caplog: Any) -> None:
    async def quick(offsets: Any) -> bool:
        return True

    with caplog.at_level(logging.WARNING, logger=faust_fixes.__name__):
        assert _commit_with(quick, monkeypatch) is True
    assert not [r for r in caplog.records if "a commit took" in r.getMessage()]
