"""Per-run token totals: spent (failed attempts included), saved by replay, rows written per
recovery, shown by `undying show`; and `import undying` stays free of the SDKs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

from llm_helpers import USER, clients, replay_all

import undying
from undying import App, Context
from undying.cli import main as cli_main
from undying.llm import Tokens, TokenUsage
from undying.llm.testing import ScriptedServer, reply
from undying.testing import replay_check


def test_spent_failed_and_saved_tokens(app: App, run: Any, db_path: str, capsys: Any) -> None:
    async def body() -> tuple[TokenUsage, TokenUsage, int]:
        script = [reply("a b c d e")]  # 5 output tokens
        async with ScriptedServer(script) as server, clients(server) as (o, a):
            server.cut(after=3, endpoint="messages")  # a stream that dies after starting

            @app.workflow(name="spender")
            async def spender(ctx: Context) -> None:
                for _ in range(20):
                    await o.chat.completions.create(model="m", messages=USER)
                async with a.messages.stream(model="c", max_tokens=9, messages=USER) as s:
                    await s.get_final_message()

            async with app:
                await (await app.start(spender, run_id="u1")).result(timeout=30)
                spent = await app.token_usage("u1")
                fork = await replay_all(app, "u1")
                await fork.result(timeout=30)
                saved = await fork.token_usage()
                rows = app.store.db.execute(  # type: ignore[attr-defined]
                    "SELECT count(*) FROM usage WHERE run_id = ?", (fork.run_id,)
                ).fetchone()[0]
            assert server.requests == {"chat.completions": 20, "messages": 2}
        return spent, saved, rows

    spent, saved, rows = run(body())
    chat_input = 20 * 10  # the scripted server: len('["", [{"content": "hi", ...}]]') // 4
    assert spent.spent == Tokens(22, chat_input + 2 * 10, 20 * 5 + 1 + 5, 0)
    assert spent.failed == Tokens(1, 10, 1, 0)  # the cut stream: message_start's usage
    assert spent.saved == Tokens()
    assert [(m.provider, m.model, m.spent.calls) for m in spent.by_model] == [
        ("anthropic", "c", 2),
        ("openai", "m", 20),
    ]
    # The fork replayed all 21 calls: nothing spent, their tokens saved, in two rows (one
    # per model), not one per replayed call.
    assert saved.spent == Tokens() and saved.saved == Tokens(21, chat_input + 10, 105, 0)
    assert rows == 2

    assert cli_main(["--db", db_path, "show", "u1"]) == 0
    out = capsys.readouterr().out
    assert "tokens    spent 220 in + 106 out in 22 call(s)" in out
    assert "of which failed or cut 10 in + 1 out in 1 call(s)" in out


def test_a_run_without_model_calls_has_no_token_lines(app: App, run: Any, db_path: str,
                                                       capsys: Any) -> None:
    @app.workflow(name="plain")
    async def plain(ctx: Context) -> int:
        return 1

    async def body() -> TokenUsage:
        async with app:
            await (await app.start(plain, run_id="p1")).result(timeout=10)
            return await app.token_usage("p1")

    assert run(body()) == TokenUsage()
    assert cli_main(["--db", db_path, "show", "p1"]) == 0
    assert "tokens" not in capsys.readouterr().out


def test_replay_check_of_model_calls_passes_and_writes_no_tokens(app: App, run: Any) -> None:
    async def body() -> None:
        async with ScriptedServer([reply("checked")]) as server, clients(server) as (o, a):

            @app.workflow(name="checked")
            async def checked(ctx: Context) -> None:
                await o.chat.completions.create(model="m", messages=USER)
                async with a.messages.stream(model="c", max_tokens=9, messages=USER) as s:
                    await s.get_final_message()

            async with app:
                await (await app.start(checked, run_id="k1")).result(timeout=30)
                before = await app.token_usage("k1")
                assert await replay_check(app) == []
                for _ in range(5):  # loop turns (not time) for a saved-tokens write task to run
                    await asyncio.sleep(0)
                assert await app.token_usage("k1") == before
            assert sum(server.requests.values()) == 2

    run(body())


def test_import_undying_does_not_import_the_sdks() -> None:
    code = (
        "import sys, undying, undying.llm, undying.llm.testing\n"
        "bad = [m for m in ('openai', 'anthropic', 'httpx', 'httpx2') if m in sys.modules]\n"
        "print(bad)\n"
    )
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert not {"openai", "anthropic", "httpx", "httpx2"} & imported
    assert "undying" in imported and undying.llm.durable is not None
