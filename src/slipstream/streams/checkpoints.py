"""Local checkpoints of the partition engines: a restart on the same machine reads only the
changelog written after its checkpoint (Kafka Streams' ``.checkpoint`` file, faust's
RocksDB offsets), instead of the whole changelog.

A checkpoint of a partition is the table as its changelog holds it up to one offset: the
engine's bucket rings (raw arrays, ~24 bytes a bucket) and the partition's other entries
(SLO states, deploys, freezes, source offsets). The worker writes one only when every
table write it has sent for that partition is acknowledged and the changelog holds
nothing since it took the partition but its own writes (``EngineStore.settled``), so
"the changelog up to offset E" is exactly what the engine holds. A restart loads it and
reads the changelog from E + 1; the result equals reading it from the start
(test_engine_oracle). Without a usable checkpoint (none, another format, corrupt, an SLO
whose windows changed, a changelog that no longer reaches E) the partition is read whole.

File: a magic line, the length of a JSON header (what is not bucket cells), the header,
the cells of every ring (then its counts of bad events that named a callee, if any) in
header order, and a CRC-32 of all before it. Written to a temporary file, synced and
renamed over the previous one: a kill leaves the old one or the new one, never half of
one. Not pickle: nothing in the state directory is executed.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import sys
import time
import zlib
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slipstream.slo.engine import BucketImage
from slipstream.slo.windows import SeriesImage

log = logging.getLogger(__name__)

MAGIC = b"slipstream-checkpoint 1\n"
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used (its reason says why)."""


# Older checkpoints are not used: past Kafka's default delete.retention.ms (24 h) the log
# cleaner may have removed tombstones written after the checkpoint, which reading on
# from it would then never see. Half of it, for margin.
MAX_AGE_MS = 12 * 3_600_000


@dataclass(frozen=True)
class Checkpoint:
    topic: str  # the table's changelog topic
    partition: int
    offset: int  # the last changelog offset it holds (-1: none)
    buckets: BucketImage
    entries: dict[str, str]  # the partition's other table entries, as JSON text
    # Every SLO of the catalogue when it was written: buckets of an SLO outside it were
    # not kept, so a catalogue that has an SLO more now cannot use it.
    slos: frozenset[tuple[str, str]] = frozenset()
    written_ms: int = 0  # wall clock

    @property
    def held(self) -> int:
        """Table entries it restores (buckets holding something and the other entries)."""
        return self.buckets.held + len(self.entries)


def encode(checkpoint: Checkpoint) -> bytes:
    return b"".join(seal(encode_chunks(checkpoint)))


def seal(chunks: list[bytes]) -> list[bytes]:
    """The chunks with their CRC after them (computed off the event loop: ~1 GB/s)."""
    crc = 0
    for chunk in chunks:
        crc = zlib.crc32(chunk, crc)
    return [*chunks, _CRC.pack(crc)]


def encode_chunks(checkpoint: Checkpoint) -> list[bytes]:
    """The file but its CRC, as a list of pieces (the cells of each ring copied once, not
    joined: at 10 000 SLOs a partition's rings are ~100 MiB)."""
    rings: list[list[Any]] = []
    cells: list[bytes] = []
    for (service, name), images in checkpoint.buckets.slos.items():
        described = []
        for ring in images:
            raw = ring.cells.tobytes()
            via = ring.via.tobytes() if ring.via is not None else b""
            described.append(
                [ring.res_ms, ring.floor, ring.newest, ring.evicted, len(raw), len(via)]
            )
            cells += (raw, via)
        rings.append([service, name, described])
    header = json.dumps({
        "topic": checkpoint.topic, "partition": checkpoint.partition,
        "offset": checkpoint.offset, "byteorder": sys.byteorder,
        "itemsize": array("q").itemsize, "newest_offset": checkpoint.buckets.newest_offset,
        "entries": checkpoint.entries, "slos": rings,
        "catalogue": sorted(checkpoint.slos), "written_ms": checkpoint.written_ms,
    }, separators=(",", ":")).encode()  # fmt: skip
    return [MAGIC, _LENGTH.pack(len(header)), header, *cells]


