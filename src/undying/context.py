"""``Context``: the one door through which a workflow touches the world.

Every call made through it gets the next sequence number, in call order. When the journal
holds a completed entry at that number, the recorded outcome is returned and nothing runs;
otherwise the call runs and its outcome is written before the workflow moves on.

Values that cost nothing to produce (``now``, ``random``, ``uuid4``) are not committed on their
own: they ride along with the next write, and are always flushed before any step runs, so a
value an effect depends on is durable before the effect happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import inspect
import math
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from . import determinism
from .codec import Codec, digest
from .errors import (
    EventTimeout,
    InvalidArgument,
    LeaseLost,
    NonDeterminismError,
    SerializationError,
    StepInDoubt,
    WorkflowCancelled,
)
from .journal import (
    JournalCursor,
    describe_error,
    mismatch,
    rebuild_error,
    step_failure,
    type_path,
)
from .payloads import OFFLOAD_THRESHOLD, offload
from .steps import (
    StepInfo,
    StepPolicy,
    callable_name,
    current_context,
    idempotency_key_for,
    is_async_callable,
    policy_of,
    run_attempt,
)
from .store.base import (
    ARMED,
    COMPLETED,
    ERROR,
    INTENT,
    OK,
    TERMINAL,
    Entry,
    RunRecord,
    TransactionFnFailed,
    child_event_name,
    retry_transient,
)
from .validation import check_event_name, check_seconds

if TYPE_CHECKING:
    from .app import App
    from .state import RunState

T = TypeVar("T")
_NO_ARGS_DIGEST = b""


class ArgumentDigestChanged(UserWarning):
    """A replayed step was called with arguments that differ from the recorded ones."""


class Suspended(BaseException):
    """Unwinds a workflow whose run was released to wait (internal control flow)."""


class ContinueAsNew(BaseException):
    """Unwinds a workflow that asked to restart with fresh input (internal control flow)."""

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__("continue_as_new")
        self.call_args = args
        self.call_kwargs = kwargs


class Context:
    """Journaled access to steps, time, randomness, waiting and child workflows."""

    def __init__(self, app: App, run: RunRecord, cursor: JournalCursor) -> None:
        self._app = app
        self._store = app._store_or_raise()
        self._codec = app.codec
        self._digest_codec: Codec = app.digest_codec
        self.run_id = run.run_id
        self.workflow = run.workflow
        self.epoch = run.epoch
        self.generation = run.generation
        self.deadline = run.deadline
        self.strict = app.strict
        self._cursor = cursor
        self._seq = 0
        self._pending: list[Entry] = []
        self._cancelled: BaseException | None = None
        self._closed = False
        self._inflight = 0
        self._waits: dict[int, tuple[str | None, float | None]] = {}
        self._wakeup = asyncio.Event()
        self._status_task: asyncio.Task[None] | None = None
        self._status_latest: bytes | None = None
        self._flushing: asyncio.Future[None] | None = None
        self._state: RunState | None = None

    def __repr__(self) -> str:
        return f"<Context run={self.run_id!r} workflow={self.workflow!r} seq={self._seq}>"

    # -- bookkeeping --------------------------------------------------------------------------
    def _next(self) -> int:
        if self._closed:
            raise Suspended()
        seq = self._seq
        self._seq = seq + 1
        return seq

    def _raise_if_cancelled(self) -> None:
        if self._cancelled is not None:
            raise self._cancelled

    def _cancel(self, exc: BaseException) -> None:
        self._cancelled = exc
        self._wakeup.set()

    def _wake(self) -> None:
        self._wakeup.set()

    def _take_pending(self) -> list[Entry]:
        pending, self._pending = self._pending, []
        return pending

    async def _write(self, entries: list[Entry], *, durable: bool = False) -> None:
        for entry in entries:
            if entry.payload is not None and len(entry.payload) > OFFLOAD_THRESHOLD:
                await offload(self._store, entries)
                break
        try:
            await self._store.write_entries(self.run_id, self.epoch, entries, durable=durable)
        except LeaseLost:
            self._closed = True
            raise
        except Exception:
            # A passing database failure must not fail the run: retry, with backoff.
            try:
                await retry_transient(
                    lambda: self._store.write_entries(
                        self.run_id, self.epoch, entries, durable=durable
                    ),
                    f"journal write of run {self.run_id!r}",
                )
            except LeaseLost:
                self._closed = True
                raise

    async def _flush(self) -> None:
        """Make every recorded value durable before the caller's effect runs.

        With parallel steps, another branch may have taken the buffered values and still be
        writing them; wait for that write too, not only for our own."""
        if self._pending:
            write = asyncio.ensure_future(self._write(self._take_pending()))
            self._flushing = write
            await write
        elif self._flushing is not None and not self._flushing.done():
            await asyncio.shield(self._flushing)

    def _digest(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes | None:
        if not args and not kwargs:
            return _NO_ARGS_DIGEST
        try:
            # Lists, not tuples: msgpack packs them natively (tuples take the slow ext path).
            return digest(self._digest_codec.encode([list(args), kwargs] if kwargs else list(args)))
        except SerializationError:
            return None  # unencodable arguments (a client object, say) are not compared

    def _check(self, seq: int, entry: Entry, kind: str, name: str) -> None:
        if entry.kind != kind or entry.name != name:
            raise mismatch(seq, entry, kind, name)

    def _check_digest(self, seq: int, entry: Entry, name: str, new: bytes | None) -> None:
        if new is None or entry.digest is None or new == entry.digest:
            return
        message = (
            f"step {name!r} at journal position {seq} was recorded with different arguments; "
            "the recorded result is used. If the change is intended (a new prompt, say), fork "
            "the run from this step to re-run it"
        )
        if self.strict:
            raise NonDeterminismError(message)
        warnings.warn(message, ArgumentDigestChanged, stacklevel=4)

    def _decode(self, payload: bytes | None) -> Any:
        return None if payload is None else self._codec.decode(payload)

    # -- steps ----------------------------------------------------------------------------------
    def step(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Awaitable[T]:
        """Run ``fn(*args, **kwargs)`` as a journaled step (any sync or async callable)."""
        if not callable(fn):
            raise InvalidArgument(f"ctx.step needs a callable, not {fn!r}")
        target = getattr(fn, "__undying_target__", fn)
        policy = policy_of(fn)
        return self._step(policy, target, is_async_callable(target), args, kwargs)

    def _step(
        self,
        policy: StepPolicy,
        fn: Callable[..., Any],
        is_async: bool,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Coroutine[Any, Any, Any]:
        return self._run_step(self._next(), policy, fn, is_async, args, kwargs)

    async def _run_step(
        self,
        seq: int,
        policy: StepPolicy,
        fn: Callable[..., Any],
        is_async: bool,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        arg_digest = self._digest(args, kwargs)
        entry = self._cursor.take(seq)
        if entry is not None:
            self._check(seq, entry, "step", policy.name)
            self._check_digest(seq, entry, policy.name, arg_digest)
            if entry.status == OK:
                return self._decode(await self._cursor.payload(entry))
            if entry.status == ERROR:
                raise step_failure(self._decode(await self._cursor.payload(entry)), policy.name)
            if entry.status == INTENT:
                raise await self._in_doubt(seq, policy, entry)
        self._raise_if_cancelled()
        started = time.time()
        if policy.at_most_once:
            intent = Entry(seq, "step", policy.name, INTENT, None, arg_digest, 1, started)
            await self._write([*self._take_pending(), intent], durable=True)
        elif self._pending or (self._flushing is not None and not self._flushing.done()):
            await self._flush()
        attempt = 0
        self._inflight += 1
        try:
            while True:
                attempt += 1
                info = StepInfo(self.run_id, seq, policy.name, attempt, self.generation)
                try:
                    result = await run_attempt(info, policy, fn, is_async, args, kwargs)
                except Exception as exc:
                    if attempt > policy.retries or isinstance(exc, policy.non_retryable):
                        await self._record_failure(seq, policy, arg_digest, attempt, started, exc)
                        raise step_failure(
                            {"type": type_path(exc), "message": str(exc), "attempts": attempt},
                            policy.name,
                        ) from exc
                    jitter = determinism.original("random.random")()
                    await asyncio.sleep(policy.delay(attempt, jitter, exc))
                    continue
                try:
                    payload = self._codec.encode(result, root=f"result of step {policy.name}")
                except SerializationError as exc:
                    await self._record_failure(
                        seq, policy, arg_digest, attempt, started, exc, as_is=True
                    )
                    raise
                await self._write(
                    [_done(seq, "step", policy.name, OK, payload, arg_digest, attempt, started)]
                )
                return result
        finally:
            self._inflight -= 1

    async def _record_failure(
        self,
        seq: int,
        policy: StepPolicy,
        arg_digest: bytes | None,
        attempt: int,
        started: float,
        exc: BaseException,
        *,
        as_is: bool = False,
    ) -> None:
        payload = describe_error(exc, self._codec, attempts=attempt, as_is=as_is)
        await self._write(
            [_done(seq, "step", policy.name, ERROR, payload, arg_digest, attempt, started)]
        )

    async def _in_doubt(self, seq: int, policy: StepPolicy, entry: Entry) -> StepInDoubt:
        """An intent without an outcome: record (once) and surface StepInDoubt."""
        exc = StepInDoubt(
            step_name=policy.name,
            seq=seq,
            attempt=entry.attempt,
            idempotency_key=idempotency_key_for(self.run_id, self.generation, seq),
        )
        payload = describe_error(exc, self._codec, in_doubt=True)
        done = _done(
            seq, "step", policy.name, ERROR, payload, entry.digest, entry.attempt, entry.started_at
        )
        await self._write([*self._take_pending(), done])
        return exc

    # -- transactional steps --------------------------------------------------------------
    def transaction(self, fn: Callable[..., T], /, *args: Any) -> Coroutine[Any, Any, T]:
        """Run ``fn(connection, *args)`` inside the journal database's own transaction: its
        writes and its journal entry commit together, so the effect happens exactly once."""
        if not callable(fn):
            raise InvalidArgument(f"ctx.transaction needs a callable, not {fn!r}")
        return self._transaction(self._next(), fn, args)

    async def _transaction(self, seq: int, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        name = callable_name(fn)
        arg_digest = self._digest(args, {})
        entry = self._cursor.take(seq)
        if entry is not None:
            self._check(seq, entry, "tx", name)
            self._check_digest(seq, entry, name, arg_digest)
            value = self._decode(await self._cursor.payload(entry))
            if entry.status == ERROR:
                raise rebuild_error(value)
            return value  # type: ignore[no-any-return]
        self._raise_if_cancelled()
        started = time.time()
        pending = self._take_pending()

        def entries(result: Any) -> list[Entry]:
            payload = self._codec.encode(result, root=f"result of transaction {name}")
            return [
                *pending,
                _done(seq, "tx", name, OK, payload, arg_digest, 1, started),
            ]

        token = current_context.set(None)
        try:
            # A failure of the database around fn (a dropped connection, a busy file) rolls
            # everything back and is retried; if a lost COMMIT acknowledgement hid a success,
            # the retry is refused by the fence and replay returns the committed entry.
            result: T = await retry_transient(
                lambda: self._store.run_transaction(self.run_id, self.epoch, fn, args, entries),
                f"transaction {name} of run {self.run_id!r}",
            )
        except (LeaseLost, SerializationError, InvalidArgument):
            self._pending[:0] = pending
            raise
        except TransactionFnFailed as failed:
            # fn itself raised and the transaction rolled back: record the failure so replay
            # raises it again.
            exc = failed.original
            payload = describe_error(exc, self._codec)
            await self._write(
                [
                    *pending,
                    _done(seq, "tx", name, ERROR, payload, arg_digest, 1, started),
                ]
            )
            raise exc from None
        finally:
            current_context.reset(token)
        return result

    # -- recorded non-determinism -----------------------------------------------------------
    def _recorded(self, kind: str, make: Callable[[], Any]) -> Any:
        seq = self._next()
        entry = self._cursor.take(seq)
        if entry is not None:
            self._check(seq, entry, kind, kind)
            return self._decode(entry.payload)
        self._raise_if_cancelled()
        value = make()
        now = time.time()
        self._pending.append(
            Entry(seq, kind, kind, OK, self._codec.encode(value), None, 1, now, now)
        )
        return value

    def now(self) -> dt.datetime:
        """The current time (UTC, timezone-aware), recorded: identical on replay."""
        return self._recorded("now", lambda: dt.datetime.fromtimestamp(time.time(), dt.UTC))  # type: ignore[no-any-return]

    def random(self) -> float:
        """A random float in [0, 1), recorded: identical on replay."""
        return self._recorded("random", determinism.original("random.random"))  # type: ignore[no-any-return]

    def uuid4(self) -> uuid.UUID:
        """A random UUID, recorded: identical on replay."""
        return self._recorded("uuid", determinism.original("uuid.uuid4"))  # type: ignore[no-any-return]

    def patched(self, change_id: str) -> bool:
        """True when this run should take the new code path for ``change_id``.

        Runs that reached this point before the change was deployed replay the old path
        (False); new runs, and old runs that had not reached it yet, take the new one.
        """
        if not isinstance(change_id, str) or not change_id:
            raise InvalidArgument("ctx.patched needs a non-empty change id string")
        seq = self._seq
        entry = self._cursor.peek(seq)
        if entry is not None:
            if entry.kind == "patch" and entry.name == change_id:
                self._next()
                self._cursor.take(seq)
                return True
            return False
        if self._cursor.replaying(seq):
            return False
        self._next()
        now = time.time()
        self._pending.append(Entry(seq, "patch", change_id, OK, None, None, 1, now, now))
        return True

    @property
    def state(self) -> RunState:
        """Durable per-run key/value state, stored and loaded key by key (see ``RunState``)."""
        if self._state is None:
            from .state import RunState

            self._state = RunState(self)
        return self._state

    # -- status ---------------------------------------------------------------------------------
    def set_status(self, value: Any) -> None:
        """Publish a small value (a phase, a progress count) for clients, the CLI and the UI.

        Not journaled: it describes the run, it does not steer it."""
        encoded = self._codec.encode(value, root="status")
        self._app._status_cache[self.run_id] = value
        if self._cursor.replaying(self._seq):
            return
        self._status_latest = encoded
        if self._status_task is None or self._status_task.done():
            self._status_task = asyncio.ensure_future(self._write_status())
        self._app._notify(self.run_id)

    async def _write_status(self) -> None:
        while self._status_latest is not None:
            value, self._status_latest = self._status_latest, None
            with contextlib.suppress(LeaseLost):
                await self._store.set_status_value(self.run_id, self.epoch, value)

    # -- waiting ----------------------------------------------------------------------------------
    def sleep(self, duration: float | dt.timedelta) -> Coroutine[Any, Any, None]:
        """Sleep durably: a long sleep releases the run and any worker resumes it on time."""
        seconds = check_seconds(duration, "ctx.sleep")
        return self._sleep(self._next(), None, seconds)

    def sleep_until(self, when: dt.datetime) -> Coroutine[Any, Any, None]:
        """Sleep durably until ``when`` (a timezone-aware datetime)."""
        if not isinstance(when, dt.datetime) or when.tzinfo is None:
            raise InvalidArgument("ctx.sleep_until needs a timezone-aware datetime")
        return self._sleep(self._next(), when.timestamp(), 0.0)

    async def _sleep(self, seq: int, until: float | None, seconds: float) -> None:
        entry = self._cursor.take(seq)
        if entry is not None:
            self._check(seq, entry, "sleep", "sleep")
            wake_at = float(self._decode(await self._cursor.payload(entry)))
            if entry.status == OK:
                return
        else:
            self._raise_if_cancelled()
            wake_at = until if until is not None else time.time() + seconds
            await self._write(
                [*self._take_pending(), _armed(seq, "sleep", "sleep", self._codec.encode(wake_at))]
            )
        await self._block(seq, None, wake_at)
        done = time.time()
        self._pending.append(
            Entry(seq, "sleep", "sleep", OK, self._codec.encode(wake_at), None, 1, done, done)
        )

    def wait_for_event(
        self, name: str, *, timeout: float | dt.timedelta | None = None
    ) -> Coroutine[Any, Any, Any]:
        """Wait durably for ``app.send_event(run_id, name, payload)``; return the payload.

        Events are stored first, so one sent before the wait is not lost. Raises
        ``EventTimeout`` when ``timeout`` passes first."""
        check_event_name(name)
        seconds = None if timeout is None else check_seconds(timeout, "timeout")
        return self._wait_for_event(self._next(), name, seconds)

    async def _wait_for_event(self, seq: int, name: str, seconds: float | None) -> Any:
        deadline: float | None = None
        entry = self._cursor.take(seq)
        if entry is not None:
            self._check(seq, entry, "event", name)
            value = self._decode(await self._cursor.payload(entry))
            if entry.status == OK:
                return value
            if entry.status == ERROR:
                raise rebuild_error(value)
            deadline = float(value)
        else:
            self._raise_if_cancelled()
            if seconds is not None:
                deadline = time.time() + seconds
                await self._write(
                    [
                        *self._take_pending(),
                        _armed(seq, "event", name, self._codec.encode(deadline)),
                    ]
                )
        payload = await self._block(
            seq, name, deadline, functools.partial(self._take_event, seq, name)
        )
        if payload is _TIMEOUT:
            exc = EventTimeout(f"no event {name!r} arrived within {seconds} s")
            await self._write(
                [
                    *self._take_pending(),
                    _done(seq, "event", name, ERROR, describe_error(exc, self._codec)),
                ]
            )
            raise exc
        return self._decode(payload)

    async def _block(
        self,
        seq: int,
        event: str | None,
        deadline: float | None,
        poll: Callable[[], Awaitable[Any]] | None = None,
    ) -> Any:
        """Wait until ``poll()`` returns something (an event, a finished child) or the
        deadline passes (returns _TIMEOUT).

        The wait stays in memory for ``suspend_after`` seconds, since answers often come
        quickly; after that, with no step in flight, the run is released (status waiting) and
        its coroutine dropped. A pure timer longer than that is released at once."""
        self._waits[seq] = (event, deadline)
        started = time.monotonic()
        budget = self._app.suspend_after
        settled = False  # let parallel branches register their waits before suspending
        try:
            while True:
                self._raise_if_cancelled()
                if self._closed:
                    raise Suspended()
                if poll is not None:
                    got = await poll()
                    if got is not None:
                        return got
                now = time.time()
                if deadline is not None and now >= deadline:
                    return _TIMEOUT
                left = math.inf if deadline is None else deadline - now
                linger = 0.0 if poll is None else budget - (time.monotonic() - started)
                if left > budget and linger <= 0 and self._inflight == 0:
                    if not settled:
                        # A few loop turns let sibling branches (gather, wait_first) register
                        # their waits or settle a race before the run is released.
                        settled = True
                        for _ in range(_SETTLE_TURNS):
                            await asyncio.sleep(0)
                        continue
                    await self._suspend()
                    raise Suspended()
                self._wakeup.clear()
                timeout = min(left, linger if linger > 0 else max(budget, 0.001))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
        finally:
            self._waits.pop(seq, None)

    async def _take_event(self, seq: int, name: str) -> bytes | None:
        now = time.time()
        pending = self._take_pending()
        if pending:
            await self._write(pending)
        return await self._store.take_event(
            self.run_id, self.epoch, name, Entry(seq, "event", name, OK, None, None, 1, now, now)
        )

    async def _suspend(self) -> None:
        deadlines = [d for _, d in self._waits.values() if d is not None]
        if self.deadline is not None:
            deadlines.append(self.deadline)
        events = [e for e, _ in self._waits.values() if e is not None]
        self._closed = True
        await self._store.suspend_run(
            self.run_id,
            self.epoch,
            wake_at=min(deadlines) if deadlines else None,
            wait_events=events,
            pending=self._take_pending(),
            now=time.time(),
        )
        self._wakeup.set()

    # -- children ---------------------------------------------------------------------------
    def call(self, workflow: Any, /, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        """Run a child workflow and return its result; journaled as one entry."""
        name = self._app._workflow_name(workflow)
        return self._call(self._next(), name, workflow, args, kwargs)

    async def _call(
        self, seq: int, name: str, workflow: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        entry = self._cursor.take(seq)
        if entry is not None:
            self._check(seq, entry, "call", name)
            value = self._decode(await self._cursor.payload(entry))
            if entry.status == ERROR:
                raise rebuild_error(value)
            return value
        self._raise_if_cancelled()
        child_id = self._child_id(seq)
        await self._flush()
        await self._app._start_child(self, child_id, workflow, args, kwargs)
        return await self._join(seq, "call", name, child_id)

    def start_child(
        self, workflow: Any, /, *args: Any, **kwargs: Any
    ) -> Coroutine[Any, Any, ChildHandle]:
        """Start a child workflow and return a handle; ``await handle.result()`` joins it."""
        name = self._app._workflow_name(workflow)
        return self._start_child(self._next(), name, workflow, args, kwargs)

    async def _start_child(
        self, seq: int, name: str, workflow: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> ChildHandle:
        child_id = self._child_id(seq)
        entry = self._cursor.take(seq)
        if entry is not None:
            self._check(seq, entry, "child", name)
            return ChildHandle(self, self._decode(await self._cursor.payload(entry)))
        self._raise_if_cancelled()
        await self._flush()
        await self._app._start_child(self, child_id, workflow, args, kwargs)
        now = time.time()
        self._pending.append(
            Entry(seq, "child", name, OK, self._codec.encode(child_id), None, 1, now, now)
        )
        return ChildHandle(self, child_id)

    def _child_id(self, seq: int) -> str:
        """``parent.seq``; later generations (continue_as_new) add theirs, ``parent@2.seq``,
        since positions restart at 0 and a child id must never be reused."""
        if self.generation:
            return f"{self.run_id}@{self.generation}.{seq}"
        return f"{self.run_id}.{seq}"

    async def _join(self, seq: int, kind: str, name: str, child_id: str) -> Any:
        async def finished() -> RunRecord | None:
            child = await self._store.get_run(child_id)
            return child if child is not None and child.status in TERMINAL else None

        child: RunRecord = await self._block(seq, child_event_name(child_id), None, finished)
        now = time.time()
        if child.status == COMPLETED:
            entry = Entry(seq, kind, name, OK, child.output, None, 1, now, now)
            await self._write([*self._take_pending(), entry])
            return self._decode(child.output)
        error = child.error or describe_error(WorkflowCancelled(), self._codec)
        await self._write(
            [*self._take_pending(), Entry(seq, kind, name, ERROR, error, None, 1, now, now)]
        )
        raise rebuild_error(self._decode(error))

    # -- races and restarts -------------------------------------------------------------------
    def wait_first(self, *awaitables: Awaitable[Any]) -> Coroutine[Any, Any, tuple[int, Any]]:
        """Await the first of several journaled calls to finish; the others are cancelled.

        Returns (index, result). The winner is journaled, so replay picks the same one."""
        if not awaitables:
            raise InvalidArgument("ctx.wait_first needs at least one awaitable")
        return self._wait_first(self._next(), awaitables)

    async def _wait_first(
        self, seq: int, awaitables: tuple[Awaitable[Any], ...]
    ) -> tuple[int, Any]:
        entry = self._cursor.take(seq)
        if entry is not None:
            self._check(seq, entry, "race", "wait_first")
            winner = int(self._decode(entry.payload))
            for i, aw in enumerate(awaitables):
                if i != winner and inspect.iscoroutine(aw):
                    aw.close()
            return winner, await awaitables[winner]
        tasks = [asyncio.ensure_future(aw) for aw in awaitables]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
        winner = min(tasks.index(t) for t in done)
        for task in tasks:
            if task.done() and not task.cancelled():
                task.exception()  # mark retrieved
        await asyncio.gather(*tasks, return_exceptions=True)
        now = time.time()
        self._pending.append(
            Entry(seq, "race", "wait_first", OK, self._codec.encode(winner), None, 1, now, now)
        )
        return winner, tasks[winner].result()

    def continue_as_new(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Restart this run with new input and an empty journal (the lineage is kept).

        For agents that loop forever: call it where one iteration ends."""
        raise ContinueAsNew(args, kwargs)


