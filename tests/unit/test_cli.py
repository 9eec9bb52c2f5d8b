"""The command line: inspect and steer runs, check replays, migrate, collect garbage."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

import pytest

from undying.cli import main


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
            while await handle.status() != "waiting":
                await module.app._wait_change(0.05)

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
