"""What the pages show, assembled from the read side: plain data for the templates.

Every read goes through ``ReadSide``; the templates get decoded, display-ready values and
never touch the store. Decoding failures become messages on the page, not errors.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..codec import Codec
from ..errors import UndyingError
from ..store.base import (
    ARMED,
    ERROR,
    FAILED,
    RUN_STATUSES,
    TERMINAL,
    Entry,
    ReadSide,
    RunFilter,
    RunRecord,
)
from ..streams import StreamRetry, decoded
from .timeline import Bar, Timeline, build_timeline, human_duration
from .values import Shown, displayable, show_frame, show_value

PAGE_SIZE = 50
#: journal rows drawn on one page of a run (the timeline pages beyond)
TIMELINE_PAGE = 500
#: (label, seconds) choices of the age filter
AGES = [("15m", 900), ("1h", 3600), ("24h", 86400), ("7d", 7 * 86400), ("30d", 30 * 86400)]
_AGE_SECONDS = dict(AGES)
#: an event a finished child sends its parent (store.base.child_event_name)
CHILD_EVENT_PREFIX = "undying.child:"
SHORT = 90
#: the last items of a stream a run page shows
STREAM_SHOWN = 500


def when(ts: float | None) -> str:
    """An ISO time in UTC (the page's script shows it in the reader's time zone)."""
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def short(codec: Codec, frame: bytes | None, width: int = SHORT) -> str:
    """A one-line preview of a stored value ('' when none or unreadable)."""
    if frame is None:
        return ""
    try:
        value = codec.decode(frame)
    except UndyingError:
        return "(not decodable here)"
    return _preview(value, width)


def _preview(value: Any, width: int) -> str:
    text = value if isinstance(value, str) else json.dumps(displayable(value), ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def run_duration(run: RunRecord, now: float) -> str:
    """How long the run took (ended) or has been going (not ended)."""
    return human_duration((run.updated_at if run.status in TERMINAL else now) - run.created_at)


# -- the run list --------------------------------------------------------------------------------
@dataclass(slots=True)
class ListQuery:
    """The run list's filters, from the query string (bad values fall back to 'all')."""

    status: str | None = None
    workflow: str | None = None
    age: str | None = None
    q: str | None = None
    offset: int = 0

    @classmethod
    def parse(cls, params: Any) -> ListQuery:
        status = params.get("status") or None
        age = params.get("age") or None
        try:
            offset = max(int(params.get("offset") or 0), 0)
        except ValueError:
            offset = 0
        return cls(
            status=status if status in RUN_STATUSES else None,
            workflow=(params.get("workflow") or "").strip() or None,
            age=age if age in _AGE_SECONDS else None,
            q=(params.get("q") or "").strip()[:200] or None,
            offset=offset,
        )

    def run_filter(self, now: float, *, limit: int) -> RunFilter:
        created_after = None if self.age is None else now - _AGE_SECONDS[self.age]
        return RunFilter(
            status=self.status,
            workflow=self.workflow,
            created_after=created_after,
            run_id_contains=self.q,
            limit=limit,
            offset=self.offset,
        )

    def params(self, **changes: Any) -> dict[str, str]:
        """Query parameters of this filter with ``changes``, empty ones left out."""
        values = {
            "status": self.status,
            "workflow": self.workflow,
            "age": self.age,
            "q": self.q,
            "offset": self.offset or None,
        }
        values.update(changes)
        return {k: str(v) for k, v in values.items() if v not in (None, "", 0)}


@dataclass(slots=True)
class RunRow:
    run: RunRecord
    status_value: str
    created: str
    duration: str


@dataclass(slots=True)
class RunList:
    query: ListQuery
    rows: list[RunRow]
    counts: dict[str, int]
    total: int
    workflows: list[str]
    has_next: bool


async def run_list(reads: ReadSide, codec: Codec, query: ListQuery) -> RunList:
    now = time.time()
    flt = query.run_filter(now, limit=PAGE_SIZE + 1)
    runs = await reads.list_runs(flt)
    counts = await reads.count_runs_by_status(flt)
    rows = [
        RunRow(
            run=run,
            status_value=short(codec, run.status_value),
            created=when(run.created_at),
            duration=run_duration(run, now),
        )
        for run in runs[:PAGE_SIZE]
    ]
    return RunList(
        query=query,
        rows=rows,
        counts=counts,
        total=sum(counts.values()),
        workflows=await reads.list_workflows(),
        has_next=len(runs) > PAGE_SIZE,
    )


