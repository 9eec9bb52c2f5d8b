"""``undying stream`` and ``undying show --follow``: a run's streams on the command line."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import SRC, assert_one_error_line, run_cli

import undying
from undying import App, Context
from undying.cli import main


def _finished_run(db: str) -> None:
    app = App(db)

    @undying.step(retries=1, retry_delay=0)
    async def speak() -> str:
        await undying.publish("answer", "Hel")
        if undying.current_step().attempt == 1:  # type: ignore[union-attr]
            raise ConnectionError("cut")
        await undying.publish("answer", "lo")
        return "Hello"

    @app.workflow(name="talker")
    async def talker(ctx: Context) -> str:
        await ctx.publish("progress", {"phase": "speaking"})
        said = await speak()
        await ctx.close_stream("progress")
        return said

    async def body() -> None:
        async with app:
            await (await app.start(talker, run_id="t1")).result(timeout=10)

    asyncio.run(body())


def test_stream_prints_the_values_and_show_lists_the_streams(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "streams.db")
    _finished_run(db)
    assert main(["--db", db, "stream", "t1", "answer"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(None, 1)[0] for line in lines] == ["0", "1", "2", "3"]
    assert "'Hel'" in lines[0] and "'lo'" in lines[3]
    assert "runs again, attempt 2: drop its last 1 value(s)" in lines[1]
    assert main(["--db", db, "stream", "t1", "answer", "--offset", "2", "--json"]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == [
        {"stream": "answer", "offset": 2, "value": "Hel"},
        {"stream": "answer", "offset": 3, "value": "lo"},
    ]
    assert main(["--db", db, "stream", "t1", "answer", "--offset", "2", "--text"]) == 0
    assert capsys.readouterr().out == "Hello\n"
    assert main(["--db", db, "stream", "t1", "answer", "--offset", "9"]) == 0
    assert capsys.readouterr().out == ""

    assert main(["--db", db, "show", "t1"]) == 0
    shown = capsys.readouterr().out
    assert "streams   progress (1 item, closed), answer (4 items)" in shown
    assert main(["--db", db, "show", "t1", "--json"]) == 0
    streams = json.loads(capsys.readouterr().out)["streams"]
    assert [(s["name"], s["length"], s["closed_at"] is not None) for s in streams] == [
        ("progress", 1, True),
        ("answer", 4, False),
    ]


def test_stream_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    db = str(tmp_path / "streams.db")
    _finished_run(db)
    result = run_cli("--db", db, "stream", "t1", "anwser")
    assert_one_error_line(result, "has no stream 'anwser'", "'progress', 'answer'")
    assert_one_error_line(run_cli("--db", db, "stream", "nope", "answer"), "no run with id")
    assert_one_error_line(run_cli("--db", db, "stream", "t1", ""), "malformed stream name")
    result = run_cli("--db", db, "stream", "t1", "answer", "--offset", "-1")
    assert result.code == 2 and "expected a stream offset >= 0" in result.err


def test_show_follow_prints_the_streams_as_they_grow(tmp_path: Path) -> None:
    """The run publishes its next value only after the follower printed the last one: only
    a follower woken by each value gets to the end (and it ends with the run)."""
    db = str(tmp_path / "follow.db")
    app = App(db)

    @app.workflow(name="ticker")
    async def ticker(ctx: Context) -> None:
        for i in range(3):
            await ctx.publish("ticks", i)
            await ctx.wait_for_event("printed")
        await ctx.publish("done", True)

    async def body() -> list[str]:
        async with app:
            await app.start(ticker, run_id="f1")
            env = {**os.environ, "PYTHONPATH": SRC}
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "undying",
                "--db",
                db,
                "show",
                "f1",
                "--follow",
                "--json",
                stdout=asyncio.subprocess.PIPE,
                env=env,
            )
            assert proc.stdout is not None
            lines: list[Any] = []
            while line := await asyncio.wait_for(proc.stdout.readline(), 20):
                lines.append(json.loads(line))
                if "stream" in lines[-1] and lines[-1]["stream"] == "ticks":
                    await app.send_event("f1", "printed")
            assert await asyncio.wait_for(proc.wait(), 20) == 0
        return lines

    shown, *items = asyncio.run(body())
    assert shown["run"]["run_id"] == "f1"
    assert sorted(items, key=lambda i: (i["stream"], i["offset"])) == [
        {"stream": "done", "offset": 0, "value": True},
        *({"stream": "ticks", "offset": i, "value": i} for i in range(3)),
    ]
