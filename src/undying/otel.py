"""OpenTelemetry tracing for runs and steps (``pip install 'undying[otel]'``).

``instrument()`` installs an ``undying.observe`` observer that makes a span per *execution* of
a run (not per run: a run lives for days and across processes, and a span can only be ended
by the process that started it) and, as its children, a span per attempt of a step. A step
answered from the journal on replay runs nothing, so by default it gets no span of its own,
only a count on its execution's span (``undying.run.replayed_steps``): recovering a run of
10,000 steps must not emit 10,000 spans (``replayed_steps=True`` emits them, zero-length).

All executions of a run share one trace. When a run is started inside a span (a request
handler calling ``app.start``, a parent run calling ``ctx.call``) the W3C trace context of
that span is stored with the run's input (``undying.observe.carry``), and every execution,
in whichever process and after however many crashes, is a child of that span. A run started
outside any span gets a trace id derived from its run id (a child or fork id from the id of
the run it descends from), so its executions still land in one trace.

Model calls annotated from a step (``undying.observe.annotate(provider=..., model=...,
input_tokens=...)``) become GenAI semantic-convention attributes on the step's span; see
``GENAI_ATTRIBUTES`` and docs/observability.md.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as _missing:  # pragma: no cover - depends on the installation
    raise ImportError(
        "undying.otel needs the OpenTelemetry API: pip install 'undying[otel]'"
    ) from _missing

from . import __version__, observe
from .errors import InvalidArgument
from .failures import type_path
from .store.base import FAILED, RunRecord

log = logging.getLogger("undying.otel")

# -- attribute names (docs/observability.md) ---------------------------------------------------
RUN_ID = "undying.run.id"
WORKFLOW = "undying.workflow"
EPOCH = "undying.run.epoch"
GENERATION = "undying.run.generation"
PARENT_RUN_ID = "undying.run.parent_id"
REPLAYING = "undying.run.replaying"
STATUS = "undying.run.status"
REPLAYED_STEPS = "undying.run.replayed_steps"
STEP_NAME = "undying.step.name"
SEQUENCE = "undying.step.sequence"
ATTEMPT = "undying.step.attempt"
REPLAYED = "undying.step.replayed"
#: prefix of an annotation that is neither a model-call key nor a dotted attribute name
ANNOTATION_PREFIX = "undying.annotation."
ERROR_TYPE = "error.type"

#: ``observe.annotate`` keys (``observe.MODEL_CALL_KEYS``) and the GenAI semantic-convention
#: attributes each one sets. The names are those of opentelemetry-semantic-conventions 0.66b2
#: (checked by tests/otel); they are not imported from it, so that the [otel] extra does not
#: pin a semconv version against the exact one each OpenTelemetry SDK release requires.
#: ``gen_ai.system`` is the name older GenAI-aware backends still read; ``gen_ai.provider.name``
#: replaces it.
GENAI_ATTRIBUTES: Mapping[str, tuple[str, ...]] = {
    "provider": ("gen_ai.provider.name", "gen_ai.system"),
    "operation": ("gen_ai.operation.name",),
    "model": ("gen_ai.request.model",),
    "response_model": ("gen_ai.response.model",),
    "response_id": ("gen_ai.response.id",),
    "finish_reasons": ("gen_ai.response.finish_reasons",),
    "temperature": ("gen_ai.request.temperature",),
    "max_tokens": ("gen_ai.request.max_tokens",),
    "input_tokens": ("gen_ai.usage.input_tokens",),
    "output_tokens": ("gen_ai.usage.output_tokens",),
    "cached_tokens": ("gen_ai.usage.cache_read.input_tokens",),
    "cache_write_tokens": ("gen_ai.usage.cache_creation.input_tokens",),
}
#: keys whose values add up when one attempt annotates several model calls
_SUMMED = frozenset(
    key for key in GENAI_ATTRIBUTES if key.endswith("_tokens") and key != "max_tokens"
)

_TRACE_CONTEXT = TraceContextTextMapPropagator()


class _Open:
    """A span this observer started and has not ended, with what is needed to end it."""

    __slots__ = ("context_token", "current_token", "replayed", "span", "totals")

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self.context_token: object = None
        self.current_token: contextvars.Token[_Open | None] | None = None
        self.replayed = 0  # of an execution: steps answered from the journal
        self.totals: dict[str, int | float] = {}  # of an attempt: token counts so far

    def make_current(self) -> _Open:
        """The span is the parent of spans the running code makes, and what it annotates."""
        self.context_token = otel_context.attach(trace.set_span_in_context(self.span))
        self.current_token = _current.set(self)
        return self


#: the innermost span of this observer around the running code: a step attempt, else the
#: execution of the run (what ``annotate`` writes to)
_current: contextvars.ContextVar[_Open | None] = contextvars.ContextVar(
    "undying_otel_span", default=None
)


class TracingObserver:
    """The observer ``instrument()`` installs; see the module docstring. Every hook swallows
    its own failures (logged once): tracing is advisory, never part of a run's outcome."""

    def __init__(self, tracer: trace.Tracer, *, replayed_steps: bool) -> None:
        self.tracer = tracer
        self.replayed_steps = replayed_steps
        self._complained = False

    # -- the observe.Observer protocol ---------------------------------------------------------
    def carry(self) -> Mapping[str, str]:
        try:
            if not trace.get_current_span().get_span_context().is_valid:
                return {}
            carrier: dict[str, str] = {}
            _TRACE_CONTEXT.inject(carrier)
            return carrier
        except Exception as exc:
            self._failed("carry", exc)
            return {}

    def run_started(self, run: RunRecord, *, replaying: bool, carried: Mapping[str, str]) -> object:
        try:
            attributes: dict[str, Any] = {
                RUN_ID: run.run_id,
                WORKFLOW: run.workflow,
                EPOCH: run.epoch,
                GENERATION: run.generation,
                REPLAYING: replaying,
            }
            if run.parent_id is not None:
                attributes[PARENT_RUN_ID] = run.parent_id
            span = self.tracer.start_span(
                f"undying.run {run.workflow}",
                context=_parent_context(run.run_id, carried),
                attributes=attributes,
            )
            return _Open(span).make_current()
        except Exception as exc:
            self._failed("run_started", exc)
            return None

    def run_finished(self, token: object, status: str, error: BaseException | None) -> None:
        if not isinstance(token, _Open):
            return
        try:
            span = token.span
            span.set_attribute(STATUS, status)
            span.set_attribute(REPLAYED_STEPS, token.replayed)
            if status == FAILED and error is not None:
                _record_failure(span, error)
            span.end()
        except Exception as exc:
            self._failed("run_finished", exc)
        finally:
            _restore(token)

    def step_started(
        self, run: RunRecord, seq: int, name: str, attempt: int, *, replayed: bool
    ) -> object:
        if replayed:
            execution = _current.get()
            if execution is not None:
                execution.replayed += 1
            if not self.replayed_steps:
                return None
        try:
            span = self.tracer.start_span(
                f"undying.step {name}",
                attributes={
                    RUN_ID: run.run_id,
                    STEP_NAME: name,
                    SEQUENCE: seq,
                    ATTEMPT: attempt,
                    REPLAYED: replayed,
                },
            )
            # a replayed step is answered at once: its span is ended by step_finished, next
            return _Open(span) if replayed else _Open(span).make_current()
        except Exception as exc:
            self._failed("step_started", exc)
            return None

    def step_finished(self, token: object, error: BaseException | None) -> None:
        if not isinstance(token, _Open):
            return
        try:
            if error is not None:
                _record_failure(token.span, error)
            token.span.end()
        except Exception as exc:
            self._failed("step_finished", exc)
        finally:
            _restore(token)

    def annotate(self, attributes: Mapping[str, Any]) -> None:
        opened = _current.get()
        if opened is None:
            return
        try:
            span = opened.span
            for key, value in attributes.items():
                if value is None:  # not known (an adapter passes what the response had)
                    continue
                names = GENAI_ATTRIBUTES.get(key)
                if names is None:
                    name = key if "." in key else ANNOTATION_PREFIX + key
                    span.set_attribute(name, _attribute_value(value))
                    continue
                if key in _SUMMED and isinstance(value, int | float):
                    value = opened.totals[key] = opened.totals.get(key, 0) + value
                for name in names:
                    span.set_attribute(name, _attribute_value(value))
        except Exception as exc:
            self._failed("annotate", exc)

    def _failed(self, hook: str, exc: Exception) -> None:
        if not self._complained:
            self._complained = True
            log.warning(
                "undying.otel: the %s hook failed (ignored; logged once)", hook, exc_info=exc
            )


