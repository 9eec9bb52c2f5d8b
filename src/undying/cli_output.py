"""How the command line prints runs and journals: aligned text for people, JSON for programs.

The JSON shapes are a documented interface (docs/cli.md): fields are only ever added, never
renamed or removed. Timestamps are ISO 8601 in UTC, durations and offsets are seconds.
Decoded values become JSON as faithfully as JSON allows: bytes as ``{"$bytes": base64}``,
datetimes as ISO strings, dataclasses and pydantic models as objects, sets as lists,
non-finite floats as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``; anything else
as its ``repr``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import itertools
import json
import math
import pprint
import reprlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from pathlib import PurePath
from typing import Any

from .schedules import next_tick
from .store.base import ERROR, Entry, RunRecord, ScheduleRecord
from .validation import tick_run_id

#: decoded values nested deeper than this are cut short (as their repr) in JSON
MAX_JSON_DEPTH = 400


class _Preview(reprlib.Repr):
    """``repr`` that stops early (a 250 KB result is never rendered whole for one line),
    keeps dicts in their own order, and shows datetimes as ISO 8601."""

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = self.maxother = 200
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = 12
        self.maxlevel = 4

    def repr_dict(self, x: dict[Any, Any], level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        items = [
            f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}"
            for k, v in itertools.islice(x.items(), self.maxdict)
        ]
        return "{" + ", ".join(items) + (", ..." if len(x) > self.maxdict else "") + "}"

    def repr_datetime(self, x: dt.datetime, level: int) -> str:
        return x.isoformat()


_PREVIEW = _Preview()


# -- text -------------------------------------------------------------------------------------
def when(ts: float | None) -> str:
    """A timestamp for people: UTC, to the second."""
    return (
        "-" if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    )


def seconds(value: float | None) -> str:
    """A duration for people: ``0.42ms``, ``12ms``, ``1.25s``, ``3m07s``, ``2h05m``, ``3d04h``."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if value < 0:
        return "-" + seconds(-value)
    if value < 0.001:
        return f"{value * 1000:.2f}ms"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 60:
        return f"{value:.2f}s"
    whole = int(value)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def one_line(text: str) -> str:
    return " ".join(text.split())


def preview(value: Any, width: int) -> str:
    """A value on one line of at most ``width`` characters (its repr, cut short)."""
    text = one_line(_PREVIEW.repr(value))
    return text if len(text) <= width else text[: max(width - 3, 0)] + "..."


def pretty(value: Any, width: int) -> str:
    """A whole value, pretty-printed; a string as itself, so prose and code stay readable."""
    if isinstance(value, str):
        return value
    return pprint.pformat(value, width=width, sort_dicts=False)


def error_line(info: Any) -> str:
    """``module.Type: message`` from a recorded error (the dict ``describe_error`` wrote)."""
    if not isinstance(info, Mapping):
        return repr(info)
    kind = str(info.get("type", "error")).replace(":", ".")
    return f"{kind}: {one_line(str(info.get('message', '')))}"


def column_widths(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[int]:
    widths = [len(h) for h in headers]
    for cells in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, cells, strict=False)]
    return widths


def table_row(cells: Sequence[str], widths: Sequence[int], right: Sequence[int] = ()) -> str:
    """One line of aligned columns; the last cell is left ragged (it may be long)."""
    out = [
        cell if i == len(cells) - 1 else (cell.rjust if i in right else cell.ljust)(widths[i])
        for i, cell in enumerate(cells)
    ]
    return "  ".join(out).rstrip()


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [list(r) for r in rows]
    widths = column_widths(headers, rows)
    return "\n".join(table_row(cells, widths) for cells in [list(headers), *rows])


def run_rows(runs: Sequence[RunRecord]) -> str:
    if not runs:
        return "no runs"
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    body = table(
        ("RUN", "STATUS", "WORKFLOW", "CREATED", "UPDATED"),
        ((r.run_id, r.status, r.workflow, when(r.created_at), when(r.updated_at)) for r in runs),
    )
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    return f"{body}\n\n{len(runs)} run(s): {summary}"


