"""``undying schedules`` and ``undying schedule pause|resume NAME``: what an operator sees of
the schedules a worker registered, and pausing one from another process."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from cli_helpers import assert_one_error_line, run_cli

from undying import App, Context
from undying.cli import main


def _registered(db: str) -> None:
    """A worker declares two schedules and stops (their rows stay), without a tick firing."""
    app = App(db)

    @app.schedule("0 9 * * mon-fri", timezone="Europe/Paris", name="standup")
    async def standup(ctx: Context, tick: dt.datetime) -> None:
        return None

    @app.schedule(every=10**7, name="rare", missed="catch_up", max_catch_up=3)
    async def rare(ctx: Context, tick: dt.datetime) -> None:
        return None

    async def main() -> None:
        async with app:

            async def registered() -> bool:
                return len(await app.list_schedules()) == 2

            while not await registered():
                await app.wait_for_change(0.05)

    asyncio.run(main())


def test_list_pause_and_resume(db_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    _registered(db_path)
    assert main(["--db", db_path, "schedules"]) == 0
    text = capsys.readouterr().out
    assert "standup   0 9 * * mon-fri (Europe/Paris)  latest" in text
    assert "rare" in text and "every 10000000s" in text and "catch_up 3" in text

    assert main(["--db", db_path, "schedule", "pause", "standup"]) == 0
    assert capsys.readouterr().out == "standup: paused\n"
    assert main(["--db", db_path, "schedule", "pause", "standup", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "name": "standup",
        "paused": True,
        "changed": False,
    }

    assert main(["--db", db_path, "schedules", "--json"]) == 0
    listed = {s["name"]: s for s in json.loads(capsys.readouterr().out)}
    standup, rare = listed["standup"], listed["rare"]
    assert standup["paused"] is True and standup["next_tick"] is None
    assert (standup["cron"], standup["timezone"], standup["every"]) == (
        "0 9 * * mon-fri",
        "Europe/Paris",
        None,
    )
    assert (rare["every"], rare["missed"], rare["max_catch_up"]) == (1e7, "catch_up", 3)
    assert rare["last_tick"] is None and rare["last_run_id"] is None
    assert rare["next_tick"].endswith("+00:00") and rare["paused"] is False

    assert main(["--db", db_path, "schedule", "resume", "standup"]) == 0
    assert "resumed" in capsys.readouterr().out
    assert main(["--db", db_path, "schedules", "--json"]) == 0
    [standup] = [s for s in json.loads(capsys.readouterr().out) if s["name"] == "standup"]
    nine = dt.datetime.fromisoformat(standup["next_tick"]).astimezone(
        dt.timezone(dt.timedelta(hours=1))  # Paris in winter; 9:00 or 9:00 summer time
    )
    assert standup["paused"] is False and nine.minute == 0 and nine.hour in (8, 9)


def test_no_schedules_yet(db_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", db_path, "schedules"]) == 0
    assert "no schedules" in capsys.readouterr().out
    assert main(["--db", db_path, "schedules", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_an_unknown_schedule_is_one_error_line(db_path: str) -> None:
    _registered(db_path)
    result = run_cli("--db", db_path, "schedule", "pause", "nope")
    assert_one_error_line(result, "no schedule named 'nope'", "known: rare, standup")
    assert result.code == 1
    usage = run_cli("--db", db_path, "schedule", "stop", "rare")
    assert_one_error_line(usage, "invalid choice: 'stop'", "pause", "resume")
    assert usage.code == 2