def _restore(opened: _Open) -> None:
    """Undo what starting ``opened`` made current. A reset from another context (it cannot
    happen from the engine's hooks, which start and finish in one task) is skipped."""
    try:
        if opened.current_token is not None:
            _current.reset(opened.current_token)
        if opened.context_token is not None:
            otel_context.detach(opened.context_token)  # type: ignore[arg-type]
    except ValueError:
        pass
    opened.current_token = opened.context_token = None


def _record_failure(span: trace.Span, error: BaseException) -> None:
    span.record_exception(error)
    path = type_path(error).replace(":", ".")
    span.set_attribute(ERROR_TYPE, path.removeprefix("builtins."))
    span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(error).__name__}: {error}"))


def _attribute_value(value: Any) -> Any:
    """``value`` as an OpenTelemetry attribute value (a str, bool, int, float or a sequence of
    one of those); anything else as its ``str``, never an error."""
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray) and value:
        kind = type(value[0])  # OpenTelemetry drops a sequence of mixed types
        if kind in (str, bool, int, float) and all(type(v) is kind for v in value):
            return tuple(value)
    return str(value)


def _parent_context(run_id: str, carried: Mapping[str, str]) -> otel_context.Context:
    """The parent of every execution span of ``run_id``: the span it was started in, else
    one derived from its id."""
    if carried:
        parent = _TRACE_CONTEXT.extract(carried)
        if trace.get_current_span(parent).get_span_context().is_valid:
            return parent
    return trace.set_span_in_context(trace.NonRecordingSpan(_derived_span_context(run_id)))