def schedule_rows(schedules: Sequence[ScheduleRecord], now: float) -> str:
    if not schedules:
        return "no schedules (a schedule is listed once a worker that declares it started)"

    def ticks(s: ScheduleRecord) -> str:
        if s.cron is None:
            return f"every {int(s.every or 0)}s"
        return f"{s.cron} ({s.timezone or 'UTC'})"

    def missed(s: ScheduleRecord) -> str:
        return f"{s.missed} {s.max_catch_up}" if s.max_catch_up else s.missed

    return table(
        ("SCHEDULE", "TICKS", "MISSED", "STATE", "LAST TICK", "NEXT TICK", "WORKFLOW"),
        (
            (
                s.name,
                ticks(s),
                missed(s),
                "paused" if s.paused else "active",
                when(s.last_tick),
                when(next_tick(s, now)),
                s.workflow,
            )
            for s in schedules
        ),
    )


# -- JSON ---------------------------------------------------------------------------------------
def iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def run_json(run: RunRecord) -> dict[str, Any]:
    """A run as ``undying runs --json`` prints it (and ``show --json`` under ``"run"``)."""
    return {
        "run_id": run.run_id,
        "workflow": run.workflow,
        "status": run.status,
        "parent_id": run.parent_id,
        "queue": run.queue,
        "priority": run.priority,
        "generation": run.generation,
        "epoch": run.epoch,
        "owner": run.owner,
        "cancel_requested": run.cancel_requested,
        "created_at": iso(run.created_at),
        "updated_at": iso(run.updated_at),
        "wake_at": iso(run.wake_at),
        "deadline": iso(run.deadline),
    }


def schedule_json(schedule: ScheduleRecord, now: float) -> dict[str, Any]:
    """A schedule as ``undying schedules --json`` prints each element of its array."""
    last = schedule.last_tick
    return {
        "name": schedule.name,
        "workflow": schedule.workflow,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "every": schedule.every,
        "missed": schedule.missed,
        "max_catch_up": schedule.max_catch_up,
        "paused": schedule.paused,
        "last_tick": iso(last),
        "last_run_id": None if last is None else tick_run_id(schedule.name, last),
        "next_tick": iso(next_tick(schedule, now)),
        "resumed_at": iso(schedule.resumed_at),
        "created_at": iso(schedule.created_at),
        "updated_at": iso(schedule.updated_at),
    }


def entry_json(
    entry: Entry, value: Any, size: int | None, problem: str | None, origin: float
) -> dict[str, Any]:
    """A journal entry as ``undying show --json`` prints it: ``value`` for a success,
    ``error`` (type, message, traceback) for a recorded failure."""
    failed = entry.status == ERROR
    return {
        "seq": entry.seq,
        "kind": entry.kind,
        "name": entry.name,
        "status": entry.status,
        "attempt": entry.attempt,
        "started_at": iso(entry.started_at),
        "finished_at": iso(entry.finished_at),
        "offset": entry.started_at - origin,
        "duration": None if entry.finished_at is None else entry.finished_at - entry.started_at,
        "size": size,
        "value": None if failed else jsonable(value),
        "error": error_json(value) if failed and problem is None else None,
        "decode_error": problem,
    }


def error_json(info: Any) -> dict[str, Any]:
    if not isinstance(info, Mapping):
        return {"type": None, "message": repr(info), "traceback": None}
    return {
        "type": str(info.get("type", "")).replace(":", ".") or None,
        "message": str(info.get("message", "")),
        "traceback": info.get("traceback"),
    }


def jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON data (see the module docstring for the rules)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if depth > MAX_JSON_DEPTH:
        return preview(value, 200)
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, enum.Enum):
        return jsonable(value.value, depth + 1)
    if isinstance(value, Mapping):
        return {_key(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v, depth + 1) for v in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID | Decimal | PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: jsonable(getattr(value, f.name, None), depth + 1)
            for f in dataclasses.fields(value)
        }
    dump = getattr(type(value), "model_dump", None)  # a pydantic model
    if callable(dump):
        try:
            return jsonable(dump(value, mode="json"), depth + 1)
        except Exception:
            pass
    return repr(value)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool | int | float):
        return json.dumps(key)
    return repr(key)


def dumps(data: Any, *, compact: bool = False) -> str:
    if compact:
        return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return json.dumps(data, ensure_ascii=False, allow_nan=False, indent=2)


def print_json(data: Any) -> None:
    print(dumps(data))
