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

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from faust.stores import STORES
from faust.stores.base import Store
from faust.types import TP, EventT

from slipstream.streams import changelog_read

SCHEME = "slipstream-engines"


class ChangelogReader(Protocol):
    """Where the entries of a recovering partition go (the worker's ``EngineHost``)."""

    def load_entry(self, partition: int, key: str, value: Any) -> None: ...

    def load_entries(self, partition: int, keys: Sequence[Any], values: Sequence[Any]) -> None: ...

    def live(self) -> set[int]: ...

    def forget_restoring(self, partitions: set[int]) -> None: ...

    def recovery_completed(self, active: set[int]) -> None: ...


class EngineStore(Store[Any, Any]):
    """Writes go to the changelog only; recovery goes to the engines."""

    def __post_init__(self) -> None:
        self.data: dict[Any, Any] = {}  # stays empty: the engines hold the state
        # Per changelog partition: the offset of the last record the engines hold.
        self.held_offsets: dict[TP, int] = {}

    @property
    def reader(self) -> ChangelogReader:
        reader: ChangelogReader | None = getattr(self.table, "changelog_reader", None)
        if reader is None:
            raise RuntimeError(f"table {self.table_name}: no changelog reader to recover into")
        return reader

    def __setitem__(self, key: Any, value: Any) -> None:
        pass  # the table has sent it to the changelog; the engine already holds it

    def __delitem__(self, key: Any) -> None:
        pass  # likewise, as a tombstone

    def apply_changelog_batch(
        self,
        batch: Iterable[EventT[Any]],
        to_key: Callable[[Any], Any],
        to_value: Callable[[Any], Any],
    ) -> None:
        reader = self.reader
        for event in batch:
            value = None if event.message.value is None else to_value(event.value)
            reader.load_entry(event.message.partition, to_key(event.key), value)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        self.reader.recovery_completed({tp.partition for tp in active_tps})

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
        # A recovery cut short by this rebalance left half-read engines: read again whole.
        reader.forget_restoring({tp.partition for tp in todo})
        ends = await changelog_read.read_partitions(self.app, todo, reader)
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


def register() -> str:
    """Make ``slipstream-engines://`` a store URL faust knows; return it."""
    STORES.aliases[SCHEME] = f"{__name__}:EngineStore"
    return f"{SCHEME}://"
