"""The workflows, queues and schedules an App knows, by name.

A run is stored with its workflow's name, never its code, so any process that registered the
same names can execute it: the worker looks a run's workflow up here, a parent's ``ctx.call``
resolves its child here, and a client refuses to start a name it does not know.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from . import known_types
from .attempts import callable_name
from .errors import InvalidArgument, UnknownWorkflow
from .schedules import Schedule
from .store.base import QueueLimits


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    name: str
    fn: Callable[..., Coroutine[Any, Any, Any]]


class Registry:
    """Workflows by name, the queues runs can be sent to, and the schedules that start runs."""

    def __init__(self) -> None:
        self.workflows: dict[str, WorkflowSpec] = {}
        self.queues: dict[str, QueueLimits] = {}
        self.schedules: dict[str, Schedule] = {}

    def add_workflow(self, fn: Callable[..., Any], name: str | None) -> WorkflowSpec:
        if not inspect.iscoroutinefunction(fn):
            raise InvalidArgument(
                f"workflow {callable_name(fn)} must be an `async def` function taking "
                "(ctx, ...) as its arguments"
            )
        if name is not None and (not isinstance(name, str) or not name):
            raise InvalidArgument(f"a workflow name must be a non-empty string, not {name!r}")
        wf_name = name or callable_name(fn, strict=True)
        known_types.register_function(fn)  # its module's classes may be read back
        existing = self.workflows.get(wf_name)
        if existing is not None and existing.fn is not fn:
            raise InvalidArgument(f"two workflows are registered as {wf_name!r}; pass name=")
        spec = WorkflowSpec(wf_name, fn)
        self.workflows[wf_name] = spec
        fn.__undying_workflow__ = wf_name  # type: ignore[attr-defined]
        return spec

    def name_of(self, workflow: object) -> str:
        """The registered name of a decorated workflow function, or of a name."""
        if isinstance(workflow, str):
            name = workflow
        else:
            name = getattr(workflow, "__undying_workflow__", None) or ""
            if not name:
                raise InvalidArgument(
                    f"{workflow!r} is not a registered workflow: decorate it with @app.workflow()"
                )
        if name not in self.workflows:
            raise UnknownWorkflow(
                f"no workflow named {name!r} is registered (known: {sorted(self.workflows)})"
            )
        return name

    def add_queue(
        self,
        name: str,
        concurrency: int | None,
        worker_concurrency: int | None,
        rate_limit: tuple[int, float] | None,
        per_key_concurrency: int | None = None,
    ) -> QueueLimits:
        if not isinstance(name, str) or not name:
            raise InvalidArgument("a queue needs a non-empty name")
        for label, value in (
            ("concurrency", concurrency),
            ("worker_concurrency", worker_concurrency),
            ("per_key_concurrency", per_key_concurrency),
        ):
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise InvalidArgument(f"{label} must be a whole number >= 1, not {value!r}")
        if rate_limit is not None and (
            not isinstance(rate_limit, tuple)
            or len(rate_limit) != 2
            or not all(isinstance(v, int | float) for v in rate_limit)
            or rate_limit[0] < 1
            or rate_limit[1] <= 0
        ):
            raise InvalidArgument("rate_limit is (n, per_seconds), e.g. (60, 60.0) for 60 a minute")
        limits = QueueLimits(name, concurrency, worker_concurrency, rate_limit, per_key_concurrency)
        self.queues[name] = limits
        return limits

    def check_queue(self, queue: str | None) -> None:
        if queue is not None and queue not in self.queues:
            raise InvalidArgument(
                f"unknown queue {queue!r}: declare it with app.queue({queue!r}, ...)"
            )

    def check_concurrency_key(self, key: object, queue: str | None) -> str | None:
        """A start's ``concurrency_key``: a string, on a queue with a per-key limit."""
        if key is None:
            return None
        if not isinstance(key, str) or not key or len(key) > 200:
            raise InvalidArgument(
                f"concurrency_key must be a string of 1-200 characters (a user id, a tenant), "
                f"not {key!r}"
            )
        if queue is None:
            raise InvalidArgument(
                "concurrency_key needs queue=: the limit per key is the queue's "
                "(app.queue(name, per_key_concurrency=N))"
            )
        if self.queues[queue].per_key_concurrency is None:
            raise InvalidArgument(
                f"queue {queue!r} has no per-key limit, so concurrency_key would limit "
                f"nothing: declare it with app.queue({queue!r}, per_key_concurrency=N)"
            )
        return key

    def add_schedule(self, schedule: Schedule) -> None:
        existing = self.schedules.get(schedule.name)
        if existing is not None and existing != schedule:
            raise InvalidArgument(
                f"two schedules are named {schedule.name!r}; pass name= to tell them apart"
            )
        self.schedules[schedule.name] = schedule
