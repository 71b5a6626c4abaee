"""A faust table store that keeps no copy of the table: the partition engines are the state.

faust's memory store holds every key and value of a table as Python objects, about
250 bytes per bucket, beside the engine that holds the same numbers in 24 bytes: at
10 000 SLOs with full 30-day windows that copy alone is several GiB. With this store the
table still sends every write and delete to its changelog (faust's ``Table`` does that
before it touches its store), but the store keeps nothing. During recovery it hands each
changelog entry to the engine of its partition, built up entry by entry, and the worker
takes the engine when recovery completes.

Only the worker writes the table and nothing reads it back, so "keeps nothing" is a
safe answer to every read: an empty mapping.

The changelog is read when partitions are assigned, before faust's recovery starts
(``changelog_read``: faust's own recovery applies ~10 k records/s, the engines take
~380 k/s). The store then reports the changelog as held up to where that read ended,
and up to its own writes afterwards, so faust's recovery reads only what came later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import faust.streams as faust_streams
from faust.stores import STORES
from faust.stores.base import Store
from faust.types import TP, EventT

from slipstream.streams import changelog_read
from slipstream.streams.checkpoints import Checkpoint, CheckpointDir

log = logging.getLogger(__name__)

SCHEME = "slipstream-engines"


class ChangelogReader(Protocol):
    """Where the entries of a recovering partition go (the worker's ``EngineHost``)."""

    def load_entry(self, partition: int, key: str, value: Any) -> None: ...

    def load_entries(self, partition: int, keys: Sequence[Any], values: Sequence[Any]) -> None: ...

    def live(self) -> set[int]: ...

    def forget_restoring(self, partitions: set[int]) -> None: ...

    def recovery_completed(self, active: set[int]) -> None: ...

    def note_write(self, partition: int, key: str, value: Any) -> None: ...

    def restore_checkpoint(self, checkpoint: Checkpoint) -> bool: ...


class EngineStore(Store[Any, Any]):
    """Writes go to the changelog only; recovery goes to the engines."""

    def __post_init__(self) -> None:
        self.data: dict[Any, Any] = {}  # stays empty: the engines hold the state
        # Per changelog partition: the offset of the last record the engines hold.
        self.held_offsets: dict[TP, int] = {}
        # Table writes sent and acknowledged per partition in this process's life (never
        # reset: an acknowledgement may come after its partition was given away and taken
        # back), and per live partition, since its engine went live: its changelog offset
        # and the acknowledgements counted then (``settled``).
        self.sent: dict[int, int] = {}
        self.acked: dict[int, int] = {}
        self.live_from: dict[int, tuple[int, int]] = {}
        # Live partitions that had writes of an earlier ownership in flight when they went
        # live: which acknowledgements are of which writes is unknown; no checkpoints.
        self.tainted: set[int] = set()

    @property
    def checkpoints(self) -> CheckpointDir | None:
        found: CheckpointDir | None = getattr(self.table, "checkpoints", None)
        return found

    @property
    def reader(self) -> ChangelogReader:
        reader: ChangelogReader | None = getattr(self.table, "changelog_reader", None)
        if reader is None:
            raise RuntimeError(f"table {self.table_name}: no changelog reader to recover into")
        return reader

    def __setitem__(self, key: Any, value: Any) -> None:
        # The table has sent it to the changelog (on the current event's partition); the
        # engine already holds it. Counted, and kept for checkpoints if not a bucket.
        partition = _current_partition()
        self.sent[partition] = self.sent.get(partition, 0) + 1
        self.reader.note_write(partition, key, value)

    def __delitem__(self, key: Any) -> None:
        self[key] = None  # likewise, as a tombstone

    def apply_changelog_batch(
        self,
        batch: Iterable[EventT[Any]],
        to_key: Callable[[Any], Any],
        to_value: Callable[[Any], Any],
    ) -> None:
        reader = self.reader
        for event in batch:
            message = event.message
            value = None if message.value is None else to_value(event.value)
            reader.load_entry(message.partition, to_key(event.key), value)
            if message.offset > self.held_offsets.get(message.tp, -1):
                self.held_offsets[message.tp] = message.offset

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        self.reader.recovery_completed({tp.partition for tp in active_tps})
        topic = self.table.changelog_topic.get_topic_name()
        for tp in active_tps:
            p = tp.partition
            if tp.topic == topic and p not in self.live_from:
                acked = self.acked.get(p, 0)
                self.live_from[p] = (self.held_offsets.get(tp, -1), acked)
                if self.sent.get(p, 0) != acked:
                    self.tainted.add(p)

    def moved_past(self, partition: int, offset: int | None) -> bool:
        """Whether the live partition's state has changed since changelog ``offset``."""
        if partition not in self.live_from or partition in self.tainted:
            return False
        if self.sent.get(partition, 0) != self.acked.get(partition, 0):
            return True
        tp = TP(self.table.changelog_topic.get_topic_name(), partition)
        return self.held_offsets.get(tp, -1) != offset

    def settled(self, partition: int) -> int | None:
        """The changelog offset up to which the changelog holds exactly the partition's
        live engine, or None while that is not so: a write not acknowledged yet, or the
        changelog grew by more than this worker's own writes since its engine went live
        (another writer, such as a worker that still thought it owned the partition)."""
        live = self.live_from.get(partition)
        if live is None or partition in self.tainted:
            return None
        start, acked_then = live
        acked = self.acked.get(partition, 0)
        if self.sent.get(partition, 0) != acked:
            return None
        tp = TP(self.table.changelog_topic.get_topic_name(), partition)
        end = self.held_offsets.get(tp, -1)
        return end if end - start == acked - acked_then else None

    async def on_rebalance(
        self,
        assigned: set[TP],
        revoked: set[TP],
        newly_assigned: set[TP],
        generation_id: int = 0,
    ) -> None:
        """Read the changelog of every assigned partition whose engine is not live, from its
        start, into fresh engines. Runs before faust's recovery asks ``persisted_offset``
        (the table manager calls the tables first), while the source partitions are
        paused."""
        reader = self.reader
        topic = self.table.changelog_topic.get_topic_name()
        live = reader.live()
        todo = {tp for tp in assigned if tp.topic == topic and tp.partition not in live}
        for tp in [tp for tp in self.held_offsets if tp not in assigned or tp in todo]:
            del self.held_offsets[tp]
        for partition in [p for p in self.live_from if TP(topic, p) not in assigned]:
            del self.live_from[partition]
            self.tainted.discard(partition)
        # A recovery cut short by this rebalance left half-read engines: read again whole.
        reader.forget_restoring({tp.partition for tp in todo})
        resume = {}
        checkpoints = self.checkpoints
        for tp in todo:
            checkpoint = None if checkpoints is None else checkpoints.read(tp.partition)
            if checkpoint is None:
                continue
            try:
                if reader.restore_checkpoint(checkpoint):
                    resume[tp] = checkpoint.offset + 1
            except Exception:
                # A file that passed its checks but does not load (another build's): the
                # changelog is the state; the checkpoint only saves reading it.
                log.exception("%s: its checkpoint does not load; reading the changelog "
                              "whole", tp)  # fmt: skip
                reader.forget_restoring({tp.partition})

        def refused(tp: TP) -> None:
            log.warning("%s[%d]: its checkpoint ends at %d, beyond the changelog's range; "
                        "reading the changelog whole", tp.topic, tp.partition,
                        resume[tp] - 1)  # fmt: skip
            reader.forget_restoring({tp.partition})

        ends = await changelog_read.read_partitions(self.app, todo, reader, resume, refused)
        for tp, end in ends.items():
            self.held_offsets[tp] = end - 1  # faust's convention: the last offset applied

    def persisted_offset(self, tp: TP) -> int | None:
        # None: faust reads the partition from its start (nothing read here yet).
        return self.held_offsets.get(tp)

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        # A write of our own reached the changelog: a rebalance that keeps this partition
        # has faust read only what comes after it (the engine is ahead of it anyway).
        if offset > self.held_offsets.get(tp, -1):
            self.held_offsets[tp] = offset
        if tp.topic == self.table.changelog_topic.get_topic_name():
            self.acked[tp.partition] = self.acked.get(tp.partition, 0) + 1

    def reset_state(self) -> None:
        pass

    async def backup_partition(
        self, tp: TP | int, flush: bool = True, purge: bool = False, keep: int = 1
    ) -> None:
        pass

    def restore_backup(self, tp: TP | int, latest: bool = True, backup_id: int = 0) -> None:
        pass

    def _clear(self) -> None:
        pass


def _current_partition() -> int:
    """The partition of faust's current event: the one the table writes to."""
    event = faust_streams.current_event()
    if event is None:
        raise RuntimeError("a table write with no current event")
    partition: int = event.message.partition
    return partition


def register() -> str:
    """Make ``slipstream-engines://`` a store URL faust knows; return it."""
    STORES.aliases[SCHEME] = f"{__name__}:EngineStore"
    return f"{SCHEME}://"
