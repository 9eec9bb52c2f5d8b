"""The memory store's streams: the stream queries of ``sql/sqlite/queries.sql`` on dicts.

Kept out of ``memory.py`` so that module stays about runs and journals: ``MemoryStreams`` is
the stream part of ``MemoryStore`` (a base class of it). Nothing here awaits, so each call is
as atomic as a transaction, as everywhere in the memory store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .base import (
    CLOSE_STREAM,
    OK,
    PUBLISH,
    RETRY,
    RUNNING,
    VALUE,
    Entry,
    StreamAppend,
    StreamInfo,
    StreamItem,
    StreamPage,
    stream_refusal,
)

if TYPE_CHECKING:
    from .memory import MemoryDatabase


@dataclass(slots=True)
class MemoryStream:
    """One stream: its items by offset, each with the rest of its origin (epoch, idx)."""

    created_at: float
    updated_at: float
    closed_at: float | None = None
    items: list[tuple[StreamItem, int, int]] = field(default_factory=list)


class MemoryStreams:
    """``MemoryStore``'s stream methods (see ``store.base`` for what each promises)."""

    if TYPE_CHECKING:  # what MemoryStore provides

        @property
        def db(self) -> MemoryDatabase: ...
        def _check_writable(self, run_id: str, epoch: int, entries: Sequence[Entry]) -> None: ...
        def _append(self, run_id: str, entries: Sequence[Entry]) -> None: ...
        def _committed(self) -> None: ...

    async def append_stream(
        self,
        run_id: str,
        epoch: int,
        append: StreamAppend,
        entries: Sequence[Entry],
        now: float,
    ) -> bool:
        db = self.db
        runs_streams = db.streams.get(run_id, {})
        if written(runs_streams, db.journals.get(run_id, {}), epoch, append):
            return False
        run = db.runs.get(run_id)
        current = None if run is None else (run.epoch, run.status)
        if current != (epoch, RUNNING) or closed(runs_streams, append):
            raise stream_refusal(run_id, append.stream, epoch, current)
        self._check_writable(run_id, epoch, entries)
        append_to(db.streams.setdefault(run_id, {}), epoch, append, now)
        self._append(run_id, entries)
        self._committed()
        return True

    async def read_stream(self, run_id: str, stream: str, offset: int, limit: int) -> StreamPage:
        run = self.db.runs.get(run_id)
        found = self.db.streams.get(run_id, {}).get(stream)
        return page(None if run is None else run.status, found, offset, limit)

    async def list_streams(self, run_id: str) -> list[StreamInfo]:
        return infos(self.db.streams.get(run_id, {}))

    async def copy_streams(self, src_run_id: str, dst_run_id: str, before_seq: int) -> int:
        db, source = self.db, self.db.runs.get(src_run_id)
        generation = -1 if source is None else source.generation
        journal = db.journals.get(dst_run_id, {})
        copied, count = copy(db.streams.get(src_run_id, {}), generation, before_seq, journal)
        if copied:
            db.streams[dst_run_id] = copied
            self._committed()
        return count


def written(
    streams: Mapping[str, MemoryStream],
    journal: Mapping[int, Entry],
    epoch: int,
    append: StreamAppend,
) -> bool:
    """Whether this append was written already (stream_entry_written, stream_origin_written)."""
    if not append.attempt:
        entry = journal.get(append.seq)
        kind = CLOSE_STREAM if append.close else PUBLISH
        return entry is not None and (entry.kind, entry.name, entry.status) == (
            kind,
            append.stream,
            OK,
        )
    stream = streams.get(append.stream)
    wanted = (append.generation, append.seq, epoch, append.attempt, append.first_idx)
    return stream is not None and any(
        (item.generation, item.seq, item_epoch, item.attempt, idx) == wanted
        for item, item_epoch, idx in stream.items
    )


def closed(streams: Mapping[str, MemoryStream], append: StreamAppend) -> bool:
    """Whether ``append`` is refused: a publish to a closed stream (reserve_stream)."""
    stream = streams.get(append.stream)
    return stream is not None and stream.closed_at is not None and not append.close


def append_to(
    streams: dict[str, MemoryStream], epoch: int, append: StreamAppend, now: float
) -> None:
    """Append (or close), as reserve_stream and insert_stream_item; ``closed`` was checked."""
    stream = streams.get(append.stream)
    if stream is None:
        stream = streams[append.stream] = MemoryStream(now, now)
    origin = (append.generation, append.seq, append.attempt)
    if append.marker is not None:
        discarded = _discarded(stream, epoch, append)
        if discarded:
            marker = StreamItem(len(stream.items), RETRY, append.marker, *origin, discarded, now)
            stream.items.append((marker, epoch, -1))
    for i, payload in enumerate(append.payloads):
        item = StreamItem(len(stream.items), VALUE, bytes(payload), *origin, 0, now)
        stream.items.append((item, epoch, append.first_idx + i))
    if append.close and stream.closed_at is None:
        stream.closed_at = now
    stream.updated_at = now


def _discarded(stream: MemoryStream, epoch: int, append: StreamAppend) -> int:
    """stream_discarded: values of the step's earlier attempts since its last marker."""
    count = 0
    for item, item_epoch, _ in reversed(stream.items):
        if (item.generation, item.seq) != (append.generation, append.seq):
            continue
        if item.kind == RETRY:
            break
        if (item_epoch, item.attempt) < (epoch, append.attempt):
            count += 1
    return count


def page(status: str | None, stream: MemoryStream | None, offset: int, limit: int) -> StreamPage:
    if status is None or stream is None:
        return StreamPage(status)
    end = len(stream.items) if limit < 0 else offset + limit
    items = [_copy(item) for item, _, _ in stream.items[offset:end]]
    return StreamPage(status, len(stream.items), stream.closed_at, items)


def infos(streams: Mapping[str, MemoryStream]) -> list[StreamInfo]:
    ordered = sorted(streams.items(), key=lambda kv: (kv[1].created_at, kv[0]))
    return [
        StreamInfo(name, len(s.items), s.closed_at, s.created_at, s.updated_at)
        for name, s in ordered
    ]


def copy(
    source: Mapping[str, MemoryStream],
    generation: int,
    before_seq: int,
    journal: Mapping[int, Entry],
) -> tuple[dict[str, MemoryStream], int]:
    """copy_stream_items and copy_stream_heads: a fork's streams (``journal``: the fork's,
    copied already), and how many items."""
    copied: dict[str, MemoryStream] = {}
    count = 0
    for name, stream in source.items():
        kept = [
            (item, epoch, idx)
            for item, epoch, idx in stream.items
            if item.generation == generation and item.seq < before_seq
        ]
        if not kept:
            continue
        times = [item.created_at for item, _, _ in kept]
        target = copied[name] = MemoryStream(min(times), max(times))
        for offset, (item, epoch, idx) in enumerate(kept):
            renumbered = StreamItem(offset, item.kind, item.payload, 0, *_rest(item))
            target.items.append((renumbered, epoch, idx))
        count += len(kept)
    for entry in journal.values():
        if entry.kind == CLOSE_STREAM and entry.status == OK:
            when = entry.finished_at or 0.0
            target = copied.setdefault(entry.name, MemoryStream(when, when))
            target.closed_at, target.updated_at = when, max(target.updated_at, when)
    return copied, count


def _rest(item: StreamItem) -> tuple[int, int, int, float]:
    return item.seq, item.attempt, item.discarded, item.created_at


def _copy(item: StreamItem) -> StreamItem:
    payload = None if item.payload is None else bytes(item.payload)
    return StreamItem(item.offset, item.kind, payload, item.generation, *_rest(item))
