"""Spans of runs and steps, with the real SDK: what a user sees in their tracing backend."""

from __future__ import annotations

import asyncio

import pytest
from conftest import Traced, attrs, make_provider, short
from opentelemetry import trace
from opentelemetry.trace import StatusCode

import undying
import undying.otel
from undying import App, Context, StepFailed
from undying.testing import temp_app, wait_for_status

flaky_calls: list[int] = []


@undying.step
async def fetch(x: int) -> int:
    return x * 2


@undying.step
def summarize(x: int) -> str:  # a sync step: runs in a thread
    return f"sum {x}"


@undying.step(retries=2, retry_delay=0.0)
async def flaky() -> str:
    flaky_calls.append(1)
    if len(flaky_calls) < 3:
        raise ConnectionError(f"flake {len(flaky_calls)}")
    return "ok"


@undying.step(retries=1, retry_delay=0.0)
async def broken() -> None:
    raise ValueError("always broken")


def test_a_run_is_a_span_with_its_steps_as_children(traced: Traced, db_path: str) -> None:
    app = temp_app(db_path)

    @app.workflow(name="agent")
    async def agent(ctx: Context, n: int) -> str:
        return await summarize(await fetch(n))

    async def main() -> str:
        async with app:
            return str(await (await app.start("agent", 4, run_id="r1")).result(timeout=10))

    assert asyncio.run(main()) == "sum 8"
    [run] = traced.runs()
    assert run.name == "undying.run agent"
    assert attrs(run) == {
        "undying.run.id": "r1",
        "undying.workflow": "agent",
        "undying.run.epoch": 1,
        "undying.run.generation": 0,
        "undying.run.replaying": False,
        "undying.run.status": "completed",
        "undying.run.replayed_steps": 0,
    }
    steps = traced.steps()
    assert [short(s.name) for s in steps] == ["fetch", "summarize"]
    for seq, step in enumerate(steps):
        assert step.parent is not None and step.parent.span_id == run.context.span_id
        assert step.context.trace_id == run.context.trace_id
        assert {k: v for k, v in attrs(step).items() if k != "undying.step.name"} == {
            "undying.run.id": "r1",
            "undying.step.sequence": seq,
            "undying.step.attempt": 1,
            "undying.step.replayed": False,
        }
        assert step.status.status_code == StatusCode.UNSET
    # a run started outside any span: its trace id comes from its run id
    assert trace.format_trace_id(run.context.trace_id) == undying.otel.derived_trace_id("r1")


def test_each_attempt_is_a_span_and_failures_are_recorded(traced: Traced, db_path: str) -> None:
    flaky_calls.clear()
    app = temp_app(db_path)

    @app.workflow(name="retrying")
    async def retrying(ctx: Context) -> str:
        got = await flaky()
        await broken()
        return got

    async def main() -> None:
        async with app:
            with pytest.raises(StepFailed):
                await (await app.start("retrying", run_id="r2")).result(timeout=10)

    asyncio.run(main())
    attempts = [(short(s.name), attrs(s)["undying.step.attempt"]) for s in traced.steps()]
    assert attempts == [("flaky", 1), ("flaky", 2), ("flaky", 3), ("broken", 1), ("broken", 2)]
    flaky_spans = traced.steps()[:3]
    for failed, message in zip(flaky_spans[:2], ["flake 1", "flake 2"], strict=True):
        assert failed.status.status_code == StatusCode.ERROR
        assert attrs(failed)["error.type"] == "ConnectionError"
        [event] = failed.events
        assert event.name == "exception"
        assert dict(event.attributes or {})["exception.message"] == message
    assert flaky_spans[2].status.status_code == StatusCode.UNSET
    assert not flaky_spans[2].events
    [run] = traced.runs()
    assert attrs(run)["undying.run.status"] == "failed"
    assert run.status.status_code == StatusCode.ERROR
    assert attrs(run)["error.type"] == "undying.errors.StepFailed"


def _waiting_app(db_path: str) -> App:
    app = temp_app(db_path)

    @app.workflow(name="waiter")
    async def waiter(ctx: Context) -> int:
        a = await fetch(1)
        await ctx.wait_for_event("go")
        return await fetch(a)

    return app


