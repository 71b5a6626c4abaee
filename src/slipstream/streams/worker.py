"""The faust worker: consumes the source topics as raw bytes, runs the SLO engine, publishes.

Records come in micro-batches (``batch_drain``: up to ``BATCH_MAX_MESSAGES``, one batch
per ``BATCH_WITHIN_S`` under load), taken out of faust's consumer fetches before its
per-message path. Per record, the input side (``ingest``) decodes and validates,
dead-letters what fails, and the partition's engine counts the requests and evaluates
its SLOs at event time. Per batch and partition, the engine's table changes (one per
touched bucket) are written with one of that partition's records as faust's current
event (so changelog records land on the record's partition), outputs are sent, and only
then are the batch's offsets acknowledged for commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
import sys
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import faust
import faust.streams as faust_streams
from faust.types import TP
from prometheus_client import CollectorRegistry, disable_created_metrics

from slipstream import conventions
from slipstream.catalogue_file import load_catalogue
from slipstream.connect import check_redis_access, faust_credentials, redis_client
from slipstream.schemas.codec import AvroCodec
from slipstream.schemas.request_rows import compiled_reader
from slipstream.settings import Settings
from slipstream.sinks import metrics_server
from slipstream.sinks.metrics import InputCounts, WorkerMetrics
from slipstream.sinks.prometheus_collector import SloCollector
from slipstream.sinks.records import (
    alert_key,
    budget_state,
    burn_rate_alert,
    deploy_impact,
    policy_event,
)
from slipstream.sinks.redis_sink import RedisStateSink
from slipstream.sinks.state import InMemoryStateSink
from slipstream.slo.catalogue import Catalogue
from slipstream.slo.engine import BudgetSnapshot, MessageResult, PartitionEngine, bucket_prefix
from slipstream.stack.process import StackError
from slipstream.streams import batch_drain, checkpoints, engine_store, faust_fixes
from slipstream.streams.batch_drain import SourceBatch
from slipstream.streams.checkpoints import Checkpoint, CheckpointDir
from slipstream.streams.ingest import DeadLetter, Ingested, Ingestor, MessageRun
from slipstream.streams.stall_guard import StallGuard
from slipstream.streams.topics import ensure_topics, worker_topic_specs

log = logging.getLogger(__name__)

REDIS_FLUSH_INTERVAL_S = 1.0
# A micro-batch closes at this many messages or bytes of values, or once this long has
# passed since the previous one closed (a message after a quiet spell goes at once): see
# batch_drain. A batch costs one table write per touched bucket whatever its size: under
# load (a backlog, the bench's drain) 20 000 single-event messages (~0.6 s of work) wrote
# half as much per message as 5 000 and drained ~15 % faster (5 A/B rounds). SDK batches
# gained nothing from 4 MiB over 1 MiB (3 rounds), and the full bench with a 3 MiB cap
# (~0.8 s of their work) had the alert p99 at 90 % load at 1.41 s (0.91 s with 1 MiB,
# 0.78 s with 1.5 MiB): 1.5 MiB is ~0.4 s of SDK batches and about what 20 000 single
# events take (77 bytes each in the bench).
# Below saturation a batch closes on BATCH_WITHIN_S long before either.
BATCH_MAX_MESSAGES = 20_000
BATCH_MAX_BYTES = 3 << 19
BATCH_WITHIN_S = 0.2
YIELD_EVERY = 100  # records between two turns of the event loop within a batch
PRODUCER_LINGER_S = 0.01
BUDGET_FLUSH_INTERVAL_S = 5.0
# How often partitions are looked at for a checkpoint (each is written at most once per
# Settings.checkpoint_interval_s, and only when its state changed).
CHECKPOINT_CHECK_S = 1.0
EXIT_BATCH_FAILED = 70  # EX_SOFTWARE: a supervisor restarts the worker, which replays the batch


# Table key of the highest source offset absorbed: "<partition>|o|<source topic>".
OFFSETS_KEY = "|o|"


def offsets_key(partition: int, topic: str) -> str:
    return f"{partition}{OFFSETS_KEY}{topic}"


def reread_start(high: int, committed: int | None) -> int:
    """After a jump: the first offset the state lacks, or the committed one if lower."""
    return high + 1 if not committed else min(high + 1, committed)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def use_uvloop() -> bool:
    """Run faust on uvloop when it is installed (measured: faust hands over ~20 % more
    messages per second on it); call before the app's event loop exists."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    import mode.loop

    mode.loop.use("uvloop")
    return True


@contextlib.contextmanager
def event_context(event: faust.EventT[Any]) -> Iterator[None]:
    """Make ``event`` faust's current event in this task while table writes are made (they
    take their changelog partition from it: faust #497). The batch's records come from
    no faust stream, so no stream's ``current_event`` is touched: only the variable."""
    token = faust_streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        faust_streams._current_event.reset(token)


