"""The ``undying`` command line: run workers, inspect and steer runs.

Commands that only read or steer runs need a database: ``--db URL`` or
``$UNDYING_DATABASE_URL`` (default ``./undying.db``). Commands that execute code
(``worker``, ``replay-check``) take ``MODULE:APP``, the import path of your App.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .app import App
from .errors import UndyingError
from .journal import rebuild_error
from .store import store_from_url
from .store.base import RunFilter


def load_app(path: str) -> App:
    """Import ``module:attribute`` and return the App it names."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"expected MODULE:APP (for example myagents.main:app), got {path!r}")
    sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"cannot import {module_name!r}: {exc}") from exc
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise SystemExit(f"{path!r} is not an undying.App (got {type(app).__name__})")
    return app


def _client(args: argparse.Namespace) -> App:
    return App(args.db, worker=False)


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


async def _cmd_worker(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    app.is_worker = True  # the module may build a client-only App; here it must work
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with app:
        print(
            f"undying worker {app.worker_id} on {app.store.url}: {len(app._workflows)} workflows",
            flush=True,
        )
        await stop.wait()
        print("shutting down: releasing runs in progress", flush=True)
    return 0


async def _cmd_runs(args: argparse.Namespace) -> int:
    async with _client(args) as app:
        runs = await app.store.list_runs(
            RunFilter(status=args.status, workflow=args.workflow, limit=args.limit)
        )
        print(f"{'RUN':40} {'STATUS':10} {'WORKFLOW':40} UPDATED")
        for run in runs:
            print(f"{run.run_id:40} {run.status:10} {run.workflow:40} {_when(run.updated_at)}")
    return 0


async def _cmd_show(args: argparse.Namespace) -> int:
    async with _client(args) as app:
        run = await app._get(args.run)
        codec = app.codec
        print(f"run       {run.run_id}\nworkflow  {run.workflow}\nstatus    {run.status}")
        print(
            f"owner     {run.owner or '-'} (epoch {run.epoch})\ncreated   {_when(run.created_at)}"
        )
        if run.status_value is not None:
            print(f"progress  {_short(codec.decode(run.status_value))}")
        if run.output is not None:
            print(f"result    {_short(codec.decode(run.output))}")
        if run.error is not None:
            print(f"error     {rebuild_error(codec.decode(run.error))!r}")
        await _show_token_usage(app, run.run_id)
        print("\nSEQ  KIND    STATUS   ATTEMPT  NAME / VALUE")
        for entry in await app.store.load_journal_meta(run.run_id):
            value = ""
            if not entry.deferred and entry.payload is not None:
                try:
                    value = _short(codec.decode(entry.payload))
                except UndyingError as exc:
                    value = f"<unreadable: {exc}>"
            print(
                f"{entry.seq:<4} {entry.kind:7} {entry.status:8} {entry.attempt:<8} "
                f"{entry.name}  {value}"
            )
    return 0


async def _show_token_usage(app: App, run_id: str) -> None:
    from .llm.usage import usage_lines

    for line in usage_lines(await app.token_usage(run_id)):
        print(line)


def _short(value: Any, width: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


async def _cmd_cancel(args: argparse.Namespace) -> int:
    async with _client(args) as app:
        await app.cancel(args.run)
        print(f"cancel requested for {args.run}")
    return 0


async def _cmd_resume(args: argparse.Namespace) -> int:
    async with _client(args) as app:
        resumed = await app.resume(args.run)
        print(
            f"{args.run}: "
            + ("queued to resume" if resumed else "not failed or cancelled; nothing to do")
        )
    return 0


async def _cmd_fork(args: argparse.Namespace) -> int:
    async with _client(args) as app:
        handle = await app.fork(args.run, from_step=args.from_step, new_run_id=args.new_id)
        print(f"forked {args.run} at step {args.from_step} as {handle.run_id}")
    return 0


async def _cmd_send(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.json)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"the payload must be JSON: {exc}") from exc
    async with _client(args) as app:
        delivered = await app.send_event(args.run, args.event, payload, key=args.key)
        print("delivered" if delivered else "already delivered (same key)")
    return 0


async def _cmd_replay_check(args: argparse.Namespace) -> int:
    from .testing import replay_check

    app = load_app(args.app)
    app.is_worker = False
    async with app:
        problems = await replay_check(app, limit=args.limit)
    for problem in problems:
        print(f"{problem.run_id} ({problem.workflow}): {problem.error}")
    print(f"{len(problems)} run(s) do not replay with the current code")
    return 1 if problems else 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    store = store_from_url(args.db)
    applied = asyncio.run(store.migrate())
    print(f"{store.url}: " + (f"applied {', '.join(applied)}" if applied else "schema up to date"))
    return 0


async def _cmd_gc(args: argparse.Namespace) -> int:
    from .retention import collect_garbage

    async with _client(args) as app:
        report = await collect_garbage(app.store, older_than_days=args.older_than_days)
    print(
        f"deleted {report.runs_deleted} run(s) and {report.blobs_deleted} unreferenced "
        f"chunk(s); {report.blobs_kept} chunk(s) still in use"
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    return int(demo_main(args.dir))


def _cmd_ui(args: argparse.Namespace) -> int:
    print(
        "the web UI is not built yet; `undying runs`, `undying show RUN` and "
        "RunHandle.watch() cover the same ground for now",
        file=sys.stderr,
    )
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="undying", description="Crash-proof long-running AI agents."
    )
    parser.add_argument(
        "--db", default=None, help="database URL (default: $UNDYING_DATABASE_URL or ./undying.db)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("worker", help="run a worker for MODULE:APP until SIGTERM")
    p.add_argument("app", metavar="MODULE:APP")
    p = sub.add_parser("runs", help="list runs")
    p.add_argument("--status")
    p.add_argument("--workflow")
    p.add_argument("--limit", type=int, default=50)
    p = sub.add_parser("show", help="show a run and its journal")
    p.add_argument("run")
    p = sub.add_parser("cancel", help="cancel a run and its children")
    p.add_argument("run")
    p = sub.add_parser("resume", help="resume a failed or cancelled run from its journal")
    p.add_argument("run")
    p = sub.add_parser("fork", help="new run reusing the first N journal entries")
    p.add_argument("run")
    p.add_argument("--from-step", type=int, required=True)
    p.add_argument("--new-id")
    p = sub.add_parser("send", help="send an event with a JSON payload to a run")
    p.add_argument("run")
    p.add_argument("event")
    p.add_argument("json")
    p.add_argument("--key")
    p = sub.add_parser(
        "replay-check", help="check finished runs still replay with the current code"
    )
    p.add_argument("app", metavar="MODULE:APP")
    p.add_argument("--limit", type=int, default=1000)
    p = sub.add_parser("ui", help="serve the web UI")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    sub.add_parser("migrate", help="apply database migrations")
    p = sub.add_parser("gc", help="delete old runs and chunks no journal refers to")
    p.add_argument(
        "--older-than-days", type=float, default=None, help="also delete runs ended before this"
    )
    p = sub.add_parser("demo", help="crash and recover the example research agent")
    p.add_argument("--dir", default=None, help="where to keep the demo database")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers: dict[str, Any] = {
        "worker": _cmd_worker,
        "runs": _cmd_runs,
        "show": _cmd_show,
        "cancel": _cmd_cancel,
        "resume": _cmd_resume,
        "fork": _cmd_fork,
        "send": _cmd_send,
        "replay-check": _cmd_replay_check,
        "migrate": _cmd_migrate,
        "gc": _cmd_gc,
        "demo": _cmd_demo,
        "ui": _cmd_ui,
    }
    handler = handlers[args.command]
    try:
        if asyncio.iscoroutinefunction(handler):
            return int(asyncio.run(handler(args)))
        return int(handler(args))
    except UndyingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
