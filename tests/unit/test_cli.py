"""The command line: inspect and steer runs, check replays, migrate, collect garbage."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import textwrap
from pathlib import Path

import pytest

import undying
from undying import App, Context
from undying.cli import main
from undying.testing import wait_for_status


def _write_app(tmp_path: Path, db: str, *, changed: bool = False) -> str:
    module = tmp_path / "cli_agents.py"
    step = "browse" if changed else "search"
    module.write_text(
        textwrap.dedent(
            f"""
            import undying
            from undying import App, Context

            app = App({db!r}, suspend_after=0.0)

            @undying.step
            async def search(q: str) -> str:
                return "found " + q

            @undying.step
            async def browse(q: str) -> str:
                return "browsed " + q

            @app.workflow(name="agent")
            async def agent(ctx: Context, q: str) -> str:
                ctx.set_status("working")
                got = await {step}(q)
                await ctx.wait_for_event("approval")
                return got
            """
        )
    )
    sys.modules.pop("cli_agents", None)
    return "cli_agents:app"


def test_cli_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(tmp_path / "cli.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    target = _write_app(tmp_path, db)
    import importlib

    module = importlib.import_module("cli_agents")

    async def start() -> None:
        async with module.app:
            handle = await module.app.start("agent", "llamas", run_id="cli-1")
            await wait_for_status(handle, "waiting")

    asyncio.run(start())
    assert main(["--db", db, "runs"]) == 0
    assert "cli-1" in capsys.readouterr().out
    assert main(["--db", db, "show", "cli-1"]) == 0
    shown = capsys.readouterr().out
    assert "waiting" in shown and "found llamas" in shown and "'working'" in shown
    assert main(["--db", db, "send", "cli-1", "approval", '{"ok": true}', "--key", "a1"]) == 0
    assert main(["--db", db, "send", "cli-1", "approval", '{"ok": true}', "--key", "a1"]) == 0
    assert "already delivered" in capsys.readouterr().out

    async def finish() -> object:
        async with module.app:
            return await module.app.handle("cli-1").result(timeout=10)

    assert asyncio.run(finish()) == "found llamas"
    assert main(["--db", db, "fork", "cli-1", "--from-step", "1", "--new-id", "cli-2"]) == 0
    assert main(["--db", db, "cancel", "cli-2"]) == 0
    assert main(["--db", db, "resume", "cli-2"]) == 0
    assert main(["--db", db, "replay-check", target]) == 0
    assert "0 run(s) do not replay" in capsys.readouterr().out

    changed = _write_app(tmp_path, db, changed=True)
    assert main(["--db", db, "replay-check", changed]) == 1
    assert "cli-1" in capsys.readouterr().out

    assert main(["--db", db, "gc"]) == 0
    assert main(["--db", db, "migrate"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_cli_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "e.db")
    assert main(["--db", db, "show", "nope"]) == 1
    assert "no run with id 'nope'" in capsys.readouterr().err
    assert main(["--db", db, "cancel", "bad id"]) == 1
    assert "malformed run id" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="MODULE:APP"):
        main(["worker", "no-colon"])


RUN_KEYS = {
    "run_id",
    "workflow",
    "status",
    "parent_id",
    "queue",
    "priority",
    "generation",
    "epoch",
    "owner",
    "cancel_requested",
    "created_at",
    "updated_at",
    "wake_at",
    "deadline",
}
ENTRY_KEYS = {
    "seq",
    "kind",
    "name",
    "status",
    "attempt",
    "started_at",
    "finished_at",
    "offset",
    "duration",
    "size",
    "value",
    "error",
    "decode_error",
}


def _report(size: int) -> dict[str, object]:
    """A step result of about ``size`` bytes encoded, of text that differs line by line."""
    lines = [f"line {i}: the agent read page {i * 7} and noted {i * i}" for i in range(size // 48)]
    return {"title": f"report of {size} bytes", "lines": lines}


def _show_fixture(db: str) -> None:
    """A run whose journal holds a small, a deferred (> 512 B), an offloaded (> 900 B,
    chunked) and a failed step's payload, and that now waits for an event."""
    app = App(db, suspend_after=0.0)

    @undying.step(name="read")
    async def read(size: int) -> dict[str, object]:
        return _report(size)

    @undying.step
    async def flaky() -> None:
        raise ValueError("the tool broke\non two lines")

    @app.workflow(name="reader")
    async def reader(ctx: Context, topic: str) -> str:
        ctx.set_status({"phase": "reading"})
        await read(60)
        await read(700)
        await read(50_000)
        with contextlib.suppress(undying.StepFailed):
            await flaky()
        await ctx.wait_for_event("go")
        return topic

    async def main() -> None:
        async with app:
            handle = await app.start(reader, "llamas", run_id="reader-1")
            await wait_for_status(handle, "waiting")

    asyncio.run(main())