class EngineHost:
    """The engines of the partitions this worker owns. While faust recovers the table, the
    table's store hands each changelog entry to the engine of its partition; once live, an
    engine alone holds its partition's state (the table keeps no copy: ``engine_store``)."""

    def __init__(
        self,
        catalogue: Catalogue,
        on_restored: Callable[[int], None] = lambda entries: None,
        on_checkpoint_restored: Callable[[int, int, int], None] = lambda p, offset, n: None,
    ) -> None:
        self.catalogue = catalogue
        self.on_restored = on_restored  # changelog entries restored, per partition made live
        # (partition, checkpoint offset, entries) per partition made live from a checkpoint
        self.on_checkpoint_restored = on_checkpoint_restored
        self.engines: dict[int, PartitionEngine] = {}
        self.restoring: dict[int, PartitionEngine] = {}
        self.loaded: dict[int, int] = {}  # changelog entries read per restoring partition
        # Per restoring partition restored from a checkpoint: (its offset, entries).
        self.checkpointed: dict[int, tuple[int, int]] = {}
        self.unshown: set[int] = set()  # live, restored state not yet sent to the sinks
        # (partition, source topic) -> the highest offset the restored state absorbed.
        self.restored_offsets: dict[tuple[int, str], int] = {}
        # Per partition, its table entries other than buckets as JSON text, as the
        # changelog holds them (what a checkpoint stores beside the bucket rings).
        self.entries: dict[int, dict[str, str]] = {}

    def _keep_entry(self, partition: int, key: str, value: Any) -> None:
        entries = self.entries.setdefault(partition, {})
        if value is None:
            entries.pop(key, None)
        else:
            entries[key] = json.dumps(value, separators=(",", ":"))

    def note_write(self, partition: int, key: str, value: Any) -> None:
        """A table write (None: a delete) of a live partition, as sent to its changelog."""
        if not key.startswith(bucket_prefix(partition)):
            self._keep_entry(partition, key, value)

    def load_entry(self, partition: int, key: str, value: Any) -> None:
        if partition in self.engines:
            # Live already: a rebalance that kept the partition re-reads the changelog's
            # tail, this engine's own writes. The engine is ahead of them; nothing to do.
            return
        if key.startswith(f"{partition}{OFFSETS_KEY}"):
            topic = key[len(f"{partition}{OFFSETS_KEY}") :]
            if value is None:
                self.restored_offsets.pop((partition, topic), None)
            else:  # the highest: a stale write may come after a newer one
                previous = self.restored_offsets.get((partition, topic), -1)
                self.restored_offsets[(partition, topic)] = max(previous, int(value))
            self._keep_entry(partition, key, self.restored_offsets.get((partition, topic)))
            return
        engine = self.restoring.get(partition)
        if engine is None:
            engine = self.restoring[partition] = PartitionEngine(partition, self.catalogue)
        if not key.startswith(bucket_prefix(partition)):
            self._keep_entry(partition, key, value)
        if engine.load_entry(key, value):
            self.loaded[partition] = self.loaded.get(partition, 0) + 1

    def restore_checkpoint(self, checkpoint: Checkpoint) -> bool:
        """Start a restoring partition from its checkpoint (the changelog after it comes
        next); False when it does not fit the catalogue's SLOs (read the changelog whole)."""
        partition = checkpoint.partition
        added = self.catalogue_slos() - checkpoint.slos
        if added:
            # Their buckets, if the changelog has any, were not kept: read it whole.
            log.info("partition %d: the catalogue has %d SLOs its checkpoint did not know "
                     "(%s, …); reading the changelog whole", partition, len(added),
                     "/".join(sorted(added)[0]))  # fmt: skip
            return False
        engine = PartitionEngine.from_bucket_image(partition, self.catalogue, checkpoint.buckets)
        if engine is None:
            log.info("partition %d: an SLO's windows changed since its checkpoint; reading "
                     "the changelog whole", partition)  # fmt: skip
            return False
        self.forget_restoring({partition})
        self.restoring[partition] = engine
        keys = list(checkpoint.entries)
        self.load_entries(partition, keys, [json.loads(checkpoint.entries[k]) for k in keys])
        self.loaded.pop(partition, None)  # entries of the checkpoint, not of the changelog
        self.checkpointed[partition] = (checkpoint.offset, checkpoint.held)
        return True

    def checkpoint(self, partition: int, topic: str, offset: int) -> Checkpoint:
        """The live partition's checkpoint at changelog ``offset`` (all its writes
        acknowledged up to there); arrays shared with the engine: encode it at once."""
        buckets = self.engines[partition].bucket_image()
        entries = dict(self.entries.get(partition, {}))
        return Checkpoint(topic, partition, offset, buckets, entries, self.catalogue_slos(),
                          now_ms())  # fmt: skip

    def catalogue_slos(self) -> frozenset[tuple[str, str]]:
        return frozenset((slo.service, slo.name) for slo in self.catalogue.all_slos())

    def load_entries(self, partition: int, keys: Sequence[Any], values: Sequence[Any]) -> None:
        """A batch of one partition's entries in changelog order (``changelog_read``): the
        offset entries here, the rest to the engine in one call (what ``load_entry`` does
        entry by entry)."""
        if partition in self.engines:
            return  # live already: see load_entry
        offsets_prefix = f"{partition}{OFFSETS_KEY}"
        engine_keys: list[Any] = []
        engine_values: list[Any] = []
        buckets = bucket_prefix(partition)
        for key, value in zip(keys, values, strict=True):
            if key.startswith(offsets_prefix):
                self.load_entry(partition, key, value)
                continue
            if not key.startswith(buckets):
                self._keep_entry(partition, key, value)
            engine_keys.append(key)
            engine_values.append(value)
        if not engine_keys:
            return
        engine = self.restoring.get(partition)
        if engine is None:
            engine = self.restoring[partition] = PartitionEngine(partition, self.catalogue)
        used = engine.load_entries(engine_keys, engine_values)
        if used:
            self.loaded[partition] = self.loaded.get(partition, 0) + used

    def live(self) -> set[int]:
        return set(self.engines)

    def forget_restoring(self, partitions: set[int]) -> None:
        """Drop what was read of these partitions' changelogs (they are read again whole)."""
        for p in partitions - set(self.engines):
            self.restoring.pop(p, None)
            self.loaded.pop(p, None)
            self.checkpointed.pop(p, None)
            self.entries.pop(p, None)
            for key in [k for k in self.restored_offsets if k[0] == p]:
                del self.restored_offsets[key]

    def recovery_completed(self, active: set[int]) -> None:
        for partition in sorted(self.restoring):
            if partition in active:
                self.engine(partition)
            else:
                del self.restoring[partition]
                self.loaded.pop(partition, None)
                self.checkpointed.pop(partition, None)
                self.entries.pop(partition, None)

    def engine(self, partition: int) -> PartitionEngine:
        engine = self.engines.get(partition)
        if engine is None:
            engine = self.restoring.pop(partition, None)
            if engine is None:
                engine = PartitionEngine(partition, self.catalogue)
            engine.finish_restore()
            self.engines[partition] = engine
            self.unshown.add(partition)
            loaded = self.loaded.pop(partition, 0)
            checkpoint = self.checkpointed.pop(partition, None)
            if checkpoint is not None:
                log.info("partition %d: restored from its checkpoint at changelog offset %d "
                         "(%d entries) and %d changelog entries after it", partition,
                         checkpoint[0], checkpoint[1], loaded)  # fmt: skip
                self.on_checkpoint_restored(partition, *checkpoint)
            elif loaded:
                log.info("partition %d: restored from %d changelog entries", partition, loaded)
            if loaded:
                self.on_restored(loaded)
        return engine

    def restored_snapshots(self, partitions: set[int]) -> list[BudgetSnapshot]:
        """The restored state of owned partitions not shown yet (their engines are made live
        when recovery completes, or here)."""
        out = []
        for p in sorted(partitions):
            if p not in self.engines:
                self.engine(p)
            if p in self.unshown:
                self.unshown.discard(p)
                out += [rt.latest for rt in self.engines[p].runtimes.values() if rt.latest]
        return out

    def partitions(self) -> set[int]:
        """Partitions with an engine, live or restoring."""
        return set(self.engines) | set(self.restoring)

    def drop(self, partitions: set[int]) -> set[tuple[str, str]]:
        gone: set[tuple[str, str]] = set()
        for p in partitions:
            for key in [k for k in self.restored_offsets if k[0] == p]:
                del self.restored_offsets[key]
            self.restoring.pop(p, None)
            self.loaded.pop(p, None)
            self.checkpointed.pop(p, None)
            self.entries.pop(p, None)
            self.unshown.discard(p)
            engine = self.engines.pop(p, None)
            if engine is not None:
                gone |= set(engine.runtimes)
        return gone


