"""``undying stream`` and ``undying show --follow``: a run's durable streams on the terminal.

Both read through ``App.read_stream`` on a client-only App, so they wait exactly as any
reader does (woken by the store's change notification, never a tight poll) and end when the
stream is closed or the run ends. ``show --follow`` also notices streams the run opens while
it is followed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from . import cli_output as out
from .app import App
from .errors import InvalidArgument
from .store.base import TERMINAL, StreamInfo
from .streams import StreamRetry
from .validation import check_stream_name

T = TypeVar("T")
#: ``show --follow`` looks for streams the run opened at least this often (seconds)
DISCOVER = 1.0


def streams_line(streams: list[StreamInfo]) -> str | None:
    """``show``'s one line about the run's streams (None when it has none)."""
    if not streams:
        return None
    shown = ", ".join(
        f"{s.name} ({s.length} item{'' if s.length == 1 else 's'}"
        f"{', closed' if s.closed_at is not None else ''})"
        for s in streams
    )
    return f"{'streams':10}{shown}"


def streams_json(streams: list[StreamInfo]) -> list[dict[str, Any]]:
    return [
        {"name": s.name, "length": s.length, "closed_at": out.iso(s.closed_at)} for s in streams
    ]


def item_json(stream: str, offset: int, value: Any) -> dict[str, Any]:
    if isinstance(value, StreamRetry):
        retry = {
            "step": value.step,
            "position": value.position,
            "attempt": value.attempt,
            "discarded": value.discarded,
        }
        return {"stream": stream, "offset": offset, "retry": retry}
    return {"stream": stream, "offset": offset, "value": out.jsonable(value)}


def item_line(stream: str | None, offset: int, value: Any, width: int) -> str:
    label = f"{stream}[{offset}]" if stream is not None else f"{offset:>5}"
    if isinstance(value, StreamRetry):
        shown = (
            f"-- step {value.step!r} (position {value.position}) runs again, attempt "
            f"{value.attempt}: drop its last {value.discarded} value(s) above"
        )
    else:
        shown = out.preview(value, max(width - len(label) - 2, 30))
    return f"{label}  {shown}"


async def _until_stopped(work: Awaitable[T]) -> T | None:
    """Run ``work`` until it ends or Ctrl-C / SIGTERM (then None)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        stopped.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(stopped, return_exceptions=True)
    if task.cancelled():
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None
    return task.result()


# -- show --follow -------------------------------------------------------------------------------
async def follow(app: App, run_id: str, *, as_json: bool) -> None:
    """Print every item of every stream of the run as it comes, until the run has ended
    and each stream has been read to its end (or Ctrl-C)."""
    await _until_stopped(_follow_all(app, run_id, as_json=as_json))


async def _follow_all(app: App, run_id: str, *, as_json: bool) -> None:
    width = max(shutil.get_terminal_size((120, 24)).columns, 60)
    readers: dict[str, asyncio.Task[None]] = {}

    async def read(name: str) -> None:
        offset = 0
        async for value in app.read_stream(run_id, name):
            if as_json:
                print(out.dumps(item_json(name, offset, value), compact=True), flush=True)
            else:
                print(item_line(name, offset, value, width), flush=True)
            offset += 1

    try:
        while True:
            run = await app._get(run_id)
            for info in await app.store.list_streams(run_id):
                if info.name not in readers:
                    readers[info.name] = asyncio.ensure_future(read(info.name))
            if run.status in TERMINAL:  # no stream can open any more: read them to the end
                break
            await app.wait_for_change(DISCOVER)
        await asyncio.gather(*readers.values())
    finally:
        for task in readers.values():
            task.cancel()
        await asyncio.gather(*readers.values(), return_exceptions=True)


# -- stream ----------------------------------------------------------------------------------------
async def cmd_stream(args: argparse.Namespace) -> int:
    check_stream_name(args.name)
    async with App(args.db, worker=False) as app:
        run = await app._get(args.run)
        if run.status in TERMINAL:
            known = [s.name for s in await app.store.list_streams(run.run_id)]
            if args.name not in known:
                listed = ", ".join(repr(n) for n in known) or "none"
                raise InvalidArgument(
                    f"run {run.run_id!r} has ended and has no stream {args.name!r} (its "
                    f"streams: {listed})"
                )
        items = app.read_stream(run.run_id, args.name, offset=args.offset)
        await _until_stopped(_print_items(items, args))
    return 0


async def _print_items(items: AsyncIterator[Any], args: argparse.Namespace) -> None:
    width = max(shutil.get_terminal_size((120, 24)).columns, 60)
    offset = args.offset
    async for value in items:
        if args.json:
            line = out.dumps(item_json(args.name, offset, value), compact=True)
            print(line, flush=True)
        elif args.text:
            if isinstance(value, StreamRetry):
                text = f"\n[step {value.step!r} runs again: drop the last {value.discarded}]\n"
            else:
                text = value if isinstance(value, str) else f"{out.preview(value, width)}\n"
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            print(item_line(None, offset, value, width), flush=True)
        offset += 1
    if args.text and not args.json:
        print(flush=True)
