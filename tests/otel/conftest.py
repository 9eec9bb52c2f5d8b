"""The real OpenTelemetry SDK with its in-memory exporter, instrumented for one test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import undying.otel
from undying import observe


@dataclass
class Traced:
    provider: TracerProvider
    exporter: InMemorySpanExporter

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name.startswith(prefix)]

    def runs(self) -> list[ReadableSpan]:
        return self.named("undying.run ")

    def steps(self) -> list[ReadableSpan]:
        return self.named("undying.step ")


def make_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
def traced() -> Iterator[Traced]:
    assert observe.observer is None
    provider, exporter = make_provider()
    undying.otel.instrument(provider)
    try:
        yield Traced(provider, exporter)
    finally:
        undying.otel.uninstrument()
        provider.shutdown()


def attrs(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


def short(name: str) -> str:
    """``undying.step tests.x:fetch`` -> ``fetch``."""
    return name.rsplit(":", 1)[-1]
