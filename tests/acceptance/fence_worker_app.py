"""The app the fencing acceptance tests run in ``undying worker fence_worker_app:app``.

The database is ``UNDYING_DATABASE_URL`` (PostgreSQL or a SQLite file). Workflow
``fence.charge(batch)`` calls one at-most-once step, ``fence.charge``; every execution of its
body appends the line ``<pid> <run id> <journal position>`` to the file ``$FENCE_EFFECTS``
(opened for appending and fsynced each time, so two processes' executions all show, in the
order they happened). The workflow handles ``StepInDoubt`` by returning
``{"in_doubt": True}``; otherwise it returns ``{"in_doubt": False, "charged_by": <pid>}``.
With ``batch`` true it records ``ctx.now()`` first, so the step's intent is written together
with that entry (a batch append) instead of alone (the single-entry hot path).

Settings (environment): ``FENCE_LEASE_TTL`` (seconds, default 1.5); ``FENCE_HOLD_BODY``, a
path: the step's body, once its execution is recorded, waits until that file exists (so a
test can act while the step is running, its intent the run's latest entry). A test-only hook,
not part of undying: with ``FENCE_STOP_BEFORE_INTENT=1`` this process sends itself
``SIGSTOP`` right before its store writes its first intent entry, so a test can freeze a
worker at the exact moment between deciding to run an at-most-once step and journaling that
decision.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Sequence
from typing import Any

import undying
from undying import App, Context, StepInDoubt
from undying.store.base import Entry

WORKFLOW = "fence.charge"
STEP_NAME = "fence.charge"


@undying.step(name=STEP_NAME, at_most_once=True)
async def charge() -> int:
    info = undying.current_step()
    assert info is not None
    line = f"{os.getpid()} {info.run_id} {info.seq}\n".encode()
    fd = os.open(os.environ["FENCE_EFFECTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    hold = os.environ.get("FENCE_HOLD_BODY")
    while hold and not os.path.exists(hold):
        await asyncio.sleep(0.02)  # pacing of a poll on a file the test creates
    return os.getpid()


async def charge_once(ctx: Context, batch: bool) -> dict[str, Any]:
    if batch:
        ctx.now()  # pending: written with the intent, in one batch append
    try:
        pid = await charge()
    except StepInDoubt:
        return {"in_doubt": True}
    return {"in_doubt": False, "charged_by": pid}


def make_app(url: str | None, *, worker: bool = True) -> App:
    """An App on ``url`` with ``fence.charge`` registered (``worker=False``: a pure client)."""
    made = App(url, worker=worker, lease_ttl=float(os.environ.get("FENCE_LEASE_TTL", "1.5")))
    made.workflow(name=WORKFLOW)(charge_once)
    return made


def _stop_before_first_intent(made: App) -> None:
    """Wrap this app's store so the process stops itself just before its first intent write."""
    store = made._store_template
    write_entries = store.write_entries
    armed = [True]

    async def stopping_write_entries(
        run_id: str, epoch: int, entries: Sequence[Entry], *, durable: bool = False
    ) -> None:
        if armed[0] and any(e.status == "intent" for e in entries):
            armed[0] = False
            os.kill(os.getpid(), signal.SIGSTOP)  # delivered before kill() returns
        await write_entries(run_id, epoch, entries, durable=durable)

    setattr(store, "write_entries", stopping_write_entries)  # noqa: B010 - an instance patch


#: what ``undying worker fence_worker_app:app`` runs; the tests import this module for its
#: constants and ``make_app`` only, without UNDYING_DATABASE_URL (then ``app`` is never opened)
app = make_app(os.environ.get("UNDYING_DATABASE_URL"))
if os.environ.get("FENCE_STOP_BEFORE_INTENT") == "1":
    _stop_before_first_intent(app)
