"""What a schedule is: its checked definition, its ticks, and the ids of its ticks' runs.

A schedule fires a workflow at each *tick*: the times a cron expression names (in a time
zone) or the multiples of a fixed interval. Every worker that knows a schedule computes the
same ticks from the definition alone, with no shared clock or leader, and the run of a tick
has an id made of the schedule's name and the tick (``nightly~tick-20261202T000000Z``), so
however many workers fire a tick, one run is created for it.

What happens to ticks that came due while no worker ran is the schedule's ``missed`` policy
(``missed_ticks``): ``skip`` them, run the ``latest`` one, or ``catch_up`` on each of them,
at most ``max_catch_up`` (the most recent ones). Cron needs croniter
(``pip install 'undying[schedules]'``), imported only for a cron schedule; ``every=`` needs
nothing.
"""

from __future__ import annotations

import datetime as dt
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import InvalidArgument
from .store.base import ScheduleRecord
from .validation import MAX_RUN_REF, check_run_id, tick_run_id

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

SKIP = "skip"
LATEST = "latest"
CATCH_UP = "catch_up"
MISSED_POLICIES = (SKIP, LATEST, CATCH_UP)
#: ``missed="catch_up"`` runs at most this many missed ticks unless ``max_catch_up`` says
DEFAULT_MAX_CATCH_UP = 10
#: cron's macros (croniter expands them), besides the five-field form
_CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


@dataclass(frozen=True, slots=True)
class Schedule:
    """A checked schedule definition (``App.schedule`` builds one with ``make_schedule``)."""

    name: str
    workflow: str
    cron: str | None
    every: int | None  # whole seconds
    timezone: str | None  # the cron expression's zone
    missed: str
    max_catch_up: int | None
    queue: str | None
    priority: int

    # -- ticks, as epoch seconds ----------------------------------------------------------
    def next_after(self, t: float) -> float:
        """The first tick strictly after ``t``."""
        if self.every is not None:
            return float((math.floor(t / self.every) + 1) * self.every)
        return float(self._cron_at(t).get_next(float))

    def latest_at_or_before(self, t: float) -> float:
        """The last tick at or before ``t``."""
        if self.every is not None:
            return float(math.floor(t / self.every) * self.every)
        return float(self._cron_at(t + 1e-3).get_prev(float))

    def ticks_between(self, after: float, until: float) -> list[float]:
        """The ticks in ``(after, until]``, oldest first."""
        ticks: list[float] = []
        tick = self.next_after(after)
        while tick <= until:
            ticks.append(tick)
            tick = self.next_after(tick)
        return ticks

    def last_ticks(self, after: float, until: float, most: int) -> list[float]:
        """The latest ``most`` ticks in ``(after, until]``, oldest first (counted back from
        ``until``, so a long outage costs ``most`` steps, not one per tick it missed)."""
        ticks: list[float] = []
        tick = self.latest_at_or_before(until)
        while tick > after and len(ticks) < most:
            ticks.append(tick)
            tick = self.latest_at_or_before(tick - 1e-3)
        ticks.reverse()
        return ticks

    def _cron_at(self, t: float) -> Any:
        croniter = _croniter()
        return croniter(self.cron, dt.datetime.fromtimestamp(t, _zone(self.timezone or "UTC")))

    # -- runs ---------------------------------------------------------------------------------
    def run_id(self, tick: float) -> str:
        """The id of the tick's run: the same in every worker."""
        return tick_run_id(self.name, tick)

    def record(self) -> ScheduleRecord:
        """The definition as the store keeps it (its state is the store's)."""
        return ScheduleRecord(
            name=self.name,
            workflow=self.workflow,
            cron=self.cron,
            every=None if self.every is None else float(self.every),
            timezone=self.timezone,
            missed=self.missed,
            max_catch_up=self.max_catch_up,
        )


def tick_time(tick: float) -> dt.datetime:
    """The tick as the workflow gets it: a timezone-aware UTC datetime, like ``ctx.now()``."""
    return dt.datetime.fromtimestamp(tick, dt.UTC)


