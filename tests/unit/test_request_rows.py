"""The compiled request reader against fastavro: whatever it reads, it reads as the codec
does; whatever it cannot, it leaves to the codec (``read`` answers None)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from slipstream.schemas.codec import HEADER_LEN, AvroCodec, CodecError
from slipstream.schemas.request_rows import FIELDS, RowReader, compiled_reader, row_of

CODEC = AvroCodec()
READER = RowReader()
ROOT = Path(__file__).resolve().parents[2]

INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
TEXT = st.text(max_size=40)  # any code point but surrogates (not UTF-8), empty included
EVENTS = st.fixed_dictionaries({
    "event_id": TEXT, "service": TEXT, "operation": TEXT, "status_code": INT32,
    "latency_ms": st.floats(allow_nan=True, allow_infinity=True), "timestamp": INT64,
    "version": st.none() | TEXT, "region": st.none() | TEXT, "callee": st.none() | TEXT,
})  # fmt: skip


def zigzag(n: int) -> bytes:
    """Avro's long encoding (for messages fastavro's writer never makes)."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        byte, z = z & 0x7F, z >> 7
        out.append(byte | (0x80 if z else 0))
        if not z:
            return bytes(out)


def codec_rows(data: bytes) -> tuple[bool, list[Any]]:
    decoded = CODEC.decode(data)
    if decoded.schema == "RequestBatch":
        return True, [row_of(r) for r in decoded.record["events"]]
    return False, [row_of(decoded.record)]


def same(a: object, b: object) -> bool:
    return repr(a) == repr(b)  # NaN is not equal to itself; its repr is


def test_the_compiled_reader_is_built() -> None:
    # Without it the worker still runs, on fastavro, at about half its batched speed.
    assert compiled_reader is not None, "no compiled reader: reinstall with a C compiler"
    assert READER.compiled


@settings(max_examples=300)
@given(EVENTS)
def test_an_event_reads_as_the_codec_reads_it(event: dict[str, Any]) -> None:
    data = CODEC.encode("RequestEvent", event)
    got = READER.read(data)
    assert got is not None
    assert same(got, codec_rows(data))
    assert same(got[1][0], tuple(event[f] for f in FIELDS))


@settings(max_examples=200)
@given(st.lists(EVENTS, max_size=30), st.none() | TEXT)
def test_a_batch_reads_as_the_codec_reads_it(events: list[dict[str, Any]], sdk: str | None) -> None:
    data = CODEC.encode("RequestBatch", {"events": events, "sdk": sdk})
    got = READER.read(data)
    assert got is not None
    assert same(got, codec_rows(data))
    assert len(got[1]) == len(events)


@settings(max_examples=100)
@given(st.lists(st.lists(EVENTS, min_size=1, max_size=5), min_size=1, max_size=4), st.data())
def test_array_blocks_of_any_sign_read_as_the_codec_reads_them(
    blocks: list[list[dict[str, Any]]], data: st.DataObject
) -> None:
    # Avro lets a writer split an array in blocks, a negative count giving the block's size
    # in bytes; fastavro's writer makes one block, other writers need not.
    body = bytearray()
    for block in blocks:
        items = b"".join(CODEC.encode("RequestEvent", e)[HEADER_LEN:] for e in block)
        if data.draw(st.booleans()):
            body += zigzag(-len(block)) + zigzag(len(items))
        else:
            body += zigzag(len(block))
        body += items
    message = CODEC.registry.current("RequestBatch").header + bytes(body) + b"\x00\x00"
    got = READER.read(message)
    assert got is not None
    assert same(got, codec_rows(message))
    assert len(got[1]) == sum(map(len, blocks))


def damaged(data: st.DataObject, valid: bytes) -> bytes:
    how = data.draw(st.sampled_from(["cut", "flip", "append"]))
    if how == "cut":
        return valid[: data.draw(st.integers(0, len(valid) - 1))]
    if how == "append":
        return valid + data.draw(st.binary(min_size=1, max_size=4))
    buf = bytearray(valid)
    for bit in data.draw(st.lists(st.integers(0, len(valid) * 8 - 1), min_size=1, max_size=3)):
        buf[bit // 8] ^= 1 << (bit % 8)
    return bytes(buf)


@settings(max_examples=1000)
@given(st.lists(EVENTS, min_size=1, max_size=4), st.booleans(), st.data())
def test_a_damaged_message_is_read_as_the_codec_reads_it_or_left_to_it(
    events: list[dict[str, Any]], batch: bool, data: st.DataObject
) -> None:
    valid = (
        CODEC.encode("RequestBatch", {"events": events})
        if batch
        else CODEC.encode("RequestEvent", events[0])
    )
    message = damaged(data, valid)
    got = READER.read(message)
    if got is not None:  # Avro has no checksum: a flip inside a string still reads
        assert same(got, codec_rows(message))


def test_every_one_byte_change_is_read_as_the_codec_reads_it_or_left_to_it() -> None:
    event = {
        "event_id": "e-1", "service": "checkout", "operation": "GET /", "status_code": 503,
        "latency_ms": 12.5, "timestamp": 1_764_150_000_000, "version": "v2", "region": "eu",
        "callee": "auth",
    }  # fmt: skip
    messages = [
        CODEC.encode("RequestEvent", event),
        CODEC.encode("RequestBatch", {"events": [event, event | {"version": None}], "sdk": "s"}),
    ]
    read = 0
    for valid in messages:
        for at in range(HEADER_LEN, len(valid)):
            for byte in range(256):
                message = valid[:at] + bytes([byte]) + valid[at + 1 :]
                got = READER.read(message)
                if got is not None:
                    assert same(got, codec_rows(message)), (at, byte)
                    read += 1
    assert read > 1000  # most changes inside strings and numbers still read


@settings(max_examples=300)
@given(st.binary(max_size=200), st.sampled_from(["RequestEvent", "RequestBatch"]))
def test_random_bodies_are_read_as_the_codec_reads_them_or_left_to_it(
    body: bytes, name: str
) -> None:
    message = CODEC.registry.current(name).header + body
    got = READER.read(message)
    if got is not None:
        assert same(got, codec_rows(message))
    else:  # left to the codec: fine if it reads it (trailing bytes), else an error it names
        try:
            codec_rows(message)
        except CodecError as exc:
            assert exc.reason == "malformed"


def test_what_the_compiled_reader_leaves_to_the_codec() -> None:
    fixture = json.loads((ROOT / "tests/fixtures/request_event_v1.json").read_text())
    older = bytes.fromhex(fixture["messages"][0]["hex"])
    event = {f: None for f in FIELDS} | {
        "event_id": "e", "service": "s", "operation": "o", "status_code": 200,
        "latency_ms": 1.0, "timestamp": 1,
    }  # fmt: skip
    current = CODEC.encode("RequestEvent", event)
    deploy = CODEC.encode("DeployEvent", {
        "deploy_id": "d", "service": "s", "version": "v2", "previous_version": None,
        "change_type": "code", "phase": "started", "rollout_fraction": 1.0, "timestamp": 1,
        "actor": "ci", "commit": None, "description": None,
    })  # fmt: skip
    assert READER.read(current) is not None
    assert READER.read(older) is None  # an older writer schema: the codec resolves it
    assert READER.read(deploy) is None  # not a request
    assert READER.read(current + b"\x00") is None  # trailing bytes: the codec's call
    assert READER.read(bytearray(current)) is None  # type: ignore[arg-type]
    assert RowReader(compiled=False).read(current) is None