def test_show_decodes_every_payload_on_a_timeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "show.db")
    _show_fixture(db)
    assert main(["--db", db, "show", "reader-1"]) == 0
    shown = capsys.readouterr().out
    assert "<unreadable" not in shown and "<cannot decode" not in shown
    rows = {line.split()[0]: line for line in shown.splitlines() if line[:5].strip().isdigit()}
    assert set(rows) == {"0", "1", "2", "3"}
    for seq, size in (("0", 60), ("1", 700), ("2", 50_000)):  # inline, deferred, offloaded
        assert f"'report of {size} bytes'" in rows[seq], rows[seq]
    assert "builtins.ValueError: the tool broke on two lines" in rows["3"]
    header = next(line for line in shown.splitlines() if line.startswith("SEQ"))
    assert header.split() == ["SEQ", "KIND", "NAME", "STATUS", "TRY", "START", "TOOK", "VALUE"]
    assert rows["2"].split()[1:5] == ["step", "read", "ok", "1"]
    assert rows["2"].split()[5].startswith("+")  # its start, from the run's start
    assert "args      ('llamas')" in shown and "progress  {'phase': 'reading'}" in shown

    assert main(["--db", db, "show", "reader-1", "--full"]) == 0
    full = capsys.readouterr().out
    assert "line 1040: the agent read page 7280 and noted 1081600" in full  # whole values
    assert "Traceback (most recent call last)" in full  # the failed step's recorded traceback


def test_show_and_runs_print_documented_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "json.db")
    _show_fixture(db)
    assert main(["--db", db, "show", "reader-1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert set(shown) == {"run", "children", "journal", "streams"}
    assert shown["streams"] == []  # this run published to none
    extra = {"input", "status_value", "result", "error", "decode_errors"}
    assert set(shown["run"]) == RUN_KEYS | extra and shown["run"]["decode_errors"] == {}
    assert shown["run"]["input"] == {"args": ["llamas"], "kwargs": {}}
    assert shown["run"]["status"] == "waiting" and shown["run"]["result"] is None
    journal = shown["journal"]
    assert all(set(e) == ENTRY_KEYS for e in journal)
    assert [e["value"] for e in journal[:3]] == [_report(60), _report(700), _report(50_000)]
    failed = journal[3]
    assert failed["status"] == "error" and failed["value"] is None
    assert failed["error"]["type"] == "builtins.ValueError"
    assert failed["error"]["message"] == "the tool broke\non two lines"
    assert all(e["offset"] >= 0 for e in journal)
    assert journal[2]["duration"] >= 0 and journal[2]["size"] > 900

    assert main(["--db", db, "runs", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert set(listed) == RUN_KEYS and listed["run_id"] == "reader-1"
    assert main(["--db", db, "runs", "--status", "completed", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["--db", db, "send", "reader-1", "go", "null", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "run_id": "reader-1",
        "event": "go",
        "delivered": True,
    }