def _first_then_second(db_path: str, tracer: trace.Tracer | None = None) -> int:
    """Start the run (inside a span of ``tracer`` if given), let it wait, then deliver its
    event to another App on the same file."""

    async def first() -> None:
        async with _waiting_app(db_path) as app:
            if tracer is not None:
                with tracer.start_as_current_span("request"):
                    handle = await app.start("waiter", run_id="w")
            else:
                handle = await app.start("waiter", run_id="w")
            await wait_for_status(handle, "waiting")

    async def second() -> int:  # a new App on the same file: a restarted process
        async with _waiting_app(db_path) as app:
            await app.send_event("w", "go")
            return int(await app.handle("w").result(timeout=10))

    asyncio.run(first())
    return asyncio.run(second())


@pytest.mark.parametrize("start_in_span", [False, True], ids=["no caller span", "caller span"])
def test_a_replayed_execution_continues_the_trace(
    traced: Traced, db_path: str, start_in_span: bool
) -> None:
    tracer = traced.provider.get_tracer("test") if start_in_span else None
    assert _first_then_second(db_path, tracer) == 4
    first, second = traced.runs()
    assert first.context.trace_id == second.context.trace_id
    assert attrs(first)["undying.run.replaying"] is False
    assert attrs(first)["undying.run.status"] == "suspended"
    assert attrs(second)["undying.run.replaying"] is True
    assert attrs(second)["undying.run.status"] == "completed"
    assert attrs(second)["undying.run.replayed_steps"] == 1
    # by default a step answered from the journal gets no span: one span per executed step
    steps = traced.steps()
    executed = [
        (attrs(s)["undying.step.sequence"], attrs(s)["undying.step.replayed"]) for s in steps
    ]
    assert executed == [(0, False), (2, False)]
    assert steps[0].parent is not None and steps[0].parent.span_id == first.context.span_id
    assert steps[1].parent is not None and steps[1].parent.span_id == second.context.span_id
    assert {s.context.trace_id for s in traced.spans()} == {first.context.trace_id}
    if start_in_span:
        [request] = traced.named("request")
        assert first.parent is not None and first.parent.span_id == request.context.span_id
        assert second.parent is not None and second.parent.span_id == request.context.span_id
    else:
        assert trace.format_trace_id(first.context.trace_id) == undying.otel.derived_trace_id("w")


def test_replayed_steps_can_have_spans_of_their_own(db_path: str) -> None:
    provider, exporter = make_provider()
    undying.otel.instrument(provider, replayed_steps=True)
    try:
        assert _first_then_second(db_path) == 4
    finally:
        undying.otel.uninstrument()
    spans = exporter.get_finished_spans()
    second = [s for s in spans if s.name.startswith("undying.run ")][1]
    replayed = [s for s in spans if attrs(s).get("undying.step.replayed") is True]
    [step] = replayed
    assert attrs(step)["undying.step.sequence"] == 0
    assert attrs(step)["undying.step.attempt"] == 1
    assert step.parent is not None and step.parent.span_id == second.context.span_id
    assert attrs(second)["undying.run.replayed_steps"] == 1


def test_a_child_run_is_in_its_parents_trace(traced: Traced, db_path: str) -> None:
    app = temp_app(db_path)

    @app.workflow(name="child")
    async def child(ctx: Context, x: int) -> int:
        return await fetch(x)

    @app.workflow(name="parent")
    async def parent(ctx: Context) -> int:
        called = await ctx.call("child", 1)
        started = await ctx.start_child("child", 2)
        return int(called) + int(await started.result())

    async def main() -> int:
        async with app:
            return int(await (await app.start("parent", run_id="p")).result(timeout=10))

    assert asyncio.run(main()) == 6
    runs = {attrs(s)["undying.run.id"]: s for s in traced.runs()}
    parent_spans = [s for s in traced.runs() if attrs(s)["undying.run.id"] == "p"]
    children = [s for s in traced.runs() if attrs(s)["undying.run.id"] != "p"]
    assert len(children) == 2
    assert {attrs(c)["undying.run.parent_id"] for c in children} == {"p"}
    parent_ids = {p.context.span_id for p in parent_spans}
    for span in children:
        assert span.context.trace_id == runs["p"].context.trace_id
        assert span.parent is not None and span.parent.span_id in parent_ids
    assert {s.context.trace_id for s in traced.spans()} == {runs["p"].context.trace_id}


