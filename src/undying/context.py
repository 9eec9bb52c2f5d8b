"""``Context``: the one door through which a workflow touches the world.

Each method checks what it is given, takes the call's journal position at once (so calls are
numbered in the order the workflow makes them, also inside ``asyncio.gather``), and hands the
call to the replay engine: ``attempts`` for steps and transactions, ``waits`` for sleeps,
events and races, ``children`` for child runs, ``streams`` for published values, the
``Recorder`` for recorded values. The engine returns the journaled outcome when there is one,
and otherwise runs the call and journals it. Nothing here knows about apps, workers or stores.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, Generic, NoReturn, ParamSpec, TypeVar, overload

from . import attempts, children, determinism, streams, waits
from .attempts import run_step as _run_step
from .errors import InvalidArgument
from .journal import Recorder
from .scope import current_step as _current_step
from .signals import ContinueAsNew
from .validation import check_event_name, check_seconds, check_stream_name

if TYPE_CHECKING:
    from .state import RunState

T = TypeVar("T")
P = ParamSpec("P")


class Context:
    """Journaled access to steps, time, randomness, waiting and child workflows."""

    __slots__ = ("_rec", "_state")

    def __init__(self, recorder: Recorder) -> None:
        self._rec = recorder
        self._state: RunState | None = None

    def __repr__(self) -> str:
        return (
            f"<Context run={self.run_id!r} workflow={self.workflow!r} "
            f"seq={self._rec.next_position}>"
        )

    # -- what the run is --------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return self._rec.run.run_id

    @property
    def workflow(self) -> str:
        return self._rec.run.workflow

    @property
    def epoch(self) -> int:
        """The lease epoch this execution holds (it fences every write)."""
        return self._rec.run.epoch

    @property
    def generation(self) -> int:
        """How many times the run continued as new."""
        return self._rec.run.generation

    @property
    def deadline(self) -> float | None:
        """When the run is cancelled (epoch seconds), if it was started with a timeout."""
        return self._rec.run.deadline

    @property
    def queue(self) -> str | None:
        return self._rec.run.queue

    @property
    def strict(self) -> bool:
        return self._rec.strict

    # -- steps --------------------------------------------------------------------------------
    @overload
    def step(
        self, fn: Callable[P, Coroutine[Any, Any, T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, T]: ...
    @overload
    def step(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, T]: ...
    def step(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` as a journaled step (any sync or async callable)."""
        if not callable(fn):
            raise InvalidArgument(f"ctx.step needs a callable, not {fn!r}")
        target = getattr(fn, "__undying_target__", fn)
        policy = attempts.policy_of(fn)
        seq = self._rec.position()
        return _run_step(
            self._rec, seq, policy, target, attempts.is_async_callable(target), args, kwargs
        )

    @overload
    def transaction(
        self, fn: Callable[..., Coroutine[Any, Any, T]], /, *args: Any
    ) -> Coroutine[Any, Any, T]: ...
    @overload
    def transaction(self, fn: Callable[..., T], /, *args: Any) -> Coroutine[Any, Any, T]: ...
    def transaction(self, fn: Callable[..., Any], /, *args: Any) -> Coroutine[Any, Any, Any]:
        """Run ``fn(connection, *args)`` inside the journal database's own transaction: its
        writes and its journal entry commit together, so the effect happens exactly once."""
        if not callable(fn):
            raise InvalidArgument(f"ctx.transaction needs a callable, not {fn!r}")
        return attempts.run_transaction(self._rec, self._rec.position(), fn, args)

    # -- recorded non-determinism -------------------------------------------------------------
    def _recorded(self, kind: str, make: Callable[[], Any]) -> Any:
        rec = self._rec
        seq = rec.position()
        entry = rec.recorded(seq, kind, kind)
        if entry is not None:
            return rec.inline_value(entry)
        value = make()
        rec.buffer(seq, kind, kind, rec.codec.encode(value))
        return value

    def now(self) -> dt.datetime:
        """The current time (UTC, timezone-aware), recorded: identical on replay."""
        return self._recorded("now", _utc_now)  # type: ignore[no-any-return]

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
        rec = self._rec
        seq = rec.next_position
        entry = rec.cursor.peek(seq)
        if entry is not None:
            if entry.kind == "patch" and entry.name == change_id:
                rec.position()
                rec.cursor.take(seq)
                return True
            return False
        if rec.replaying(seq):
            return False
        rec.position()
        rec.buffer(seq, "patch", change_id, None)
        return True

    @property
    def state(self) -> RunState:
        """Durable per-run key/value state, stored and loaded key by key (see ``RunState``)."""
        if self._state is None:
            from .state import RunState

            self._state = RunState(self._rec)
        return self._state

    # -- status ---------------------------------------------------------------------------------
    def set_status(self, value: Any) -> None:
        """Publish a small value (a phase, a progress count) for clients, the CLI and the UI.

        Not journaled: it describes the run, it does not steer it."""
        self._rec.publish_status(value)

    # -- streams --------------------------------------------------------------------------------
    def publish(self, stream: str, value: Any) -> Coroutine[Any, Any, None]:
        """Append ``value`` to the run's stream ``stream`` (read with ``app.read_stream``).

        Journaled: committed with its journal entry, so a replay appends nothing again.
        Called from a step's code (a step that captured ``ctx``), it appends at least once,
        as ``undying.publish`` does there (see ``undying.streams``). Raises ``StreamClosed``
        for a stream this run closed."""
        check_stream_name(stream)
        info = _current_step.get()
        if info is not None:
            return streams.publish_from_step(self._rec, info, stream, value)
        return streams.publish(self._rec, self._rec.position(), stream, value)

    def close_stream(self, stream: str) -> Coroutine[Any, Any, None]:
        """Close the stream: its readers end after its last value, and a later publish to
        it raises ``StreamClosed``. Journaled. (Every stream ends with its run anyway.)"""
        check_stream_name(stream)
        if _current_step.get() is not None:
            raise InvalidArgument(
                f"close stream {stream!r} from workflow code, not from a step: a step may "
                "run again, and its values would find the stream closed"
            )
        return streams.close(self._rec, self._rec.position(), stream)

    # -- waiting ----------------------------------------------------------------------------------
    def sleep(self, duration: float | dt.timedelta) -> Coroutine[Any, Any, None]:
        """Sleep durably: a long sleep releases the run and any worker resumes it on time."""
        seconds = check_seconds(duration, "ctx.sleep")
        return waits.sleep(self._rec, self._rec.position(), None, seconds)

    def sleep_until(self, when: dt.datetime) -> Coroutine[Any, Any, None]:
        """Sleep durably until ``when`` (a timezone-aware datetime)."""
        if not isinstance(when, dt.datetime) or when.tzinfo is None:
            raise InvalidArgument("ctx.sleep_until needs a timezone-aware datetime")
        return waits.sleep(self._rec, self._rec.position(), when.timestamp(), 0.0)

    def wait_for_event(
        self, name: str, *, timeout: float | dt.timedelta | None = None
    ) -> Coroutine[Any, Any, Any]:
        """Wait durably for ``app.send_event(run_id, name, payload)``; return the payload.

        Events are stored first, so one sent before the wait is not lost. Raises
        ``EventTimeout`` when ``timeout`` passes first."""
        check_event_name(name)
        seconds = None if timeout is None else check_seconds(timeout, "timeout")
        return waits.wait_for_event(self._rec, self._rec.position(), name, seconds)

    def wait_first(self, *awaitables: Awaitable[Any]) -> Coroutine[Any, Any, tuple[int, Any]]:
        """Await the first of several journaled calls to finish; the others are cancelled.

        Returns (index, result). The winner is journaled, so replay picks the same one."""
        if not awaitables:
            raise InvalidArgument("ctx.wait_first needs at least one awaitable")
        return waits.wait_first(self._rec, self._rec.position(), awaitables)

    # -- children ---------------------------------------------------------------------------
    @overload
    def call(
        self,
        workflow: Callable[Concatenate[Context, P], Coroutine[Any, Any, T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Coroutine[Any, Any, T]: ...
    @overload
    def call(self, workflow: str, /, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]: ...
    def call(self, workflow: Any, /, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        """Run a child workflow and return its result; journaled as one entry."""
        name = self._rec.host.workflow_name(workflow)
        return children.call(self._rec, self._rec.position(), name, args, kwargs)

    @overload
    def start_child(
        self,
        workflow: Callable[Concatenate[Context, P], Coroutine[Any, Any, T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Coroutine[Any, Any, ChildHandle[T]]: ...
    @overload
    def start_child(
        self, workflow: str, /, *args: Any, **kwargs: Any
    ) -> Coroutine[Any, Any, ChildHandle[Any]]: ...
    def start_child(
        self, workflow: Any, /, *args: Any, **kwargs: Any
    ) -> Coroutine[Any, Any, ChildHandle[Any]]:
        """Start a child workflow and return a handle; ``await handle.result()`` joins it."""
        name = self._rec.host.workflow_name(workflow)
        return self._start_child(self._rec.position(), name, args, kwargs)

    async def _start_child(
        self, seq: int, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> ChildHandle[Any]:
        return ChildHandle(self._rec, await children.start(self._rec, seq, name, args, kwargs))

    # -- restarts -------------------------------------------------------------------------------
    def continue_as_new(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Restart this run with new input and an empty journal (the lineage is kept).

        For agents that loop forever: call it where one iteration ends."""
        raise ContinueAsNew(args, kwargs)


class ChildHandle(Generic[T]):
    """A child workflow started with ``ctx.start_child``."""

    __slots__ = ("_rec", "run_id")

    def __init__(self, recorder: Recorder, run_id: str) -> None:
        self._rec = recorder
        self.run_id = run_id

    def __repr__(self) -> str:
        return f"<ChildHandle {self.run_id!r}>"

    def result(self) -> Coroutine[Any, Any, T]:
        """Wait for the child (durably, journaled) and return its result or raise its error."""
        return children.result(self._rec, self._rec.position(), self.run_id)


def _utc_now() -> dt.datetime:
    return dt.datetime.fromtimestamp(time.time(), dt.UTC)
