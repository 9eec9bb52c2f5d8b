"""The memory store's runs created under a condition: plain starts, deduplicated starts and
the runs of schedule ticks, with the schedules' table.

A part of ``MemoryStore`` (``memory.py``), kept in a file of its own so each stays short; it
follows the SQLite queries ``insert_run``, ``dedup_holder``/``hold_dedup_key`` and the
schedule blocks of ``sql/sqlite/queries.sql``. Like the rest of the memory store, each method
runs to completion without awaiting anything that yields, so it is as atomic as a SQLite
transaction.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .base import NewRun, RunRecord, ScheduleRecord, Store, created_record

if TYPE_CHECKING:
    from .memory import MemoryDatabase


class MemoryRunsAndSchedules(Store):
    """Run creation, dedup keys and schedules of a memory database (see the module
    docstring); ``MemoryStore`` supplies the database and the change signal."""

    @property
    @abc.abstractmethod
    def db(self) -> MemoryDatabase: ...

    @abc.abstractmethod
    def _committed(self) -> None: ...

    def _insert_run(
        self, run: NewRun, owner: str | None, lease_expires: float, now: float
    ) -> RunRecord | None:
        """Insert ``run`` unless its id exists; the stored record if it was created."""
        db = self.db
        if run.run_id in db.runs:
            return None
        record = created_record(run, owner, lease_expires, now)
        record.input = bytes(run.input)
        db.runs[run.run_id] = record
        if run.parent_id is not None:
            db.children.setdefault(run.parent_id, []).append(run.run_id)
        if run.concurrency_key is not None:
            db.concurrency_keys[run.run_id] = run.concurrency_key
        return record

    async def create_run(
        self, run: NewRun, *, owner: str | None, lease_expires: float, now: float
    ) -> tuple[bool, RunRecord]:
        db = self.db
        if run.dedup_key is not None:
            held = db.dedup_keys.get((run.workflow, run.dedup_key))
            if held is not None and held[1] > now:
                return False, dataclasses.replace(db.runs[held[0]])
        created = self._insert_run(run, owner, lease_expires, now)
        if run.dedup_key is not None:
            assert run.dedup_until is not None
            db.dedup_keys[(run.workflow, run.dedup_key)] = (run.run_id, run.dedup_until)
        if created is None:
            return False, dataclasses.replace(db.runs[run.run_id])
        self._committed()
        return True, dataclasses.replace(created)

    def _forget_dedup_keys(self, deleted: set[str], older_than: float) -> None:
        """Drop the keys of deleted runs and those that expired before ``older_than``."""
        keys = self.db.dedup_keys
        for key, (run_id, expires_at) in list(keys.items()):
            if run_id in deleted or expires_at < older_than:
                del keys[key]
        for run_id in deleted:
            self.db.concurrency_keys.pop(run_id, None)

    # -- schedules ---------------------------------------------------------------------------
    async def list_schedules(self) -> list[ScheduleRecord]:
        table = self.db.schedules
        return [dataclasses.replace(table[name]) for name in sorted(table)]

    async def register_schedules(
        self, schedules: Sequence[ScheduleRecord], now: float
    ) -> list[ScheduleRecord]:
        table = self.db.schedules
        for schedule in schedules:
            kept = table.get(schedule.name)
            definition = dataclasses.replace(schedule, updated_at=now)
            if kept is None:  # a new schedule: no state yet
                definition.paused, definition.last_tick, definition.resumed_at = False, None, None
                definition.created_at = now
            else:  # the definition is the code's, the state stays
                definition.paused, definition.last_tick = kept.paused, kept.last_tick
                definition.resumed_at, definition.created_at = kept.resumed_at, kept.created_at
            table[schedule.name] = definition
        if schedules:
            self._committed()
        return [dataclasses.replace(table[s.name]) for s in sorted(schedules, key=_name)]

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
        schedule = self.db.schedules.get(name)
        if schedule is None or schedule.paused:
            return None
        if schedule.resumed_at is not None and schedule.resumed_at >= tick:
            return None
        schedule.last_tick = tick if schedule.last_tick is None else max(schedule.last_tick, tick)
        created = self._insert_run(run, owner, lease_expires, now)
        self._committed()
        return None if created is None else dataclasses.replace(created)

    async def set_schedule_paused(self, name: str, paused: bool, now: float) -> bool | None:
        schedule = self.db.schedules.get(name)
        if schedule is None:
            return None
        if schedule.paused == paused:
            return False
        schedule.paused, schedule.updated_at = paused, now
        if not paused:
            schedule.resumed_at = now
        self._committed()
        return True


def _name(schedule: ScheduleRecord) -> str:
    return schedule.name
