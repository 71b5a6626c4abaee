"""Avro single-object encoding: ``C3 01`` + CRC-64-AVRO fingerprint (little-endian) + body.

Every schema version the project has shipped is registered by fingerprint, so a
message written by an old SDK is read with today's reader schema (fastavro's
writer/reader resolution fills in defaults), and the reverse works for old
readers because new fields always come with defaults.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from fastavro import parse_schema, schemaless_reader, schemaless_writer

MARKER: Final = b"\xc3\x01"
HEADER_LEN: Final = 10  # marker + 8-byte fingerprint
NAMESPACE: Final = "io.slipstream"
# Larger values are refused before any decoding: one event is well under a KiB and a
# full SDK batch well under this; Kafka's own default limit is 1 MiB.
MAX_MESSAGE_BYTES: Final = 900 * 1024

_CRC64_EMPTY: Final = 0xC15D213AA4D7A795


def _crc64_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return tuple(table)


_CRC64_TABLE: Final = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """The Rabin fingerprint the Avro specification names CRC-64-AVRO."""
    fp = _CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _CRC64_TABLE[(fp ^ byte) & 0xFF]
    return fp


class CodecError(ValueError):
    """A message cannot be encoded or decoded; ``reason`` is a short stable code for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Schema:
    name: str  # short name, e.g. RequestEvent
    doc: str
    parsed: Any  # fastavro's parsed form, reused for every message
    canonical: str
    fingerprint: bytes  # 8 bytes, little-endian, as on the wire

    @property
    def header(self) -> bytes:
        return MARKER + self.fingerprint


def _inline_named(node: Any, known: Mapping[str, Any]) -> Any:
    """Replace references to already-loaded named types by their definitions."""
    if isinstance(node, str) and node in known:
        return known[node]
    if isinstance(node, list):
        return [_inline_named(n, known) for n in node]
    if isinstance(node, dict):
        return {k: _inline_named(v, known) for k, v in node.items()}
    return node


def _make_schema(raw: dict[str, Any]) -> Schema:
    parsed = parse_schema(raw)
    # Canonical form per the Avro spec (fastavro implements it) is what is fingerprinted.
    from fastavro.schema import to_parsing_canonical_form

    canonical = to_parsing_canonical_form(parsed)
    fp = crc64_avro(canonical.encode()).to_bytes(8, "little")
    return Schema(str(raw["name"]), str(raw.get("doc", "")), parsed, canonical, fp)


# Load order matters where one schema names another.
CURRENT_SCHEMAS: Final = (
    "RequestEvent", "RequestBatch", "DeployEvent", "BurnRateAlert", "BudgetState",
    "DeployImpact", "PolicyEvent",
)  # fmt: skip


class SchemaRegistry:
    """The current schema of each type and every shipped writer schema, by fingerprint."""

    def __init__(self, current: list[dict[str, Any]], history: list[dict[str, Any]]) -> None:
        known: dict[str, Any] = {}
        self._current: dict[str, Schema] = {}
        for raw in current:
            full = _inline_named(raw, known)
            schema = _make_schema(full)
            self._current[schema.name] = schema
            known[f"{NAMESPACE}.{schema.name}"] = full
        self._writers: dict[bytes, Schema] = {s.fingerprint: s for s in self._current.values()}
        for raw in history:
            schema = _make_schema(_inline_named(raw, known))
            if schema.name not in self._current:
                raise ValueError(f"history schema {schema.name} has no current version")
            self._writers.setdefault(schema.fingerprint, schema)

    @classmethod
    @functools.cache
    def default(cls) -> SchemaRegistry:
        """The registry of the schemas shipped in this package (parsed once per process)."""
        root = resources.files("slipstream.schemas") / "avro"
        current = [json.loads((root / f"{n}.avsc").read_text()) for n in CURRENT_SCHEMAS]
        history = [
            json.loads(p.read_text())
            for p in sorted((root / "history").iterdir(), key=lambda p: p.name)
            if p.name.endswith(".avsc")
        ]
        return cls(current, history)

    def current(self, name: str) -> Schema:
        try:
            return self._current[name]
        except KeyError:
            raise CodecError("unknown-schema", f"no schema named {name!r}") from None

    def writer(self, fingerprint: bytes) -> Schema | None:
        return self._writers.get(fingerprint)

    def names(self) -> list[str]:
        return list(self._current)

    def writers(self) -> list[Schema]:
        return list(self._writers.values())


@dataclass(frozen=True)
class Decoded:
    schema: str  # short name of the type
    record: dict[str, Any]
    writer_fingerprint: bytes


class AvroCodec:
    def __init__(self, registry: SchemaRegistry | None = None) -> None:
        self.registry = registry or SchemaRegistry.default()

    def encode(self, name: str, record: Mapping[str, Any], schema: Schema | None = None) -> bytes:
        """Single-object encoding of ``record`` with the current schema of ``name``.

        ``schema`` lets tests write with an older version.
        """
        schema = schema or self.registry.current(name)
        out = io.BytesIO()
        out.write(schema.header)
        try:
            schemaless_writer(out, schema.parsed, record)
        except Exception as exc:  # fastavro raises ValueError, TypeError, KeyError, …
            raise CodecError("invalid-record", f"{name}: {exc}") from exc
        return out.getvalue()

    def decode(self, data: bytes, expected: Collection[str] | None = None) -> Decoded:
        """Decode one message; every failure is a CodecError with a reason, never anything else."""
        if len(data) > MAX_MESSAGE_BYTES:
            raise CodecError("oversize", f"{len(data)} bytes > limit {MAX_MESSAGE_BYTES}")
        if len(data) < HEADER_LEN:
            raise CodecError("truncated", f"{len(data)} bytes is shorter than the 10-byte header")
        if data[:2] != MARKER:
            raise CodecError(
                "bad-marker", f"not Avro single-object encoding (starts {data[:2].hex()})"
            )
        fingerprint = bytes(data[2:HEADER_LEN])
        writer = self.registry.writer(fingerprint)
        if writer is None:
            raise CodecError("unknown-fingerprint", f"unknown writer schema {fingerprint.hex()}")
        if expected is not None and writer.name not in expected:
            raise CodecError(
                "unexpected-type", f"{writer.name} where {'/'.join(sorted(expected))} belongs"
            )
        reader = self.registry.current(writer.name)
        buf = io.BytesIO(data)
        buf.seek(HEADER_LEN)
        try:
            if reader.fingerprint == writer.fingerprint:
                record = schemaless_reader(buf, writer.parsed, None)
            else:
                record = schemaless_reader(buf, writer.parsed, reader.parsed)
        except Exception as exc:  # EOFError, ValueError, UnicodeDecodeError, …: all malformed
            raise CodecError("malformed", f"{writer.name}: {type(exc).__name__}: {exc}") from exc
        if buf.tell() != len(data):
            raise CodecError(
                "trailing-bytes", f"{writer.name}: {len(data) - buf.tell()} bytes after the record"
            )
        if not isinstance(record, dict):
            raise CodecError("malformed", f"{writer.name}: decoded to {type(record).__name__}")
        return Decoded(writer.name, record, fingerprint)
