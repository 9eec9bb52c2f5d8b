"""Hooks for watching runs and steps from outside: tracing (``undying.otel``), metrics, logs.

The engine reports each execution of a run and each step (executed or answered from the
journal) to at most one ``Observer`` per process. With none installed, a hook costs one
module-global read on the step path, which is why there is exactly one slot and no list.
An observer must not raise: what it does is advisory, never part of a run's outcome.

A run started while an observer is installed may carry a small mapping of strings from the
starting code to every execution of the run, in any process (``carry``): a tracing observer
puts the caller's trace context there. It is stored as an optional third element of the
run's encoded input, ``[args, kwargs, carried]``, so no column holds it (``pack_input``,
``unpack_input``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .store.base import RunRecord


class Observer(Protocol):
    """What the engine tells an observer. Each ``*_started`` returns a token that is handed
    back to the matching ``*_finished``."""

    def carry(self) -> Mapping[str, str]:
        """What a run started now carries to each of its executions (``run_started``'s
        ``carried``): the starting code's trace context, say; empty for nothing."""

    def run_started(self, run: RunRecord, *, replaying: bool, carried: Mapping[str, str]) -> object:
        """An execution of ``run`` begins (``replaying``: its journal holds entries;
        ``carried``: what ``carry`` gave when the run was started)."""

    def run_finished(self, token: object, status: str, error: BaseException | None) -> None:
        """The execution ended: a run status (completed, failed, cancelled) or how it stopped
        (suspended, continued, lease lost)."""

    def step_started(
        self, run: RunRecord, seq: int, name: str, attempt: int, *, replayed: bool
    ) -> object:
        """A step's attempt begins, or (``replayed``) its outcome comes from the journal."""

    def step_finished(self, token: object, error: BaseException | None) -> None:
        """The attempt ended (``error`` is the attempt's exception, if it failed)."""

    def annotate(self, attributes: Mapping[str, Any]) -> None:
        """Attributes for the step whose code is running (a model call's provider, model and
        token counts, say)."""


#: the installed observer, or None (read directly on the hot path)
observer: Observer | None = None


def install(new: Observer | None) -> Observer | None:
    """Install ``new`` as the process's observer (None removes it); returns the previous one."""
    global observer
    previous, observer = observer, new
    return previous


#: the keys ``annotate`` takes for a model call (``undying.otel`` maps them to the GenAI
#: semantic conventions): ``provider`` ("openai", "anthropic", ...), ``operation`` ("chat",
#: "embeddings", ...), ``model`` (requested), ``response_model`` (what answered),
#: ``response_id``, ``finish_reasons`` (a list of str), ``temperature``, ``max_tokens``, and
#: the token counts (ints, which add up over one step attempt's calls) ``input_tokens``
#: (everything sent, cached tokens included, as ``undying.tokens`` counts them),
#: ``output_tokens``, ``cached_tokens`` (the part of the input served from the provider's
#: prompt cache) and ``cache_write_tokens`` (the part written to it).
MODEL_CALL_KEYS = (
    "provider",
    "operation",
    "model",
    "response_model",
    "response_id",
    "finish_reasons",
    "temperature",
    "max_tokens",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cache_write_tokens",
)


def annotate(**attributes: Any) -> None:
    """Attach attributes to the step whose code is running, for the installed observer (a
    no-op without one): ``undying.observe.annotate(provider="openai", model="gpt-4o",
    input_tokens=812, output_tokens=95)``; see ``MODEL_CALL_KEYS`` for a model call."""
    if observer is not None:
        observer.annotate(attributes)


def carry() -> dict[str, str]:
    """What the installed observer has a run started now carry (empty without one)."""
    return {} if observer is None else dict(observer.carry())


def pack_input(
    args: Sequence[Any], kwargs: dict[str, Any], carried: Mapping[str, str]
) -> list[Any]:
    """A run's input to encode: ``[args, kwargs]``, with ``carried`` third when not empty
    (so a run started without an observer is stored exactly as before)."""
    return [list(args), kwargs, dict(carried)] if carried else [list(args), kwargs]


def unpack_input(value: Any) -> tuple[list[Any], dict[str, Any], dict[str, str]]:
    """``args, kwargs, carried`` from a run's decoded input, either shape."""
    if len(value) == 3:
        args, kwargs, carried = value
        return args, kwargs, carried if isinstance(carried, dict) else {}
    args, kwargs = value
    return args, kwargs, {}