# -- one run -------------------------------------------------------------------------------------
@dataclass(slots=True)
class ErrorInfo:
    """A recorded error (journal.describe_error) as the page shows it."""

    type: str
    message: str
    traceback: str
    attempts: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


def error_info(value: Any) -> ErrorInfo | None:
    if not isinstance(value, dict) or "type" not in value:
        return None
    attrs = value.get("attrs") if isinstance(value.get("attrs"), dict) else {}
    attempts = value.get("attempts")
    return ErrorInfo(
        type=str(value.get("type", "")).replace(":", "."),
        message=str(value.get("message", "")),
        traceback=str(value.get("traceback") or ""),
        attempts=attempts if isinstance(attempts, int) else None,
        details={k: v for k, v in (attrs or {}).items() if k != "attempts"},
    )


def decode_error(codec: Codec, frame: bytes | None) -> tuple[ErrorInfo | None, Shown | None]:
    """A stored error as ErrorInfo, or as a plain value when it is not one."""
    if frame is None:
        return None, None
    try:
        value = codec.decode(frame)
    except UndyingError:
        return None, show_frame(codec, frame)
    info = error_info(value)
    return (info, None) if info is not None else (None, show_value(value))


@dataclass(slots=True)
class EventRow:
    name: str
    key: str | None
    received: str
    consumed_seq: int | None
    payload: str
    child: str | None  # the child run that sent it (for undying.child:<id> events)


@dataclass(slots=True)
class UsageLine:
    label: str
    calls: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class StreamRow:
    offset: int
    value: str  # a one-line preview, or what a marker says
    retry: bool = False
    step: str = ""  # a value published by a step: its journal position; markers: the step


@dataclass(slots=True)
class StreamPanel:
    """One of the run's streams (ctx.publish): its last items, and, when its values are all
    text, the text a reader shows (a step's cut attempt dropped at its marker)."""

    name: str
    length: int
    closed: bool
    rows: list[StreamRow]
    text: str | None

    @property
    def first_shown(self) -> int:
        return self.rows[0].offset if self.rows else 0


@dataclass(slots=True)
class RunView:
    run: RunRecord
    entries: list[Entry]
    timeline: Timeline
    bars: list[Bar]  # the page of the timeline shown
    page: int
    pages: int
    status_value: Shown | None
    status_line: str  # the status value on one line, for the header
    input: Shown
    output: Shown | None
    error: ErrorInfo | None
    error_value: Shown | None
    events: list[EventRow]
    streams: list[StreamPanel]
    children: list[RunRecord]
    usage: list[UsageLine] | None
    waiting_for: list[str]
    duration: str
    created: str
    updated: str
    wake_at: str

    @property
    def finished(self) -> bool:
        return self.run.status in TERMINAL

    @property
    def spent(self) -> UsageLine:
        return spent(self.usage or [])

    @property
    def failed_steps(self) -> int:
        return sum(1 for e in self.entries if e.status == ERROR)

    @property
    def retries(self) -> int:
        return sum(max(e.attempt - 1, 0) for e in self.entries)

    @property
    def fork_default(self) -> int:
        """Where a fork would most likely start: the first failed entry, else the end."""
        for entry in self.entries:
            if entry.status == ERROR:
                return entry.seq
        return len(self.entries)


