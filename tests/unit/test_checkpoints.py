"""Local checkpoint files (``streams/checkpoints``): what is written is read back; a
damaged, foreign or misplaced file is refused with its reason, never half-used."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from slipstream.slo.catalogue import parse_catalogue
from slipstream.slo.engine import PartitionEngine
from slipstream.slo.events import Request
from slipstream.streams.checkpoints import (
    _LENGTH,
    MAGIC,
    MAX_AGE_MS,
    Checkpoint,
    CheckpointDir,
    CheckpointError,
    decode,
    encode,
    encode_chunks,
    seal,
)
from slipstream.streams.worker import EngineHost

T0 = 1_795_000_000_000
CATALOGUE = {"services": {
    "a": {"slos": [{"name": "avail", "sli": {"kind": "availability"}, "objective": 99,
                    "period": "30d"}]},
    "b": {"slos": [{"name": "avail", "sli": {"kind": "availability"}, "objective": 99.9,
                    "period": "7d"}]},
}}  # fmt: skip


def checkpoint(topic: str = "g-slo-state-changelog", partition: int = 2) -> Checkpoint:
    engine = PartitionEngine(partition, parse_catalogue(CATALOGUE, "test"))
    for offset, (service, status) in enumerate([("a", 200), ("a", 503), ("b", 200)]):
        engine.begin(offset)
        callee = "b" if status == 503 else None  # a failure on a called service, said so
        engine.absorb(Request(f"r{offset}", service, "GET /", status, 5.0, T0 + offset * 10_000,
                              callee=callee))  # fmt: skip
        engine.end()
    entries = {f"{partition}|p": '{"watermark_ms":1}', f"{partition}|o|slo.requests": "2"}
    slos = frozenset({("a", "avail"), ("b", "avail")})
    return Checkpoint(topic, partition, 41, engine.bucket_image(), entries, slos, now_ms())


def now_ms() -> int:
    return int(time.time() * 1000)


def test_what_is_written_is_read_back(tmp_path: Path) -> None:
    original = checkpoint()
    store = CheckpointDir(tmp_path / "cp", original.topic)
    store.write(original)
    read = store.read(2)
    assert read is not None
    assert (read.topic, read.partition, read.offset) == (original.topic, 2, 41)
    assert read.entries == original.entries
    assert (read.slos, read.written_ms) == (original.slos, original.written_ms)
    assert read.buckets == original.buckets  # rings, floors, newest, cells alike
    rings = read.buckets.slos[("a", "avail")]
    assert [ring.via is not None for ring in rings] == [True, True, False]  # 10 s, 5 min, 1 h
    # a: two 10 s buckets, one of 5 min, one of 1 h; b: one of each; and two entries
    assert read.held == original.held == 4 + 3 + 2
    assert store.read(1) is None  # none written
    assert [p.name for p in (tmp_path / "cp").iterdir()] == [store.path(2).name]  # no temp


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "CRC mismatch"),
        (lambda b: b[: len(b) // 2], "CRC mismatch"),
        (lambda b: b"PK" + b[2:], "not a slipstream checkpoint"),
        (lambda b: b[: len(MAGIC) + 3], "truncated"),
    ],
)
def test_a_damaged_file_is_refused_with_its_reason(
    damage: Callable[[bytes], bytes], reason: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = encode(checkpoint())
    with pytest.raises(CheckpointError, match=reason):
        decode(damage(data))
    store = CheckpointDir(tmp_path, "g-slo-state-changelog")
    store.path(2).write_bytes(damage(data))
    with caplog.at_level(logging.WARNING):
        assert store.read(2) is None
    assert reason in caplog.text and "reading the changelog" in caplog.text


def test_a_checkpoint_written_before_callee_counts_is_read_without_them() -> None:
    """The format before failures naming a callee were counted: five fields per ring in
    the header, and each ring's cells alone."""
    original = checkpoint()
    magic, _, header, *pieces = encode_chunks(original)
    fields = json.loads(header)
    for _, _, described in fields["slos"]:
        for ring in described:
            ring.pop()  # the size of its cells of failures that named a callee
    old = json.dumps(fields, separators=(",", ":")).encode()
    cells = pieces[::2]  # each ring's cells, then those (empty when it has none)
    read = decode(b"".join(seal([magic, _LENGTH.pack(len(old)), old, *cells])))
    assert any(ring.via is not None for rings in original.buckets.slos.values() for ring in rings)
    assert all(ring.via is None for rings in read.buckets.slos.values() for ring in rings)
    assert {key: [ring.cells for ring in rings] for key, rings in read.buckets.slos.items()} == {
        key: [ring.cells for ring in rings] for key, rings in original.buckets.slos.items()
    }


def test_a_checkpoint_of_another_topic_or_partition_is_refused(tmp_path: Path) -> None:
    store = CheckpointDir(tmp_path, "g-slo-state-changelog")
    os.makedirs(tmp_path, exist_ok=True)
    store.path(3).write_bytes(encode(checkpoint(partition=2)))  # a file renamed by hand
    assert store.read(3) is None
    other = CheckpointDir(tmp_path, "h-slo-state-changelog")
    other.path(2).write_bytes(encode(checkpoint()))
    assert other.read(2) is None


def test_a_new_checkpoint_replaces_the_old_one_whole(tmp_path: Path) -> None:
    store = CheckpointDir(tmp_path, "g-slo-state-changelog")
    store.write(checkpoint())
    newer = checkpoint()
    newer = Checkpoint(newer.topic, 2, 99, newer.buckets, {}, newer.slos, now_ms())
    store.write(newer)
    read = store.read(2)
    assert read is not None and read.offset == 99 and read.entries == {}


def test_a_checkpoint_older_than_half_the_tombstone_retention_is_not_used(tmp_path: Path) -> None:
    """Past Kafka's delete.retention.ms the cleaner may have dropped tombstones written
    after it: reading on from it would bring deleted entries back."""
    store = CheckpointDir(tmp_path, "g-slo-state-changelog")
    written = checkpoint()
    store.write(written)
    assert store.read(2, now_ms=written.written_ms + MAX_AGE_MS) is not None
    assert store.read(2, now_ms=written.written_ms + MAX_AGE_MS + 1) is None


def test_temporary_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    store = CheckpointDir(tmp_path, "g-slo-state-changelog")
    orphan = tmp_path / "g-slo-state-changelog-1.checkpoint.999999999.tmp"  # > pid_max
    mine = tmp_path / f"g-slo-state-changelog-2.checkpoint.{os.getpid()}.tmp"
    other = tmp_path / "h-slo-state-changelog-1.checkpoint.999999999.tmp"
    for path in (orphan, mine, other):
        path.write_bytes(b"half")
    assert store.remove_orphans() == 1
    assert not orphan.exists() and mine.exists() and other.exists()


def test_a_catalogue_with_an_slo_the_checkpoint_did_not_know_reads_the_changelog() -> None:
    """Buckets of an SLO outside the catalogue are not kept in a checkpoint: were it put
    back, its windows would come back empty, where the changelog still has them."""
    written = checkpoint()
    fewer = Checkpoint(written.topic, 2, written.offset, written.buckets, written.entries,
                       frozenset({("a", "avail")}), written.written_ms)  # fmt: skip
    host = EngineHost(parse_catalogue(CATALOGUE, "test"))
    assert not host.restore_checkpoint(fewer)
    assert host.restoring == {}
    assert host.restore_checkpoint(written)
    assert host.checkpointed == {2: (41, written.held)}
