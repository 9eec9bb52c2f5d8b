"""The ``undying`` command line: run workers, inspect and steer runs.

Commands that only read or steer runs need a database: ``--db URL`` or
``$UNDYING_DATABASE_URL`` (default ``./undying.db``). Commands that execute code
(``worker``, ``replay-check``) take ``MODULE:APP``, the import path of your App.

Every failure ends as one ``error: ...`` line on stderr and a non-zero exit code (2 for a
usage error, 1 for anything else, 130 after Ctrl-C, 141 when the reader of stdout went
away), never as a traceback: an operator reading a failed command needs what went wrong and
what to do, not undying's call stack. ``UNDYING_DEBUG=1`` shows the traceback of an
unexpected error. The read commands are in ``cli_inspect``, the formatting and the JSON
shapes in ``cli_output``; the reference is docs/cli.md (a test keeps it in step).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import cli_output as out
from .app import App
from .cli_inspect import client, cmd_runs, cmd_schedules, cmd_show
from .cli_streams import cmd_stream
from .errors import InvalidArgument, UndyingError
from .store import store_from_url
from .store.base import (
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    RUNNING,
    WAITING,
)

STATUSES = (PENDING, RUNNING, WAITING, COMPLETED, FAILED, CANCELLED)
EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 1, 2, 130, 141


def load_app(path: str) -> App:
    """Import ``module:attribute`` and return the App it names."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise SystemExit(
            f"error: expected MODULE:APP (for example myagents.main:app), got {path!r}"
        )
    sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise SystemExit(f"error: cannot import {module_name!r}: {_where(exc)}") from exc
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise SystemExit(
            f"error: {path!r} is not an undying.App (got {type(app).__name__}): name the "
            "App object, as in myagents.main:app"
        )
    return app


def _where(exc: BaseException) -> str:
    """``Type: message (file, line N)``: where an import failed, without the whole stack."""
    text = out.one_line(f"{type(exc).__name__}: {exc}")
    frames = traceback.extract_tb(exc.__traceback__)
    if isinstance(exc, SyntaxError) or not frames:
        return text
    last = frames[-1]
    return f"{text} ({last.filename}, line {last.lineno})"


