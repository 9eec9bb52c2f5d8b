"""``Settings``: every knob of an App in one frozen, validated object.

The runtime reads its configuration from one place that cannot change under it: the worker,
the replay engine and the store all get the same ``Settings``, checked once, when the App is
built, so a bad value is refused with a message at the line that passed it, not discovered
later inside a worker.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .errors import InvalidArgument

DURABILITIES = ("normal", "full")


@dataclass(frozen=True, slots=True)
class Settings:
    """How an App runs its workflows (see ``App`` for what each setting means)."""

    #: 'normal' survives a process or container crash; 'full' fsyncs every commit (power loss)
    durability: str = "normal"
    #: let values no other codec rule handles be pickled (only if every writer is trusted)
    allow_pickle: bool = False
    #: raw clock/random/uuid calls in workflow code raise; changed step arguments raise
    strict: bool = False
    #: seconds a claimed run's lease lasts without a heartbeat
    lease_ttl: float = 30.0
    #: longest the scheduler sleeps between claims when nothing wakes it
    poll_interval: float = 1.0
    #: seconds a wait stays in memory before the run is released (status waiting)
    suspend_after: float = 1.0
    #: runs one worker executes at once
    max_concurrent_runs: int = 10_000
    #: workers delete runs that ended longer ago than this (and unused chunks), hourly
    retention_days: float | None = None
    #: a run taken over more often than this in a row, its journal never moving, is failed as
    #: quarantined instead of taking yet another worker down (``undying resume`` resets it)
    max_takeovers_without_progress: int | None = 5

    def __post_init__(self) -> None:
        if self.durability not in DURABILITIES:
            raise InvalidArgument(
                f"durability must be one of {list(DURABILITIES)}, not {self.durability!r}: "
                "'normal' survives a process or container crash, 'full' also survives power loss"
            )
        for label in ("allow_pickle", "strict"):
            if not isinstance(getattr(self, label), bool):
                raise InvalidArgument(
                    f"{label} must be True or False, not {getattr(self, label)!r}"
                )
        for label in ("lease_ttl", "poll_interval"):
            self._number(label, positive=True)
        self._number("suspend_after", positive=False)
        if self.retention_days is not None:
            self._number("retention_days", positive=False, unit="days")
        if not _whole(self.max_concurrent_runs) or self.max_concurrent_runs < 1:
            raise InvalidArgument(
                f"max_concurrent_runs must be a whole number >= 1, not {self.max_concurrent_runs!r}"
            )
        limit = self.max_takeovers_without_progress
        if limit is not None and (not _whole(limit) or limit < 1):
            raise InvalidArgument(
                "max_takeovers_without_progress must be a whole number >= 1 (or None to never "
                f"quarantine), not {limit!r}"
            )

    def _number(self, label: str, *, positive: bool, unit: str = "seconds") -> None:
        value = getattr(self, label)
        ok = (
            isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)
        )
        if not ok or value < 0 or (positive and value == 0) or math.isinf(value):
            bound = "a positive" if positive else "a non-negative"
            raise InvalidArgument(f"{label} must be {bound} number of {unit}, not {value!r}")
        object.__setattr__(self, label, float(value))

    def replace(self, **changes: object) -> Settings:
        """A copy with some settings changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
