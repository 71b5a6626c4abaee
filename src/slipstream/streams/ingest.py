"""The worker's input side: raw message bytes in, valid domain events or dead letters out.

No Kafka here: the agent hands over (topic, partition, offset, value) and
sends what comes back, so every rule is testable without a broker. Nothing
in this module raises for bad input; it turns it into a ``DeadLetter``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from slipstream import conventions
from slipstream.schemas.codec import AvroCodec, CodecError
from slipstream.schemas.request_rows import Row, RowReader, record_of, row_of
from slipstream.slo.catalogue import Catalogue
from slipstream.slo.dedup import RecentIds
from slipstream.slo.engine import PartitionEngine
from slipstream.slo.events import (
    EARLIEST_EVENT_MS,
    MAX_ID_LEN,
    MAX_TEXT_LEN,
    SERVICE_NAME,
    Deploy,
    InvalidEventError,
    Request,
    TimePolicy,
    check_event_time,
    deploy_from_record,
    request_from_record,
)
from slipstream.slo.tally import AddEvent, ServiceSlis, Tally, catalogue_slis

REQUEST_SCHEMAS = frozenset({"RequestEvent", "RequestBatch"})
DEPLOY_SCHEMAS = frozenset({"DeployEvent"})

HEADER_PREFIX = "slipstream."
_INF = float("inf")


@dataclass(frozen=True)
class DeadLetter:
    """One record for ``<topic>.dlq``: the bytes to keep and why."""

    value: bytes
    error_class: str
    reason: str
    message: str
    batch_index: int | None = None  # which event of a RequestBatch, if only that one was bad

    def headers(
        self, topic: str, partition: int, offset: int, now_ms: int
    ) -> list[tuple[str, bytes]]:
        out = [
            ("error.class", self.error_class),
            ("error.reason", self.reason),
            ("error.message", self.message[:1000]),
            ("source.topic", topic),
            ("source.partition", str(partition)),
            ("source.offset", str(offset)),
            ("dlq.time_ms", str(now_ms)),
        ]
        if self.batch_index is not None:
            out.append(("source.batch_index", str(self.batch_index)))
        return [(HEADER_PREFIX + k, v.encode()) for k, v in out]


@dataclass
class Ingested:
    requests: list[Request] = field(default_factory=list)
    deploys: list[Deploy] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    duplicates: int = 0
    tally: Tally | None = None  # a batch's accepted requests, counted (instead of requests)
    # A single event's accepted request handed to ``ingest``'s ``add`` (a run's Tally).
    added: int = 0

    @property
    def accepted(self) -> int:
        tallied = self.tally.accepted if self.tally is not None else 0
        return len(self.requests) + len(self.deploys) + tallied + self.added

    def absorb_into(self, engine: PartitionEngine, offset: int) -> None:
        """Count this message (source ``offset``) in its partition's engine."""
        assert not self.added, "an added event is counted by the Tally it went to"
        engine.begin(offset)
        engine.absorb_many(self.requests)
        if self.tally is not None:
            engine.absorb_tallied(self.tally)
        for deploy in self.deploys:
            engine.absorb_deploy(deploy)


class MessageRun:
    """Consecutive single-event messages of one partition counted as one: their requests go
    to the engine in one ``begin`` and one ``absorb_tallied`` (or ``absorb_many``), so runs
    per SLO and 100 ms of event time span messages (each SLO still sees its events in
    order, as one by one). Only messages whose offset lies above the engine's
    ``newest_offset`` join: new to every bucket, the offset guard refuses none of them, and
    the buckets' recorded offset (the run's last) still covers every message that counted
    into them. Any other message (a replay, a deploy, an SDK batch) closes the run and is
    counted alone, in order.

    ``ingest`` is the worker's way: a single event goes from the decoded record straight
    into the run's ``Tally`` (when the ingestor has the catalogue), no ``Request`` built.
    ``absorb`` takes a message ingested elsewhere (its ``Request``s, a batch, a deploy)."""

    def __init__(self, engine: PartitionEngine, slis: dict[str, ServiceSlis] | None) -> None:
        self.engine = engine
        self.slis = slis
        self.tally = Tally(slis) if slis is not None else None
        self.requests: list[Request] = []
        self.offset = -1  # of the last message joined

    def ingest(
        self, ingestor: Ingestor, topic: str, partition: int, value: bytes | None,
        now_ms: int, offset: int,
    ) -> Ingested:  # fmt: skip
        """Ingest the message at source ``offset`` (``Ingestor.ingest``) and count what it
        accepted: into the run, or alone after it."""
        joins = offset > self.engine.newest_offset
        if not joins:  # a replay: a run of its own, through the offset guard
            self.close()
        tally = self.tally
        result = ingestor.ingest(topic, partition, value, now_ms,
                                 add=tally.add if tally is not None else None)  # fmt: skip
        if result.added:
            self.offset = offset
            if not joins:
                self.close()
        elif result.accepted:
            self.absorb(result, offset)
        return result

    def absorb(self, result: Ingested, offset: int) -> None:
        """Count the message at source ``offset``: into the run, or alone after it."""
        assert not result.added, "an added event is counted by the Tally it went to"
        if result.deploys or result.tally is not None:
            self.close()
            result.absorb_into(self.engine, offset)
            return
        joins = offset > self.engine.newest_offset
        if not joins:  # a replay: a run of its own, through the offset guard
            self.close()
        self.requests += result.requests
        self.offset = offset
        if not joins:
            self.close()

    def close(self) -> None:
        """Count what the run holds (before the engine's ``end``, or another message)."""
        tally = self.tally
        if tally is not None and tally.accepted:
            self.engine.begin(self.offset)
            self.engine.absorb_tallied(tally)
            self.tally = Tally(tally.slis)
        if self.requests:
            self.engine.begin(self.offset)
            self.engine.absorb_many(self.requests)
            self.requests = []


