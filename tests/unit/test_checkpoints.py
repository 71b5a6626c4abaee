"""Local checkpoint files (``streams/checkpoints``): what is written is read back; a
damaged, foreign or misplaced file is refused with its reason, never half-used."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from slipstream.slo.catalogue import parse_catalogue
from slipstream.slo.engine import PartitionEngine
from slipstream.slo.events import Request
from slipstream.streams.checkpoints import (
    MAGIC,
    Checkpoint,
    CheckpointDir,
    CheckpointError,
    decode,
    encode,
)

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
        engine.absorb(Request(f"r{offset}", service, "GET /", status, 5.0, T0 + offset * 10_000))
        engine.end()
    entries = {f"{partition}|p": '{"watermark_ms":1}', f"{partition}|o|slo.requests": "2"}
    return Checkpoint(topic, partition, 41, engine.bucket_image(), entries)


def test_what_is_written_is_read_back(tmp_path: Path) -> None:
    original = checkpoint()
    store = CheckpointDir(tmp_path / "cp", original.topic)
    store.write(original)
    read = store.read(2)
    assert read is not None
    assert (read.topic, read.partition, read.offset) == (original.topic, 2, 41)
    assert read.entries == original.entries
    assert read.buckets == original.buckets  # rings, floors, newest, cells alike
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
    newer = Checkpoint(newer.topic, 2, 99, newer.buckets, {})
    store.write(newer)
    read = store.read(2)
    assert read is not None and read.offset == 99 and read.entries == {}
