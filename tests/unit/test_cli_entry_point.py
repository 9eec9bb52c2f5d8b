"""The command line as a user runs it: ``python -m undying`` in its own process.

Every bad input ends as one ``error: ...`` line on stderr and a non-zero exit code, never a
traceback; a closed pipe ends quietly; ``runs --watch`` follows changes and stops on Ctrl-C;
``send`` takes payloads too large for an argument from stdin or a file.
"""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cli_helpers import SRC, CliResult, assert_one_error_line, run_cli

from undying import App
from undying.testing import wait_for_status

AGENTS = """
import undying
from undying import App, Context

app = App({db!r}, suspend_after=0.0)

@undying.step
async def echo(i: int) -> int:
    return i

@app.workflow(name="steps")
async def steps(ctx: Context, n: int) -> int:
    for i in range(n):
        await echo(i)
    return n

@app.workflow(name="inbox")
async def inbox(ctx: Context) -> int:
    got = await ctx.wait_for_event("doc")
    return len(got["text"])
"""


def _make_agents(tmp_path: Path) -> App:
    """``agents.py`` in tmp_path (for MODULE:APP commands) and the same App in this process."""
    db = str(tmp_path / "cli.db")
    source = AGENTS.format(db=db)
    (tmp_path / "agents.py").write_text(source)
    (tmp_path / "broken_agents.py").write_text("import undying\nraise RuntimeError('no config')\n")
    namespace: dict[str, object] = {"__name__": "agents"}
    exec(compile(source, str(tmp_path / "agents.py"), "exec"), namespace)
    app = namespace["app"]
    assert isinstance(app, App)
    return app


def _run(app: App, workflow: str, *args: object, run_id: str) -> None:
    async def main() -> None:
        async with app:
            await (await app.start(workflow, *args, run_id=run_id)).result(timeout=30)

    asyncio.run(main())


def test_every_command_with_bad_input_fails_with_one_clear_line(tmp_path: Path) -> None:
    app = _make_agents(tmp_path)
    _run(app, "steps", 3, run_id="done")
    db = str(tmp_path / "cli.db")
    (tmp_path / "not-a-db.db").write_text("hello\n" * 100)
    cases: dict[str, tuple[list[str], tuple[str, ...]]] = {
        "no command": ([], ("required",)),
        "unknown command": (["nonsense"], ("invalid choice",)),
        "unknown option": (["runs", "--colour"], ("unrecognized arguments",)),
        "bad limit": (["runs", "--limit", "0"], ("--limit", ">= 1")),
        "bad status": (["runs", "--status", "sleepy"], ("invalid choice",)),
        "show without run": (["show"], ("required: run",)),
        "unknown run": (["show", "nope"], ("no run with id 'nope'",)),
        "malformed run id": (["show", "bad id"], ("malformed run id",)),
        "cancel unknown": (["cancel", "nope"], ("no run with id",)),
        "resume unknown": (["resume", "nope"], ("no run with id",)),
        "fork unknown": (["fork", "nope", "--from-step", "1"], ("no run with id",)),
        "fork not a number": (["fork", "done", "--from-step", "x"], ("journal position",)),
        "fork negative": (["fork", "done", "--from-step", "-1"], ("--from-step",)),
        "fork 10**30": (["fork", "done", "--from-step", str(10**30)], ("use 0..3",)),
        "fork beyond": (["fork", "done", "--from-step", "5"], ("holds positions 0..2",)),
        "send bad JSON": (["send", "done", "doc", "{oops"], ("not valid JSON",)),
        "send no file": (["send", "done", "doc", "@missing.json"], ("cannot read",)),
        "send unknown run": (["send", "nope", "doc", "{}"], ("no run with id",)),
        "send bad event": (["send", "done", "a\x01b", "{}"], ("malformed event name",)),
        "worker no colon": (["worker", "agents"], ("MODULE:APP",)),
        "worker no module": (["worker", "nowhere:app"], ("cannot import 'nowhere'",)),
        "worker not an app": (["worker", "agents:echo"], ("is not an undying.App",)),
        "worker import fails": (["worker", "broken_agents:app"], ("RuntimeError: no config",)),
        "replay-check no module": (["replay-check", "nowhere:app"], ("cannot import",)),
        "gc negative days": (["gc", "--older-than-days", "-1"], (">= 0",)),
        "unsupported URL": (["--db", "mysql://h/db", "runs"], ("unsupported database URL",)),
        "bad sqlite URL": (["--db", "sqlite://rel.db", "runs"], ("bad SQLite URL",)),
        "not a database": (["--db", "not-a-db.db", "runs"], ("is not an SQLite database",)),
        "missing directory": (["--db", "no/such/dir.db", "migrate"], ("does not exist",)),
    }

    def invoke(argv: list[str]) -> CliResult:
        with_db = argv if argv[:1] == ["--db"] else ["--db", db, *argv]
        return run_cli(*(with_db if argv else []), cwd=tmp_path)

    with ThreadPoolExecutor(4) as pool:
        done = pool.map(invoke, (argv for argv, _ in cases.values()))
        results = dict(zip(cases, done, strict=True))
    failures = []
    for name, (_, fragments) in cases.items():
        try:
            assert_one_error_line(results[name], *fragments)
        except AssertionError as exc:
            failures.append(f"{name}: {exc}\n  {results[name]}")
    assert not failures, "\n".join(failures)