class Ingestor:
    """Decodes and validates; keeps per-partition stream time and a bounded dedup window.

    Given the catalogue, the events of a ``RequestBatch`` are counted as they are checked
    (``Ingested.tally``, for ``PartitionEngine.absorb_tallied``) instead of becoming one
    ``Request`` each: the same dead letters, duplicates, stream time and counts. Those
    request messages are read into rows by the compiled reader (``RowReader``) where it
    can, by the codec otherwise (``compiled_rows=False``: always)."""

    def __init__(
        self,
        codec: AvroCodec | None = None,
        time_policy: TimePolicy | None = None,
        dedup_horizon_ms: int = 600_000,
        dedup_max_ids: int = 500_000,
        catalogue: Catalogue | None = None,
        compiled_rows: bool = True,
    ) -> None:
        self.codec = codec or AvroCodec()
        self.time_policy = time_policy or TimePolicy()
        self._dedup_horizon_ms = dedup_horizon_ms
        self._dedup_max_ids = dedup_max_ids
        self._stream_time: dict[tuple[str, int], int] = {}
        self._recent: dict[tuple[str, int], RecentIds] = {}
        self._slis = catalogue_slis(catalogue) if catalogue is not None else None
        self._rows = RowReader(self.codec.registry, compiled=compiled_rows)
        # Names known to match SERVICE_NAME, so the regex runs only for other names (a
        # parsed catalogue's all do; one built in code may hold any).
        self._valid_names = frozenset(n for n in self._slis or () if SERVICE_NAME.match(n))

    def stream_time_ms(self, topic: str, partition: int) -> int | None:
        return self._stream_time.get((topic, partition))

    @property
    def slis(self) -> dict[str, ServiceSlis] | None:
        """The catalogue's SLIs per service, if given one (what a ``Tally`` needs)."""
        return self._slis

    def ingest(
        self,
        topic: str,
        partition: int,
        value: bytes | None,
        now_ms: int,
        add: AddEvent | None = None,
    ) -> Ingested:
        """``topic`` is the base name (``slo.requests`` / ``slo.deploys``). ``add`` (a
        ``Tally.add``, with the catalogue): a ``RequestEvent``'s accepted request goes to it
        (``Ingested.added``), not built as a ``Request``."""
        out = Ingested()
        data = value or b""
        key = (topic, partition)
        if topic == conventions.REQUESTS_TOPIC and self._slis is not None:
            read = self._rows.read(data)
            if read is not None:
                self._tally_rows(key, *read, data, now_ms, out, add)
                return out
        expected = REQUEST_SCHEMAS if topic == conventions.REQUESTS_TOPIC else DEPLOY_SCHEMAS
        try:
            decoded = self.codec.decode(data, expected)
        except CodecError as exc:
            out.dead.append(DeadLetter(data, type(exc).__name__, exc.reason, str(exc)))
            return out
        if decoded.schema == "RequestBatch":
            records = decoded.record["events"]
            if self._slis is not None:
                self._tally_rows(key, True, [row_of(r) for r in records], data, now_ms, out, add)
            else:
                if not records:
                    out.dead.append(DeadLetter(data, "InvalidEventError", "empty-batch",
                                               "no events"))  # fmt: skip
                for index, record in enumerate(records):
                    self._accept_request(key, record, now_ms, out, data, index)
        elif decoded.schema == "RequestEvent":
            if self._slis is not None:
                self._tally_rows(key, False, [row_of(decoded.record)], data, now_ms, out, add)
            else:
                self._accept_request(key, decoded.record, now_ms, out, data, None)
        else:
            try:
                deploy = deploy_from_record(decoded.record)
                self._check_time(key, deploy.timestamp_ms, now_ms)
            except InvalidEventError as exc:
                out.dead.append(DeadLetter(data, type(exc).__name__, exc.reason, str(exc)))
            else:
                out.deploys.append(deploy)
        return out

    def _tally_rows(
        self,
        key: tuple[str, int],
        batch: bool,
        rows: list[Row],
        data: bytes,
        now_ms: int,
        out: Ingested,
        add: AddEvent | None,
    ) -> None:
        """A request message's rows (``data`` its bytes), with the catalogue: a batch is
        counted into ``out.tally``; a single event goes to ``add`` if given."""
        assert self._slis is not None
        if batch:
            if not rows:
                out.dead.append(DeadLetter(data, "InvalidEventError", "empty-batch", "no events"))
            out.tally = Tally(self._slis)
            self._tally_batch(key, rows, now_ms, out, out.tally.add)
        elif add is not None:
            if self._tally_batch(key, rows, now_ms, out, add, single=data):
                out.added = 1
        else:
            self._accept_request(key, record_of(rows[0]), now_ms, out, data, None)

    def _check_time(self, key: tuple[str, int], timestamp_ms: int, now_ms: int) -> None:
        check_event_time(
            timestamp_ms,
            now_ms=now_ms,
            stream_time_ms=self._stream_time.get(key),
            policy=self.time_policy,
        )
        if timestamp_ms > self._stream_time.get(key, 0):
            self._stream_time[key] = timestamp_ms

    def _recent_ids(self, key: tuple[str, int]) -> RecentIds:
        recent = self._recent.get(key)
        if recent is None:
            recent = self._recent[key] = RecentIds(self._dedup_horizon_ms, self._dedup_max_ids)
        return recent

    def _tally_batch(
        self,
        key: tuple[str, int],
        rows: list[Row],
        now_ms: int,
        out: Ingested,
        add: AddEvent,
        single: bytes | None = None,
    ) -> int:
        """``_accept_request`` for each row, in one pass and without a ``Request``: one
        expression accepts the common valid event; anything else goes through the very
        rules of ``request_from_record`` and ``check_event_time``, for their errors.
        ``single``: the records are one ``RequestEvent`` message's, these its bytes (a dead
        letter keeps them as they came, with no batch index). Returns how many went to
        ``add``."""
        policy = self.time_policy
        latest = now_ms + policy.max_ahead_of_clock_ms
        stream = self._stream_time.get(key)
        oldest = EARLIEST_EVENT_MS if stream is None else stream - policy.max_behind_stream_ms
        oldest = max(oldest, EARLIEST_EVENT_MS)
        valid_names, match_name = self._valid_names, SERVICE_NAME.match
        seen_before = self._recent_ids(key).seen_before
        added = 0
        try:
            for index, row in enumerate(rows):
                event_id, service, operation, status, latency, ts, version, _, callee = row
                if not (
                    0 < len(event_id) <= MAX_ID_LEN
                    and (service in valid_names or match_name(service))
                    and 100 <= status <= 599
                    and 0.0 <= latency < _INF  # false for NaN: finite and >= 0
                    and len(operation) <= MAX_TEXT_LEN
                    and (callee is None or callee in valid_names or match_name(callee))
                    and oldest <= ts <= latest
                ):
                    record = record_of(row)
                    try:
                        request_from_record(record)
                        check_event_time(ts, now_ms=now_ms, stream_time_ms=stream, policy=policy)
                    except InvalidEventError as exc:
                        if single is not None:
                            dead = DeadLetter(single, type(exc).__name__, exc.reason, str(exc))
                        else:
                            value = self.codec.encode("RequestEvent", record)
                            dead = DeadLetter(value, type(exc).__name__, exc.reason, str(exc),
                                              index)  # fmt: skip
                        out.dead.append(dead)
                        continue
                if stream is None or ts > stream:
                    stream = ts
                    oldest = max(ts - policy.max_behind_stream_ms, EARLIEST_EVENT_MS)
                if seen_before(event_id, ts):
                    out.duplicates += 1
                    continue
                add(service, version, ts, status, latency, callee)
                added += 1
        finally:  # the stream time of the events before an unexpected error holds too
            if stream is not None:
                self._stream_time[key] = stream
        return added

    def _accept_request(
        self,
        key: tuple[str, int],
        record: dict[str, object],
        now_ms: int,
        out: Ingested,
        data: bytes,
        index: int | None,
    ) -> None:
        try:
            request = request_from_record(record)
            self._check_time(key, request.timestamp_ms, now_ms)
        except InvalidEventError as exc:
            # A bad event inside a batch is kept alone, so the DLQ never holds good events.
            value = data if index is None else self.codec.encode("RequestEvent", record)
            out.dead.append(DeadLetter(value, type(exc).__name__, exc.reason, str(exc), index))
            return
        if self._recent_ids(key).seen_before(request.event_id, request.timestamp_ms):
            out.duplicates += 1
            return
        out.requests.append(request)