class SloWorker:
    """The faust app with its topics and table, and what it does with each message."""

    def __init__(
        self,
        settings: Settings,
        metrics: WorkerMetrics,
        catalogue: Catalogue,
        state: InMemoryStateSink,
        redis_sink: RedisStateSink,
    ) -> None:
        self.metrics, self.state, self.redis_sink = metrics, state, redis_sink
        ns = settings.namespace
        faust_fixes.apply(conventions.topic_name(ns, t) for t in conventions.SOURCE_TOPICS)
        datadir = Path(settings.stack_dir) / "worker" / (ns or "default")
        datadir.mkdir(parents=True, exist_ok=True)
        self.group = settings.consumer_group or conventions.consumer_group(ns)
        self.app = app = faust.App(
            self.group,
            broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
            # Table state lives in its changelog topic and in the engines; no copy in between.
            store=engine_store.register(),
            # A standby copy would be a second engine per partition; a newly assigned
            # partition is read from its changelog anyway.
            table_standby_replicas=0,
            datadir=str(datadir),
            # faust's web server exposes table contents: off. Metrics have their own endpoint.
            web_enabled=False,
            topic_partitions=settings.partitions,
            key_serializer="raw",
            value_serializer="raw",
            consumer_auto_offset_reset="earliest",
            consumer_group_instance_id=settings.instance_id or None,
            broker_credentials=faust_credentials(settings),
            broker_session_timeout=settings.session_timeout_s,
            broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 10),
            # Table and output writes of a micro-batch go out in a few produce requests,
            # not one each: +16-19 % events/s in the batched benchmark (5, 10, 20 ms alike;
            # 0 ms: one request per record). Alerts wait at most this long.
            producer_linger=PRODUCER_LINGER_S,
        )
        # Exits a worker that was paused for half the session: see stall_guard.
        self.stall_guard = StallGuard(settings.session_timeout_s / 2)
        self.base_of = {conventions.topic_name(ns, t): t for t in conventions.SOURCE_TOPICS}
        self.sources = app.topic(
            *self.base_of, key_type=bytes, value_type=bytes, partitions=settings.partitions
        )
        self.dlq = {
            base: app.topic(conventions.dlq_topic_name(ns, base), key_type=bytes, value_type=bytes)
            for base in conventions.SOURCE_TOPICS
        }
        self.alerts_topic = app.topic(
            conventions.topic_name(ns, conventions.ALERTS_TOPIC), key_type=bytes, value_type=bytes
        )
        self.budget_topic = app.topic(
            conventions.topic_name(ns, conventions.BUDGET_TOPIC), key_type=bytes, value_type=bytes
        )
        self.impact_topic = app.topic(
            conventions.topic_name(ns, conventions.DEPLOY_IMPACT_TOPIC),
            key_type=bytes,
            value_type=bytes,
        )
        self.policy_topic = app.topic(
            conventions.topic_name(ns, conventions.POLICY_TOPIC), key_type=bytes, value_type=bytes
        )
        # Co-partitioned with slo.requests: written only while a message of the same
        # partition is the current event, keys prefixed with that partition.
        self.table = app.Table(
            conventions.STATE_TABLE,
            default=None,
            partitions=settings.partitions,
            key_type=str,  # keys and values go to the changelog as JSON
        )
        # With the catalogue, batches are counted as they are checked (Ingested.tally).
        self.ingestor = Ingestor(catalogue=catalogue)
        if compiled_reader is None:
            log.warning("the compiled request reader is not built (no C compiler at install "
                        "time): request messages are read with fastavro, which takes about 40 % "
                        "off the worker's throughput on SDK batches")  # fmt: skip
        # The highest source offset absorbed per (topic, partition) in this process's life.
        self.high_offset: dict[tuple[str, int], int] = {}
        self.held: dict[tuple[str, int], set[int]] = {}  # offsets held while reading again
        self.reread: dict[TP, int] = {}  # where to seek a partition to before going on
        self.ready: set[int] = set()  # owned partitions whose state is restored and shown
        self.codec = AvroCodec()
        # Per partition: the changelog offset of its last checkpoint (written or restored
        # from) and when it was written (monotonic s).
        self.checkpointed: dict[int, tuple[int, float]] = {}
        # Per partition: when a checkpoint was last tried and could not be taken.
        self.checkpoint_tried: dict[int, float] = {}
        self.host = EngineHost(catalogue, metrics.restored_entries.inc, self.checkpoint_restored)
        # Where engine_store sends the entries it recovers.
        self.table.changelog_reader = self.host  # type: ignore[attr-defined]
        self.changelog_topic = self.table.changelog_topic.get_topic_name()
        self.checkpoint_interval_s = settings.checkpoint_interval_s
        self.checkpoints: CheckpointDir | None = None
        if self.checkpoint_interval_s > 0:
            self.checkpoints = CheckpointDir(datadir / "checkpoints", self.changelog_topic)
            self.checkpoints.remove_orphans()
        self.table.checkpoints = self.checkpoints  # type: ignore[attr-defined]
        self.batch_running = False  # the engines are mid-change
        self.checkpoint_lock = asyncio.Lock()
        self.next_checkpoint_look = 0.0  # monotonic s

        # The source topics' records come to ``consume`` in batches (``batch_drain``), not
        # through an agent: faust's per-message path capped the worker at ~10-15 k
        # messages/s. Subscribed through the conductor all the same, with acks.
        app.topics.add(self.sources)
        deploys = conventions.topic_name(ns, conventions.DEPLOYS_TOPIC)
        batch_drain.install(
            app,
            batch_drain.BatchDrain(
                # Deploys first within a batch: a deploy known before its version's requests.
                [deploys, *(t for t in self.base_of if t != deploys)],
                self.consume,
                BATCH_MAX_MESSAGES,
                BATCH_MAX_BYTES,
                BATCH_WITHIN_S,
            ),
        )
        app.timer(REDIS_FLUSH_INTERVAL_S)(self.flush_redis)
        if self.checkpoints is not None:
            app.timer(min(CHECKPOINT_CHECK_S, self.checkpoint_interval_s))(self.write_checkpoints)
        app.timer(BUDGET_FLUSH_INTERVAL_S)(self.flush_budgets)
        app.on_partitions_revoked.connect(self.on_revoked)  # type: ignore[arg-type]
        app.on_partitions_assigned.connect(self.on_assigned)  # type: ignore[arg-type]
        self.table.on_recover(self.on_recovered)

    async def consume(self, batch: SourceBatch) -> None:
        """One batch from ``batch_drain``, which acknowledges its records (all but those
        held) only when this returns: one at a time, so nothing is ever committed past
        an unfinished message (faust #606)."""
        if self.checkpoints_due():
            # Under steady load the timer never finds the engines between batches.
            await self.write_checkpoints()
        self.batch_running, cancelled = True, False
        try:
            await self.handle_batch(batch)
        except asyncio.CancelledError:
            # Stopped mid-batch (SIGTERM, a crash elsewhere): nothing of it is acknowledged
            # and the batch is read again. The engines stay "mid-change": no checkpoint of
            # what it absorbed but never wrote.
            cancelled = True
            raise
        except Exception:
            # Exit at once: a restart replays the batch, none of it acknowledged (an error
            # escaping faust's take_events acknowledged its batch: faust #315).
            log.critical("a batch of %d messages failed; exiting unacknowledged",
                         len(batch), exc_info=True)  # fmt: skip
            logging.shutdown()
            os._exit(EXIT_BATCH_FAILED)
        finally:
            self.batch_running = cancelled

    async def handle_batch(self, batch: SourceBatch) -> None:
        """Absorb a micro-batch record by record (consecutive single-request messages as
        one: ``MessageRun``), then close each partition's engine once: one table write per
        touched bucket per batch, not per event."""
        by_partition: dict[int, list[tuple[TP, list[Any]]]] = {}
        for tp, records in batch.records.items():
            by_partition.setdefault(tp.partition, []).append((tp, records))
        absorbed, counts = 0, InputCounts()
        applied: list[MessageResult] = []
        for partition, chunks in by_partition.items():
            run: MessageRun | None = None
            counted = False
            for tp, records in chunks:
                topic = self.base_of.get(tp.topic, "other")
                for record in records:
                    absorbed += 1
                    if absorbed % YIELD_EVERY == 0:
                        counts.flush_into(self.metrics)
                        await asyncio.sleep(0)  # nothing here waits: the producer's turn
                    if not self.in_order(batch, tp, record.offset):
                        if self.reread:
                            # seek_wait runs in the consumer's thread; faust's seek()
                            # touches the client from this one, and the fetcher may never
                            # notice.
                            reread, self.reread = self.reread, {}
                            await self.app.consumer.seek_wait(reread)
                        continue
                    if run is None:
                        run = MessageRun(self.host.engine(partition), self.ingestor.slis)
                    received = now_ms()
                    result = self.ingest(run, tp, topic, record, received, counts)
                    if result.dead:
                        await self.dead_letter(tp, record, result.dead, received)
                    if result.accepted:
                        counted = True
                        for deploy in result.deploys:
                            self.state.add_deploy(deploy)
            counts.flush_into(self.metrics)
            if run is not None:
                run.close()
            last_tp, last_records = chunks[-1]
            with event_context(self.event_of(last_tp, last_records[-1])):
                self.stall_guard.check()  # a zombie writes nothing
                if run is not None and counted:
                    ended = run.engine.end()
                    await self.apply(ended)
                    applied.append(ended)
                self.save_offsets(partition, {tp.topic for tp, _ in chunks})
            # The partition's writes handed to the client before going on: the producer's
            # buffer moves about one message per turn of the loop, and the client sends in
            # the next partition's turns.
            await self.app.producer.buffer.flush()
        if applied:
            # Shown once the broker has the table writes that carry it: shown before, a
            # kill -9 could take it away again (the restarted worker restores the state the
            # changelog holds), and /metrics and Redis would go back in time.
            await self.app.producer.flush()
            for ended in applied:
                self.show(ended)

    def event_of(self, tp: TP, record: Any) -> faust.EventT[Any]:
        """A faust event for a fetched record: the current event of table writes."""
        message = self.app.consumer._to_message(tp, record)  # type: ignore[attr-defined]
        return self.app.create_event(record.key, record.value, record.headers, message)

    def save_offsets(self, partition: int, topics: set[str]) -> None:
        """The highest source offset absorbed per topic, in the changelog after the state it
        produced: a restarted worker knows where its state ends and tells a replay (at or
        below it) from a message the client skipped ahead to (above it plus one)."""
        for topic in topics:
            high = self.high_offset.get((topic, partition))
            if high is not None:
                self.table[offsets_key(partition, self.base_of.get(topic, topic))] = high

    def in_order(self, batch: SourceBatch, tp: TP, offset: int) -> bool:
        """False for a record that arrived beyond the next offset of its partition: the
        client skipped some (faust does, around a restart's seek to the committed offsets),
        and absorbing this one first would make the offset guard drop them when they come.
        The partition is read again from the first one missing; this record is held
        unacknowledged (its re-read copy is the one counted). When the re-read starts with
        this same record, the offsets before it hold no records (a real gap): go on."""
        topic, partition = tp.topic, tp.partition
        key = (topic, partition)
        if partition not in self.ready:
            # Its state is still being read from the changelog: a record fetched before
            # recovery paused the partition would make the half-read engine live and the
            # rest of the changelog be ignored. Held; recovery ends with a seek to the
            # committed offsets, which reads it again.
            batch.hold(tp, offset)
            self.metrics.held_messages.labels(self.base_of.get(topic, "other")).inc()
            return False
        high = self.high_offset.get(key)
        if high is None:  # the first record since start or assignment: where state ends
            high = self.host.restored_offsets.get((partition, self.base_of.get(topic, topic)))
        if high is not None and offset > high + 1:
            held = self.held.setdefault(key, set())
            if offset not in held:
                held.add(offset)
                batch.hold(tp, offset)
                if len(held) == 1:
                    start = self.reread_from(tp, high)
                    log.warning("%s[%d]: offset %d arrived after %d; reading again from %d",
                                topic, partition, offset, high, start)  # fmt: skip
                    self.metrics.offset_jumps.labels(self.base_of.get(topic, "other")).inc()
                    self.reread[tp] = start  # handle_batch seeks there before going on
                return False
        if high is None or offset > high:
            self.high_offset[key] = offset
            self.held.pop(key, None)
        return True

    def reread_from(self, tp: Any, high: int) -> int:
        """Where to read a partition again from after a jump: the first offset the state
        lacks, or the group's committed offset if that is lower. faust commits nothing
        while the lowest acknowledged offset lies more than one past the committed one,
        so the messages in between (in the state already: the offset guard skips them)
        must be read and acknowledged again, or the partition never commits again."""
        committed = self.app.consumer._committed_offset.get(tp)  # type: ignore[attr-defined]
        return reread_start(high, committed)

    def ingest(
        self, run: MessageRun, tp: TP, topic: str, record: Any, received: int, counts: InputCounts
    ) -> Ingested:
        """Decode and check one record of ``tp`` (base name ``topic``, received at
        ``received`` ms), counted in ``run``."""
        value: bytes = record.value or b""
        try:
            result = run.ingest(self.ingestor, topic, tp.partition, value, received, record.offset)
        except Exception as exc:
            # A bug of ours must neither stop the stream nor skip the event unseen.
            log.exception("ingest failed at %s[%d]@%d", tp.topic, tp.partition, record.offset)
            result = Ingested(
                dead=[DeadLetter(value, type(exc).__name__, "internal-error", str(exc))]
            )
        counts.add(topic, len(value), result.accepted, result.duplicates)
        return result

    async def dead_letter(self, tp: TP, record: Any, dead: list[DeadLetter], received: int) -> None:
        topic = self.base_of.get(tp.topic, "other")
        for letter in dead:
            headers = letter.headers(tp.topic, tp.partition, record.offset, received)
            # Sent before the source offset is committed (faust flushes its producer before
            # it commits), so a dead letter is never lost.
            await self.dlq[topic].send(key=record.key, value=letter.value, headers=headers)
            self.metrics.dead_letters.labels(topic, letter.reason).inc()

    async def apply(self, result: MessageResult) -> None:
        """A batch's result to the table and the output topics (``show`` puts it in the
        sinks once the broker has it)."""
        table = self.table
        for key in result.deletes:
            del table[key]  # a tombstone on the changelog
        for key, value in result.writes.items():
            table[key] = value
        processed = now_ms()
        for transition, snapshot in result.transitions:
            suspect = result.suspects.get(transition.alert_id)
            cause = result.causes.get(transition.alert_id, "unknown")
            record = burn_rate_alert(transition, snapshot, processed, suspect, cause)
            await self.alerts_topic.send(
                key=alert_key(transition.service, transition.slo),
                value=self.codec.encode("BurnRateAlert", record),
            )
        for snapshot in result.snapshots:
            await self.publish_budget(snapshot)
        for impact in result.impacts:
            await self.impact_topic.send(
                key=impact.deploy.deploy_id.encode(),
                value=self.codec.encode("DeployImpact", deploy_impact(impact)),
            )
        for change in result.policy:
            await self.policy_topic.send(
                key=change.service.encode(),
                value=self.codec.encode("PolicyEvent", policy_event(change)),
            )

    def show(self, result: MessageResult) -> None:
        """An applied result in the sinks (/metrics, Redis) and the counters."""
        for transition, snapshot in result.transitions:
            self.state.add_transition(transition, snapshot)
            self.redis_sink.add_transition(transition, snapshot)
            self.metrics.alert_transitions.labels(transition.state, transition.severity).inc()
        # After the transitions: a batch may hold hours of event time, and the state the
        # sinks keep is the newest one, not the one an earlier transition carried.
        for snapshot in result.latest.values():
            self.state.add_snapshot(snapshot)
            self.redis_sink.add_snapshot(snapshot)
        for impact in result.impacts:
            self.state.add_impact(impact)
            self.redis_sink.add_impact(impact)
        for change in result.policy:
            self.redis_sink.add_policy(change)
        self.metrics.late_events.inc(result.late_events)
        self.metrics.replayed_skipped.inc(result.skipped_replayed)
        self.metrics.unknown_service_events.inc(result.unknown_service_events)

    async def publish_budget(self, snapshot: BudgetSnapshot) -> None:
        await self.budget_topic.send(
            key=alert_key(snapshot.service, snapshot.slo),
            value=self.codec.encode("BudgetState", budget_state(snapshot)),
        )

    async def flush_redis(self) -> None:
        self.stall_guard.check()
        if not self.redis_sink.flush():
            self.metrics.redis_flush_failures.inc()

    def checkpoints_due(self) -> list[int]:
        """Ready partitions whose state moved past their last checkpoint at least an
        interval ago (one look per ``CHECKPOINT_CHECK_S`` at most)."""
        now = time.monotonic()
        if self.checkpoints is None or now < self.next_checkpoint_look:
            return []
        store = self.table.data
        due = []
        for partition in sorted(self.ready & set(self.host.engines)):
            offset, written = self.checkpointed.get(partition, (None, -1e9))
            last = max(written, self.checkpoint_tried.get(partition, -1e9))
            if now - last < self.checkpoint_interval_s:
                continue
            if store.moved_past(partition, offset):  # type: ignore[attr-defined]
                due.append(partition)
        return due

    async def write_checkpoints(self) -> None:
        """Checkpoint the partitions due. Between batches: the table writes in flight are
        awaited first, so the changelog holds exactly each engine (``EngineStore.settled``).
        Encoded at once (the engines move on after), written to disk in a thread. A
        checkpoint that cannot be made now is tried again a little later; its failure
        stops nothing (a restart reads more of the changelog)."""
        due = self.checkpoints_due()
        if not due or self.checkpoint_lock.locked() or self.batch_running:
            return
        async with self.checkpoint_lock:
            self.next_checkpoint_look = time.monotonic() + CHECKPOINT_CHECK_S
            await self.app.producer.flush()
            for _ in range(3):
                await asyncio.sleep(0)  # the acknowledgements' callbacks
            store = self.table.data
            assert self.checkpoints is not None
            # One partition at a time: its copy of the rings is the only one in memory.
            for partition in due:
                if self.batch_running:
                    return  # a batch started meanwhile (from the timer): later
                settled = store.settled(partition)  # type: ignore[attr-defined]
                if settled is None or partition not in self.host.engines:
                    self.checkpoint_tried[partition] = time.monotonic()  # an interval on
                    continue
                # Encoded before any await: the image shares the engine's arrays.
                taken = self.host.checkpoint(partition, self.changelog_topic, settled)
                chunks = checkpoints.encode_chunks(taken)
                try:
                    size = await asyncio.to_thread(self.checkpoints.write_chunks, partition,
                                                   chunks)  # fmt: skip
                except OSError as exc:
                    log.warning("checkpoint of partition %d not written: %s", partition, exc)
                    self.checkpoint_tried[partition] = time.monotonic()
                    continue
                self.checkpointed[partition] = (settled, time.monotonic())
                self.metrics.checkpoints_written.inc()
                self.metrics.checkpoint_bytes.inc(size)
                del chunks, taken

    def checkpoint_restored(self, partition: int, offset: int, entries: int) -> None:
        """A partition went live from its checkpoint at ``offset``: written again only
        once the changelog has moved past it."""
        self.metrics.checkpoint_entries.inc(entries)
        self.checkpointed[partition] = (offset, -1e9)

    async def flush_budgets(self) -> None:
        self.stall_guard.check()
        # The newest state of SLOs whose last evaluation fell between two budget records.
        for engine in list(self.host.engines.values()):
            for snapshot in engine.pending_snapshots():
                await self.publish_budget(snapshot)

    def owned_partitions(self) -> set[int]:
        requests = next(t for t, base in self.base_of.items() if base == conventions.REQUESTS_TOPIC)
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == requests}

    async def on_revoked(self, sender: Any, revoked: Any, **kwargs: Any) -> None:
        """A rebalance starts: short fetch waits until its recovery is done (faust_fixes)."""
        faust_fixes.set_fetch_max_wait(self.app, faust_fixes.RECOVERY_FETCH_MAX_WAIT_MS)

    async def on_assigned(self, sender: Any, assigned: Any, **kwargs: Any) -> None:
        """After a rebalance: drop the state of partitions no longer assigned. Not on faust's
        revoke signal: it names every partition (an eager rebalance revokes all before it
        assigns), while faust's tables keep a partition assigned again and read only the
        tail of its changelog, so its engine must stay."""
        owned = self.owned_partitions()
        gone = self.host.partitions() - owned
        if gone:
            self.ready -= gone
            for key in [k for k in self.high_offset if k[1] in gone]:
                del self.high_offset[key]
            for key in [k for k in self.held if k[1] in gone]:
                del self.held[key]
            self.state.forget(self.host.drop(gone))
            for partition in gone:
                self.checkpointed.pop(partition, None)
                self.checkpoint_tried.pop(partition, None)
                if self.checkpoints is not None:
                    # Another worker owns it now: a checkpoint of it would only age here
                    # (Kafka Streams likewise cleans up the state of tasks it gave away).
                    self.checkpoints.remove(partition)
        self.metrics.partitions_assigned.set(len(owned))
        # Newly assigned partitions are ready when the recovery that follows completes.
        self.metrics.partitions_ready.set(len(self.ready & owned))

    async def on_recovered(self) -> None:
        """After table recovery: show the restored state at once, before any new event."""
        owned = self.owned_partitions()
        await self.reposition_after_recovery()
        for snapshot in self.host.restored_snapshots(owned):
            self.state.add_snapshot(snapshot)
            self.redis_sink.add_snapshot(snapshot)
        self.ready = owned
        self.metrics.partitions_ready.set(len(owned))
        faust_fixes.set_fetch_max_wait(self.app, faust_fixes.FETCH_MAX_WAIT_MS)

    async def reposition_after_recovery(self) -> None:
        """Where each source partition is read from once recovery ends. Runs before faust's
        own seek to the committed offsets (table recovery callbacks come first).

        - A partition committed beyond the restored state: its committed offset is set back
          to where the state ends, or faust's seek would skip the messages in between.
        - A partition with no commit yet: faust does not seek it at all, and the messages
          held while its state was restored would never come again (the first two
          messages of each partition were lost so in the slow-message kill test). It is
          sought here to its beginning, as the consumer's reset policy would: re-read
          messages the state already holds are skipped by the offset guard but still
          acknowledged (so the partition gets committed; seeking past them left a fully
          processed partition without a commit for good) and still dead-lettered."""
        consumer = self.app.consumer
        # Fresh from the group coordinator. faust calls it right after, in its seek.
        committed = await consumer.seek_to_committed()  # type: ignore[attr-defined]
        rewind: dict[TP, int] = {}
        unstarted: list[TP] = []
        for tp, offset in committed.items():
            base = self.base_of.get(tp.topic)
            if base is None:
                continue  # a changelog partition
            high = self.host.restored_offsets.get((tp.partition, base))
            log.info("%s[%d]: committed offset %s, restored state ends at %s",
                     tp.topic, tp.partition, offset, high)  # fmt: skip
            if not offset:  # None or 0: faust leaves the position where it is
                unstarted.append(TP(tp.topic, tp.partition))
            elif high is not None and offset > high + 1:
                log.warning("%s[%d]: committed offset %d is beyond the restored state (%d); "
                            "setting it back to %d", tp.topic, tp.partition, offset, high,
                            high + 1)  # fmt: skip
                self.metrics.offset_rewinds.labels(base).inc()
                rewind[TP(tp.topic, tp.partition)] = high + 1
        if rewind and not await consumer._thread.commit(rewind):  # type: ignore[attr-defined]
            # Raising makes faust crash the worker: a restart recovers and tries again,
            # where going on would skip the messages for good.
            raise RuntimeError(f"could not set committed offsets back to {rewind}")
        if unstarted:
            earliest = await consumer.earliest_offsets(*unstarted)
            await consumer.seek_wait({tp: earliest.get(tp, 0) for tp in unstarted})