def test_the_callers_span_is_carried_through_the_database(traced: Traced, db_path: str) -> None:
    """A client App (no worker) starts the run inside a request span; a worker App executes
    it: the context went through the run's stored input, not through this process's memory."""
    worker_app = temp_app(db_path)
    client_app = App(db_path, worker=False)

    for each in (worker_app, client_app):

        @each.workflow(name="job")
        async def job(ctx: Context, x: int) -> int:
            return await fetch(x)

    tracer = traced.provider.get_tracer("test")

    async def main() -> int:
        async with client_app:
            with tracer.start_as_current_span("POST /jobs") as request:
                handle = await client_app.start("job", 5, run_id="j")
            raw = await client_app.store.get_run("j")
            assert raw is not None
            args, kwargs, carried = undying.observe.unpack_input(client_app.codec.decode(raw.input))
            assert (args, kwargs) == ([5], {})
            assert carried["traceparent"].split("-")[1] == trace.format_trace_id(
                request.get_span_context().trace_id
            )
        async with worker_app:
            return int(await worker_app.handle(handle.run_id).result(timeout=10))

    assert asyncio.run(main()) == 10
    [request] = traced.named("POST /jobs")
    [run] = traced.runs()
    assert run.context.trace_id == request.context.trace_id
    assert run.parent is not None and run.parent.span_id == request.context.span_id
    assert run.parent.is_remote


def test_a_run_started_outside_a_span_stores_its_input_as_before(
    traced: Traced, db_path: str
) -> None:
    app = temp_app(db_path)

    @app.workflow(name="plain")
    async def plain(ctx: Context, x: int) -> int:
        return x

    async def main() -> list[object]:
        async with app:
            handle = await app.start("plain", 3, run_id="q")
            assert await handle.result(timeout=10) == 3
            raw = await app.store.get_run("q")
            assert raw is not None
            return list(app.codec.decode(raw.input))

    assert asyncio.run(main()) == [[3], {}]


def test_continue_as_new_stays_in_the_trace(traced: Traced, db_path: str) -> None:
    app = temp_app(db_path)

    @app.workflow(name="looping")
    async def looping(ctx: Context, left: int) -> int:
        await fetch(left)
        if left:
            ctx.continue_as_new(left - 1)
        return 0

    async def main() -> None:
        async with app:
            with traced.provider.get_tracer("test").start_as_current_span("request"):
                handle = await app.start("looping", 2, run_id="loop")
            await handle.result(timeout=10)

    asyncio.run(main())
    [request] = traced.named("request")
    runs = traced.runs()
    assert [attrs(r)["undying.run.generation"] for r in runs] == [0, 1, 2]
    assert [attrs(r)["undying.run.status"] for r in runs] == ["continued"] * 2 + ["completed"]
    for span in runs:
        assert span.parent is not None and span.parent.span_id == request.context.span_id


def test_spans_made_by_step_and_workflow_code_are_children(traced: Traced, db_path: str) -> None:
    """What an instrumented library does inside a step (an HTTP call, say) nests under it."""
    tracer = traced.provider.get_tracer("library")

    @undying.step
    def call_api() -> str:  # a sync step: its code runs in a thread
        with tracer.start_as_current_span("GET /api"):
            return "done"

    app = temp_app(db_path)

    @app.workflow(name="nesting")
    async def nesting(ctx: Context) -> str:
        with tracer.start_as_current_span("plan"):
            pass
        return await call_api()

    async def main() -> str:
        async with app:
            return str(await (await app.start("nesting", run_id="n")).result(timeout=10))

    assert asyncio.run(main()) == "done"
    [run], [step] = traced.runs(), traced.steps()
    [plan], [request] = traced.named("plan"), traced.named("GET /api")
    assert plan.parent is not None and plan.parent.span_id == run.context.span_id
    assert request.parent is not None and request.parent.span_id == step.context.span_id
