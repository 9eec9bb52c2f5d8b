"""Hooks for watching runs and steps from outside: tracing (``undying.otel``), metrics, logs.

The engine reports each execution of a run and each step (executed or answered from the
journal) to at most one ``Observer`` per process. With none installed, a hook costs one
module-global read on the step path, which is why there is exactly one slot and no list.
An observer must not raise: what it does is advisory, never part of a run's outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from .store.base import RunRecord


class Observer(Protocol):
    """What the engine tells an observer. Each ``*_started`` returns a token that is handed
    back to the matching ``*_finished``."""

    def run_started(self, run: RunRecord, *, replaying: bool) -> object:
        """An execution of ``run`` begins (``replaying``: its journal holds entries)."""

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


def annotate(**attributes: Any) -> None:
    """Attach attributes to the step whose code is running, for the installed observer (a
    no-op without one): ``undying.observe.annotate(model="gpt-4o", input_tokens=812)``."""
    if observer is not None:
        observer.annotate(attributes)
