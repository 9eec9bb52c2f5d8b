"""The PostgreSQL store's runs created under a condition: plain starts, deduplicated starts,
forks and the runs of schedule ticks, with the schedules' table.

A part of ``PostgresStore`` (``postgres.py``), kept in a file of its own so each stays short,
as ``memory_schedules.py`` is for the memory store. ``PostgresStore`` supplies the
connections (``_conn``), the named queries and the notification token.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncCursor

from ..errors import StoreError
from .base import (
    PENDING,
    RUNNING,
    NewRun,
    RunRecord,
    ScheduleRecord,
    Store,
    schedule_params,
    tick_params,
)
from .pg_session import Conn, Sessions, records, retried_once

RUN_ROWS = records(RunRecord)
SCHEDULE_ROWS = records(ScheduleRecord)
#: rounds of a deduplicated start whose key's holder retention keeps deleting meanwhile
DEDUP_ROUNDS = 3


class PostgresRunsAndSchedules(Store):
    """Run creation, dedup keys, forks and schedules on PostgreSQL (see the module docstring)."""

    _q: dict[str, str]
    _token: str
    sessions: Sessions

    @abc.abstractmethod
    def _conn(self) -> contextlib.AbstractAsyncContextManager[Conn]: ...

    # -- runs -----------------------------------------------------------------------------------
    @retried_once
    async def create_run(
        self, run: NewRun, *, owner: str | None, lease_expires: float, now: float
    ) -> tuple[bool, RunRecord]:
        params = self._run_params(run, owner, lease_expires, now)
        async with self._conn() as conn:
            cur = conn.cursor(row_factory=RUN_ROWS)
            if run.dedup_key is None:
                await cur.execute(self._q["insert_run"], params, prepare=True)
                created = await cur.fetchone()
            else:
                created, holder = await self._create_deduplicated(conn, cur, run, params, now)
                if holder is not None:
                    return False, holder
            if created is not None:
                return True, created
            await cur.execute(self._q["get_run"], (run.run_id,), prepare=True)
            existing = await cur.fetchone()
        assert existing is not None, "a run that conflicted on insert cannot vanish (runs are kept)"
        return False, existing

    async def _create_deduplicated(
        self,
        conn: Conn,
        cur: AsyncCursor[RunRecord],
        run: NewRun,
        params: dict[str, Any],
        now: float,
    ) -> tuple[RunRecord | None, RunRecord | None]:
        """(the run created, None), or (None, None) when its id exists, or (None, the run
        holding the dedup key): the key taken and the run inserted in one transaction.

        Retention may delete the key's holder (an ended run) between the statements; the key
        is free again then, and the next round takes it."""
        for _ in range(DEDUP_ROUNDS):
            async with conn.transaction():
                taken, holder_id = await self._hold_dedup_key(conn, run, now)
                if taken:
                    await cur.execute(self._q["insert_run"], params)
                    return await cur.fetchone(), None
                holder = None
                if holder_id is not None:
                    await cur.execute(self._q["get_run"], (holder_id,))
                    holder = await cur.fetchone()
            if holder is not None:
                return None, holder
        raise StoreError(
            f"could not start {run.run_id!r}: the run holding dedup key {run.dedup_key!r} "
            "kept being deleted while it was read; retry"
        )

    async def _hold_dedup_key(
        self, conn: Conn, run: NewRun, now: float
    ) -> tuple[bool, str | None]:
        """Take ``run``'s dedup key for it (in the caller's transaction): (True, None), or
        (False, the id of the run that holds it), or (False, None) when retention deleted
        the key (and its ended run) since the first statement."""
        key = {"workflow": run.workflow, "key": run.dedup_key}
        params = {**key, "run_id": run.run_id, "until": run.dedup_until, "now": now}
        cur = await conn.execute(self._q["hold_dedup_key"], params)
        if await cur.fetchone() is not None:
            return True, None
        cur = await conn.execute(self._q["dedup_holder"], key)
        row = await cur.fetchone()
        return False, None if row is None else str(row[0])

    def _run_params(
        self, run: NewRun, owner: str | None, lease_expires: float, now: float
    ) -> dict[str, Any]:
        """The ``insert_run`` parameters of a new run (claimed at once when it has an owner)."""
        status, epoch = (RUNNING, 1) if owner else (PENDING, 0)
        return {
            "run_id": run.run_id,
            "workflow": run.workflow,
            "status": status,
            "input": run.input,
            "owner": owner,
            "lease_expires": lease_expires if owner else None,
            "epoch": epoch,
            "parent_id": run.parent_id,
            "queue": run.queue,
            "priority": run.priority,
            "deadline": run.deadline,
            "concurrency_key": run.concurrency_key,
            "now": now,
            "token": self._token,
        }

    async def fork_run(self, run: NewRun, src_run_id: str, before_seq: int, now: float) -> bool:
        params = self._run_params(run, None, now, now)
        streams = {"src": src_run_id, "dst": run.run_id, "before": before_seq}
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(self._q["insert_run"], params)
            if await cur.fetchone() is None:
                return False
            await conn.execute(self._q["copy_journal"], (run.run_id, src_run_id, before_seq))
            await conn.execute(self._q["copy_streams"], streams)
        return True

    # -- schedules -------------------------------------------------------------------------------
    @retried_once
    async def list_schedules(self) -> list[ScheduleRecord]:
        async with self._conn() as conn, conn.cursor(row_factory=SCHEDULE_ROWS) as cur:
            await cur.execute(self._q["list_schedules"])
            return await cur.fetchall()

    @retried_once
    async def register_schedules(
        self, schedules: Sequence[ScheduleRecord], now: float
    ) -> list[ScheduleRecord]:
        async with self._conn() as conn, conn.cursor() as cur:
            await cur.executemany(
                self._q["register_schedule"], [schedule_params(s, now) for s in schedules]
            )
        names = {s.name for s in schedules}
        return [s for s in await self.list_schedules() if s.name in names]

    @retried_once
    async def fire_tick(
        self,
        name: str,
        tick: float,
        run: NewRun,
        *,
        owner: str | None,
        lease_expires: float,
        now: float,
    ) -> RunRecord | None:
        params = {**tick_params(name, tick, run, owner, lease_expires, now), "token": self._token}
        async with self._conn() as conn, conn.cursor(row_factory=RUN_ROWS) as cur:
            await cur.execute(self._q["fire_tick"], params, prepare=True)
            return await cur.fetchone()

    @retried_once
    async def set_schedule_paused(self, name: str, paused: bool, now: float) -> bool | None:
        params = {"name": name, "paused": paused, "now": now}
        async with self._conn() as conn:
            cur = await conn.execute(self._q["pause_schedule"], params)
            row = await cur.fetchone()
        exists, changed = (0, 0) if row is None else row
        return bool(changed) if exists else None
