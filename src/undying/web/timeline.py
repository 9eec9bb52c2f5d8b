"""A run's journal as bars over time, split into the executions that recorded it.

Replay writes nothing: when a worker claims a run again (after a durable wait, a crash, a
resume), it re-executes the workflow from its first line and every call already journaled
returns its recorded result. The journal therefore shows when each entry was *executed*, once,
and the run's epoch says how many times the run was claimed, but no row says when a claim
happened. The timeline estimates it from the journal itself:

* a run claimed once (epoch 1) ran in one execution: nothing was replayed;
* a run claimed N times ran in up to N executions. A new execution starts after a pause in
  the journal, the time between an entry and the end of everything before it: the run was
  released (a wait longer than the app's ``suspend_after``), had crashed and been taken over,
  or had failed and been resumed. The N - 1 longest pauses over ``MIN_PAUSE`` are taken as
  the starts of executions 2..N.

Entries of an earlier execution were *replayed* by each later one (returned from the journal,
not run again); entries of the last execution were executed by it. A claim that recorded
nothing (a worker that died before its first new entry) has no pause of its own, so fewer
executions than claims may be shown. The pages say this is an estimate.

Time is drawn per execution: each one on a linear scale, the pauses between them collapsed to
a fixed-width break that says how long the run waited, so a two-day wait does not squash the
steps around it into slivers.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..store.base import ARMED, ERROR, INTENT, Entry

#: a pause shorter than this is workflow code between calls, not a new execution
MIN_PAUSE = 0.05
#: width of the break drawn for the pause between two executions (percent of the track)
BREAK_WIDTH = 4.0
#: an execution is drawn at least this wide (percent), however short it was
MIN_EXECUTION_WIDTH = 14.0
#: share of an execution's width kept for a wait still open at its end
OPEN_TAIL = 0.15
#: an instant entry (ctx.now, an event taken) is drawn this wide (percent)
MIN_BAR_WIDTH = 0.6

#: kinds whose entries are waits or markers rather than work
WAIT_KINDS = frozenset({"sleep", "event", "race"})
INSTANT_KINDS = frozenset({"now", "random", "uuid", "patch", "state"})


@dataclass(slots=True)
class Bar:
    """One journal entry on the track."""

    entry: Entry
    execution: int  # 1-based
    replayed: bool  # recorded by an earlier execution than the last one
    open: bool  # still in progress: an at-most-once intent, an armed wait
    start: float
    end: float
    left: float = 0.0  # percent of the track
    width: float = 0.0

    @property
    def duration(self) -> float:
        return max(self.end - self.start, 0.0)

    @property
    def retries(self) -> int:
        return max(self.entry.attempt - 1, 0)

    @property
    def failed(self) -> bool:
        return self.entry.status == ERROR

    @property
    def category(self) -> str:
        """What colour the bar takes (a CSS class suffix)."""
        kind = self.entry.kind
        if self.failed:
            return "error"
        if self.open:
            return "open"
        if kind in WAIT_KINDS:
            return "wait"
        if kind in INSTANT_KINDS:
            return "mark"
        if kind in ("call", "child"):
            return "child"
        if kind == "tx":
            return "tx"
        return "step"


@dataclass(slots=True)
class Pause:
    """The break between two executions."""

    before_seq: int  # the first entry of the next execution
    seconds: float
    left: float = 0.0  # percent of the track where the break is drawn


@dataclass(slots=True)
class Timeline:
    bars: list[Bar] = field(default_factory=list)
    pauses: list[Pause] = field(default_factory=list)
    executions: int = 0
    claims: int = 0
    start: float = 0.0
    end: float = 0.0

    @property
    def replayed(self) -> int:
        return sum(1 for bar in self.bars if bar.replayed)


def build_timeline(entries: Sequence[Entry], *, claims: int, now: float) -> Timeline:
    """Bars for ``entries`` (in journal order) of a run claimed ``claims`` times (its epoch);
    ``now`` ends the bars of entries still open."""
    timeline = Timeline(claims=claims)
    if not entries:
        return timeline
    ends = [_end(e, now) for e in entries]
    starts = [min(e.started_at, end) for e, end in zip(entries, ends, strict=True)]
    firsts = _execution_starts(starts, ends, claims)
    timeline.executions = len(firsts) + 1
    execution = 1
    for i, entry in enumerate(entries):
        if execution <= len(firsts) and i == firsts[execution - 1]:
            execution += 1
        timeline.bars.append(
            Bar(
                entry=entry,
                execution=execution,
                replayed=execution < timeline.executions,
                open=entry.status in (INTENT, ARMED),
                start=starts[i],
                end=ends[i],
            )
        )
    timeline.start, timeline.end = min(starts), max(ends)
    _place(timeline, firsts)
    return timeline


def _end(entry: Entry, now: float) -> float:
    if entry.finished_at is not None:
        return max(entry.finished_at, entry.started_at)
    if entry.status in (INTENT, ARMED):
        return max(now, entry.started_at)
    return entry.started_at


def _execution_starts(starts: list[float], ends: list[float], claims: int) -> list[int]:
    """Indexes of the entries that begin executions 2, 3, ...: the longest pauses."""
    if claims <= 1:
        return []
    pauses: list[tuple[float, int]] = []
    reached = ends[0]
    for i in range(1, len(starts)):
        gap = starts[i] - reached
        if gap > MIN_PAUSE:
            pauses.append((gap, i))
        reached = max(reached, ends[i])
    pauses.sort(reverse=True)
    return sorted(i for _, i in pauses[: claims - 1])


def _place(timeline: Timeline, firsts: list[int]) -> None:
    """Give every bar its position: executions side by side, breaks between them. An open
    entry (a wait still armed) does not stretch the scale to "now": its execution keeps
    ``OPEN_TAIL`` of its width for it, and the bar runs to the execution's edge."""
    bars = timeline.bars
    bounds = [0, *firsts, len(bars)]
    groups = [bars[a:b] for a, b in itertools.pairwise(bounds)]
    spans = [
        (min(x.start for x in group), max(x.start if x.open else x.end for x in group))
        for group in groups
    ]
    total = sum(end - start for start, end in spans) or 1.0
    room = 100.0 - BREAK_WIDTH * (len(spans) - 1)
    widths = [max((end - start) / total * room, MIN_EXECUTION_WIDTH) for start, end in spans]
    widths = [w * room / sum(widths) for w in widths]
    left = 0.0
    for k, (group, (start, end), width) in enumerate(zip(groups, spans, widths, strict=True)):
        scaled = width * (1 - OPEN_TAIL) if any(x.open for x in group) else width
        length = (end - start) or 1.0
        for bar in group:
            bar.left = left + (bar.start - start) / length * scaled
            span = left + width - bar.left if bar.open else bar.duration / length * scaled
            bar.width = max(span, MIN_BAR_WIDTH)
            bar.left = min(bar.left, 100.0 - bar.width)
        left += width
        if k + 1 < len(spans):
            timeline.pauses.append(Pause(groups[k + 1][0].entry.seq, spans[k + 1][0] - end, left))
            left += BREAK_WIDTH


def human_duration(seconds: float | None) -> str:
    """``412 ms``, ``3.2 s``, ``2 m 05 s``, ``1 h 02 m``, ``2 d 3 h``."""
    if seconds is None:
        return "-"
    if seconds < 0:
        seconds = 0.0
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} m {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} m"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def human_size(size: int) -> str:
    """``46 B``, ``3.1 KB``, ``2.4 MB``."""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"
