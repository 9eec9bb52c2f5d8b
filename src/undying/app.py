"""``App``: the workflow registry, the client API, and the composition root.

An App owns one store and, once entered with ``async with app:``, one worker, and wires them
together: the worker gets the store, the settings, the registry and the local-runs board,
never the App. Starting a run in a process that has a worker creates it already claimed and
executes it right there, so a run costs no scheduling round trip; ``App(..., worker=False)``
is a pure client whose runs are picked up by worker processes (``undying worker module:app``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from . import determinism, observe, streams
from .codec import Codec
from .errors import InvalidArgument, RunNotFound, StoreError, WorkflowCancelled
from .failures import rebuild_error
from .local import LocalRuns
from .registry import Registry
from .schedules import Schedule, check_schedule_name, check_tick_signature, make_schedule
from .scope import current_run
from .settings import Settings
from .store import store_from_url
from .store.base import (
    CANCELLED,
    COMPLETED,
    TERMINAL,
    NewRun,
    ReadSide,
    RunFilter,
    RunRecord,
    ScheduleRecord,
    Store,
)
from .validation import (
    check_dedup,
    check_event_name,
    check_event_payload,
    check_offset,
    check_run_id,
    check_run_ref,
    check_stream_name,
    fork_run_id,
)
from .worker import Worker

if TYPE_CHECKING:
    from .tokens import TokenUsage

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
#: a registered workflow: ``async def wf(ctx, ...) -> T``
WorkflowFn = Callable[..., Coroutine[Any, Any, T]]


class App:
    """A set of workflows on one database. See the README for a tour.

    ``database_url``: ``sqlite:///path.db`` or a file path (default ``$UNDYING_DATABASE_URL``,
    else ``./undying.db``), ``postgresql://...``, or ``memory://`` for tests. The keyword
    arguments are the fields of ``Settings`` (validated there), plus ``worker``: False makes
    a pure client that starts and reads runs and leaves executing them to worker processes.
    """

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
        max_takeovers_without_progress: int | None = 5,
    ) -> None:
        self.settings = Settings(
            durability=durability,
            allow_pickle=allow_pickle,
            strict=strict,
            lease_ttl=lease_ttl,
            poll_interval=poll_interval,
            suspend_after=suspend_after,
            max_concurrent_runs=max_concurrent_runs,
            retention_days=retention_days,
            max_takeovers_without_progress=max_takeovers_without_progress,
        )
        if not isinstance(worker, bool):
            raise InvalidArgument(f"worker must be True or False, not {worker!r}")
        self.database_url = database_url
        self.codec = Codec(allow_pickle=allow_pickle)
        # Argument digests hash uncompressed frames: a zstd upgrade must not change them.
        self.digest_codec = Codec(allow_pickle=allow_pickle, compress_threshold=1 << 62)
        #: whether entering the app runs a worker (``undying worker`` sets it)
        self.is_worker = worker
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(4).hex()}"
        self.registry = Registry()
        self._store_template = store_from_url(database_url, durability=durability)
        self._store: Store | None = None
        self._worker: Worker | None = None
        self._local = LocalRuns()
        #: watches the store for other processes' stream appends while a reader waits
        self._activity = streams.ActivityWatch(self._store_or_raise, self._local.published)
        if strict:
            determinism.install()

    def __repr__(self) -> str:
        return f"<undying.App {self._store_template.url} workflows={len(self.registry.workflows)}>"

    # -- settings, readable where they always were -------------------------------------------
    @property
    def strict(self) -> bool:
        return self.settings.strict

    @property
    def durability(self) -> str:
        return self.settings.durability

    @property
    def lease_ttl(self) -> float:
        return self.settings.lease_ttl

    @property
    def suspend_after(self) -> float:
        return self.settings.suspend_after

    @property
    def poll_interval(self) -> float:
        return self.settings.poll_interval

    @property
    def max_concurrent_runs(self) -> int:
        return self.settings.max_concurrent_runs

    @property
    def retention_days(self) -> float | None:
        return self.settings.retention_days

    @property
    def max_takeovers_without_progress(self) -> int | None:
        return self.settings.max_takeovers_without_progress

    # -- registry -------------------------------------------------------------------------------
    @overload
    def workflow(self, fn: F, /) -> F: ...
    @overload
    def workflow(self, *, name: str | None = None) -> Callable[[F], F]: ...
    def workflow(self, fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
        """Register an ``async def`` workflow ``fn(ctx, ...)``; name defaults to module:qualname."""

        def register(func: F) -> F:
            self.registry.add_workflow(func, name)
            if self.settings.strict:
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
        per_key_concurrency: int | None = None,
    ) -> str:
        """Declare a named queue with limits that hold across all workers; returns its name.
        ``per_key_concurrency``: at most that many runs started with the same
        ``concurrency_key`` run at once (one agent per user, N per tenant)."""
        self.registry.add_queue(
            name, concurrency, worker_concurrency, rate_limit, per_key_concurrency
        )
        return name

    @overload
    def schedule(
        self,
        cron: str | None = None,
        /,
        *,
        every: float | dt.timedelta | None = None,
        timezone: str | None = None,
        name: str | None = None,
        missed: str = "latest",
        max_catch_up: int | None = None,
        queue: str | None = None,
        priority: int = 0,
        workflow: None = None,
    ) -> Callable[[F], F]: ...
    @overload
    def schedule(
        self,
        cron: str | None = None,
        /,
        *,
        every: float | dt.timedelta | None = None,
        timezone: str | None = None,
        name: str | None = None,
        missed: str = "latest",
        max_catch_up: int | None = None,
        queue: str | None = None,
        priority: int = 0,
        workflow: Callable[..., Any] | str,
    ) -> str: ...
    def schedule(
        self,
        cron: str | None = None,
        /,
        *,
        every: float | dt.timedelta | None = None,
        timezone: str | None = None,
        name: str | None = None,
        missed: str = "latest",
        max_catch_up: int | None = None,
        queue: str | None = None,
        priority: int = 0,
        workflow: Callable[..., Any] | str | None = None,
    ) -> Any:
        """Start a run of a workflow at each tick of ``cron`` (in ``timezone``, default UTC)
        or ``every`` interval, once per tick however many workers run. The workflow is called
        as ``fn(ctx, tick)``, ``tick`` the tick's time (a UTC datetime). Decorate the
        workflow (registering it if it is not yet), or pass ``workflow=`` (a function or a
        registered name: returns the schedule's name). ``missed``: what to do with ticks that
        came due while no worker ran: ``"skip"``, ``"latest"`` (run the last one) or
        ``"catch_up"`` (run each, at most ``max_catch_up``, default 10). ``name`` defaults to
        the workflow's; it starts the ids of the schedule's runs (``name~tick-<UTC time>``)."""
        if self._worker is not None:
            raise InvalidArgument(
                "this app already runs a worker, which fires only the schedules declared "
                "before it started: declare schedules before `async with app:`"
            )
        if name is not None:
            check_schedule_name(name)
        self.registry.check_queue(queue)

        def define(schedule_name: str, wf_name: str) -> Schedule:
            return make_schedule(
                schedule_name,
                wf_name,
                cron,
                every=every,
                timezone=timezone,
                missed=missed,
                max_catch_up=max_catch_up,
                queue=queue,
                priority=priority,
            )

        define(name or "", "")  # a bad definition fails here, before the workflow is known

        def register(fn: Callable[..., Any] | str) -> str:
            if isinstance(fn, str):
                wf_name = self.registry.name_of(fn)
                check_tick_signature(self.registry.workflows[wf_name].fn, name or wf_name)
            else:
                check_tick_signature(fn, name or str(getattr(fn, "__qualname__", fn)))
                registered = self.registry.workflows.get(getattr(fn, "__undying_workflow__", ""))
                if registered is None or registered.fn is not fn:
                    self.workflow(fn)  # not a workflow of this app yet: as @app.workflow()
                wf_name = self.registry.name_of(fn)
            schedule_name = check_schedule_name(name or wf_name)
            self.registry.add_schedule(define(schedule_name, wf_name))
            return schedule_name

        if workflow is not None:
            return register(workflow)

        def decorate(fn: F) -> F:
            register(fn)
            return fn

        return decorate

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
        self._local.reset()  # futures belong to one event loop: start afresh
        store = self._store_template
        await store.open(self.worker_id)
        self._store = store
        if self.is_worker:
            self._worker = Worker(
                store,
                self.settings,
                self.registry,
                self._local,
                self.worker_id,
                codec=self.codec,
                digest_codec=self.digest_codec,
            )
            await self._worker.start()

    async def close(self) -> None:
        await self._activity.stop()
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
    def store(self) -> ReadSide:
        """The open store, typed as its read side: what tools (the CLI, the web UI) may use."""
        return self._store_or_raise()

    # -- starting runs ------------------------------------------------------------------------
    @overload
    async def start(
        self,
        workflow: WorkflowFn[T],
        /,
        *args: Any,
        run_id: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        timeout: float | dt.timedelta | None = None,
        concurrency_key: str | None = None,
        dedup_key: str | None = None,
        dedup_window: float | dt.timedelta | None = None,
        **kwargs: Any,
    ) -> RunHandle[T]: ...
    @overload
    async def start(
        self,
        workflow: str,
        /,
        *args: Any,
        run_id: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        timeout: float | dt.timedelta | None = None,
        concurrency_key: str | None = None,
        dedup_key: str | None = None,
        dedup_window: float | dt.timedelta | None = None,
        **kwargs: Any,
    ) -> RunHandle[Any]: ...
    async def start(
        self,
        workflow: Any,
        /,
        *args: Any,
        run_id: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        timeout: float | dt.timedelta | None = None,
        concurrency_key: str | None = None,
        dedup_key: str | None = None,
        dedup_window: float | dt.timedelta | None = None,
        **kwargs: Any,
    ) -> RunHandle[Any]:
        """Start a run; idempotent on ``run_id`` (the same id returns the existing run).

        ``concurrency_key`` (with a ``queue`` declared with ``per_key_concurrency``): runs
        with the same key share the queue's per-key limit. ``dedup_key`` with
        ``dedup_window`` (seconds or a timedelta): a start of this workflow with a key that a
        run started within the window holds returns that run's handle and creates nothing;
        otherwise the run started holds the key for the window from now."""
        store = self._store_or_raise()
        if current_run.get() is not None:
            raise InvalidArgument("inside a workflow, start runs with ctx.call / ctx.start_child")
        name = self.registry.name_of(workflow)
        run_id = (
            check_run_id(run_id) if run_id is not None else determinism.original("uuid.uuid4")().hex
        )
        self.registry.check_queue(queue)
        key = self.registry.check_concurrency_key(concurrency_key, queue)
        dedup_for = check_dedup(dedup_key, dedup_window)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise InvalidArgument(f"priority must be an int, not {priority!r}")
        encoded = self.codec.encode(
            observe.pack_input(args, kwargs, observe.carry()), root="workflow arguments"
        )
        now = time.time()
        deadline = None
        if timeout is not None:
            seconds = (
                timeout.total_seconds() if isinstance(timeout, dt.timedelta) else float(timeout)
            )
            if not seconds > 0:
                raise InvalidArgument(f"timeout must be positive, not {timeout!r}")
            deadline = now + seconds
        run = NewRun(
            run_id,
            name,
            encoded,
            queue=queue,
            priority=priority,
            deadline=deadline,
            concurrency_key=key,
            dedup_key=dedup_key,
            dedup_until=None if dedup_for is None else now + dedup_for,
        )
        worker = self._worker
        local = worker is not None and queue is None
        created, record = await store.create_run(
            run,
            owner=self.worker_id if local else None,
            lease_expires=now + self.settings.lease_ttl,
            now=now,
        )
        if created and worker is not None:
            if local:
                self._local.expect(run_id)
                worker.spawn(record, fresh=True)
            else:
                worker.poke()
        return RunHandle(self, record.run_id)  # a dedup key held elsewhere: that run

    def run(self, workflow: WorkflowFn[T] | str, /, *args: Any, **kwargs: Any) -> T:
        """Start a run and wait for its result, synchronously (for scripts)."""

        async def main() -> T:
            async with self:
                handle: RunHandle[T] = await self.start(workflow, *args, **kwargs)
                return await handle.result()

        return asyncio.run(main())

    def handle(self, run_id: str) -> RunHandle[Any]:
        """A handle on an existing run."""
        return RunHandle(self, check_run_ref(run_id))

    # -- talking to runs ----------------------------------------------------------------------
    async def send_event(
        self, run_id: str, name: str, payload: Any = None, *, key: str | None = None
    ) -> bool:
        """Deliver an event durably; a repeated ``key`` is delivered once (returns False)."""
        store = self._store_or_raise()
        check_run_ref(run_id)
        check_event_name(name)
        if key is not None and (not isinstance(key, str) or not key):
            raise InvalidArgument("an event key must be a non-empty string")
        encoded = self.codec.encode(payload, root="event payload")
        check_event_payload(encoded, name)
        delivered = await store.send_event(run_id, name, encoded, key, time.time())
        if delivered:
            self._changed(run_id)
        return delivered

    async def cancel(self, run_id: str) -> None:
        """Cancel a run and its children: ``WorkflowCancelled`` at its next journaled call."""
        store = self._store_or_raise()
        check_run_ref(run_id)
        if self._worker is not None:
            await self._worker.cancel(run_id)
        else:
            from .failures import describe_error

            error = describe_error(WorkflowCancelled(), self.codec)
            await store.request_cancel(run_id, error, time.time())
        self._changed(None)

    async def fork(
        self, run_id: str, *, from_step: int, new_run_id: str | None = None
    ) -> RunHandle[Any]:
        """A new run that reuses the first ``from_step`` journal entries and re-executes from
        there (debug an agent from a given turn with changed code or prompt)."""
        store = self._store_or_raise()
        source = await self._get(run_id)
        if isinstance(from_step, bool) or not isinstance(from_step, int) or from_step < 0:
            raise InvalidArgument(f"from_step must be a journal position >= 0, not {from_step!r}")
        journal = await store.load_journal_meta(run_id)
        length = journal[-1].seq + 1 if journal else 0
        if from_step > length:
            held = f"positions 0..{length - 1}" if length else "no entries"
            raise InvalidArgument(
                f"from_step {from_step} is beyond the journal of run {run_id!r}, which holds "
                f"{held}: use 0..{length} (0 re-runs everything, {length} reuses every entry)"
            )
        new_id = (
            check_run_id(new_run_id)
            if new_run_id
            else fork_run_id(run_id, determinism.original("uuid.uuid4")().hex[:8])
        )
        # Created with its journal in one transaction: visible any earlier, a worker could
        # claim the fork and re-execute the steps (and effects) it is meant to reuse.
        run = NewRun(new_id, source.workflow, source.input)
        if not await store.fork_run(run, run_id, from_step, time.time()):
            raise InvalidArgument(f"run {new_id!r} already exists; pick another new_run_id")
        self._changed(None)
        return RunHandle(self, new_id)

    async def resume(self, run_id: str) -> bool:
        """Resume a failed or cancelled run: it replays its journal and continues from the
        first call that has no recorded outcome. False if the run had not ended that way."""
        await self._get(run_id)
        resumed = await self._store_or_raise().resume_run(run_id, time.time())
        if resumed:
            self._changed(None)
        return resumed

    async def get_status(self, run_id: str) -> Any:
        """The last value the run published with ``ctx.set_status`` (None if none)."""
        if run_id in self._local.status:  # executing here: fresher than the database
            return self._local.status[run_id]
        record = await self._get(run_id)
        return None if record.status_value is None else self.codec.decode(record.status_value)

    async def token_usage(self, run_id: str) -> TokenUsage:
        """The run's model tokens (``undying.llm``): spent, failed, and saved by replay."""
        from .tokens import load_token_usage

        await self._get(run_id)
        return await load_token_usage(self._store_or_raise(), run_id)

    def read_stream(self, run_id: str, stream: str, *, offset: int = 0) -> AsyncIterator[Any]:
        """Every value the run published to ``stream``, from ``offset`` (0: the first) on, in
        order, waiting for new ones; ends when the stream is closed or the run ends.

        ``async for value in app.read_stream(run_id, "answer"):`` from any process on the
        database. A reader that stopped after n values resumes with ``offset=n`` and gets
        neither a value twice nor a gap. A step that ran again shows up as a ``StreamRetry``
        item (see ``undying.streams``). ``RunNotFound`` (at the first iteration) for an
        unknown run; a stream a finished run never published to ends at once."""
        check_run_ref(run_id)
        check_stream_name(stream)
        check_offset(offset)
        store = self._store_or_raise()
        local = self._local
        return streams.read(
            store,
            self.codec,
            run_id,
            stream,
            offset,
            local.stream_ticket,
            self._activity.reading(),
        )

    async def _get(self, run_id: str) -> RunRecord:
        check_run_ref(run_id)
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

    # -- schedules --------------------------------------------------------------------------------
    async def list_schedules(self) -> list[ScheduleRecord]:
        """Every schedule a worker has registered in the database, by name, with its state
        (paused, the latest tick fired)."""
        return await self._store_or_raise().list_schedules()

    async def pause_schedule(self, name: str) -> bool:
        """Stop the schedule's ticks from starting runs, in every worker, until
        ``resume_schedule``; False if it was paused already. Runs already started go on."""
        return await self._set_paused(name, True)

    async def resume_schedule(self, name: str) -> bool:
        """Let the schedule fire again from its next tick (ticks that came due while it was
        paused never run); False if it was not paused."""
        return await self._set_paused(name, False)

    async def _set_paused(self, name: str, paused: bool) -> bool:
        store = self._store_or_raise()
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"a schedule name is a non-empty string, not {name!r}")
        changed = await store.set_schedule_paused(name, paused, time.time())
        if changed is None and name in self.registry.schedules:
            # Declared here but no worker has registered it yet: register it, then act.
            await store.register_schedules([self.registry.schedules[name].record()], time.time())
            changed = await store.set_schedule_paused(name, paused, time.time())
        if changed is None:
            known = [s.name for s in await store.list_schedules()]
            raise InvalidArgument(
                f"no schedule named {name!r} (known: {', '.join(known) or 'none yet'}); a "
                "schedule is known once a worker that declares it has started"
            )
        self._changed(None)
        return changed

    # -- change notification ----------------------------------------------------------------------
    def _changed(self, run_id: str | None) -> None:
        """Something about ``run_id`` (or anything, for None) changed: wake whoever waits."""
        self._local.changed()
        if self._worker is not None:
            self._worker.wake(run_id)

    async def wait_for_change(self, timeout: float) -> None:
        """Return when something about the app's runs may have changed, or after ``timeout``
        seconds. A worker's scheduler watches the database and wakes waiters; a client-only
        app watches the database itself (cheaply: SQLite's data_version, PostgreSQL's
        LISTEN), so nobody polls tables in a tight loop."""
        if self._worker is None and self._store is not None:
            if await self._store.wait_for_change(timeout):
                self._local.changed()
            return
        await self._local.wait_changed(timeout)


