"""What code is running right now: a workflow of which run, or a step of which run.

Three context variables, one place. The replay engine sets them around workflow code and step
attempts; the public helpers (``undying.current_context()``, ``undying.idempotency_key()``,
``undying.current_step()``, ``undying.publish()``) and strict mode read them. They live low in
the layers because every layer above needs to ask "am I inside a workflow?", and each may only
import below.
"""

from __future__ import annotations

import contextvars
from typing import Any, NamedTuple, Protocol


class ActiveRun(Protocol):
    """What the engine needs to know about the workflow code that is running (its
    ``Context``): strict mode guards clocks and randomness only in strict apps."""

    @property
    def strict(self) -> bool: ...


class StepInfo(NamedTuple):
    """What a running step knows about itself (see ``undying.current_step``).

    A NamedTuple, not a dataclass: one is built per attempt on the hot path, and a tuple is
    several times cheaper to build than a frozen dataclass."""

    run_id: str
    seq: int
    name: str
    attempt: int
    generation: int = 0

    @property
    def idempotency_key(self) -> str:
        return idempotency_key_for(self.run_id, self.generation, self.seq)


def idempotency_key_for(run_id: str, generation: int, seq: int) -> str:
    """``run:seq``; after ``continue_as_new`` positions restart at 0, so later generations
    add theirs (``run#2:seq``) and never reuse an earlier generation's key.

    No run id contains '#' (validation.py), so a key read from the right names one (run,
    generation, position): the seq after the last ':', the generation after a '#'."""
    if generation:
        return f"{run_id}#{generation}:{seq}"
    return f"{run_id}:{seq}"


#: The context of the workflow whose code is running, or None (outside, or inside a step).
current_run: contextvars.ContextVar[ActiveRun | None] = contextvars.ContextVar(
    "undying_run", default=None
)
#: The step whose code is running, or None.
current_step: contextvars.ContextVar[StepInfo | None] = contextvars.ContextVar(
    "undying_step", default=None
)
#: The journal (``journal.Recorder``) of the run whose workflow or step code is running, or
#: None. Set once per execution and, unlike ``current_run``, not hidden inside steps: a step's
#: ``undying.publish`` appends to its run's streams through it. Typed loosely, since the
#: recorder lives in a layer above this one.
current_execution: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "undying_execution", default=None
)