def decode(data: bytes) -> Checkpoint:
    if not data.startswith(MAGIC):
        raise CheckpointError("not a slipstream checkpoint of this format")
    if len(data) < len(MAGIC) + _LENGTH.size + _CRC.size:
        raise CheckpointError("truncated")
    body, (crc,) = memoryview(data)[: -_CRC.size], _CRC.unpack(data[-_CRC.size :])
    if zlib.crc32(body) != crc:
        raise CheckpointError("CRC mismatch (a damaged file)")
    at = len(MAGIC)
    (length,) = _LENGTH.unpack_from(data, at)
    at += _LENGTH.size
    try:
        header = json.loads(bytes(body[at : at + length]))
    except ValueError as exc:
        raise CheckpointError(f"header is not JSON: {exc}") from exc
    at += length
    if header["byteorder"] != sys.byteorder or header["itemsize"] != array("q").itemsize:
        raise CheckpointError("written on a machine of another byte order or word size")
    slos: dict[tuple[str, str], list[SeriesImage]] = {}
    for service, name, described in header["slos"]:
        images = []
        # A ring without a sixth size was written before bad events naming a callee were
        # counted.
        for res_ms, floor, newest, evicted, size, *via_size in described:
            cells = array("q")
            cells.frombytes(body[at : at + size])
            at += size
            via = None
            if via_size and via_size[0]:
                via = array("q")
                via.frombytes(body[at : at + via_size[0]])
                at += via_size[0]
            images.append(SeriesImage(res_ms, floor, newest, evicted, cells, via))
        slos[(service, name)] = images
    if at != len(body):
        raise CheckpointError("cells do not match the header")
    buckets = BucketImage(header["newest_offset"], slos)
    catalogue = frozenset((service, name) for service, name in header["catalogue"])
    return Checkpoint(header["topic"], header["partition"], header["offset"], buckets,
                      header["entries"], catalogue, header["written_ms"])  # fmt: skip


class CheckpointDir:
    """The checkpoints of one changelog topic, a file per partition."""

    def __init__(self, root: Path, topic: str) -> None:
        self.root = root
        self.topic = topic

    def remove_orphans(self) -> int:
        """Delete temporary files left by processes killed while writing; how many."""
        removed = 0
        for path in self.root.glob(f"{self.topic}-*.checkpoint.*.tmp"):
            pid = path.name.rsplit(".", 2)[-2]
            if pid.isdigit() and not _alive(int(pid)):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def path(self, partition: int) -> Path:
        return self.root / f"{self.topic}-{partition}.checkpoint"

    def write(self, checkpoint: Checkpoint) -> int:
        """Write (replace) the partition's checkpoint; its size in bytes."""
        return self.write_chunks(checkpoint.partition, encode_chunks(checkpoint))

    def write_chunks(self, partition: int, chunks: list[bytes]) -> int:
        """Write (replace) the partition's checkpoint from ``encode_chunks``; its size."""
        chunks = seal(chunks)
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(partition)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with open(temporary, "wb") as fh:
            fh.writelines(chunks)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, path)
        return sum(len(c) for c in chunks)

    def read(self, partition: int, now_ms: int | None = None) -> Checkpoint | None:
        """The partition's checkpoint, or None (none, or one that cannot be used: logged,
        and the next checkpoint replaces it)."""
        path = self.path(partition)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("checkpoint %s: cannot read it (%s); reading the changelog", path, exc)
            return None
        try:
            checkpoint = decode(data)
        except (CheckpointError, KeyError, TypeError, ValueError) as exc:
            log.warning("checkpoint %s: %s; reading the changelog", path, exc)
            return None
        if (checkpoint.topic, checkpoint.partition) != (self.topic, partition):
            log.warning("checkpoint %s is of %s[%d]; reading the changelog", path,
                        checkpoint.topic, checkpoint.partition)  # fmt: skip
            return None
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        if now_ms - checkpoint.written_ms > MAX_AGE_MS:
            log.warning("checkpoint %s is %.1f h old (the changelog may have lost tombstones "
                        "since); reading the changelog",
                        path, (now_ms - checkpoint.written_ms) / 3_600_000)  # fmt: skip
            return None
        return checkpoint

    def remove(self, partition: int) -> None:
        self.path(partition).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
