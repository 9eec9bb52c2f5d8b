"""``App``: the workflow registry, the client API, and the composition root.

An App owns one store and, once entered with ``async with app:``, one worker. Starting a run
in a process that has a worker creates it already claimed and executes it right there, so a
run costs no scheduling round trip; ``App(..., worker=False)`` is a pure client whose runs
are picked up by worker processes (``undying worker module:app``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, overload

from . import determinism
from .codec import Codec
from .errors import (
    InvalidArgument,
    RunNotFound,
    StoreError,
    UnknownWorkflow,
    WorkflowCancelled,
)
from .journal import describe_error, rebuild_error
from .steps import callable_name, current_context
from .store import store_from_url
from .store.base import (
    CANCELLED,
    COMPLETED,
    TERMINAL,
    NewRun,
    QueueLimits,
    RunFilter,
    RunRecord,
    Store,
)
from .validation import check_event_name, check_event_payload, check_run_id

if TYPE_CHECKING:
    from .llm.usage import TokenUsage

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    name: str
    fn: Callable[..., Any]


class App:
    """A set of workflows on one database. See the README for a tour."""

    def __init__(
        self,
        database_url: str | None = None,
        *,
        durability: str = "normal",
        allow_pickle: bool = False,
        strict: bool = False,
        worker: bool = True,
        lease_ttl: float = 30.0,
        poll_interval: float = 1.0,
        suspend_after: float = 1.0,
        max_concurrent_runs: int = 10_000,
        retention_days: float | None = None,
    ) -> None:
        for label, value in (("lease_ttl", lease_ttl), ("poll_interval", poll_interval)):
            if not isinstance(value, int | float) or value <= 0:
                raise InvalidArgument(
                    f"{label} must be a positive number of seconds, not {value!r}"
                )
        if not isinstance(suspend_after, int | float) or suspend_after < 0:
            raise InvalidArgument(f"suspend_after must be >= 0 seconds, not {suspend_after!r}")
        self.database_url = database_url
        self.durability = durability
        self.codec = Codec(allow_pickle=allow_pickle)
        # Argument digests hash uncompressed frames: a zstd upgrade must not change them.
        self.digest_codec = Codec(allow_pickle=allow_pickle, compress_threshold=1 << 62)
        self.strict = strict
        self.is_worker = worker
        self.lease_ttl = float(lease_ttl)
        self.poll_interval = float(poll_interval)
        self.suspend_after = float(suspend_after)
        self.max_concurrent_runs = max_concurrent_runs
        if retention_days is not None and (
            not isinstance(retention_days, int | float) or retention_days < 0
        ):
            raise InvalidArgument(f"retention_days must be >= 0, not {retention_days!r}")
        #: workers delete runs that ended longer ago than this, and their unused chunks, hourly
        self.retention_days = retention_days
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(4).hex()}"
        self._store_template = store_from_url(database_url, durability=durability)
        self._store: Store | None = None
        self._workflows: dict[str, WorkflowSpec] = {}
        self._queues: dict[str, QueueLimits] = {}
        self._worker: Any = None
        #: outcomes of runs executing in this process, for handles awaiting them
        self._results: dict[str, asyncio.Future[tuple[str, bytes | None, bytes | None] | None]] = {}
        self._status_cache: dict[str, Any] = {}
        self._changed = asyncio.Event()
        if strict:
            determinism.install()

    def __repr__(self) -> str:
        return f"<undying.App {self._store_template.url} workflows={len(self._workflows)}>"

    # -- registry -------------------------------------------------------------------------------
    @overload
    def workflow(self, fn: F, /) -> F: ...
    @overload
    def workflow(self, *, name: str | None = None) -> Callable[[F], F]: ...
    def workflow(self, fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
        """Register an ``async def`` workflow ``fn(ctx, ...)``; name defaults to module:qualname."""

        def register(func: F) -> F:
            if not inspect.iscoroutinefunction(func):
                raise InvalidArgument(
                    f"workflow {callable_name(func)} must be an `async def` function taking "
                    "(ctx, ...) as its arguments"
                )
            wf_name = name or callable_name(func)
            existing = self._workflows.get(wf_name)
            if existing is not None and existing.fn is not func:
                raise InvalidArgument(f"two workflows are registered as {wf_name!r}; pass name=")
            self._workflows[wf_name] = WorkflowSpec(wf_name, func)
            func.__undying_workflow__ = wf_name  # type: ignore[attr-defined]
            if self.strict:
                determinism.guard_module_globals(func)
            return func

        if fn is not None:
            return register(fn)
        return register

    def queue(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        worker_concurrency: int | None = None,
        rate_limit: tuple[int, float] | None = None,
    ) -> str:
        """Declare a named queue with limits that hold across all workers; returns its name."""
        if not isinstance(name, str) or not name:
            raise InvalidArgument("a queue needs a non-empty name")
        for label, value in (
            ("concurrency", concurrency),
            ("worker_concurrency", worker_concurrency),
        ):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise InvalidArgument(f"{label} must be a whole number >= 1, not {value!r}")
        if rate_limit is not None and (
            len(rate_limit) != 2 or rate_limit[0] < 1 or rate_limit[1] <= 0
        ):
            raise InvalidArgument("rate_limit is (n, per_seconds), e.g. (60, 60.0) for 60 a minute")
        self._queues[name] = QueueLimits(name, concurrency, worker_concurrency, rate_limit)
        return name

    def _workflow_name(self, workflow: Any) -> str:
        if isinstance(workflow, str):
            name = workflow
        else:
            name = getattr(workflow, "__undying_workflow__", None) or ""
            if not name:
                raise InvalidArgument(
                    f"{workflow!r} is not a registered workflow: decorate it with @app.workflow()"
                )
        if name not in self._workflows:
            raise UnknownWorkflow(
                f"no workflow named {name!r} is registered (known: {sorted(self._workflows)})"
            )
        return name

    # -- lifecycle -------------------------------------------------------------------------------
    async def __aenter__(self) -> App:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Open the store and, unless ``worker=False``, recover in-flight runs and start working."""
        if self._store is not None:
            return
        self._changed = asyncio.Event()
        self._results = {}  # futures belong to one event loop: start afresh
        store = self._store_template
        await store.open(self.worker_id)
        self._store = store
        if self.is_worker:
            from .worker import Worker

            self._worker = Worker(self)
            await self._worker.start()

    async def close(self) -> None:
        if self._worker is not None:
            await self._worker.stop()
            self._worker = None
        if self._store is not None:
            await self._store.close()
            self._store = None
        self._store_template = store_from_url(self.database_url, durability=self.durability)

    def _store_or_raise(self) -> Store:
        if self._store is None:
            raise StoreError("the app is not open: use `async with app:` (or `await app.open()`)")
        return self._store

    @property
    def store(self) -> Store:
        """The open store (read side for tools and tests)."""
        return self._store_or_raise()

    # -- starting runs ------------------------------------------------------------------------
    async def start(
        self,
        workflow: Any,
        /,
        *args: Any,
        run_id: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        timeout: float | dt.timedelta | None = None,
        **kwargs: Any,
    ) -> RunHandle:
        """Start a run; idempotent on ``run_id`` (the same id returns the existing run)."""
        store = self._store_or_raise()
        if current_context.get() is not None:
            raise InvalidArgument("inside a workflow, start runs with ctx.call / ctx.start_child")
        name = self._workflow_name(workflow)
        run_id = (
            check_run_id(run_id) if run_id is not None else determinism.original("uuid.uuid4")().hex
        )
        if queue is not None and queue not in self._queues:
            raise InvalidArgument(
                f"unknown queue {queue!r}: declare it with app.queue({queue!r}, ...)"
            )
        if not isinstance(priority, int):
            raise InvalidArgument(f"priority must be an int, not {priority!r}")
        encoded = self.codec.encode([list(args), kwargs], root="workflow arguments")
        now = time.time()
        deadline = None
        if timeout is not None:
            seconds = (
                timeout.total_seconds() if isinstance(timeout, dt.timedelta) else float(timeout)
            )
            if seconds <= 0:
                raise InvalidArgument(f"timeout must be positive, not {timeout!r}")
            deadline = now + seconds
        run = NewRun(run_id, name, encoded, queue=queue, priority=priority, deadline=deadline)
        local = self._worker is not None and queue is None
        created, record = await store.create_run(
            run,
            owner=self.worker_id if local else None,
            lease_expires=now + self.lease_ttl,
            now=now,
        )
        if created:
            if local:
                self._results[run_id] = asyncio.get_running_loop().create_future()
                self._worker.spawn(record, fresh=True)
            elif self._worker is not None:
                self._worker.poke()
        return RunHandle(self, run_id)

    async def _start_child(
        self,
        parent: Any,
        child_id: str,
        workflow: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        store = self._store_or_raise()
        name = self._workflow_name(workflow)
        encoded = self.codec.encode([list(args), kwargs], root="child workflow arguments")
        now = time.time()
        local = self._worker is not None
        created, record = await store.create_run(
            NewRun(child_id, name, encoded, parent_id=parent.run_id),
            owner=self.worker_id if local else None,
            lease_expires=now + self.lease_ttl,
            now=now,
        )
        if created and local:
            self._worker.spawn(record, fresh=True)

    def run(self, workflow: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Start a run and wait for its result, synchronously (for scripts)."""

        async def main() -> Any:
            async with self:
                handle = await self.start(workflow, *args, **kwargs)
                return await handle.result()

        return asyncio.run(main())

    def handle(self, run_id: str) -> RunHandle:
        """A handle on an existing run."""
        return RunHandle(self, check_run_id(run_id))

    # -- talking to runs ----------------------------------------------------------------------
    async def send_event(
        self, run_id: str, name: str, payload: Any = None, *, key: str | None = None
    ) -> bool:
        """Deliver an event durably; a repeated ``key`` is delivered once (returns False)."""
        store = self._store_or_raise()
        check_run_id(run_id)
        check_event_name(name)
        if key is not None and (not isinstance(key, str) or not key):
            raise InvalidArgument("an event key must be a non-empty string")
        encoded = self.codec.encode(payload, root="event payload")
        check_event_payload(encoded, name)
        delivered = await store.send_event(run_id, name, encoded, key, time.time())
        if delivered:
            self._notify(run_id)
        return delivered

    async def cancel(self, run_id: str) -> None:
        """Cancel a run and its children: ``WorkflowCancelled`` at its next journaled call."""
        store = self._store_or_raise()
        check_run_id(run_id)
        error = describe_error(WorkflowCancelled(), self.codec)
        flagged = await store.request_cancel(run_id, error, time.time())
        if self._worker is not None:
            for rid in flagged:
                ctx = self._worker.contexts.get(rid)
                if ctx is not None:
                    ctx._cancel(WorkflowCancelled())
                elif rid in self._worker.tasks:
                    self._worker.cancelled.add(rid)
        self._notify(None)

    async def fork(
        self, run_id: str, *, from_step: int, new_run_id: str | None = None
    ) -> RunHandle:
        """A new run that reuses the first ``from_step`` journal entries and re-executes from
        there (debug an agent from a given turn with changed code or prompt)."""
        store = self._store_or_raise()
        source = await self._get(run_id)
        if not isinstance(from_step, int) or from_step < 0:
            raise InvalidArgument(f"from_step must be a journal position >= 0, not {from_step!r}")
        new_id = (
            check_run_id(new_run_id)
            if new_run_id
            else f"{run_id}.fork-{determinism.original('uuid.uuid4')().hex[:8]}"
        )
        now = time.time()
        created, _ = await store.create_run(
            NewRun(new_id, source.workflow, source.input), owner=None, lease_expires=now, now=now
        )
        if not created:
            raise InvalidArgument(f"run {new_id!r} already exists; pick another new_run_id")
        await store.copy_journal(run_id, new_id, from_step)
        if self._worker is not None:
            self._worker.poke()
        return RunHandle(self, new_id)

    async def resume(self, run_id: str) -> bool:
        """Resume a failed or cancelled run: it replays its journal and continues from the
        first call that has no recorded outcome. False if the run had not ended that way."""
        await self._get(run_id)
        resumed = await self._store_or_raise().resume_run(run_id, time.time())
        if resumed and self._worker is not None:
            self._worker.poke()
        return resumed

    async def get_status(self, run_id: str) -> Any:
        """The last value the run published with ``ctx.set_status`` (None if none)."""
        if run_id in self._status_cache:  # executing here: fresher than the database
            return self._status_cache[run_id]
        record = await self._get(run_id)
        return None if record.status_value is None else self.codec.decode(record.status_value)

    async def token_usage(self, run_id: str) -> TokenUsage:
        """The run's model tokens (``undying.llm``): spent, failed, and saved by replay."""
        from .llm.usage import load_token_usage

        await self._get(run_id)
        return await load_token_usage(self._store_or_raise(), run_id)

    async def _get(self, run_id: str) -> RunRecord:
        check_run_id(run_id)
        record = await self._store_or_raise().get_run(run_id)
        if record is None:
            raise RunNotFound(f"no run with id {run_id!r}")
        return record

    async def list_runs(
        self, *, status: str | None = None, workflow: str | None = None, limit: int = 100
    ) -> list[RunRecord]:
        return await self._store_or_raise().list_runs(
            RunFilter(status=status, workflow=workflow, limit=limit)
        )

    # -- notifications ---------------------------------------------------------------------------
    def _notify(self, run_id: str | None) -> None:
        """Something about ``run_id`` (or anything, for None) changed: wake whoever waits."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        worker = self._worker
        if worker is not None:
            if run_id is not None:
                ctx = worker.contexts.get(run_id)
                if ctx is not None:
                    ctx._wake()
            worker.poke()

    def _finished(
        self, run_id: str, status: str, output: bytes | None, error: bytes | None
    ) -> None:
        """A run ended in this process: hand the outcome to local handles without a query."""
        self._stopped_here(run_id, (status, output, error))
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _stopped_here(
        self, run_id: str, outcome: tuple[str, bytes | None, bytes | None] | None = None
    ) -> None:
        """The run stopped executing in this process: local handles get its ``outcome``, or
        None when it was released or lost and must be followed through the database, where
        it may end elsewhere."""
        future = self._results.pop(run_id, None)
        if future is not None and not future.done():
            future.set_result(outcome)
        self._status_cache.pop(run_id, None)

    async def _wait_change(self, timeout: float) -> None:
        """Wait until something may have changed. A worker's scheduler watches the database
        and calls ``_notify``; a client-only app watches the database itself (cheaply: SQLite's
        data_version, PostgreSQL's LISTEN), so nobody polls tables in a tight loop."""
        changed = self._changed
        if self._worker is None and self._store is not None:
            if await self._store.wait_for_change(timeout):
                self._notify(None)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)


class RunHandle:
    """A run started with ``App.start`` (or looked up with ``App.handle``)."""

    def __init__(self, app: App, run_id: str) -> None:
        self.app = app
        self.run_id = run_id

    def __repr__(self) -> str:
        return f"<RunHandle {self.run_id!r}>"

    async def status(self) -> str:
        return (await self.app._get(self.run_id)).status

    async def get_status(self) -> Any:
        return await self.app.get_status(self.run_id)

    async def token_usage(self) -> TokenUsage:
        return await self.app.token_usage(self.run_id)

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the run to end; return its result or raise its error."""
        app = self.app
        deadline = None if timeout is None else time.monotonic() + timeout
        local = app._results.get(self.run_id)
        if local is not None:  # executing here: no query, no polling
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                waiter = asyncio.shield(local)  # a cancelled caller must not cancel the outcome
                ended = await (waiter if left is None else asyncio.wait_for(waiter, left))
                if ended is not None:
                    return _outcome(app, *ended)
        while True:
            record = await app._get(self.run_id)
            if record.status in TERMINAL:
                return _outcome(app, record.status, record.output, record.error)
            left = 0.5 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"run {self.run_id!r} is still {record.status}")
            await app._wait_change(min(left, 0.5))

    async def watch(self) -> AsyncIterator[tuple[str, Any]]:
        """Follow the run: yields (status, published status value) each time either changes,
        ending after the run ends. Woken by changes, not by polling tables in a loop."""
        app = self.app
        last: tuple[str, Any] | None = None
        while True:
            record = await app._get(self.run_id)
            value = None if record.status_value is None else app.codec.decode(record.status_value)
            if self.run_id in app._status_cache and record.status not in TERMINAL:
                value = app._status_cache[self.run_id]
            current = (record.status, value)
            if current != last:
                last = current
                yield current
            if record.status in TERMINAL:
                return
            await app._wait_change(0.5)

    async def cancel(self) -> None:
        await self.app.cancel(self.run_id)

    async def send_event(self, name: str, payload: Any = None, *, key: str | None = None) -> bool:
        return await self.app.send_event(self.run_id, name, payload, key=key)


def _outcome(app: App, status: str, output: bytes | None, error: bytes | None) -> Any:
    if status == COMPLETED:
        return None if output is None else app.codec.decode(output)
    info = app.codec.decode(error) if error else {}
    exc = rebuild_error(info)
    if status == CANCELLED and not isinstance(exc, WorkflowCancelled):
        raise WorkflowCancelled(info.get("message") or None)
    raise exc
