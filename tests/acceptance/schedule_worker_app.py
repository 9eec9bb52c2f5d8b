"""The app the schedule acceptance tests run in ``undying worker schedule_worker_app:app``.

Schedule ``beat`` ticks every second (``SCHED_MISSED`` and ``SCHED_MAX_CATCH_UP`` set its
policy for missed ticks). Each execution of its step appends ``<run id> <pid>`` to the file
``SCHED_EFFECTS`` (one ``write`` in append mode: lines of concurrent writers never mix), so
the test sees how many times each tick's run was executed, and by which worker.
"""

from __future__ import annotations

import datetime as dt
import os

import undying
from undying import App, Context

MISSED = os.environ.get("SCHED_MISSED", "latest")
MAX_CATCH_UP = int(os.environ["SCHED_MAX_CATCH_UP"]) if "SCHED_MAX_CATCH_UP" in os.environ else None

app = App(lease_ttl=3.0, poll_interval=0.2)


@undying.step
async def record(run_id: str) -> int:
    with open(os.environ["SCHED_EFFECTS"], "a") as effects:
        effects.write(f"{run_id} {os.getpid()}\n")
    return os.getpid()


@app.schedule(every=1, name="beat", missed=MISSED, max_catch_up=MAX_CATCH_UP)
async def beat(ctx: Context, tick: dt.datetime) -> int:
    return await record(ctx.run_id)
