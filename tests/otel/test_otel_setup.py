"""Installing and removing the instrumentation; what it costs a process that does not use it."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from typing import Any

import pytest
from conftest import make_provider
from opentelemetry import trace

import undying
import undying.otel
from undying import Context, InvalidArgument, observe
from undying.testing import temp_app


def test_import_undying_does_not_import_opentelemetry() -> None:
    code = (
        "import sys, undying, undying.testing, undying.observe\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'opentelemetry')\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()]
    assert "undying.app" in imported  # -X importtime listed what was imported
    assert not [name for name in imported if name.startswith("opentelemetry")]


def test_instrument_checks_its_arguments() -> None:
    with pytest.raises(InvalidArgument, match="tracer_provider must be an opentelemetry"):
        undying.otel.instrument("console")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="replayed_steps must be True or False"):
        undying.otel.instrument(replayed_steps="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="non-empty string"):
        undying.otel.derived_trace_id("")
    assert observe.observer is None


class _Other:
    """Some other observer (metrics, say)."""


def test_instrument_refuses_to_replace_another_observer() -> None:
    other: Any = _Other()
    observe.install(other)
    try:
        with pytest.raises(InvalidArgument, match=r"another observer is installed \(_Other\)"):
            undying.otel.instrument()
        undying.otel.uninstrument()  # not ours: left alone
        assert observe.observer is other
    finally:
        observe.install(None)


def test_instrument_again_replaces_and_uninstrument_removes() -> None:
    first = undying.otel.instrument()
    second = undying.otel.instrument(replayed_steps=True)
    try:
        assert observe.observer is second and second is not first
        assert second.replayed_steps
    finally:
        undying.otel.uninstrument()
    assert observe.observer is None
    undying.otel.uninstrument()  # a no-op now


class _BrokenTracer(trace.NoOpTracer):
    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        raise RuntimeError("exporter misconfigured")


class _BrokenProvider(trace.NoOpTracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _BrokenTracer()


@undying.step
async def double(x: int) -> int:
    return 2 * x


def test_a_failing_tracer_never_fails_a_run(db_path: str, caplog: pytest.LogCaptureFixture) -> None:
    app = temp_app(db_path)

    @app.workflow(name="sturdy")
    async def sturdy(ctx: Context) -> int:
        return await double(await double(1))

    async def main() -> int:
        async with app:
            return int(await (await app.start("sturdy", run_id="s")).result(timeout=10))

    undying.otel.instrument(_BrokenProvider())
    try:
        with caplog.at_level(logging.WARNING, logger="undying.otel"):
            assert asyncio.run(main()) == 4
    finally:
        undying.otel.uninstrument()
    complaints = [r for r in caplog.records if r.name == "undying.otel"]
    assert len(complaints) == 1  # logged once, not once per hook call
    assert "hook failed" in complaints[0].getMessage()


def test_uninstrumented_runs_make_no_spans(db_path: str) -> None:
    provider, exporter = make_provider()
    undying.otel.instrument(provider)
    undying.otel.uninstrument()
    app = temp_app(db_path)

    @app.workflow(name="quiet")
    async def quiet(ctx: Context) -> int:
        return await double(1)

    async def main() -> int:
        async with app:
            return int(await (await app.start("quiet", run_id="q")).result(timeout=10))

    assert asyncio.run(main()) == 2
    assert exporter.get_finished_spans() == ()