def test_show_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    app = _make_agents(tmp_path)
    _run(app, "steps", 3000, run_id="long")  # ~200 KB of timeline: more than a pipe holds
    shell = f"{sys.executable} -m undying --db {tmp_path / 'cli.db'} show long | head -n 3"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert done.stdout.splitlines()[0] == "run       long"
    assert done.stderr == ""
    assert done.returncode == 141  # undying's own status, as a program killed by SIGPIPE


def test_send_takes_a_large_payload_from_stdin_or_a_file(tmp_path: Path) -> None:
    """200 KiB of JSON does not fit in one argument (the OS caps each at 128 KiB)."""
    app = _make_agents(tmp_path)
    db = str(tmp_path / "cli.db")
    text = "x" * 200 * 1024
    payload = json.dumps({"text": text})
    with pytest.raises(OSError, match="Argument list too long"):
        run_cli("--db", db, "send", "a", "doc", payload)
    (tmp_path / "doc.json").write_text(payload)

    async def start(run_id: str) -> None:
        async with app:
            handle = await app.start("inbox", run_id=run_id)
            await wait_for_status(handle, "waiting")

    async def result(run_id: str) -> object:
        async with app:
            return await app.handle(run_id).result(timeout=30)

    for run_id, source, stdin in (("via-stdin", "-", payload), ("via-file", "@doc.json", None)):
        asyncio.run(start(run_id))
        sent = run_cli("--db", db, "send", run_id, "doc", source, stdin=stdin, cwd=tmp_path)
        assert (sent.code, sent.out.strip(), sent.err) == (0, "delivered", "")
        assert asyncio.run(result(run_id)) == len(text)


def _lines(stream: object) -> queue.Queue[str]:
    """The lines a child process prints, as they come (read in a thread)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _next_view(lines: queue.Queue[str], deadline: float) -> list[dict[str, object]]:
    view = json.loads(lines.get(timeout=max(deadline - time.monotonic(), 0.01)))
    assert isinstance(view, list)
    return view


def test_runs_watch_follows_changes_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    app = _make_agents(tmp_path)
    _run(app, "steps", 1, run_id="first")
    db = str(tmp_path / "cli.db")
    watcher = subprocess.Popen(
        [sys.executable, "-m", "undying", "--db", db, "runs", "--watch", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": SRC},
    )
    with watcher:
        lines = _lines(watcher.stdout)
        deadline = time.monotonic() + 30
        assert [r["run_id"] for r in _next_view(lines, deadline)] == ["first"]
        _run(app, "steps", 2, run_id="second")  # another process writes: the watcher wakes
        seen: dict[str, object] = {}
        while seen.get("second") != "completed":
            seen = {str(r["run_id"]): r["status"] for r in _next_view(lines, deadline)}
        assert seen == {"first": "completed", "second": "completed"}
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(timeout=30) == 0
        assert watcher.stderr is not None and watcher.stderr.read() == ""


def test_help_lists_every_command() -> None:
    shown = run_cli("--help")
    assert shown.code == 0
    for command in ("worker", "runs", "show", "cancel", "resume", "fork", "send", "migrate"):
        assert command in shown.out
    assert shown.err == ""
