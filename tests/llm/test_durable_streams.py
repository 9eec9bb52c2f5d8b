"""Streams: events reach the workflow while the provider is still sending; the final message
is journaled, and replay returns it (and, on request, its text) without a request."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llm_helpers import USER, clients, replay_all

from undying import App, Context, StreamRetry
from undying.llm.testing import ScriptedServer, reply

TEXT = "one two three four five six"


@pytest.mark.parametrize("provider", ["openai.chat", "openai.responses", "anthropic"])
def test_text_arrives_live_and_replay_returns_the_final_message(
    app: App, run: Any, provider: str
) -> None:
    """The server holds the stream after two text deltas until the workflow has seen them:
    a client that buffered the whole stream would never see them, and the test times out."""

    async def body() -> None:
        async with ScriptedServer([reply(TEXT, hold_after=2)]) as server, clients(
            server, replay_stream_text=True
        ) as (o, a):

            def open_stream() -> Any:
                if provider == "openai.chat":
                    return o.chat.completions.stream(model="m", messages=USER)
                if provider == "openai.responses":
                    return o.responses.stream(model="m", input="hi")
                return a.messages.stream(model="c", max_tokens=50, messages=USER)

            async def final(stream: Any) -> str:
                if provider == "openai.chat":
                    done = await stream.get_final_completion()
                    return str(done.choices[0].message.content)
                if provider == "openai.responses":
                    return str((await stream.get_final_response()).output_text)
                return str(await stream.get_final_text())

            @app.workflow(name="streamer")
            async def streamer(ctx: Context) -> dict[str, Any]:
                texts: list[str] = []
                async with open_stream() as stream:
                    async for text in stream.text_stream:
                        texts.append(text)
                        if len(texts) == 2:
                            server.release()  # only reachable if the deltas came live
                    return {"texts": texts, "final": await final(stream),
                            "replayed": stream.replayed}

            async with app:
                first = await (await app.start(streamer, run_id="s1")).result(timeout=30)
                replayed = await (await replay_all(app, "s1")).result(timeout=30)
            assert sum(server.requests.values()) == 1
        assert first["final"] == replayed["final"] == TEXT
        assert "".join(first["texts"]) == TEXT and len(first["texts"]) == 6
        assert first["replayed"] is False and replayed["replayed"] is True
        assert replayed["texts"] == [TEXT]  # the recorded text, re-emitted in one piece

    run(body())


def test_a_replayed_stream_yields_nothing_unless_asked(app: App, run: Any) -> None:
    async def body() -> None:
        async with ScriptedServer([reply(TEXT)]) as server, clients(server) as (_, a):

            @app.workflow(name="quiet_replay")
            async def quiet_replay(ctx: Context) -> list[Any]:
                async with a.messages.stream(model="c", max_tokens=50, messages=USER) as s:
                    events = [e.type async for e in s]
                    message = await s.get_final_message()
                return [len(events), message.content[0].text, message.usage.output_tokens]

            async with app:
                first = await (await app.start(quiet_replay, run_id="q1")).result(timeout=30)
                replayed = await (await replay_all(app, "q1")).result(timeout=30)
            assert server.requests["messages"] == 1
        assert first[0] > 6 and first[1:] == [TEXT, 6]
        assert replayed == [0, TEXT, 6]

    run(body())


def test_a_stream_cut_mid_way_is_sent_again_and_its_spend_counted(app: App, run: Any) -> None:
    async def body() -> None:
        async with ScriptedServer([reply(TEXT)]) as server, clients(server) as (_, a):
            server.cut(after=4)  # message_start, block start, two text deltas, then nothing

            @app.workflow(name="cut")
            async def cut(ctx: Context) -> list[str]:
                async with a.messages.stream(model="c", max_tokens=50, messages=USER) as s:
                    texts = [t async for t in s.text_stream]
                    return [*texts, "|", await s.get_final_text()]

            async with app:
                result = await (await app.start(cut, run_id="c1")).result(timeout=30)
                usage = await app.token_usage("c1")
            assert server.requests["messages"] == 2
        # The cut attempt's two deltas were delivered, then the whole retried stream.
        assert result[:2] == ["one", " two"] and result[-1] == TEXT
        assert usage.spent.calls == 2 and usage.failed.calls == 1
        # Anthropic reports input tokens when a stream starts: the cut attempt spent them.
        assert usage.failed.input_tokens == usage.spent.input_tokens // 2 > 0

    run(body())


def test_leaving_a_stream_early_still_journals_the_whole_message(app: App, run: Any) -> None:
    async def body() -> None:
        async with ScriptedServer([reply(TEXT)]) as server, clients(server) as (o, _):

            @app.workflow(name="early")
            async def early(ctx: Context) -> str:
                async with o.chat.completions.stream(model="m", messages=USER) as s:
                    async for event in s:
                        if event.type == "content.delta":
                            break
                async with o.chat.completions.stream(model="m", messages=USER) as s:
                    pass
                done = await s.get_final_completion()
                return str(done.choices[0].message.content)

            async with app:
                assert await (await app.start(early, run_id="e1")).result(timeout=30) == TEXT
                replay = await replay_all(app, "e1")
                assert await replay.result(timeout=30) == TEXT
            assert server.requests["chat.completions"] == 2

    run(body())


# -- publish_to: the answer token by token on a durable stream -----------------------------------
@pytest.mark.parametrize("provider", ["openai.chat", "openai.responses", "anthropic"])
def test_publish_to_sends_the_tokens_to_a_stream_readers_follow_live(
    app: App, run: Any, provider: str
) -> None:
    """The server holds the model's stream after two deltas until the reader (not the
    workflow) has seen them: only a stream published while the call streams gets there."""

    async def body() -> None:
        async with ScriptedServer([reply(TEXT, hold_after=2)]) as server, clients(
            server, publish_to="answer"
        ) as (o, a):

            @app.workflow(name="answerer")
            async def answerer(ctx: Context) -> str:
                if provider == "openai.chat":
                    async with o.chat.completions.stream(model="m", messages=USER) as s:
                        done = await s.get_final_completion()
                    return str(done.choices[0].message.content)
                if provider == "openai.responses":
                    async with o.responses.stream(model="m", input="hi") as s:
                        return str((await s.get_final_response()).output_text)
                async with a.messages.stream(model="c", max_tokens=50, messages=USER) as s:
                    return str(await s.get_final_text())

            async def follow() -> list[Any]:
                seen: list[Any] = []
                async for token in app.read_stream("a1", "answer"):
                    seen.append(token)
                    if len(seen) == 2:
                        server.release()
                return seen

            async with app:
                handle = await app.start(answerer, run_id="a1")
                seen = await asyncio.wait_for(follow(), 30)
                assert await handle.result(timeout=30) == TEXT
                replay = await replay_all(app, "a1")  # a fork replaying every entry
                await replay.result(timeout=30)
                forked = [t async for t in replay.read_stream("answer")]
            assert sum(server.requests.values()) == 1
        assert "".join(seen) == TEXT and len(seen) == 6
        assert forked == seen  # the values copied to the fork; its replay published none

    run(body())


def test_a_cut_stream_publishes_a_marker_then_the_new_attempts_tokens(
    app: App, run: Any
) -> None:
    async def body() -> None:
        async with ScriptedServer([reply(TEXT)]) as server, clients(
            server, publish_to="answer"
        ) as (_, a):
            server.cut(after=4)  # message_start, block start, two text deltas, then nothing

            @app.workflow(name="cut_publish")
            async def cut_publish(ctx: Context) -> str:
                async with a.messages.stream(model="c", max_tokens=50, messages=USER) as s:
                    return str(await s.get_final_text())

            async with app:
                handle = await app.start(cut_publish, run_id="c1")
                assert await handle.result(timeout=30) == TEXT
                seen = [t async for t in app.read_stream("c1", "answer")]
            assert server.requests["messages"] == 2
        words = ["one", " two", " three", " four", " five", " six"]
        retry = StreamRetry("anthropic.messages.stream", 0, 2, 2)
        assert seen == ["one", " two", retry, *words]

    run(body())
