"""The worker: claims runs, holds their leases, executes them, wakes them on time.

One worker lives inside every ``App`` that is entered with ``async with app:``. At start it
claims, at once, every run whose owner is dead (its lock is free) or whose lease expired, so
recovery has no polling delay. Afterwards a scheduler loop sleeps until the next timer, a
change made by another process, or a poke from this one, and claims what became due; a
``ticker`` beside it starts the runs of the app's schedules, each tick on time.

The worker is the runs' host (``host.RunHost``): it starts child runs (executing them right
here when it can) and resolves workflow names. It knows the App only through what the App
hands it (store, settings, registry, the local-runs board), never the App itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import Any

from . import observe
from .attempts import unwinds_the_run
from .codec import Codec
from .context import Context
from .errors import (
    InvalidArgument,
    LeaseLost,
    RunQuarantined,
    SerializationError,
    UnknownWorkflow,
    WorkflowCancelled,
)
from .execution import CONTINUED, LEASE_LOST, SUSPENDED, Outcome, execute
from .failures import describe_error, type_path
from .journal import JournalCursor, Recorder
from .local import LocalRuns
from .registry import Registry
from .settings import Settings
from .store.base import (
    CANCELLED,
    FAILED,
    Claim,
    Entry,
    NewRun,
    RunRecord,
    Store,
    progress_position,
    retry_transient,
)
from .ticker import Ticker

log = logging.getLogger("undying.worker")
GC_INTERVAL = 3600.0


class Worker:
    """Executes runs for one App; see the module docstring."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        registry: Registry,
        local: LocalRuns,
        worker_id: str,
        *,
        codec: Codec,
        digest_codec: Codec,
    ) -> None:
        self.store = store
        self.settings = settings
        self.registry = registry
        self.local = local
        self.worker_id = worker_id
        self.codec = codec
        self.digest_codec = digest_codec
        self.tasks: dict[str, asyncio.Task[None]] = {}
        #: the journals of the runs executing here, by run id
        self.recorders: dict[str, Recorder] = {}
        #: runs cancelled while claimed here but before their journal was loaded
        self.cancelled: set[str] = set()
        self._poke = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False
        #: the last claim took as many runs as it was allowed: more may be waiting
        self._backlog = False

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.claim_and_spawn()  # recovery: immediately, before anything else
        ticker = Ticker(
            self.store,
            list(self.registry.schedules.values()),
            codec=self.codec,
            worker_id=self.worker_id,
            lease_ttl=self.settings.lease_ttl,
            retry_pause=self.settings.poll_interval,
            spawn=lambda record: self.spawn(record, fresh=True),
            poke=self.poke,
        )
        self._loops = [
            asyncio.ensure_future(self._scheduler()),
            asyncio.ensure_future(self._heartbeat()),
            asyncio.ensure_future(ticker.run()),
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
            with contextlib.suppress(Exception):
                await self.store.release_runs(self.worker_id, list(running), time.time())

    def poke(self) -> None:
        """Claim again soon: something this process did may have made work due."""
        self._poke.set()

    # -- the runs' host (host.RunHost) ----------------------------------------------------------
    @property
    def suspend_after(self) -> float:
        return self.settings.suspend_after

    def workflow_name(self, workflow: object) -> str:
        return self.registry.name_of(workflow)

    async def start_child(
        self,
        parent_id: str,
        child_id: str,
        workflow: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        encoded = self.codec.encode(
            observe.pack_input(args, kwargs, observe.carry()), root="child workflow arguments"
        )
        now = time.time()
        created, record = await self.store.create_run(
            NewRun(child_id, workflow, encoded, parent_id=parent_id),
            owner=self.worker_id,
            lease_expires=now + self.settings.lease_ttl,
            now=now,
        )
        if not created and record.parent_id != parent_id:
            raise InvalidArgument(  # adopting it would hand the parent another run's result
                f"run {child_id!r} already exists and is not a child of {parent_id!r}"
            )
        if created:
            self.spawn(record, fresh=True)

    def status_changed(self, run_id: str, value: Any) -> None:
        self.local.status[run_id] = value
        self.local.changed()

    def streams_changed(self, run_id: str) -> None:
        self.local.published()

    # -- steering runs executing here -------------------------------------------------------------
    def wake(self, run_id: str | None) -> None:
        """Something about ``run_id`` (None: anything) changed: wake its waits, claim again."""
        if run_id is not None:
            rec = self.recorders.get(run_id)
            if rec is not None:
                rec.wake()
        self.poke()

    def deliver_cancel(self, run_ids: list[str]) -> None:
        """Cancel the runs among ``run_ids`` that execute here."""
        for run_id in run_ids:
            rec = self.recorders.get(run_id)
            if rec is not None:
                if rec.cancelled is None:
                    rec.cancel(WorkflowCancelled())
            elif run_id in self.tasks:
                self.cancelled.add(run_id)

    async def cancel(self, run_id: str) -> None:
        """Cancel a run and its descendants, those executing here at once."""
        error = describe_error(WorkflowCancelled(), self.codec)
        self.deliver_cancel(await self.store.request_cancel(run_id, error, time.time()))
        self.local.changed()

    # -- claiming -------------------------------------------------------------------------------
    async def claim_and_spawn(self) -> None:
        now = time.time()
        per_queue: dict[str, int] = {}
        for rec in self.recorders.values():
            queue = rec.run.queue
            if queue:
                per_queue[queue] = per_queue.get(queue, 0) + 1
        limit = self.settings.max_concurrent_runs - len(self.tasks)
        claims = await self.store.claim(
            self.worker_id,
            now=now,
            lease_expires=now + self.settings.lease_ttl,
            limit=limit,
            queues=self.registry.queues,
            running_per_queue=per_queue,
        )
        self._backlog = limit <= 0 or len(claims) >= limit
        for claim in claims:
            self.spawn(claim.run, fresh=False, claim=claim)

    def spawn(self, run: RunRecord, *, fresh: bool, claim: Claim | None = None) -> None:
        """Execute ``run`` here (``fresh``: just created, its journal is known to be empty)."""
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
        store = self.store
        while not self._stopping:
            try:
                self._poke.clear()  # before claiming: a poke during the claim is not lost
                await self.claim_and_spawn()
                wake = await store.next_wake_at()
                timeout = self.settings.poll_interval
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
                await asyncio.sleep(self.settings.poll_interval)

    async def _on_external_change(self) -> None:
        """Another process wrote: wake local waiters and handles, deliver cancellations."""
        self.deliver_cancel(await self.store.cancel_requests(self.worker_id))
        for rec in self.recorders.values():
            rec.wake()
        self.local.changed()

    async def _heartbeat(self) -> None:
        store = self.store
        settings = self.settings
        next_gc = time.monotonic()
        while not self._stopping:
            if settings.retention_days is not None and time.monotonic() >= next_gc:
                next_gc = time.monotonic() + GC_INTERVAL
                from .retention import collect_garbage  # opt-in: not imported by every start

                try:
                    await collect_garbage(store, older_than_days=settings.retention_days)
                except Exception:
                    log.exception("retention/garbage collection failed; will retry")
            await asyncio.sleep(settings.lease_ttl / 3)
            try:
                cancelled = await store.heartbeat(
                    self.worker_id, time.time() + settings.lease_ttl, list(self.tasks)
                )
            except Exception:
                log.exception("heartbeat failed; retrying")
                continue
            self.deliver_cancel(cancelled)

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
            self.local.stopped(run.run_id)

    async def _execute_run(self, run: RunRecord, fresh: bool) -> None:
        if run.stalled_takeovers and await self._quarantined(run):
            return
        spec = self.registry.workflows.get(run.workflow)
        if spec is None:
            exc = UnknownWorkflow(
                f"run {run.run_id!r} is for workflow {run.workflow!r}, which this app does not "
                f"register (known: {sorted(self.registry.workflows)}); register it with "
                f"@app.workflow and resume the run (`undying resume {run.run_id}`)"
            )
            await self._finish(run, FAILED, None, describe_error(exc, self.codec))
            return
        while True:
            try:
                args, kwargs, carried = observe.unpack_input(self.codec.decode(run.input))
                cursor = (
                    JournalCursor.empty(self.store, run.run_id)
                    if fresh
                    else await JournalCursor.load(self.store, run.run_id)
                )
            except SerializationError as exc:
                await self._finish(run, FAILED, None, describe_error(exc, self.codec))
                return
            rec = Recorder(
                self.store,
                self,
                run,
                cursor,
                codec=self.codec,
                digest_codec=self.digest_codec,
                strict=self.settings.strict,
            )
            if run.run_id in self.cancelled:
                rec.cancel(WorkflowCancelled())
            self.recorders[run.run_id] = rec
            try:
                outcome = await execute(rec, spec.fn, Context(rec), args, kwargs, carried)
            finally:
                if self.recorders.get(run.run_id) is rec:
                    del self.recorders[run.run_id]
            if outcome.status == CONTINUED:
                assert outcome.again is not None
                run = await self._continue_as_new(rec, outcome, carried)
                fresh = True
                continue
            await self._settle(run, outcome)
            return

    async def _settle(self, run: RunRecord, outcome: Outcome) -> None:
        """Do what an execution's outcome asks: finish the run, or let it go."""
        if outcome.status == SUSPENDED:
            return
        if outcome.status == LEASE_LOST:
            log.warning("run %s: lease lost, dropping it", run.run_id)
            # Hand the run back unless another worker really owns it now, so a run can never
            # stay 'running' under a live owner that no longer executes it.
            with contextlib.suppress(Exception):
                await self.store.release_runs(self.worker_id, [run.run_id], time.time())
            return
        error = None if outcome.error is None else describe_error(outcome.error, self.codec)
        await self._finish(run, outcome.status, outcome.output, error, outcome.pending)

    async def _quarantined(self, run: RunRecord) -> bool:
        """Fail a run that keeps taking its workers down (see ``max_takeovers_without_progress``)
        instead of executing it once more; True if it was quarantined."""
        limit = self.settings.max_takeovers_without_progress
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
        await self._finish(run, FAILED, None, describe_error(exc, self.codec))
        return True

    async def _continue_as_new(
        self, rec: Recorder, outcome: Outcome, carried: dict[str, str]
    ) -> RunRecord:
        run = rec.run
        again = outcome.again
        assert again is not None
        new_input = self.codec.encode(  # the next generation carries what the run carried
            observe.pack_input(again.call_args, again.call_kwargs, carried),
            root="continue_as_new arguments",
        )
        await rec.flush()
        await self.store.continue_as_new(run.run_id, run.epoch, new_input, time.time())
        run.input = new_input
        run.generation += 1
        return run

    async def _finish(
        self,
        run: RunRecord,
        status: str,
        output: bytes | None,
        error: bytes | None,
        pending: list[Entry] | None = None,
    ) -> None:
        store = self.store
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
        self.local.ended(run.run_id, (status, output, error))
        if status == CANCELLED:  # e.g. a deadline: children go too, as with app.cancel
            with contextlib.suppress(Exception):
                await self.cancel(run.run_id)
        # Only a finish that frees queue room or wakes a parent elsewhere can make new work
        # claimable here (a slot freed in a full worker is handled in _forget).
        if run.parent_id is not None:
            parent = self.recorders.get(run.parent_id)
            if parent is not None:
                parent.wake()
            else:
                self.poke()
        elif run.queue is not None:
            self.poke()
