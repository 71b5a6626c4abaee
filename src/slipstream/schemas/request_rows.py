"""Request messages read straight into rows: one tuple per event, by a compiled reader.

fastavro reads a record through generic per-field dispatch and builds a dict per event:
about 5 µs of an SDK-batched event's ~13 µs in the worker (``slipstream bench hotpath``).
The compiled reader (``_request_rows.pyx``) knows the two current request schemas and
builds a tuple per event in about 0.3 µs. It takes only what it reads exactly as fastavro
would: a message of the current RequestEvent or RequestBatch writer schema, well formed
to its last byte. For anything else ``read`` answers None and the caller decodes with the
codec, which resolves older writer schemas and names what is wrong with a bad message.
Without a C compiler at install time the module is absent and every message goes that way.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Final

from slipstream.schemas.codec import HEADER_LEN, MAX_MESSAGE_BYTES, SchemaRegistry

compiled_reader: ModuleType | None
try:
    from slipstream.schemas import _request_rows as compiled_reader
except ImportError:  # built without a C compiler: the codec reads everything
    compiled_reader = None

# A RequestEvent's fields in schema order: the layout of a row.
FIELDS: Final = (
    "event_id", "service", "operation", "status_code", "latency_ms", "timestamp", "version",
    "region", "callee",
)  # fmt: skip
Row = tuple[str, str, str, int, float, int, str | None, str | None, str | None]


def row_of(record: dict[str, Any]) -> Row:
    """The row of a RequestEvent record decoded by the codec."""
    return (
        record["event_id"], record["service"], record["operation"], record["status_code"],
        record["latency_ms"], record["timestamp"], record.get("version"), record.get("region"),
        record.get("callee"),
    )  # fmt: skip


def record_of(row: Row) -> dict[str, Any]:
    """The RequestEvent record of a row (for validation messages and dead letters)."""
    return dict(zip(FIELDS, row, strict=True))


class RowReader:
    """Reads request messages of the current schemas into rows, when it can."""

    def __init__(self, registry: SchemaRegistry | None = None, compiled: bool = True) -> None:
        registry = registry or SchemaRegistry.default()
        self._event_header = registry.current("RequestEvent").header
        self._batch_header = registry.current("RequestBatch").header
        self._reader = compiled_reader if compiled else None

    @property
    def compiled(self) -> bool:
        """False when every message goes to the codec (no compiled module, or asked so)."""
        return self._reader is not None

    def read(self, data: bytes) -> tuple[bool, list[Row]] | None:
        """(is it a batch, its rows), or None: decode ``data`` with the codec instead."""
        reader = self._reader
        if reader is None or type(data) is not bytes or len(data) > MAX_MESSAGE_BYTES:
            return None
        try:
            if data.startswith(self._batch_header):
                return True, reader.batch_rows(data, HEADER_LEN)
            if data.startswith(self._event_header):
                return False, [reader.event_row(data, HEADER_LEN)]
        except ValueError:  # malformed, or a case left to fastavro: the codec will tell
            return None
        return None