def missed_ticks(schedule: Schedule, after: float, until: float) -> list[float]:
    """The ticks in ``(after, until]`` that came due while no worker watched the schedule,
    which its ``missed`` policy runs: none, the latest, or the latest ``max_catch_up``."""
    if schedule.missed == SKIP:
        return []
    most = 1 if schedule.missed == LATEST else schedule.max_catch_up or DEFAULT_MAX_CATCH_UP
    return schedule.last_ticks(after, until, most)


def handled_through(record: ScheduleRecord) -> float:
    """The time up to which a stored schedule's ticks are dealt with: its latest fired tick,
    its last resume, or, before either, when it was first registered (a schedule never
    misses ticks from before it existed)."""
    marks = [record.created_at, record.last_tick, record.resumed_at]
    return max(m for m in marks if m is not None)


def next_tick(record: ScheduleRecord, now: float) -> float | None:
    """When a stored schedule fires next (None if paused, or when its cron cannot be read
    here: croniter missing); for listings."""
    if record.paused:
        return None
    every = record.every
    try:
        schedule = make_schedule(
            record.name,
            record.workflow,
            record.cron,
            every=None if every is None else int(every),
            timezone=record.timezone,
            missed=record.missed,
            max_catch_up=record.max_catch_up,
        )
    except InvalidArgument:
        return None
    return schedule.next_after(max(now, handled_through(record)))


# -- checking a definition --------------------------------------------------------------------
def make_schedule(
    name: str,
    workflow: str,
    cron: object = None,
    *,
    every: object = None,
    timezone: object = None,
    missed: object = LATEST,
    max_catch_up: object = None,
    queue: str | None = None,
    priority: object = 0,
) -> Schedule:
    """A ``Schedule``, every argument checked, with an ``InvalidArgument`` that says what to
    pass instead."""
    what = f"schedule {name!r}" if name else "schedule"
    if (cron is None) == (every is None):
        raise InvalidArgument(
            f"{what}: give either a cron expression (app.schedule('*/5 * * * *')) or "
            "every=timedelta(...), "
            + ("not both" if cron is not None else "not neither")
        )
    seconds = None
    if cron is not None:
        zone = "UTC" if timezone is None else _check_timezone(timezone, what)
        _check_cron(cron, what)
    else:
        if timezone is not None:
            raise InvalidArgument(
                f"{what}: timezone= is for cron expressions; every= ticks at fixed intervals "
                "since the Unix epoch, whatever the zone (for a local time of day, use cron: "
                "app.schedule('0 9 * * *', timezone='Europe/Paris'))"
            )
        zone = None
        seconds = _check_every(every, what)
    if missed not in MISSED_POLICIES:
        raise InvalidArgument(
            f"{what}: missed must be one of {', '.join(map(repr, MISSED_POLICIES))} (what to "
            f"do with ticks that came due while no worker ran), not {missed!r}"
        )
    bound = None
    if max_catch_up is not None:
        if missed != CATCH_UP:
            raise InvalidArgument(
                f"{what}: max_catch_up bounds missed='catch_up'; with missed={missed!r} it "
                "would do nothing"
            )
        if not isinstance(max_catch_up, int) or isinstance(max_catch_up, bool) or max_catch_up < 1:
            raise InvalidArgument(
                f"{what}: max_catch_up must be a whole number >= 1, not {max_catch_up!r}"
            )
        bound = max_catch_up
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise InvalidArgument(f"{what}: priority must be an int, not {priority!r}")
    return Schedule(
        name=name,
        workflow=workflow,
        cron=None if cron is None else str(cron).strip(),
        every=seconds,
        timezone=zone,
        missed=str(missed),
        max_catch_up=bound,
        queue=queue,
        priority=priority,
    )