async def run_view(reads: ReadSide, codec: Codec, run: RunRecord, page: int = 0) -> RunView:
    now = time.time()
    entries = await reads.load_journal_meta(run.run_id)
    pages = max((len(entries) + TIMELINE_PAGE - 1) // TIMELINE_PAGE, 1)
    page = min(max(page, 0), pages - 1)
    timeline = build_timeline(entries, claims=run.epoch, now=now)  # executions need them all
    error, error_value = (
        decode_error(codec, run.error) if run.status == FAILED or run.error else (None, None)
    )
    return RunView(
        run=run,
        entries=entries,
        timeline=timeline,
        bars=timeline.bars[page * TIMELINE_PAGE : (page + 1) * TIMELINE_PAGE],
        page=page,
        pages=pages,
        status_value=None if run.status_value is None else show_frame(codec, run.status_value),
        status_line=short(codec, run.status_value, 160),
        input=_input(codec, run.input),
        output=None if run.output is None else show_frame(codec, run.output),
        error=error,
        error_value=error_value,
        events=await _events(reads, codec, run.run_id),
        streams=await _streams(reads, codec, run.run_id),
        children=await reads.list_runs(RunFilter(parent_id=run.run_id, limit=PAGE_SIZE)),
        usage=await load_usage(reads, run.run_id),
        waiting_for=[e.name for e in entries if e.status == ARMED and e.kind == "event"],
        duration=run_duration(run, now),
        created=when(run.created_at),
        updated=when(run.updated_at),
        wake_at=when(run.wake_at) if run.wake_at else "",
    )


def _input(codec: Codec, frame: bytes) -> Shown:
    """Workflow arguments are stored as [args, kwargs] (and what observers carry, not shown):
    show them as such."""
    try:
        value = codec.decode(frame)
    except UndyingError:
        return show_frame(codec, frame)
    if isinstance(value, list) and len(value) in (2, 3) and isinstance(value[1], dict):
        value = {"args": value[0], "kwargs": value[1]} if value[1] else value[0]
    shown = show_value(value)
    shown.stored_bytes = len(frame)
    return shown


async def _streams(reads: ReadSide, codec: Codec, run_id: str) -> list[StreamPanel]:
    panels: list[StreamPanel] = []
    for info in await reads.list_streams(run_id):
        start = max(info.length - STREAM_SHOWN, 0)
        items = (await reads.read_stream(run_id, info.name, start, STREAM_SHOWN)).items
        rows: list[StreamRow] = []
        texts: list[tuple[int, str]] | None = [] if start == 0 else None
        for item in items:
            try:
                value = decoded(codec, run_id, info.name, item)
            except UndyingError as exc:
                rows.append(StreamRow(item.offset, f"<cannot decode: {exc}>"))
                texts = None
                continue
            if isinstance(value, StreamRetry):
                said = (
                    f"step {value.step} (#{value.position}) runs again, attempt "
                    f"{value.attempt}: its {value.discarded} value(s) before are void"
                )
                rows.append(StreamRow(item.offset, said, retry=True, step=value.step))
                if texts is not None:  # what a reader shows: the cut attempt's text dropped
                    mine = [i for i, (seq, _) in enumerate(texts) if seq == value.position]
                    for index in reversed(mine[len(mine) - value.discarded :]):
                        del texts[index]
                continue
            origin = f"#{item.seq}" if item.attempt else ""
            rows.append(StreamRow(item.offset, _preview(value, SHORT), step=origin))
            if texts is not None and isinstance(value, str):
                texts.append((item.seq, value))
            else:
                texts = None
        text = None if not texts else "".join(t for _, t in texts)
        panels.append(StreamPanel(info.name, info.length, info.closed_at is not None, rows, text))
    return panels


async def _events(reads: ReadSide, codec: Codec, run_id: str) -> list[EventRow]:
    rows = []
    for event in await reads.list_events(run_id):
        child = event.name[len(CHILD_EVENT_PREFIX) :]
        rows.append(
            EventRow(
                name=event.name,
                key=event.key,
                received=when(event.created_at),
                consumed_seq=event.consumed_seq,
                payload="" if not event.payload else short(codec, event.payload, 200),
                child=child if event.name.startswith(CHILD_EVENT_PREFIX) else None,
            )
        )
    return rows


async def load_usage(reads: ReadSide, run_id: str) -> list[UsageLine] | None:
    """Token totals of the run's model calls, when the store records them (``load_usage``
    of stores that keep LLM token accounting; other stores, and runs that made no model
    call, have none)."""
    totals: Sequence[Any] = await reads.load_usage(run_id)
    if not totals:
        return None
    lines: dict[str, UsageLine] = {}
    for total in totals:
        kind = getattr(total, "kind", "spent")
        if kind == "saved":
            label = "saved by replay"
        else:
            label = f"{getattr(total, 'provider', '')} {getattr(total, 'model', '')}".strip()
            if getattr(total, "outcome", "ok") != "ok":
                label += f" ({getattr(total, 'outcome', '')})"
        line = lines.setdefault(label, UsageLine(label or "model calls", 0, 0, 0, 0))
        line.calls += int(getattr(total, "calls", 0))
        line.input_tokens += int(getattr(total, "input_tokens", 0))
        line.output_tokens += int(getattr(total, "output_tokens", 0))
        line.cached_tokens += int(getattr(total, "cached_tokens", 0))
    return list(lines.values())


def spent(usage: list[UsageLine]) -> UsageLine:
    """The sum of what was spent (not what replay saved)."""
    total = UsageLine("spent", 0, 0, 0, 0)
    for line in usage:
        if line.label != "saved by replay":
            total.calls += line.calls
            total.input_tokens += line.input_tokens
            total.output_tokens += line.output_tokens
            total.cached_tokens += line.cached_tokens
    return total