class RunHandle(Generic[T]):
    """A run started with ``App.start`` (or looked up with ``App.handle``)."""

    __slots__ = ("app", "run_id")

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

    async def result(self, timeout: float | None = None) -> T:
        """Wait for the run to end; return its result or raise its error."""
        app = self.app
        deadline = None if timeout is None else time.monotonic() + timeout
        local = app._local.results.get(self.run_id)
        if local is not None:  # executing here: no query, no polling
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                waiter = asyncio.shield(local)  # a cancelled caller must not cancel the outcome
                ended = await (waiter if left is None else asyncio.wait_for(waiter, left))
            except TimeoutError:
                ended = None
            if ended is not None:
                return _outcome(app, *ended)  # type: ignore[no-any-return]
        while True:
            record = await app._get(self.run_id)
            if record.status in TERMINAL:
                return _outcome(app, record.status, record.output, record.error)  # type: ignore[no-any-return]
            left = 0.5 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"run {self.run_id!r} is still {record.status}")
            await app.wait_for_change(min(left, 0.5))

    async def watch(self) -> AsyncIterator[tuple[str, Any]]:
        """Follow the run: yields (status, published status value) each time either changes,
        ending after the run ends. Woken by changes, not by polling tables in a loop."""
        app = self.app
        last: tuple[str, Any] | None = None
        while True:
            record = await app._get(self.run_id)
            value = None if record.status_value is None else app.codec.decode(record.status_value)
            if self.run_id in app._local.status and record.status not in TERMINAL:
                value = app._local.status[self.run_id]
            current = (record.status, value)
            if current != last:
                last = current
                yield current
            if record.status in TERMINAL:
                return
            await app.wait_for_change(0.5)

    def read_stream(self, stream: str, *, offset: int = 0) -> AsyncIterator[Any]:
        """``app.read_stream(run_id, stream, offset=offset)``."""
        return self.app.read_stream(self.run_id, stream, offset=offset)

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
