"""``undying runs``, ``undying show`` and ``undying schedules``: reading runs, their journals
and the schedules that start them.

Read commands never write: they list runs, follow them (``runs --watch``, woken by the store's
change notification) and decode every journal payload the way replay does (large ones fetched
in batches, offloaded ones joined from their chunks), printing as they go so that
``undying show RUN | head`` stops early. Formatting lives in ``cli_output``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from . import cli_output as out
from . import cli_streams
from .app import App
from .errors import UndyingError
from .journal import JournalCursor
from .payloads import resolve
from .store.base import ERROR, WAITING, Entry, RunFilter, RunRecord

#: ``runs --watch`` re-renders when the store reports a change (SQLite's data_version,
#: PostgreSQL's LISTEN), and re-reads at least this often for changes nobody announces
WATCH_REFRESH = 2.0


def client(args: argparse.Namespace) -> App:
    """A client-only App on ``--db``: commands read and steer runs, they execute none."""
    return App(args.db, worker=False)


# -- runs --------------------------------------------------------------------------------
def _filter(args: argparse.Namespace) -> RunFilter:
    return RunFilter(
        status=args.status, workflow=args.workflow, parent_id=args.parent, limit=args.limit
    )


async def cmd_runs(args: argparse.Namespace) -> int:
    async with client(args) as app:
        if args.watch:
            await _watch_runs(app, _filter(args), as_json=args.json)
            return 0
        runs = await app.store.list_runs(_filter(args))
    if args.json:
        out.print_json([out.run_json(r) for r in runs])
    else:
        print(out.run_rows(runs))
    return 0


async def cmd_schedules(args: argparse.Namespace) -> int:
    async with client(args) as app:
        schedules = await app.list_schedules()
    now = time.time()
    if args.json:
        out.print_json([out.schedule_json(s, now) for s in schedules])
    else:
        print(out.schedule_rows(schedules, now))
    return 0


async def _watch_runs(app: App, flt: RunFilter, *, as_json: bool) -> None:
    """Print the list again each time it changes, until Ctrl-C (or SIGTERM).

    Woken by the store's change notification, not by re-reading in a loop; a terminal is
    redrawn in place, a pipe gets each new list after the last (JSON: one per line)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    redraw = sys.stdout.isatty() and not as_json
    shown: list[dict[str, Any]] | None = None
    try:
        while not stop.is_set():
            runs = await app.store.list_runs(flt)
            view = [out.run_json(r) for r in runs]
            if view != shown:
                shown = view
                if as_json:
                    print(out.dumps(view, compact=True), flush=True)
                else:
                    clear = "\x1b[H\x1b[J" if redraw else ""
                    stamp = time.strftime("%H:%M:%S")
                    print(
                        f"{clear}{out.run_rows(runs)}  (at {stamp}; Ctrl-C to stop)\n", flush=True
                    )
            changed = asyncio.ensure_future(app.store.wait_for_change(WATCH_REFRESH))
            stopped = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({changed, stopped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (changed, stopped):
                    task.cancel()
                await asyncio.gather(changed, stopped, return_exceptions=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


@dataclass(slots=True)
class _Recorded:
    """A journal entry with its payload decoded (or why it could not be)."""

    entry: Entry
    value: Any
    size: int | None
    problem: str | None


async def _journal(app: App, run_id: str, entries: list[Entry]) -> AsyncIterator[_Recorded]:
    """The entries (``load_journal_meta``) in order, each payload fetched (in batches, as
    replay does), joined from its chunks when offloaded, and decoded; then dropped, so a
    long journal of large results never sits in memory at once."""
    cursor = JournalCursor(app.store, run_id, entries)
    for entry in entries:
        cursor.take(entry.seq)
        value: Any = None
        size = problem = None
        try:
            payload = await cursor.payload(entry)
            if payload is not None:
                size = len(payload)
                value = app.codec.decode(payload)
        except UndyingError as exc:
            problem = out.one_line(str(exc))
        entry.payload = None
        yield _Recorded(entry, value, size, problem)


async def _decoded(app: App, payload: bytes | None) -> tuple[Any, str | None]:
    if payload is None:
        return None, None
    try:
        return app.codec.decode(await resolve(app.store, payload)), None
    except UndyingError as exc:
        return None, out.one_line(str(exc))


async def cmd_show(args: argparse.Namespace) -> int:
    async with client(args) as app:
        run = await app._get(args.run)
        children = await app.store.list_runs(RunFilter(parent_id=run.run_id, limit=1000))
        fields = {
            name: await _decoded(app, payload)
            for name, payload in (
                ("input", run.input),
                ("status_value", run.status_value),
                ("result", run.output),
                ("error", run.error),
            )
        }
        meta = await app.store.load_journal_meta(run.run_id)
        streams = await app.store.list_streams(run.run_id)
        if args.json:
            journal = [r async for r in _journal(app, run.run_id, meta)]
            shown = _show_json(run, fields, children, journal)
            shown["streams"] = cli_streams.streams_json(streams)
            if args.follow:  # one line, then one line per stream item
                print(out.dumps(shown, compact=True), flush=True)
                await cli_streams.follow(app, run.run_id, as_json=True)
            else:
                out.print_json(shown)
            return 0
        width = max(shutil.get_terminal_size((120, 24)).columns, 60)
        print(_show_header(run, fields, children, full=args.full, width=width))
        summary = cli_streams.streams_line(streams)
        if summary:
            print(summary)
        await _print_token_usage(app, run.run_id)
        print()
        await _print_timeline(app, run, meta, full=args.full, width=width)
        if args.follow:
            print("\nstreams (following until the run ends; Ctrl-C to stop):", flush=True)
            await cli_streams.follow(app, run.run_id, as_json=False)
    return 0


async def _print_token_usage(app: App, run_id: str) -> None:
    """The run's model tokens (undying.llm), when it made model calls."""
    from .llm.usage import usage_lines

    for line in usage_lines(await app.token_usage(run_id)):
        print(line)


def _show_json(
    run: RunRecord,
    fields: dict[str, tuple[Any, str | None]],
    children: list[RunRecord],
    journal: list[_Recorded],
) -> dict[str, Any]:
    args, kwargs = _call_args(fields["input"][0])
    error, _ = fields["error"]
    origin = _origin(run, [r.entry for r in journal])
    return {
        "run": {
            **out.run_json(run),
            "input": {"args": out.jsonable(args), "kwargs": out.jsonable(kwargs)},
            "status_value": out.jsonable(fields["status_value"][0]),
            "result": out.jsonable(fields["result"][0]),
            "error": None if run.error is None else out.error_json(error),
            "decode_errors": {name: problem for name, (_, problem) in fields.items() if problem},
        },
        "children": [
            {"run_id": c.run_id, "workflow": c.workflow, "status": c.status} for c in children
        ],
        "journal": [out.entry_json(r.entry, r.value, r.size, r.problem, origin) for r in journal],
    }


def _call_args(value: Any) -> tuple[list[Any], dict[str, Any]]:
    """The workflow's arguments from a run's input (a third element, if any, is what the run
    carries for observers, such as a trace context: not an argument)."""
    if isinstance(value, list | tuple) and len(value) in (2, 3) and isinstance(value[1], dict):
        return list(value[0]), value[1]
    return [], {}


def _origin(run: RunRecord, entries: Sequence[Entry]) -> float:
    """Where offsets count from: the run's creation, or its first entry when that is older
    (a fork's copied entries were recorded by the run it was forked from)."""
    return min([run.created_at, *(e.started_at for e in entries[:1])])


def _show_header(
    run: RunRecord,
    fields: dict[str, tuple[Any, str | None]],
    children: list[RunRecord],
    *,
    full: bool,
    width: int,
) -> str:
    lines = [
        ("run", run.run_id),
        ("workflow", run.workflow),
        ("status", run.status + (" (cancel requested)" if run.cancel_requested else "")),
        ("owner", f"{run.owner or '-'} (epoch {run.epoch})"),
        ("created", f"{out.when(run.created_at)} UTC"),
        ("updated", f"{out.when(run.updated_at)} UTC"),
    ]
    if run.parent_id:
        lines.append(("parent", run.parent_id))
    if run.queue:
        lines.append(("queue", f"{run.queue} (priority {run.priority})"))
    if run.generation:
        lines.append(("generation", str(run.generation)))
    if run.wake_at is not None and run.status == WAITING:
        lines.append(("wakes", f"{out.when(run.wake_at)} UTC"))
    if run.deadline is not None:
        lines.append(("deadline", f"{out.when(run.deadline)} UTC"))
    args, kwargs = _call_args(fields["input"][0])

    def render(value: Any) -> str:
        return repr(value) if full else out.preview(value, width)

    call = ", ".join([*map(render, args), *(f"{k}={render(v)}" for k, v in kwargs.items())])
    call = out.one_line(call)
    if not full and len(call) > width - 14:
        call = call[: width - 17] + "..."
    lines.append(("args", f"({call})"))
    for label, name, stored in (
        ("progress", "status_value", run.status_value),
        ("result", "result", run.output),
    ):
        value, problem = fields[name]
        if problem:
            lines.append((label, f"<cannot decode: {problem}>"))
        elif stored is not None:
            shown = out.pretty(value, width) if full else out.preview(value, width - 12)
            lines.append((label, shown))
    if run.error is not None:
        info, problem = fields["error"]
        lines.append(("error", f"<cannot decode: {problem}>" if problem else out.error_line(info)))
        if full and isinstance(info, dict) and info.get("traceback"):
            lines.append(("", str(info["traceback"]).rstrip()))
    if children:
        listed = ", ".join(f"{c.run_id} ({c.status})" for c in children[:10])
        more = f", and {len(children) - 10} more" if len(children) > 10 else ""
        lines.append(("children", f"{len(children)}: {listed}{more}"))
    return "\n".join(_labelled(label, text) for label, text in lines)


def _labelled(label: str, text: str) -> str:
    first, *rest = text.splitlines() or [""]
    return "\n".join([f"{label:10}{first}", *(" " * 10 + line for line in rest)])


async def _print_timeline(
    app: App, run: RunRecord, meta: list[Entry], *, full: bool, width: int
) -> None:
    """One line per journal entry, printed as it is decoded (``show RUN | head`` stops early)."""
    if not meta:
        print("journal: empty (the run has not made a journaled call yet)")
        return
    origin = _origin(run, meta)
    headers = ("SEQ", "KIND", "NAME", "STATUS", "TRY", "START", "TOOK", "VALUE")
    sample = [
        (str(e.seq), e.kind, e.name, e.status, str(e.attempt), "+00.00s", "000.00ms") for e in meta
    ]
    widths = out.column_widths(headers, sample)
    value_width = max(width - sum(widths[:-1]) - 2 * (len(widths) - 1), 30)
    right = (0, 4, 5, 6)
    print(f"journal: {len(meta)} entr{'y' if len(meta) == 1 else 'ies'}")
    print(out.table_row(headers, widths, right))
    async for recorded in _journal(app, run.run_id, meta):
        entry = recorded.entry
        took = None if entry.finished_at is None else entry.finished_at - entry.started_at
        if recorded.problem:
            shown = f"<cannot decode: {recorded.problem}>"
        elif entry.status == ERROR:
            shown = out.error_line(recorded.value)
        elif recorded.size is None:
            shown = ""
        else:
            shown = out.preview(recorded.value, value_width)
        cells = (
            str(entry.seq),
            entry.kind,
            entry.name,
            entry.status,
            str(entry.attempt),
            "+" + out.seconds(entry.started_at - origin),
            out.seconds(took),
            shown,
        )
        print(out.table_row(cells, widths, right))
        if full and recorded.size is not None and not recorded.problem:
            print(_indented(_full_value(entry, recorded.value, width - 6)))


def _full_value(entry: Entry, value: Any, width: int) -> str:
    if entry.status == ERROR and isinstance(value, dict):
        return "\n".join(
            [out.error_line(value), str(value.get("traceback") or "").rstrip()]
        ).rstrip()
    return out.pretty(value, width)


def _indented(text: str) -> str:
    return "\n".join("      " + line for line in text.splitlines())
