"""Model calls through durable clients: journaled on the first run, answered from the journal
on replay (fork copies the journal, so a fork replays every call), with the same SDK types,
the same SDK exceptions, and one retry layer that honours Retry-After."""

from __future__ import annotations

import time
import warnings
from typing import Any

import anthropic
import openai
import pytest
from llm_helpers import USER, clients, replay_all

import undying
from undying import App, ArgumentDigestChanged, Context, NonDeterminismError
from undying.llm.testing import ScriptedServer, reply
from undying.testing import temp_app


async def _start_and_fork(app: App, wf: Any) -> tuple[Any, Any]:
    first = await (await app.start(wf, run_id="r1")).result(timeout=30)
    replayed = await (await replay_all(app, "r1")).result(timeout=30)
    return first, replayed


def test_every_endpoint_replays_to_the_same_type_without_a_request(app: App, run: Any) -> None:
    async def body() -> None:
        async with ScriptedServer([reply("the answer is 42")]) as server, clients(server) as (
            o,
            a,
        ):

            @app.workflow(name="all")
            async def all_endpoints(ctx: Context) -> list[Any]:
                out = [
                    await o.chat.completions.create(model="m", messages=USER),
                    await o.chat.completions.parse(model="m", messages=USER),
                    await o.responses.create(model="m", input="hi"),
                    await a.messages.create(model="c", max_tokens=9, messages=USER),
                ]
                async with o.chat.completions.stream(model="m", messages=USER) as s:
                    out.append(await s.get_final_completion())
                async with o.responses.stream(model="m", input="hi") as s:
                    out.append(await s.get_final_response())
                async with a.messages.stream(model="c", max_tokens=9, messages=USER) as s:
                    out.append(await s.get_final_message())
                return [(type(x).__module__, type(x).__qualname__, x.to_dict()) for x in out]

            async with app:
                first, replayed = await _start_and_fork(app, all_endpoints)
            assert server.requests == {"chat.completions": 3, "responses": 2, "messages": 2}
        assert replayed == first
        names = [q for _, q, _ in first]
        assert names == [
            "ChatCompletion",
            "ParsedChatCompletion[~ResponseFormatT]",
            "Response",
            "Message",
            "ParsedChatCompletion[~ResponseFormatT]",
            "ParsedResponse",
            "ParsedMessage",
        ]

    run(body())


def test_journal_entries_are_named_after_the_endpoint_and_digest_the_request(
    app: App, run: Any
) -> None:
    async def body() -> None:
        async with ScriptedServer([reply("ok")]) as server, clients(server) as (o, a):

            @app.workflow(name="names")
            async def names(ctx: Context) -> None:
                await o.chat.completions.create(model="m", messages=USER)
                await a.messages.create(model="c", max_tokens=5, messages=USER)

            async with app:
                await (await app.start(names, run_id="n1")).result(timeout=30)
                journal = await app.store.load_journal_meta("n1")
        assert [(e.kind, e.name) for e in journal] == [
            ("step", "openai.chat.completions.create"),
            ("step", "anthropic.messages.create"),
        ]
        assert all(e.digest for e in journal)

    run(body())


PROMPT = {"text": "first prompt"}


def _prompt_workflow(app: App, o: Any) -> Any:
    @app.workflow(name="prompted")
    async def prompted(ctx: Context) -> str:
        msgs = [{"role": "user", "content": PROMPT["text"]}]
        done = await o.chat.completions.create(model="m", messages=msgs)
        return str(done.choices[0].message.content)

    return prompted


@pytest.mark.parametrize("strict", [False, True])
def test_a_changed_prompt_on_replay_warns_or_fails_in_strict_mode(
    db_path: str, run: Any, strict: bool
) -> None:
    app = temp_app(db_path, strict=strict)

    async def body() -> None:
        PROMPT["text"] = "first prompt"
        async with ScriptedServer([reply("ok")]) as server, clients(server) as (o, _):
            wf = _prompt_workflow(app, o)
            async with app:
                assert await (await app.start(wf, run_id="p1")).result(timeout=30) == "ok"
                PROMPT["text"] = "a changed prompt"
                fork = await replay_all(app, "p1")
                if strict:
                    with pytest.raises(NonDeterminismError, match="different arguments"):
                        await fork.result(timeout=30)
                else:
                    with pytest.warns(ArgumentDigestChanged, match="chat.completions.create"):
                        assert await fork.result(timeout=30) == "ok"
            assert server.requests["chat.completions"] == 1

    try:
        run(body())
    finally:
        PROMPT["text"] = "first prompt"