class ChildHandle:
    """A child workflow started with ``ctx.start_child``."""

    def __init__(self, ctx: Context, run_id: str) -> None:
        self._ctx = ctx
        self.run_id = run_id

    def result(self) -> Coroutine[Any, Any, Any]:
        """Wait for the child (durably, journaled) and return its result or raise its error."""
        return self._result(self._ctx._next())

    async def _result(self, seq: int) -> Any:
        ctx = self._ctx
        entry = ctx._cursor.take(seq)
        if entry is not None:
            ctx._check(seq, entry, "join", self.run_id)
            value = ctx._decode(await ctx._cursor.payload(entry))
            if entry.status == ERROR:
                raise rebuild_error(value)
            return value
        return await ctx._join(seq, "join", self.run_id, self.run_id)


_TIMEOUT = object()
_SETTLE_TURNS = 4


def _done(
    seq: int,
    kind: str,
    name: str,
    status: str,
    payload: bytes | None,
    digest: bytes | None = None,
    attempt: int = 1,
    started: float | None = None,
) -> Entry:
    """A journal entry with its outcome, finished now."""
    now = time.time()
    return Entry(seq, kind, name, status, payload, digest, attempt, started or now, now)


def _armed(seq: int, kind: str, name: str, payload: bytes) -> Entry:
    now = time.time()
    return Entry(seq, kind, name, ARMED, payload, None, 1, now, None)