def _derived_span_context(run_id: str) -> trace.SpanContext:
    # Children and forks ("parent~3", "parent~fork-1a2b3c4d") join the trace of the run they
    # descend from: a user's run id never holds '~'.
    root = run_id.split("~", 1)[0]
    digest = hashlib.sha256(b"undying trace\x00" + root.encode()).digest()
    return trace.SpanContext(
        trace_id=int.from_bytes(digest[:16], "big") or 1,
        span_id=int.from_bytes(digest[16:24], "big") or 1,
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )


def derived_trace_id(run_id: str) -> str:
    """The trace id (32 hex digits) of a run started outside any span, to look it up in a
    tracing backend; a run started inside a span is in that span's trace instead."""
    if not isinstance(run_id, str) or not run_id:
        raise InvalidArgument(f"run_id must be a non-empty string, not {run_id!r}")
    return trace.format_trace_id(_derived_span_context(run_id).trace_id)


def instrument(
    tracer_provider: trace.TracerProvider | None = None, *, replayed_steps: bool = False
) -> TracingObserver:
    """Trace every run and step this process executes, through ``tracer_provider`` (default:
    the global one, ``opentelemetry.trace.set_tracer_provider``). ``replayed_steps``: also
    emit a zero-length span for each step answered from the journal. Calling it again
    replaces the configuration; ``uninstrument()`` stops."""
    if tracer_provider is not None and not isinstance(tracer_provider, trace.TracerProvider):
        raise InvalidArgument(
            "tracer_provider must be an opentelemetry.trace.TracerProvider (for example "
            f"opentelemetry.sdk.trace.TracerProvider()) or None, not {tracer_provider!r}"
        )
    if not isinstance(replayed_steps, bool):
        raise InvalidArgument(f"replayed_steps must be True or False, not {replayed_steps!r}")
    installed = observe.observer
    if installed is not None and not isinstance(installed, TracingObserver):
        raise InvalidArgument(
            f"another observer is installed ({type(installed).__name__}): a process has one "
            "observer slot; remove it first with undying.observe.install(None)"
        )
    tracer = trace.get_tracer("undying", __version__, tracer_provider)
    observer = TracingObserver(tracer, replayed_steps=replayed_steps)
    observe.install(observer)
    return observer


def uninstrument() -> None:
    """Stop tracing (spans already started are still ended); a no-op when not instrumented."""
    if isinstance(observe.observer, TracingObserver):
        observe.install(None)


__all__ = [
    "GENAI_ATTRIBUTES",
    "TracingObserver",
    "derived_trace_id",
    "instrument",
    "uninstrument",
]
