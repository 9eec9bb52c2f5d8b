"""A traced worker process that SIGKILLs itself inside a step, for test_otel_crash.py.

    python otel_crash_worker.py DB SPANS_FILE (start | start-in-span | recover)

Every span this process ends is appended at once, one JSON object a line, to SPANS_FILE (a
file of this process's own): a SIGKILL loses only the spans still open. ``start`` starts run
``traced-1`` (``start-in-span``: inside a span ``request``, as an HTTP handler would) and
kills itself in the step ``second`` the first time it runs; ``recover`` lets its worker take
the run over and waits for its result, which it prints as ``result <value>``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import undying
import undying.otel
from undying import App, Context

RUN_ID = "traced-1"
DB, SPANS_FILE, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
MARKER = Path(f"{DB}.crashed")  # the kill happens once per database


class JsonLinesExporter(SpanExporter):
    """Writes each finished span as a line, unbuffered, so what was ended survives a kill."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            parent = span.parent
            line = {
                "name": span.name,
                "trace_id": trace.format_trace_id(span.context.trace_id),
                "span_id": trace.format_span_id(span.context.span_id),
                "parent_id": None if parent is None else trace.format_span_id(parent.span_id),
                "attributes": dict(span.attributes or {}),
                "pid": os.getpid(),
            }
            os.write(self.fd, (json.dumps(line) + "\n").encode())
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        os.close(self.fd)


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(SPANS_FILE)))
undying.otel.instrument(provider)


@undying.step
async def first(x: int) -> int:
    return x + 1


@undying.step
async def second(x: int) -> int:
    if not MARKER.exists():
        MARKER.write_text(str(os.getpid()))
        print("crashing in step second", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return x * 10


app = App(DB, strict=True)


@app.workflow(name="traced")
async def traced(ctx: Context, x: int) -> int:
    return await second(await first(x))


async def main() -> None:
    async with app:
        if MODE == "start-in-span":
            with provider.get_tracer("test").start_as_current_span("request"):
                handle = await app.start(traced, 4, run_id=RUN_ID)
        elif MODE == "start":
            handle = await app.start(traced, 4, run_id=RUN_ID)
        else:
            handle = app.handle(RUN_ID)
        result = await handle.result(timeout=60)
    print(f"result {result}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
    provider.shutdown()
