"""The changelog read's batch decode: one ``json.loads`` per batch, same result as one per
record."""

from __future__ import annotations

import pytest

from slipstream.streams.changelog_read import decode_batch


def test_decode_batch_keeps_tombstones_and_order() -> None:
    raw = [b'"0|p"', None, b'{"a":[1,2]}', b"3", b'"x,y"']
    assert decode_batch(raw) == ["0|p", None, {"a": [1, 2]}, 3, "x,y"]
    assert decode_batch([]) == []


def test_a_record_that_is_not_json_on_its_own_is_an_error() -> None:
    # Joined, "1,2" and "3" would read as three values: decoded one by one it fails.
    with pytest.raises(ValueError):
        decode_batch([b"1,2", b"3"])