def serve_metrics(settings: Settings, registry: CollectorRegistry) -> None:
    host, port = settings.metrics_host_port
    tls = None
    if settings.metrics_tls_cert:
        tls = (settings.metrics_tls_cert, settings.metrics_tls_key)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(*tls)
        except (OSError, ssl.SSLError) as exc:
            raise StackError(
                f"metrics_tls_cert / metrics_tls_key: cannot load {tls}: {exc}"
            ) from exc
    try:
        metrics_server.serve(host, port, registry, tls)
    except OSError as exc:
        raise StackError(
            f"cannot serve metrics on {host}:{port} ({exc.strerror}); "
            "choose another address with --metrics-addr / SLIPSTREAM_METRICS_ADDR"
        ) from exc


def run_worker(settings: Settings, loglevel: str = "warning") -> int:
    uvloop = use_uvloop()
    catalogue = load_catalogue(settings.catalogue or None)
    # Fails with the reason on refused credentials.
    created = ensure_topics(settings, worker_topic_specs(settings))
    check_redis_access(settings)
    if created:
        print(f"created topics: {', '.join(created)}", flush=True)
    disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created: noise on counters
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, settings.namespace)
    state = InMemoryStateSink()
    registry.register(SloCollector(state, catalogue))
    redis_sink = RedisStateSink(
        redis_client(settings, socket_timeout=5, socket_connect_timeout=5), settings.namespace
    )
    serve_metrics(settings, registry)
    slo_worker = SloWorker(settings, metrics, catalogue, state, redis_sink)
    app = slo_worker.app
    print(
        f"worker: group {slo_worker.group} on "
        f"{settings.kafka_bootstrap}; catalogue {catalogue.source} "
        f"({len(catalogue.all_slos())} SLOs); metrics on "
        f"{'https' if settings.metrics_tls_cert else 'http'}://{settings.metrics_addr}/metrics"
        f"{'; uvloop' if uvloop else ''}",
        flush=True,
    )
    slo_worker.stall_guard.start()
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    if not sys.stdout.isatty():
        worker.spinner = None  # its escape codes only clutter a log file
    worker.execute_from_commandline()  # returns only through SystemExit
    return 0
