"""Child runs: started from a position of their parent, joined durably, journaled as one entry.

A child's id is derived from its parent and the position that started it (``parent~seq``, or
``parent~gen.seq`` after ``continue_as_new``), so a replayed parent finds the child it started
before instead of starting another, and a user's run id (which never holds '~') can never be
mistaken for it. The child is created idempotently and executed by any worker; the parent
waits for it like for an event (the child's end leaves one for it), and journals its outcome.
"""

from __future__ import annotations

from typing import Any

from .journal import Recorder
from .validation import child_run_id
from .waits import join


async def call(
    rec: Recorder, seq: int, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Run the child workflow ``name`` and return its result (or raise its error)."""
    entry = rec.recorded(seq, "call", name)
    if entry is not None:
        return await rec.outcome(entry)
    child_id = await _child_id(rec, seq)
    await rec.flush()
    await rec.host.start_child(rec.run.run_id, child_id, name, args, kwargs)
    return await join(rec, seq, "call", name, child_id)


async def start(
    rec: Recorder, seq: int, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str:
    """Start the child workflow ``name``; its id (journaled, so replay returns the same)."""
    entry = rec.recorded(seq, "child", name)
    if entry is not None:
        return str(await rec.value(entry))
    child_id = await _child_id(rec, seq)
    await rec.flush()
    await rec.host.start_child(rec.run.run_id, child_id, name, args, kwargs)
    rec.buffer(seq, "child", name, rec.codec.encode(child_id))
    return child_id


async def result(rec: Recorder, seq: int, child_id: str) -> Any:
    """Wait for a started child (durably, journaled) and return its outcome."""
    entry = rec.recorded(seq, "join", child_id)
    if entry is not None:
        return await rec.outcome(entry)
    return await join(rec, seq, "join", child_id, child_id)


async def _child_id(rec: Recorder, seq: int) -> str:
    """The child's id, from the position. A parent in flight across the change of id format
    may have started it under the old id, ``parent.seq`` / ``parent@gen.seq`` (nothing
    journals a ``call``'s child before it ends): keep using that one if it is this parent's,
    or the child would run a second time."""
    run = rec.run
    child_id = child_run_id(run.run_id, run.generation, seq)
    if "~" in run.run_id:  # a generated id: the run was created after the change
        return child_id
    old_id = f"{run.run_id}@{run.generation}.{seq}" if run.generation else f"{run.run_id}.{seq}"
    old = await rec.store.get_run(old_id)
    if (
        old is not None
        and old.parent_id == run.run_id
        and await rec.store.get_run(child_id) is None
    ):
        return old_id
    return child_id
