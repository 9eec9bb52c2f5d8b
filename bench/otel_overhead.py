"""What tracing (undying.otel) adds to a step and to a replay (a diagnostic, not a target).

1. Python cost per executed step, journal writes stubbed out (bench/hotpath.py part 1), with
   no observer, then with ``undying.otel.instrument`` over: the API's no-op tracer provider
   (the cost of the hooks themselves), the SDK with a span processor that drops every span
   (recording spans, exporting nothing), and the SDK with a ``BatchSpanProcessor`` over an
   exporter that drops what it gets (a production set-up minus the network).

2. Replay of a completed 2,000-step run (``undying.testing.replay_check``, as bench/replay.py
   part A) with the same configurations: a replayed step gets no span by default, only a count,
   so this is the cost of the hook on the replay path; ``replayed_steps=True`` makes a
   zero-length span per replayed step.

Needs the SDK: ``pip install opentelemetry-sdk`` (in the dev extra).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as common
import hotpath
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import undying
import undying.otel
from undying import App, Context
from undying.testing import replay_check


class _Dropping(SpanProcessor):
    """Spans are recorded (attributes, events, timing), then forgotten at their end."""


class _DroppingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _sdk(processor: SpanProcessor) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(processor)
    return provider


#: label -> (make a tracer provider, or None for no observer at all; replayed_steps)
CONFIGS: dict[str, tuple[Callable[[], trace.TracerProvider] | None, bool]] = {
    "no observer": (None, False),
    "otel, API no-op tracer": (trace.NoOpTracerProvider, False),
    "otel, SDK, spans dropped": (lambda: _sdk(_Dropping()), False),
    "otel, SDK, batch export": (lambda: _sdk(BatchSpanProcessor(_DroppingExporter())), False),
    "otel, SDK, replayed_steps=True": (lambda: _sdk(_Dropping()), True),
}


def _with(config: str, fn: Callable[[], Any]) -> Any:
    make, replayed_steps = CONFIGS[config]
    provider = None if make is None else make()
    if provider is not None:
        undying.otel.instrument(provider, replayed_steps=replayed_steps)
    try:
        return fn()
    finally:
        undying.otel.uninstrument()
        if isinstance(provider, TracerProvider):
            provider.shutdown()


@undying.step
async def _noop(i: int) -> int:
    return i


async def _long_run(ctx: Context, n: int) -> int:
    for i in range(n):
        await _noop(i)
    return n


async def _completed_run(path: str, n: int) -> None:
    app = App(path)
    app.workflow(name="bench.otel_replay")(_long_run)
    async with app:
        await (await app.start("bench.otel_replay", n)).result()


async def _replay_once(path: str) -> float:
    app = App(path, worker=False)
    app.workflow(name="bench.otel_replay")(_long_run)
    async with app:
        gc.collect()
        start = time.perf_counter()
        problems = await replay_check(app)
        elapsed = time.perf_counter() - start
    assert not problems, problems
    return elapsed


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    args = p.parse_args(argv)
    n = 1000 if args.quick else 3000
    replay_steps = 2000
    reps = args.reps or (3 if args.quick else 5)
    print(f"tracing overhead: {n} steps, replay of {replay_steps} steps, median of {reps}")
    print(common.env_line())
    with common.temp_dir(args.tmp) as root:
        files = common.FreshFiles(root)
        rows: list[list[Any]] = []
        for config in CONFIGS:
            if CONFIGS[config][1]:
                continue  # replayed_steps changes nothing on an executed step
            measured = _with(config, lambda: hotpath.python_overhead(files, n, reps))
            rows += [[config, label, own] for label, _, _, own in measured]
        print()
        print(
            common.table(
                "1. undying's own Python per executed step, journal writes stubbed (us/step)",
                ["observer", "step", "us/step"],
                rows,
            )
        )
        source = files.path("replay")
        asyncio.run(_completed_run(source, replay_steps))
        replays = []
        for config in CONFIGS:
            times = [_with(config, lambda: asyncio.run(_replay_once(source))) for _ in range(reps)]
            per_step = [t / replay_steps * 1e6 for t in times]
            replays.append([config, common.median(per_step), common.spread(per_step)])
        print()
        print(
            common.table(
                f"2. replay_check of a completed {replay_steps}-step run (us/replayed step)",
                ["observer", "us/step", "min..max"],
                replays,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