def test_429_with_retry_after_is_retried_after_that_delay(app: App, run: Any) -> None:
    """The client runs with max_retries=0: the step retries, after Retry-After (0.3 s, far
    from the 30 s backoff the client is configured with)."""

    async def body() -> None:
        async with ScriptedServer([reply("fine")]) as server, clients(
            server, retry_delay=30.0
        ) as (o, a):
            server.fail(429, headers={"retry-after": "0.3"}, endpoint="chat.completions")
            server.fail(529, headers={"retry-after-ms": "200"}, endpoint="messages")

            @app.workflow(name="limited")
            async def limited(ctx: Context) -> list[str]:
                first = await o.chat.completions.create(model="m", messages=USER)
                second = await a.messages.create(model="c", max_tokens=5, messages=USER)
                return [str(first.choices[0].message.content), second.content[0].text]

            async with app:
                started = time.monotonic()
                result = await (await app.start(limited, run_id="l1")).result(timeout=30)
                took = time.monotonic() - started
            assert result == ["fine", "fine"]
            assert server.requests == {"chat.completions": 2, "messages": 2}
            assert 0.5 <= took < 10
            assert [r.answered for r in server.log] == ["error 429", "turn", "error 529", "turn"]

    run(body())


def test_400_is_not_retried_and_the_same_sdk_exception_is_raised_on_replay(
    app: App, run: Any
) -> None:
    async def body() -> None:
        async with ScriptedServer([reply("never")]) as server, clients(server) as (o, a):
            server.fail(400, endpoint="chat.completions")
            server.fail(404, endpoint="messages")

            @app.workflow(name="bad")
            async def bad(ctx: Context) -> list[Any]:
                seen = []
                for call in (
                    lambda: o.chat.completions.create(model="m", messages=USER),
                    lambda: a.messages.create(model="c", max_tokens=5, messages=USER),
                ):
                    try:
                        await call()
                    except (openai.APIStatusError, anthropic.APIStatusError) as exc:
                        seen.append(
                            [type(exc).__module__, type(exc).__name__, exc.status_code,
                             exc.body, exc.response.headers.get("x-request-id")]
                        )
                return seen

            async with app:
                first, replayed = await _start_and_fork(app, bad)
            assert server.requests == {"chat.completions": 1, "messages": 1}
        assert first[0][:3] == ["openai", "BadRequestError", 400]
        assert first[1][:3] == ["anthropic", "NotFoundError", 404]
        assert replayed == first

    run(body())


def test_retries_run_out_on_5xx_and_connection_errors(app: App, run: Any) -> None:
    async def body() -> None:
        async with ScriptedServer([reply("never")]) as server, clients(
            server, retries=2, retry_delay=0.01
        ) as (o, _):
            server.fail(503, times=3)

            @app.workflow(name="down")
            async def down(ctx: Context) -> str:
                try:
                    await o.chat.completions.create(model="m", messages=USER)
                except openai.InternalServerError as exc:
                    return f"{type(exc).__name__} {exc.status_code}"
                return "no error"

            async with app:
                first, replayed = await _start_and_fork(app, down)
            assert server.requests["chat.completions"] == 3  # 1 + 2 retries
        assert first == replayed == "InternalServerError 503"

    run(body())


def test_outside_a_workflow_a_durable_client_is_the_plain_client(run: Any) -> None:
    async def body() -> None:
        async with ScriptedServer([reply("plain")]) as server, clients(server) as (o, _):
            server.fail(429, headers={"retry-after": "0"})
            done = await o.chat.completions.create(model="m", messages=USER)
            assert done.choices[0].message.content == "plain"
            # The plain client keeps its own retries (the 429 was retried by the SDK).
            assert server.requests["chat.completions"] == 2
            assert undying.llm.durable(o) is o
            assert o.api_key == "test"  # everything else is the client's own

    run(body())


def test_sync_clients_and_strangers_are_refused() -> None:
    with pytest.raises(undying.InvalidArgument, match="AsyncOpenAI"):
        undying.llm.durable(openai.OpenAI(api_key="x", base_url="http://127.0.0.1:9"))
    with pytest.raises(undying.InvalidArgument, match=r"@undying\.step"):
        undying.llm.durable(object())
    with pytest.raises(undying.InvalidArgument, match="retries"):
        undying.llm.durable(openai.AsyncOpenAI(api_key="x"), retries=-1)


def test_no_warning_leaks_from_a_normal_run(app: App, run: Any) -> None:
    async def body() -> None:
        async with ScriptedServer([reply("quiet")]) as server, clients(server) as (o, _):

            @app.workflow(name="quiet")
            async def quiet(ctx: Context) -> None:
                await o.chat.completions.create(model="m", messages=USER)

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                async with app:
                    await _start_and_fork(app, quiet)
            assert [str(w.message) for w in caught] == []

    run(body())
