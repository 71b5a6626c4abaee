"""Counting each event_id once within a bounded horizon of event time."""

from __future__ import annotations

from collections import deque


class RecentIds:
    """Remembers event ids for ``horizon_ms`` of event time, and at most ``max_ids`` of them.

    Memory is bounded either way: ids older than the horizon (measured from the
    newest event time seen) or beyond the cap are forgotten oldest-first, so a
    duplicate arriving later than that is counted again. That is the
    documented trade-off; the offset guard of the tables covers replays.
    """

    def __init__(self, horizon_ms: int = 600_000, max_ids: int = 500_000) -> None:
        self.horizon_ms = horizon_ms
        self.max_ids = max_ids
        self._ids: dict[str, int] = {}
        self._order: deque[tuple[int, str]] = deque()
        self._newest_ms: int | None = None

    def __len__(self) -> int:
        return len(self._ids)

    def seen_before(self, event_id: str, timestamp_ms: int) -> bool:
        """True if ``event_id`` was seen within the horizon; else remember it and say False."""
        ids, order = self._ids, self._order
        if event_id in ids:
            return True
        ids[event_id] = timestamp_ms
        order.append((timestamp_ms, event_id))
        newest = self._newest_ms
        if newest is None or timestamp_ms > newest:
            self._newest_ms = newest = timestamp_ms
        # _expire's own test first: asked once per event, it rarely has anything to do.
        if order[0][0] < newest - self.horizon_ms or len(ids) > self.max_ids:
            self._expire()
        return False

    def _expire(self) -> None:
        assert self._newest_ms is not None
        cutoff = self._newest_ms - self.horizon_ms
        order, ids = self._order, self._ids
        while order and (order[0][0] < cutoff or len(ids) > self.max_ids):
            _, old = order.popleft()
            ids.pop(old, None)