def check_schedule_name(name: object) -> str:
    """A schedule's name: the head of its runs' ids, so it follows the rules of a run id."""
    try:
        check_run_id(name)
    except InvalidArgument as exc:
        raise InvalidArgument(
            f"{exc} (a schedule's name starts the ids of its runs, "
            "'<name>~tick-20261202T160500Z'; pass name= to choose another)"
        ) from None
    assert isinstance(name, str)
    if len(tick_run_id(name, 0.0)) > MAX_RUN_REF:  # pragma: no cover - names are <= 200
        raise InvalidArgument(f"schedule name {name!r} is too long")
    return name


def check_tick_signature(fn: Callable[..., Any], name: str) -> None:
    """A scheduled workflow is called as ``fn(ctx, tick)``: refuse one that cannot be."""
    try:
        inspect.signature(fn).bind(None, None)
    except TypeError:
        raise InvalidArgument(
            f"schedule {name!r}: its workflow is called as fn(ctx, tick), tick being the "
            "tick's time (a UTC datetime); give it a second parameter, e.g. "
            "`async def job(ctx: Context, tick: datetime)`"
        ) from None
    except ValueError:  # no signature to read (a builtin): let the call itself tell
        return


def _check_cron(cron: object, what: str) -> None:
    if not isinstance(cron, str) or not cron.strip():
        raise InvalidArgument(f"{what}: a cron expression is a string such as '*/5 * * * *'")
    text = cron.strip()
    fields = text.split()
    if not (text.lower() in _CRON_MACROS or len(fields) == 5):
        raise InvalidArgument(
            f"{what}: malformed cron expression {cron!r}: use five fields (minute hour "
            "day-of-month month day-of-week, e.g. '*/5 * * * *' or '0 9 * * mon-fri') or one "
            f"of {', '.join(_CRON_MACROS)}; for intervals under a minute use every="
        )
    croniter = _croniter()
    try:
        croniter(text, dt.datetime.fromtimestamp(time.time(), dt.UTC)).get_next(float)
    except (ValueError, KeyError, TypeError) as exc:  # croniter's errors are ValueErrors
        raise InvalidArgument(
            f"{what}: malformed cron expression {cron!r} ({exc}): the fields are minute "
            "(0-59) hour (0-23) day-of-month (1-31) month (1-12 or jan-dec) day-of-week "
            "(0-6 or sun-sat), each *, a value, a range a-b, a list a,b or a step */n"
        ) from None


def _check_every(every: object, what: str) -> int:
    if isinstance(every, dt.timedelta):
        seconds = every.total_seconds()
    elif isinstance(every, int | float) and not isinstance(every, bool):
        seconds = float(every)
    else:
        raise InvalidArgument(
            f"{what}: every= takes a timedelta (or a number of seconds), not {every!r}"
        )
    if math.isnan(seconds) or seconds <= 0:
        raise InvalidArgument(f"{what}: every= must be positive, not {every!r}")
    if seconds < 1 or seconds != int(seconds):
        raise InvalidArgument(
            f"{what}: every= must be a whole number of seconds >= 1 (ticks are named to the "
            f"second in their runs' ids), not {every!r}"
        )
    return int(seconds)


def _check_timezone(timezone: object, what: str) -> str:
    if not isinstance(timezone, str) or not timezone:
        raise InvalidArgument(
            f"{what}: timezone= is an IANA zone name such as 'Europe/Paris', not {timezone!r}"
        )
    try:
        _zone(timezone)
    except (KeyError, ValueError, OSError):  # not found: a KeyError; a malformed key: ValueError
        raise InvalidArgument(
            f"{what}: unknown time zone {timezone!r}: use an IANA name such as 'UTC', "
            "'Europe/Paris' or 'America/New_York' (zoneinfo.available_timezones() lists them; "
            "a system without a zone database needs `pip install tzdata`)"
        ) from None
    return timezone


def _zone(name: str) -> ZoneInfo:
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def _croniter() -> Any:
    try:
        from croniter import croniter
    except ImportError:
        raise InvalidArgument(
            "cron schedules need croniter: pip install 'undying[schedules]' (or use "
            "every=timedelta(...), which needs nothing more)"
        ) from None
    return croniter

