"""The worker: claims runs, holds their leases, executes them, wakes them on time.

One worker lives inside every ``App`` that is entered with ``async with app:``. At start it
claims, at once, every run whose owner is dead (its lock is free) or whose lease expired, so
recovery has no polling delay. Afterwards a scheduler loop sleeps until the next timer, a
change made by another process, or a poke from this one, and claims what became due.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import TYPE_CHECKING, Any

from .context import Context, ContinueAsNew, Suspended
from .errors import (
    LeaseLost,
    RunQuarantined,
    SerializationError,
    UnknownWorkflow,
    WorkflowCancelled,
    WorkflowFailed,
)
from .journal import JournalCursor, describe_error, type_path
from .retention import collect_garbage
from .steps import current_context, unwinds_the_run
from .store.base import (
    CANCELLED,
    COMPLETED,
    FAILED,
    Claim,
    RunRecord,
    progress_position,
    retry_transient,
)

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("undying.worker")
GC_INTERVAL = 3600.0


class Worker:
    """Executes runs for one App; see the module docstring."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.contexts: dict[str, Context] = {}
        #: runs cancelled while claimed here but before their context existed
        self.cancelled: set[str] = set()
        self._poke = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False
        #: the last claim took as many runs as it was allowed: more may be waiting
        self._backlog = False

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.claim_and_spawn()  # recovery: immediately, before anything else
        self._loops = [
            asyncio.ensure_future(self._scheduler()),
            asyncio.ensure_future(self._heartbeat()),
        ]

    async def stop(self) -> None:
        """Stop claiming; hand back the runs still executing so another worker resumes them."""
        self._stopping = True
        for loop in self._loops:
            loop.cancel()
        for loop in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        running = dict(self.tasks)
        for task in running.values():
            task.cancel()
        if running:
            await asyncio.gather(*running.values(), return_exceptions=True)
        store = self.app._store
        if running and store is not None:
            with contextlib.suppress(Exception):
                await store.release_runs(self.app.worker_id, list(running), time.time())

    def poke(self) -> None:
        self._poke.set()

    # -- claiming -------------------------------------------------------------------------------
    async def claim_and_spawn(self) -> None:
        app = self.app
        store = app._store_or_raise()
        now = time.time()
        per_queue: dict[str, int] = {}
        for ctx in self.contexts.values():
            queue = getattr(ctx, "queue", None)
            if queue:
                per_queue[queue] = per_queue.get(queue, 0) + 1
        limit = app.max_concurrent_runs - len(self.tasks)
        claims = await store.claim(
            app.worker_id,
            now=now,
            lease_expires=now + app.lease_ttl,
            limit=limit,
            queues=app._queues,
            running_per_queue=per_queue,
        )
        self._backlog = limit <= 0 or len(claims) >= limit
        for claim in claims:
            self.spawn(claim.run, fresh=False, claim=claim)

    def spawn(self, run: RunRecord, *, fresh: bool, claim: Claim | None = None) -> None:
        old = self.tasks.get(run.run_id)
        if old is not None and not old.done():
            # A newer claim of a run this worker still executes: the old task is fenced out.
            old.cancel()
        task = asyncio.ensure_future(self._execute(run, fresh))
        self.tasks[run.run_id] = task
        task.add_done_callback(functools.partial(self._forget, run.run_id))

    def _forget(self, run_id: str, task: asyncio.Task[None]) -> None:
        if self.tasks.get(run_id) is task:
            del self.tasks[run_id]
            if self._backlog:
                self.poke()  # the last claim was cut short by the limit: work may be waiting

    async def _scheduler(self) -> None:
        store = self.app._store_or_raise()
        while not self._stopping:
            try:
                self._poke.clear()  # before claiming: a poke during the claim is not lost
                await self.claim_and_spawn()
                wake = await store.next_wake_at()
                timeout = self.app.poll_interval
                if wake is not None:
                    timeout = max(0.0, min(timeout, wake - time.time() + 0.001))
                poke = asyncio.ensure_future(self._poke.wait())
                change = asyncio.ensure_future(store.wait_for_change(timeout))
                try:
                    done, _ = await asyncio.wait(
                        {poke, change}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    for task in (poke, change):
                        task.cancel()
                    await asyncio.gather(poke, change, return_exceptions=True)
                if change in done and change.result():
                    await self._on_external_change()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler iteration failed; retrying")
                await asyncio.sleep(self.app.poll_interval)

    async def _on_external_change(self) -> None:
        """Another process wrote: wake local waiters and handles, deliver cancellations."""
        store = self.app._store_or_raise()
        for run_id in await store.cancel_requests(self.app.worker_id):
            ctx = self.contexts.get(run_id)
            if ctx is not None and ctx._cancelled is None:
                ctx._cancel(WorkflowCancelled())
        for ctx in self.contexts.values():
            ctx._wake()
        self.app._notify(None)

    async def _heartbeat(self) -> None:
        store = self.app._store_or_raise()
        next_gc = time.monotonic()
        while not self._stopping:
            if self.app.retention_days is not None and time.monotonic() >= next_gc:
                next_gc = time.monotonic() + GC_INTERVAL
                try:
                    await collect_garbage(store, older_than_days=self.app.retention_days)
                except Exception:
                    log.exception("retention/garbage collection failed; will retry")
            await asyncio.sleep(self.app.lease_ttl / 3)
            try:
                cancelled = await store.heartbeat(
                    self.app.worker_id, time.time() + self.app.lease_ttl, list(self.tasks)
                )
            except Exception:
                log.exception("heartbeat failed; retrying")
                continue
            for run_id in cancelled:
                ctx = self.contexts.get(run_id)
                if ctx is not None and ctx._cancelled is None:
                    ctx._cancel(WorkflowCancelled())

    # -- executing ------------------------------------------------------------------------------
    async def _execute(self, run: RunRecord, fresh: bool) -> None:
        try:
            await self._execute_run(run, fresh)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError | GeneratorExit) and unwinds_the_run(exc):
                raise
            # Its lease is no longer renewed: the run is taken over when it expires, and
            # counts as a takeover without progress unless its journal moved.
            log.error(
                "run %r: its task died of %s: %s; it is taken over when its lease expires",
                run.run_id,
                type_path(exc).replace(":", "."),
                exc,
                exc_info=exc,
            )
        finally:
            self.cancelled.discard(run.run_id)
            self.app._stopped_here(run.run_id)

    async def _execute_run(self, run: RunRecord, fresh: bool) -> None:
        app = self.app
        store = app._store_or_raise()
        if run.stalled_takeovers and await self._quarantined(run):
            return
        spec = app._workflows.get(run.workflow)
        if spec is None:
            exc = UnknownWorkflow(
                f"run {run.run_id!r} is for workflow {run.workflow!r}, which this app does not "
                f"register (known: {sorted(app._workflows)}); register it with @app.workflow "
                f"and resume the run (`undying resume {run.run_id}`)"
            )
            await self._finish(run, FAILED, None, describe_error(exc, app.codec))
            return
        while True:
            try:
                args, kwargs = app.codec.decode(run.input)
                cursor = (
                    JournalCursor.empty(store, run.run_id)
                    if fresh
                    else await JournalCursor.load(store, run.run_id)
                )
            except SerializationError as exc:
                await self._finish(run, FAILED, None, describe_error(exc, app.codec))
                return
            ctx = Context(app, run, cursor)
            ctx.queue = run.queue  # type: ignore[attr-defined]
            self.contexts[run.run_id] = ctx
            deadline_timer = None
            if run.deadline is not None:
                deadline_timer = asyncio.get_running_loop().call_later(
                    max(0.0, run.deadline - time.time()),
                    ctx._cancel,
                    WorkflowCancelled("the run's deadline passed"),
                )
            if run.cancel_requested or run.run_id in self.cancelled:
                ctx._cancel(WorkflowCancelled())
            elif run.deadline is not None and run.deadline <= time.time():
                ctx._cancel(WorkflowCancelled("the run's deadline passed"))
            token = current_context.set(ctx)
            try:
                result = await spec.fn(ctx, *args, **kwargs)
            except Suspended:
                return
            except ContinueAsNew as again:
                run = await self._continue_as_new(ctx, run, again)
                fresh = True
                continue
            except LeaseLost:
                log.warning("run %s: lease lost, dropping it", run.run_id)
                await self._release_if_still_mine(run)
                return
            except WorkflowCancelled as exc:
                await self._finish_ctx(ctx, run, CANCELLED, None, exc)
                return
            except Exception as exc:
                await self._finish_ctx(ctx, run, FAILED, None, exc)
                return
            except BaseException as exc:
                if unwinds_the_run(exc):
                    raise
                await self._finish_ctx(ctx, run, FAILED, None, self._aborted(run, exc))
                return
            finally:
                current_context.reset(token)
                if deadline_timer is not None:
                    deadline_timer.cancel()
                if self.contexts.get(run.run_id) is ctx:
                    del self.contexts[run.run_id]
            try:
                output = app.codec.encode(result, root=f"result of workflow {run.workflow}")
            except SerializationError as exc:
                await self._finish_ctx(ctx, run, FAILED, None, exc)
                return
            await self._finish(run, COMPLETED, output, None, pending=ctx._take_pending())
            return

    async def _quarantined(self, run: RunRecord) -> bool:
        """Fail a run that keeps taking its workers down (see ``max_takeovers_without_progress``)
        instead of executing it once more; True if it was quarantined."""
        limit = self.app.max_takeovers_without_progress
        generation, position = progress_position(run.progress_mark)
        if limit is None or run.stalled_takeovers <= limit:
            log.warning(
                "run %r: taken over %d time(s) in a row without progress at journal position "
                "%d (its owner died or stopped renewing its lease); %s",
                run.run_id,
                run.stalled_takeovers,
                position,
                "never quarantined" if limit is None else f"quarantined after {limit}",
            )
            return False
        exc = RunQuarantined(
            run_id=run.run_id,
            takeovers=run.stalled_takeovers,
            position=position,
            generation=generation,
        )
        log.error("%s", exc)
        await self._finish(run, FAILED, None, describe_error(exc, self.app.codec))
        return True

    def _aborted(self, run: RunRecord, exc: BaseException) -> WorkflowFailed:
        """The run's failure for a BaseException its workflow code raised (SystemExit, a
        CancelledError of its own): recorded, instead of stopping the worker or ending the
        run's task silently (and having the run taken over again and again)."""
        error_type = type_path(exc).replace(":", ".")
        log.error(
            "run %r: the workflow raised %s: %s; the run is marked failed",
            run.run_id,
            error_type,
            exc,
        )
        failed = WorkflowFailed(
            f"the workflow raised {error_type}: {exc}",
            error_type=error_type,
            error_message=str(exc),
        )
        failed.__cause__ = exc
        return failed

    async def _release_if_still_mine(self, run: RunRecord) -> None:
        """After a failed write, hand the run back unless another worker really owns it now,
        so a run can never stay 'running' under a live owner that no longer executes it."""
        with contextlib.suppress(Exception):
            await self.app._store_or_raise().release_runs(
                self.app.worker_id, [run.run_id], time.time()
            )

    async def _continue_as_new(
        self, ctx: Context, run: RunRecord, again: ContinueAsNew
    ) -> RunRecord:
        app = self.app
        store = app._store_or_raise()
        new_input = app.codec.encode(
            [list(again.call_args), again.call_kwargs], root="continue_as_new arguments"
        )
        await ctx._flush()
        await store.continue_as_new(run.run_id, run.epoch, new_input, time.time())
        run.input = new_input
        run.generation += 1
        return run

    async def _finish_ctx(
        self, ctx: Context, run: RunRecord, status: str, output: bytes | None, exc: BaseException
    ) -> None:
        await self._finish(
            run,
            status,
            output,
            describe_error(exc, self.app.codec),
            pending=ctx._take_pending(),
        )

    async def _finish(
        self,
        run: RunRecord,
        status: str,
        output: bytes | None,
        error: bytes | None,
        pending: list[Any] | None = None,
    ) -> None:
        store = self.app._store_or_raise()
        try:
            await retry_transient(
                lambda: store.finish_run(
                    run.run_id,
                    run.epoch,
                    status,
                    output=output,
                    error=error,
                    pending=pending or [],
                    now=time.time(),
                ),
                f"finishing run {run.run_id!r}",
            )
        except LeaseLost:
            log.warning(
                "run %s: lease lost before it could finish; the new owner finishes it", run.run_id
            )
            return
        self.app._finished(run.run_id, status, output, error)
        if status == CANCELLED:  # e.g. a deadline: children go too, as with app.cancel
            with contextlib.suppress(Exception):
                await self.app.cancel(run.run_id)
        # Only a finish that frees queue room or wakes a parent elsewhere can make new work
        # claimable here (a slot freed in a full worker is handled in _forget).
        if run.parent_id is not None:
            parent = self.contexts.get(run.parent_id)
            if parent is not None:
                parent._wake()
            else:
                self.poke()
        elif run.queue is not None:
            self.poke()