# -- running and steering --------------------------------------------------------------------
async def _cmd_worker(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    app.is_worker = True  # the module may build a client-only App; here it must work
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with app:
        print(
            f"undying worker {app.worker_id} on {app.store.url}: "
            f"{len(app.registry.workflows)} workflows",
            flush=True,
        )
        await stop.wait()
        print("shutting down: releasing runs in progress", flush=True)
    return 0


async def _cmd_cancel(args: argparse.Namespace) -> int:
    async with client(args) as app:
        await app.cancel(args.run)
    if args.json:
        out.print_json({"run_id": args.run, "cancel_requested": True})
    else:
        print(f"cancel requested for {args.run}")
    return 0


async def _cmd_resume(args: argparse.Namespace) -> int:
    async with client(args) as app:
        resumed = await app.resume(args.run)
    if args.json:
        out.print_json({"run_id": args.run, "resumed": resumed})
    else:
        print(
            f"{args.run}: "
            + ("queued to resume" if resumed else "not failed or cancelled; nothing to do")
        )
    return 0


async def _cmd_fork(args: argparse.Namespace) -> int:
    async with client(args) as app:
        handle = await app.fork(args.run, from_step=args.from_step, new_run_id=args.new_id)
    if args.json:
        out.print_json(
            {"run_id": handle.run_id, "forked_from": args.run, "from_step": args.from_step}
        )
    else:
        print(f"forked {args.run} at step {args.from_step} as {handle.run_id}")
    return 0


async def _cmd_schedule(args: argparse.Namespace) -> int:
    async with client(args) as app:
        if args.action == "pause":
            changed = await app.pause_schedule(args.name)
        else:
            changed = await app.resume_schedule(args.name)
    paused = args.action == "pause"
    if args.json:
        out.print_json({"name": args.name, "paused": paused, "changed": changed})
    elif changed:
        print(f"{args.name}: {'paused' if paused else 'resumed: it fires from its next tick'}")
    else:
        print(f"{args.name}: already {'paused' if paused else 'running'}; nothing to do")
    return 0


def read_payload(spec: str) -> Any:
    """The JSON value ``undying send`` delivers: inline, ``-`` for stdin, ``@FILE`` for a file
    (an argument is capped by the OS at ~128 KiB; an event may hold 1 MiB)."""
    source = "the payload"
    if spec == "-":
        text, source = sys.stdin.read(), "the payload read from stdin"
    elif spec.startswith("@"):
        name = spec[1:]
        try:
            text = Path(name).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidArgument(f"cannot read payload file {name!r}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise InvalidArgument(f"payload file {name!r} is not UTF-8 text: {exc}") from exc
        source = f"payload file {name!r}"
    else:
        text = spec
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(
            f"{source} is not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno}): "
            "give a JSON value such as '{\"ok\": true}', - to read it from stdin, or @FILE"
        ) from exc


async def _cmd_send(args: argparse.Namespace) -> int:
    payload = read_payload(args.payload)
    async with client(args) as app:
        delivered = await app.send_event(args.run, args.event, payload, key=args.key)
    if args.json:
        out.print_json({"run_id": args.run, "event": args.event, "delivered": delivered})
    else:
        print("delivered" if delivered else "already delivered (same key)")
    return 0


async def _cmd_replay_check(args: argparse.Namespace) -> int:
    from .testing import replay_check

    app = load_app(args.app)
    app.is_worker = False
    async with app:
        problems = await replay_check(app, limit=args.limit)
    if args.json:
        out.print_json(
            {
                "problems": [
                    {"run_id": p.run_id, "workflow": p.workflow, "error": p.error} for p in problems
                ]
            }
        )
    else:
        for problem in problems:
            print(f"{problem.run_id} ({problem.workflow}): {problem.error}")
        print(f"{len(problems)} run(s) do not replay with the current code")
    return 1 if problems else 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    store = store_from_url(args.db)
    applied = asyncio.run(store.migrate())
    if args.json:
        out.print_json({"database": store.url, "applied": applied})
    else:
        print(
            f"{store.url}: " + (f"applied {', '.join(applied)}" if applied else "schema up to date")
        )
    return 0


async def _cmd_gc(args: argparse.Namespace) -> int:
    from .retention import collect_garbage

    async with client(args) as app:
        # The whole store: gc needs the maintenance port, and App.store is the read side.
        report = await collect_garbage(app._store_or_raise(), older_than_days=args.older_than_days)
    if args.json:
        out.print_json(
            {
                "runs_deleted": report.runs_deleted,
                "blobs_deleted": report.blobs_deleted,
                "blobs_kept": report.blobs_kept,
            }
        )
    else:
        print(
            f"deleted {report.runs_deleted} run(s) and {report.blobs_deleted} unreferenced "
            f"chunk(s); {report.blobs_kept} chunk(s) still in use"
        )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    return int(demo_main(args.dir))


def _cmd_ui(args: argparse.Namespace) -> int:
    from .web.server import serve  # needs the [ui] extra: imported only for this command

    return serve(args.db, host=args.host, port=args.port, token=args.token, app_path=args.app)


# -- the parser --------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (``error: ... (see undying X --help)``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {out.one_line(message)} (see `{self.prog} --help`)\n")


def _at_least(minimum: int, convert: Callable[[str], Any], what: str) -> Callable[[str], Any]:
    """An argparse type: ``convert(text)``, refused (one clear line) below ``minimum``."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not value >= minimum:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"expected {what} >= {minimum}, got {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="undying", description="Crash-proof long-running AI agents.")
    db_help = "database URL (default: $UNDYING_DATABASE_URL or ./undying.db)"
    parser.add_argument("--db", default=None, metavar="URL", help=db_help)
    common = _Parser(add_help=False)  # --db after the command works too
    common.add_argument("--db", default=argparse.SUPPRESS, metavar="URL", help=db_help)
    as_json = _Parser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON (see docs/cli.md)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, *, json: bool = True) -> argparse.ArgumentParser:
        parents = [common, as_json] if json else [common]
        return sub.add_parser(name, help=help, description=help, parents=parents)

    p = command("worker", "run a worker for MODULE:APP until SIGTERM or Ctrl-C", json=False)
    p.add_argument("app", metavar="MODULE:APP")
    p = command("runs", "list runs, newest first")
    p.add_argument(
        "--status",
        choices=STATUSES,
        metavar="S",
        help="only runs with this status: " + ", ".join(STATUSES),
    )
    p.add_argument("--workflow", metavar="W", help="only runs of this workflow")
    p.add_argument("--parent", metavar="RUN", help="only the children of this run")
    p.add_argument(
        "--limit",
        type=_at_least(1, int, "a whole number"),
        default=50,
        metavar="N",
        help="at most N runs (50)",
    )
    p.add_argument("--watch", action="store_true", help="print the list again whenever it changes")
    p = command("show", "show a run: status, result or error, and its journal as a timeline")
    p.add_argument("run")
    p.add_argument("--full", action="store_true", help="print whole values, pretty-printed")
    p.add_argument(
        "--follow",
        action="store_true",
        help="then print the run's streams as they grow, until the run ends",
    )
    p = command("stream", "print a run's stream, waiting for new values until it ends")
    p.add_argument("run")
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--offset",
        type=_at_least(0, int, "a stream offset"),
        default=0,
        metavar="N",
        help="start at the N-th value (0: the first)",
    )
    p.add_argument(
        "--text", action="store_true", help="write string values as they are, one after another"
    )
    p = command("cancel", "cancel a run and its children")
    p.add_argument("run")
    p = command("resume", "resume a failed or cancelled run from its journal")
    p.add_argument("run")
    p = command("fork", "start a new run that reuses the first N journal entries")
    p.add_argument("run")
    p.add_argument(
        "--from-step", type=_at_least(0, int, "a journal position"), required=True, metavar="N"
    )
    p.add_argument("--new-id", metavar="ID", help="the new run's id (default RUN~fork-XXXXXXXX)")
    p = command("send", "send an event with a JSON payload to a run")
    p.add_argument("run")
    p.add_argument("event")
    p.add_argument("payload", metavar="JSON", help="a JSON value, - (stdin) or @FILE")
    p.add_argument("--key", help="deliver at most once per key")
    command("schedules", "list schedules: when they tick, paused or not, last and next tick")
    p = command("schedule", "pause or resume a schedule, in every worker")
    p.add_argument("action", choices=("pause", "resume"))
    p.add_argument("name", metavar="NAME")
    p = command("replay-check", "check that finished runs still replay with the current code")
    p.add_argument("app", metavar="MODULE:APP")
    p.add_argument(
        "--limit",
        type=_at_least(1, int, "a whole number"),
        default=1000,
        metavar="N",
        help="runs per status (1000)",
    )
    p = command("ui", "serve the web UI", json=False)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--token", help="required off 127.0.0.1 (default: $UNDYING_UI_TOKEN)")
    p.add_argument("--app", metavar="MODULE:APP", help="import it to decode its classes")
    command("migrate", "apply database migrations")
    p = command("gc", "delete old runs and the chunks no journal refers to")
    p.add_argument(
        "--older-than-days",
        type=_at_least(0, float, "a number of days"),
        default=None,
        metavar="N",
        help="also delete runs that ended more than N days ago",
    )
    p = command("demo", "crash and recover the example research agent", json=False)
    p.add_argument("--dir", default=None, help="where to keep the demo database")
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], Any]] = {
    "worker": _cmd_worker,
    "runs": cmd_runs,
    "show": cmd_show,
    "stream": cmd_stream,
    "cancel": _cmd_cancel,
    "resume": _cmd_resume,
    "fork": _cmd_fork,
    "send": _cmd_send,
    "schedules": cmd_schedules,
    "schedule": _cmd_schedule,
    "replay-check": _cmd_replay_check,
    "migrate": _cmd_migrate,
    "gc": _cmd_gc,
    "demo": _cmd_demo,
    "ui": _cmd_ui,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = COMMANDS[args.command]
    try:
        if asyncio.iscoroutinefunction(handler):
            code = int(asyncio.run(handler(args)))
        else:
            code = int(handler(args))
        sys.stdout.flush()  # here, where a closed pipe is handled, not at interpreter exit
        return code
    except UndyingError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (`undying show RUN | head`): stop quietly, and keep Python
        # from complaining when it flushes stdout at exit.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        if os.environ.get("UNDYING_DEBUG"):
            raise
        return _fail(
            f"unexpected {type(exc).__name__}: {exc} (set UNDYING_DEBUG=1 to see the traceback)"
        )


def _fail(message: str, code: int = EXIT_ERROR) -> int:
    print(f"error: {out.one_line(message)}", file=sys.stderr)
    return code
